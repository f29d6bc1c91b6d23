//! The admin HTTP API (`/admin/api/v1/`, JSON, bearer token) through which the ENT provisions
//! the directory, and the admin console page (`/admin`).
//!
//! Every change goes through [`apply`]: validated against the directory, stored in one
//! transaction with its audit entries, made live, and then enforced on open sessions.

pub mod demo;
pub mod import;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use jid::BareJid;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use xmpp_parsers::stream_error::DefinedCondition;

use crate::Shared;
use crate::directory::{DirectoryChange, Profile, Scope};
use crate::policy::ApplyError;
use crate::router::CloseReason;
use crate::storage::ScramCredential;

/// The OpenAPI description of this API, also kept in docs/.
pub const OPENAPI: &str = include_str!("../../docs/admin-api.openapi.json");
const CONSOLE: &str = include_str!("console.html");

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
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
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

type Result<T> = std::result::Result<T, AdminError>;

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<()> {
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
    if matches && !expected.is_empty() {
        Ok(())
    } else {
        Err(AdminError::Unauthorized)
    }
}

/// Applies a batch of directory changes, then closes the sessions of users who lost access.
pub(crate) async fn apply(
    shared: &Shared,
    actor: &str,
    changes: &[DirectoryChange],
    credentials: &[(String, Vec<ScramCredential>)],
) -> std::result::Result<(), ApplyError> {
    let affected = shared
        .policy
        .apply(&shared.store, actor, changes, credentials)
        .await?;
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
        shared.router.close_account(&bare, reason);
    }
    Ok(())
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

async fn change(
    shared: &Shared,
    headers: &HeaderMap,
    changes: Vec<DirectoryChange>,
) -> Result<StatusCode> {
    change_with_credentials(shared, headers, changes, &[]).await
}

async fn change_with_credentials(
    shared: &Shared,
    headers: &HeaderMap,
    changes: Vec<DirectoryChange>,
    credentials: &[(String, Vec<ScramCredential>)],
) -> Result<StatusCode> {
    apply(shared, &actor(headers), &changes, credentials)
        .await
        .map_err(|e| match e {
            ApplyError::Invalid { invalid, .. } if invalid.is_not_found() => {
                AdminError::NotFound(invalid.to_string())
            }
            ApplyError::Invalid { invalid, .. } => AdminError::BadRequest(invalid.to_string()),
            ApplyError::Storage(err) => AdminError::Internal(err.to_string()),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

type AppState = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/structures", get(list_structures))
        .route(
            "/structures/{id}",
            get(get_structure)
                .put(put_structure)
                .delete(delete_structure),
        )
        .route("/structures/{id}/profiles", get(get_profiles))
        .route("/structures/{id}/profiles/{profile}", put(put_profile))
        .route("/structures/{id}/rules", get(get_rules))
        .route("/structures/{id}/rules/{from}/{to}", put(put_rule))
        .route(
            "/users/{username}",
            get(get_user).put(put_user).delete(delete_user),
        )
        .route(
            "/users/{username}/children/{child}",
            put(link_child).delete(unlink_child),
        )
        .route(
            "/classes/{id}",
            get(get_class).put(put_class).delete(delete_class),
        )
        .route(
            "/classes/{id}/members/{username}",
            put(add_class_member).delete(remove_class_member),
        )
        .route(
            "/groups/{id}",
            get(get_group).put(put_group).delete(delete_group),
        )
        .route(
            "/groups/{id}/members/{username}",
            put(add_group_member).delete(remove_group_member),
        )
        .route("/import", post(import))
        .route("/audit", get(audit))
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/admin/api/v1", api)
        .route("/admin", get(console))
        .with_state(shared)
}

async fn console() -> Html<&'static str> {
    Html(CONSOLE)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

fn profile_of(text: &str) -> Result<Profile> {
    Profile::parse(text).ok_or_else(|| {
        AdminError::NotFound(format!(
            "unknown profile {text:?}: student, teacher, parent, staff or partner"
        ))
    })
}

fn structure_json(shared: &Shared, id: &str) -> Result<Value> {
    let state = shared.policy.snapshot();
    let structure = state
        .structures
        .get(id)
        .ok_or_else(|| AdminError::NotFound(format!("unknown structure {id:?}")))?;
    let mut classes: Vec<Value> = state
        .classes
        .iter()
        .filter(|(_, c)| c.structure == id)
        .map(|(cid, c)| json!({ "id": cid, "name": c.name, "members": c.members.len() }))
        .collect();
    classes.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(json!({
        "id": id,
        "name": structure.name,
        "members": structure.members.len(),
        "classes": classes,
        "profiles": profiles_json(structure),
        "rules": rules_json(structure),
    }))
}

fn profiles_json(structure: &crate::policy::directory::Structure) -> Value {
    let mut map = serde_json::Map::new();
    for profile in Profile::ALL {
        let enabled = structure.access.get(&profile).copied().unwrap_or(true);
        map.insert(profile.as_str().into(), Value::Bool(enabled));
    }
    Value::Object(map)
}

fn rules_json(structure: &crate::policy::directory::Structure) -> Value {
    let mut map = serde_json::Map::new();
    for from in Profile::ALL {
        let mut row = serde_json::Map::new();
        for to in Profile::ALL {
            let scope = structure
                .rules
                .get(&(from, to))
                .copied()
                .unwrap_or_else(|| crate::policy::default_scope(from, to));
            row.insert(to.as_str().into(), Value::String(scope.as_str().into()));
        }
        map.insert(from.as_str().into(), Value::Object(row));
    }
    Value::Object(map)
}

async fn list_structures(State(shared): AppState, headers: HeaderMap) -> Result<Json<Value>> {
    authorize(&shared, &headers)?;
    let state = shared.policy.snapshot();
    let mut ids: Vec<&String> = state.structures.keys().collect();
    ids.sort();
    let list = ids
        .into_iter()
        .map(|id| structure_json(&shared, id))
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(Value::Array(list)))
}

async fn get_structure(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    authorize(&shared, &headers)?;
    Ok(Json(structure_json(&shared, &id)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

async fn put_structure(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: std::result::Result<Json<NameBody>, JsonRejection>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    let Json(body) = body?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::PutStructure {
            id,
            name: body.name,
        }],
    )
    .await
}

async fn delete_structure(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::DeleteStructure { id }],
    )
    .await
}

async fn get_profiles(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    authorize(&shared, &headers)?;
    Ok(Json(structure_json(&shared, &id)?["profiles"].clone()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnabledBody {
    enabled: bool,
}

async fn put_profile(
    State(shared): AppState,
    headers: HeaderMap,
    Path((id, profile)): Path<(String, String)>,
    body: std::result::Result<Json<EnabledBody>, JsonRejection>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    let profile = profile_of(&profile)?;
    let Json(body) = body?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::SetProfileAccess {
            structure: id,
            profile,
            enabled: body.enabled,
        }],
    )
    .await
}

async fn get_rules(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    authorize(&shared, &headers)?;
    Ok(Json(structure_json(&shared, &id)?["rules"].clone()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeBody {
    scope: Scope,
}

async fn put_rule(
    State(shared): AppState,
    headers: HeaderMap,
    Path((id, from, to)): Path<(String, String, String)>,
    body: std::result::Result<Json<ScopeBody>, JsonRejection>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    let (from, to) = (profile_of(&from)?, profile_of(&to)?);
    let Json(body) = body?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::SetRule {
            structure: id,
            from,
            to,
            scope: body.scope,
        }],
    )
    .await
}

async fn get_user(
    State(shared): AppState,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Result<Json<Value>> {
    authorize(&shared, &headers)?;
    let state = shared.policy.snapshot();
    let user = state
        .users
        .get(&username)
        .ok_or_else(|| AdminError::NotFound(format!("unknown user {username:?}")))?;
    Ok(Json(json!({
        "username": username,
        "display_name": user.display_name,
        "profile": user.profile,
        "structures": user.structures,
        "classes": user.classes,
        "groups": user.groups,
        "parents": user.parents,
        "children": user.children,
        "hidden": user.hidden,
        "first_login": user.first_login,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    display_name: String,
    profile: Profile,
    #[serde(default)]
    structures: Vec<String>,
    /// Sets the account's password (SCRAM credentials), when given.
    #[serde(default)]
    password: Option<String>,
}

async fn put_user(
    State(shared): AppState,
    headers: HeaderMap,
    Path(username): Path<String>,
    body: std::result::Result<Json<UserBody>, JsonRejection>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    let Json(body) = body?;
    // A password that cannot be set is refused before anything changes; one that can is set
    // in the directory change's own transaction.
    let mut credentials = Vec::new();
    if let Some(password) = body.password {
        let name = crate::auth::normalise_username(&username).ok_or_else(|| {
            AdminError::BadRequest(format!("{username:?} is not a valid username"))
        })?;
        credentials.push((name, password_credentials(&shared, password).await?));
    }
    change_with_credentials(
        &shared,
        &headers,
        vec![DirectoryChange::PutUser {
            username,
            display_name: body.display_name,
            profile: body.profile,
            structures: body.structures,
        }],
        &credentials,
    )
    .await
}

/// Reads a JSON body as each admin call would.
#[cfg(feature = "fuzzing")]
pub fn fuzz_bodies(bytes: &[u8]) {
    let _ = serde_json::from_slice::<NameBody>(bytes);
    let _ = serde_json::from_slice::<EnabledBody>(bytes);
    let _ = serde_json::from_slice::<ScopeBody>(bytes);
    let _ = serde_json::from_slice::<UserBody>(bytes);
    let _ = serde_json::from_slice::<ClassBody>(bytes);
    let _ = serde_json::from_slice::<GroupBody>(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = profile_of(text);
    }
}

async fn password_credentials(
    shared: &Shared,
    password: String,
) -> Result<Vec<crate::storage::ScramCredential>> {
    crate::accounts::credentials(password, shared.config.auth.scram_iterations)
        .await
        .map_err(|e| match e {
            crate::accounts::Error::Password(p) => AdminError::BadRequest(p.to_string()),
            other => AdminError::Internal(other.to_string()),
        })
}

async fn delete_user(
    State(shared): AppState,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::DeleteUser { username }],
    )
    .await
}

async fn link_child(
    State(shared): AppState,
    headers: HeaderMap,
    Path((parent, child)): Path<(String, String)>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::LinkParent { parent, child }],
    )
    .await
}

async fn unlink_child(
    State(shared): AppState,
    headers: HeaderMap,
    Path((parent, child)): Path<(String, String)>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::UnlinkParent { parent, child }],
    )
    .await
}

async fn get_class(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    authorize(&shared, &headers)?;
    let state = shared.policy.snapshot();
    let class = state
        .classes
        .get(&id)
        .ok_or_else(|| AdminError::NotFound(format!("unknown class {id:?}")))?;
    Ok(Json(json!({
        "id": id, "structure": class.structure, "name": class.name, "members": class.members,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassBody {
    structure: String,
    name: String,
    #[serde(default)]
    members: Option<Vec<String>>,
}

async fn put_class(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: std::result::Result<Json<ClassBody>, JsonRejection>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    let Json(body) = body?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::PutClass {
            id,
            structure: body.structure,
            name: body.name,
            members: body.members,
        }],
    )
    .await
}

async fn delete_class(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    change(&shared, &headers, vec![DirectoryChange::DeleteClass { id }]).await
}

async fn add_class_member(
    State(shared): AppState,
    headers: HeaderMap,
    Path((class, username)): Path<(String, String)>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::AddClassMember { class, username }],
    )
    .await
}

async fn remove_class_member(
    State(shared): AppState,
    headers: HeaderMap,
    Path((class, username)): Path<(String, String)>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::RemoveClassMember { class, username }],
    )
    .await
}

async fn get_group(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    authorize(&shared, &headers)?;
    let state = shared.policy.snapshot();
    let group = state
        .groups
        .get(&id)
        .ok_or_else(|| AdminError::NotFound(format!("unknown group {id:?}")))?;
    Ok(Json(
        json!({ "id": id, "name": group.name, "members": group.members }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    name: String,
    #[serde(default)]
    members: Option<Vec<String>>,
}

async fn put_group(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: std::result::Result<Json<GroupBody>, JsonRejection>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    let Json(body) = body?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::PutGroup {
            id,
            name: body.name,
            members: body.members,
        }],
    )
    .await
}

async fn delete_group(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    change(&shared, &headers, vec![DirectoryChange::DeleteGroup { id }]).await
}

async fn add_group_member(
    State(shared): AppState,
    headers: HeaderMap,
    Path((group, username)): Path<(String, String)>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::AddGroupMember { group, username }],
    )
    .await
}

async fn remove_group_member(
    State(shared): AppState,
    headers: HeaderMap,
    Path((group, username)): Path<(String, String)>,
) -> Result<StatusCode> {
    authorize(&shared, &headers)?;
    change(
        &shared,
        &headers,
        vec![DirectoryChange::RemoveGroupMember { group, username }],
    )
    .await
}

/// Applies a parsed batch, naming the line of the change that fails.
pub(crate) async fn import_batch(
    shared: &Shared,
    actor: &str,
    import: import::Import,
) -> std::result::Result<usize, (bool, String)> {
    let credentials = import::credentials(import.passwords, shared.config.auth.scram_iterations)
        .await
        .map_err(|e| (false, e))?;
    let lines = &import.lines;
    match apply(shared, actor, &import.changes, &credentials).await {
        Ok(()) => Ok(import.changes.len()),
        Err(ApplyError::Invalid { index, invalid }) => Err((
            false,
            format!(
                "line {}: {invalid}",
                lines.get(index).copied().unwrap_or(index + 1)
            ),
        )),
        Err(ApplyError::Storage(e)) => Err((true, e.to_string())),
    }
}

#[derive(Serialize)]
struct Imported {
    applied: usize,
}

async fn import(
    State(shared): AppState,
    headers: HeaderMap,
    body: String,
) -> Result<Json<Imported>> {
    authorize(&shared, &headers)?;
    let batch = import::parse_import(&body)
        .map_err(|e| AdminError::BadRequest(format!("nothing imported: {e}")))?;
    let who = format!("{}:import", actor(&headers));
    let applied = import_batch(&shared, &who, batch)
        .await
        .map_err(|(internal, message)| {
            if internal {
                AdminError::Internal(message)
            } else {
                AdminError::BadRequest(format!("nothing imported: {message}"))
            }
        })?;
    Ok(Json(Imported { applied }))
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

async fn audit(
    State(shared): AppState,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>> {
    authorize(&shared, &headers)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let entries = shared
        .store
        .audit_log(limit, query.before)
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    Ok(Json(serde_json::to_value(entries).unwrap_or(Value::Null)))
}
