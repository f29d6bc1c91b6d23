//! The OpenAPI document of the admin API, generated from the handlers and their types
//! (utoipa), with the import line's schema generated from the import table. A test holds
//! docs/admin-api.openapi.json to it: run the tests with CAUSETTE_BLESS_OPENAPI=1 to rewrite
//! the file after changing the API.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{ErrorBody, audit, classes, groups, import, structures, users};
use crate::directory::{AuditEntry, DirectoryChange, Profile, Scope};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Causette admin API",
        version = "1",
        description = "Provisioning of the ENT directory (structures, users, classes, ENT groups, parent links), chat access per profile, communication rules, bulk import and audit log. Every request needs `Authorization: Bearer <token>` (config `admin.token`, or the generated `<data_dir>/admin.token`). Changes apply live and are written to the audit log. An optional `X-Admin-User` header names the ENT administrator behind a request; the audit log records it."
    ),
    servers((url = "/admin/api/v1")),
    security(("bearer" = [])),
    paths(
        structures::list_structures,
        structures::get_structure,
        structures::put_structure,
        structures::delete_structure,
        structures::get_profiles,
        structures::put_profile,
        structures::get_rules,
        structures::put_rule,
        users::list_users,
        users::get_user,
        users::put_user,
        users::patch_user,
        users::delete_user,
        users::link_child,
        users::unlink_child,
        classes::get_class,
        classes::put_class,
        classes::delete_class,
        classes::add_class_member,
        classes::remove_class_member,
        groups::list_groups,
        groups::get_group,
        groups::put_group,
        groups::delete_group,
        groups::add_group_member,
        groups::remove_group_member,
        import::import,
        audit::audit,
        serve,
    ),
    components(schemas(ErrorBody, Profile, Scope, DirectoryChange, AuditEntry)),
    modifiers(&BearerToken),
)]
struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document, as served and as kept in docs/.
pub fn document() -> String {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    document["components"]["schemas"]["ImportLine"] = import::line_schema();
    serde_json::to_string_pretty(&document).expect("JSON") + "\n"
}

static DOCUMENT: LazyLock<String> = LazyLock::new(document);

#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    summary = "This document",
    description = "Public: it needs no token.",
    security(()),
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json")))]
pub(super) async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// docs/admin-api.openapi.json is the generated document; CAUSETTE_BLESS_OPENAPI=1
    /// rewrites it.
    #[test]
    fn the_document_in_docs_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-api.openapi.json");
        let generated = document();
        if std::env::var_os("CAUSETTE_BLESS_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
            return;
        }
        let kept = std::fs::read_to_string(path).unwrap();
        assert!(
            kept == generated,
            "docs/admin-api.openapi.json is out of date: run CAUSETTE_BLESS_OPENAPI=1 cargo test"
        );
        let parsed: Value = serde_json::from_str(&kept).unwrap();
        assert_eq!(parsed["paths"].as_object().unwrap().len(), 17);
    }
}
