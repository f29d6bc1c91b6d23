//! The admin HTTP API (`/admin/api/v1/`, JSON, bearer token) through which the ENT provisions
//! the directory, and the admin console page (`/admin`).
//!
//! One router per resource (`structures`, `users`, `classes`, `groups`, `import`, `audit`),
//! the bearer token checked once by a middleware, every error one JSON type, and the OpenAPI
//! document generated from the handlers and types (`openapi`), checked against
//! docs/admin-api.openapi.json by a test.
//!
//! Every change goes through [`apply`]: validated against the directory, stored in one
//! transaction with its audit entries, made live, and then enforced on open sessions.

mod audit;
mod classes;
pub mod demo;
mod groups;
pub mod import;
mod openapi;
mod structures;
mod users;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jid::BareJid;
use serde::Serialize;
use xmpp_parsers::stream_error::DefinedCondition;

use crate::Shared;
use crate::directory::{DirectoryChange, Profile};
use crate::policy::directory::{DirectoryState, Invalid};
use crate::policy::{ApplyError, Policy};
use crate::router::CloseReason;
use crate::storage::{DynStore, ScramCredential};

pub use openapi::document as openapi_document;

const CONSOLE: &str = include_str!("console.html");

/// Every failure of the API, as one JSON shape: `{"error": "…"}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("internal error")]
    Internal(String),
}

/// The body of every error.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong, for the person reading the ENT's logs.
    error: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match &self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Internal(detail) => {
                tracing::error!(%detail, "admin API failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = ErrorBody {
            error: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        response
    }
}

impl From<JsonRejection> for AdminError {
    fn from(rejection: JsonRejection) -> Self {
        AdminError::BadRequest(format!("invalid JSON: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for AdminError {
    fn from(rejection: QueryRejection) -> Self {
        AdminError::BadRequest(format!("invalid query: {}", rejection.body_text()))
    }
}

impl From<ApplyError> for AdminError {
    fn from(error: ApplyError) -> Self {
        match error {
            ApplyError::Invalid { invalid, .. } if invalid.is_not_found() => {
                AdminError::NotFound(invalid.to_string())
            }
            ApplyError::Invalid { invalid, .. } => AdminError::BadRequest(invalid.to_string()),
            ApplyError::Storage(err) => AdminError::Internal(err.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, AdminError>;

/// A JSON body, or the error that says why it is not one.
type Body<T> = std::result::Result<Json<T>, JsonRejection>;

/// A query string, or the error that says why it is not one (answered as JSON, as the rest).
type QueryOf<T> = std::result::Result<axum::extract::Query<T>, QueryRejection>;

/// What the admin handlers may reach: the directory, the store and the server's settings for
/// passwords, through these methods only (not the TLS acceptor, the listeners or the token).
#[derive(Clone)]
pub(crate) struct AdminState(Arc<Shared>);

impl AdminState {
    fn policy(&self) -> &Policy {
        &self.0.policy
    }

    fn store(&self) -> &DynStore {
        &self.0.store
    }

    /// Usernames (JID localparts) of this domain's users with a session now.
    fn online_users(&self) -> Vec<String> {
        self.0
            .router
            .online_accounts()
            .into_iter()
            .filter(|jid| jid.domain() == self.0.domain.domain())
            .filter_map(|jid| jid.node().map(|node| node.to_string()))
            .collect()
    }

    fn scram_iterations(&self) -> u32 {
        self.0.config.auth.scram_iterations
    }

    /// Applies a batch of changes as `actor` and enforces it on open sessions.
    async fn apply(
        &self,
        actor: &str,
        changes: &[DirectoryChange],
        credentials: &[(String, Vec<ScramCredential>)],
    ) -> std::result::Result<(), ApplyError> {
        apply(&self.0, actor, changes, credentials).await
    }

    /// Applies the changes one admin call makes.
    async fn change(
        &self,
        headers: &HeaderMap,
        changes: Vec<DirectoryChange>,
    ) -> Result<StatusCode> {
        self.change_with_credentials(headers, changes, &[]).await
    }

    /// Applies the changes `build` makes from the directory as it is (a partial update).
    async fn change_from(
        &self,
        headers: &HeaderMap,
        build: impl FnOnce(&DirectoryState) -> std::result::Result<Vec<DirectoryChange>, Invalid>,
        credentials: &[(String, Vec<ScramCredential>)],
    ) -> Result<StatusCode> {
        apply_from(&self.0, &actor(headers), build, credentials).await?;
        Ok(StatusCode::NO_CONTENT)
    }

    async fn change_with_credentials(
        &self,
        headers: &HeaderMap,
        changes: Vec<DirectoryChange>,
        credentials: &[(String, Vec<ScramCredential>)],
    ) -> Result<StatusCode> {
        self.apply(&actor(headers), &changes, credentials).await?;
        Ok(StatusCode::NO_CONTENT)
    }
}

/// Lets a request through only with the admin token (compared in constant time).
async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if bearer_matches(&state.0, request.headers()) {
        next.run(request).await
    } else {
        AdminError::Unauthorized.into_response()
    }
}

/// Whether the request carries the admin token (compared in constant time).
pub(crate) fn bearer_matches(shared: &Shared, headers: &HeaderMap) -> bool {
    // RFC 9110 §11.1: the scheme is case-insensitive.
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    let expected = shared.admin_token.as_bytes();
    let matches = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    matches && !expected.is_empty()
}

/// Applies a batch of directory changes, then closes the sessions of users who lost access.
pub(crate) async fn apply(
    shared: &Shared,
    actor: &str,
    changes: &[DirectoryChange],
    credentials: &[(String, Vec<ScramCredential>)],
) -> std::result::Result<(), ApplyError> {
    let applied = shared
        .policy
        .apply(&shared.store, actor, changes, credentials)
        .await;
    applied_then(shared, actor, changes, applied)
}

/// Applies the changes `build` makes from the directory as it is (a partial update), as
/// `apply` does.
pub(crate) async fn apply_from(
    shared: &Shared,
    actor: &str,
    build: impl FnOnce(&DirectoryState) -> std::result::Result<Vec<DirectoryChange>, Invalid>,
    credentials: &[(String, Vec<ScramCredential>)],
) -> std::result::Result<(), ApplyError> {
    match shared
        .policy
        .apply_from(&shared.store, actor, build, credentials)
        .await
    {
        Ok((affected, changes)) => applied_then(shared, actor, &changes, Ok(affected)),
        Err(err) => applied_then(shared, actor, &[], Err(err)),
    }
}

/// What follows a batch: the log and the count, and closing the sessions of users who lost
/// access.
fn applied_then(
    shared: &Shared,
    actor: &str,
    changes: &[DirectoryChange],
    applied: std::result::Result<BTreeSet<String>, ApplyError>,
) -> std::result::Result<(), ApplyError> {
    let affected = match applied {
        Ok(affected) => affected,
        Err(err) => {
            tracing::warn!(actor, error = %err, "directory change refused; nothing changed");
            return Err(err);
        }
    };
    shared.metrics.admin_changes.inc_by(changes.len() as u64);
    tracing::info!(
        actor,
        count = changes.len(),
        changes = %summary(changes),
        "directory changed"
    );
    let state = shared.policy.snapshot();
    for username in affected {
        let deleted = changes
            .iter()
            .any(|c| matches!(c, DirectoryChange::DeleteUser { username: u } if *u == username));
        let reason = if deleted && !state.users.contains_key(&username) {
            CloseReason {
                condition: DefinedCondition::NotAuthorized,
                text: "your account was deleted by the ENT",
                french: Some("votre compte a été supprimé par l'ENT"),
            }
        } else if !shared.policy.still_allowed(&username) {
            CloseReason {
                condition: DefinedCondition::PolicyViolation,
                text: "the chat is no longer available for your profile",
                french: Some("le chat n'est plus ouvert à votre profil"),
            }
        } else {
            continue;
        };
        let Ok(bare) = BareJid::new(&format!("{username}@{}", shared.config.domain)) else {
            continue;
        };
        tracing::info!(
            actor,
            user = %username,
            reason = reason.text,
            "closing the user's sessions after a directory change"
        );
        shared.router.close_account(&bare, reason);
    }
    Ok(())
}

/// Changes listed shortly for the log: each one's operation and what it names, the first
/// ones of a large batch only. Names and passwords stay out of the log.
fn summary(changes: &[DirectoryChange]) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = changes
        .iter()
        .take(SHOWN)
        .map(|change| {
            let value = serde_json::to_value(change).unwrap_or_default();
            let op = value.get("op").and_then(|v| v.as_str()).unwrap_or("?");
            let named: Vec<&str> = [
                "structure",
                "id",
                "class",
                "group",
                "parent",
                "username",
                "child",
                "profile",
            ]
            .iter()
            .filter_map(|key| value.get(*key).and_then(|v| v.as_str()))
            .collect();
            match value.get("enabled").and_then(|v| v.as_bool()) {
                Some(enabled) => format!("{op} {} enabled={enabled}", named.join(" ")),
                None => format!("{op} {}", named.join(" ")),
            }
        })
        .collect();
    if changes.len() > SHOWN {
        parts.push(format!("and {} more", changes.len() - SHOWN));
    }
    parts.join(", ")
}

/// Who made a change, for the audit log: the ENT may name its administrator in the
/// `X-Admin-User` header; otherwise "admin-api".
fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-admin-user")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| !c.is_control()))
        .map_or_else(|| "admin-api".to_owned(), |v| format!("admin-api:{v}"))
}

fn profile_of(text: &str) -> Result<Profile> {
    Profile::parse(text).ok_or_else(|| {
        AdminError::NotFound(format!(
            "unknown profile {text:?}: student, teacher, parent, staff or partner"
        ))
    })
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let state = AdminState(shared);
    let api = Router::new()
        .merge(structures::routes())
        .merge(users::routes())
        .merge(classes::routes())
        .merge(groups::routes())
        .merge(import::routes())
        .merge(audit::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        // The description of the API is public.
        .route("/openapi.json", get(openapi::serve));
    Router::new()
        .nest("/admin/api/v1", api)
        .route("/admin", get(console))
        .with_state(state)
}

/// The console's security headers: its own inline script and style only (by hash), requests
/// to this origin only, never in a frame (the page holds the admin token).
static CONSOLE_POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let hash_of = |open: &str, close: &str| {
        use base64::Engine;
        use sha2::Digest;
        let start = CONSOLE.find(open).map_or(0, |at| at + open.len());
        let end = CONSOLE[start..].find(close).map_or(start, |at| start + at);
        let digest = sha2::Sha256::digest(&CONSOLE.as_bytes()[start..end]);
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        hash_of("<script>", "</script>"),
        hash_of("<style>", "</style>")
    )
});

async fn console() -> impl IntoResponse {
    (
        [
            (header::CONTENT_SECURITY_POLICY, CONSOLE_POLICY.as_str()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(CONSOLE),
    )
}

/// Reads a JSON body as each admin call would.
#[cfg(feature = "fuzzing")]
pub fn fuzz_bodies(bytes: &[u8]) {
    structures::fuzz_bodies(bytes);
    users::fuzz_bodies(bytes);
    classes::fuzz_bodies(bytes);
    groups::fuzz_bodies(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = profile_of(text);
    }
}
