//! `/users`: the directory's users, their passwords and their parent links.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AdminError, AdminState, Body, ErrorBody, QueryOf, Result};
use crate::directory::{DirectoryChange, Profile};
use crate::policy::directory::{DirectoryState, Invalid};
use crate::storage::ScramCredential;

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/users", get(list_users))
        .route(
            "/users/{username}",
            get(get_user)
                .put(put_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route(
            "/users/{username}/children/{child}",
            put(link_child).delete(unlink_child),
        )
}

/// A user of the directory.
#[derive(Serialize, ToSchema)]
pub struct User {
    username: String,
    display_name: String,
    profile: Profile,
    structures: BTreeSet<String>,
    classes: BTreeSet<String>,
    groups: BTreeSet<String>,
    parents: BTreeSet<String>,
    children: BTreeSet<String>,
    /// Left out of the directory search, at the user's own request.
    hidden: bool,
    /// When the user first logged in to the chat (Unix seconds); users appear in search only
    /// after it.
    first_login: Option<i64>,
}

#[utoipa::path(get, path = "/users/{username}", tag = "users",
    summary = "One user",
    params(("username" = String, Path, description = "The JID localpart, lowercase")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
pub(super) async fn get_user(
    State(admin): State<AdminState>,
    Path(username): Path<String>,
) -> Result<Json<User>> {
    let state = admin.policy().snapshot();
    let user = state
        .users
        .get(&username)
        .ok_or_else(|| AdminError::NotFound(format!("unknown user {username:?}")))?;
    Ok(Json(User::of(username, user)))
}

impl User {
    fn of(username: String, user: &crate::policy::directory::User) -> Self {
        User {
            display_name: user.display_name.clone(),
            profile: user.profile,
            structures: user.structures.clone(),
            classes: user.classes.clone(),
            groups: user.groups.clone(),
            parents: user.parents.clone(),
            children: user.children.clone(),
            hidden: user.hidden,
            first_login: user.first_login,
            username,
        }
    }
}

/// Which users, and which page of them.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct UserQuery {
    /// Only members of this structure.
    structure: Option<String>,
    /// Only members of this class.
    class: Option<String>,
    /// Only members of this ENT group.
    group: Option<String>,
    /// Only this profile.
    profile: Option<Profile>,
    /// Only users with this text in their username or display name (ignoring case).
    q: Option<String>,
    /// Only usernames after this one (the `next` of the previous page).
    after: Option<String>,
    /// How many users, 1 to 1000 (100 by default).
    limit: Option<usize>,
}

/// A page of users, by username.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    users: Vec<User>,
    /// How many users match, over every page.
    total: usize,
    /// Give it as `after` for the next page; absent on the last one.
    next: Option<String>,
}

#[utoipa::path(get, path = "/users", tag = "users",
    summary = "Users, filtered, by username, a page at a time",
    params(UserQuery),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 400, description = "Bad query; `error` says what is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(super) async fn list_users(
    State(admin): State<AdminState>,
    query: QueryOf<UserQuery>,
) -> Result<Json<UserPage>> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let text = query
        .q
        .as_deref()
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let state = admin.policy().snapshot();
    let mut matching: Vec<(&String, &std::sync::Arc<crate::policy::directory::User>)> = state
        .users
        .iter()
        .filter(|(_, user)| {
            query
                .structure
                .as_ref()
                .is_none_or(|s| user.structures.contains(s))
                && query
                    .class
                    .as_ref()
                    .is_none_or(|c| user.classes.contains(c))
                && query.group.as_ref().is_none_or(|g| user.groups.contains(g))
                && query.profile.is_none_or(|p| user.profile == p)
        })
        .filter(|(name, user)| {
            text.as_ref().is_none_or(|q| {
                name.contains(q.as_str()) || user.display_name.to_lowercase().contains(q.as_str())
            })
        })
        .collect();
    let total = matching.len();
    matching.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let start = query.after.as_ref().map_or(0, |after| {
        matching.partition_point(|(name, _)| *name <= after)
    });
    let page: Vec<User> = matching[start..]
        .iter()
        .take(limit)
        .map(|(name, user)| User::of((*name).clone(), user))
        .collect();
    let next = (start + page.len() < total)
        .then(|| page.last().map(|u| u.username.clone()))
        .flatten();
    Ok(Json(UserPage {
        users: page,
        total,
        next,
    }))
}

/// A user as the ENT provisions it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    display_name: String,
    profile: Profile,
    /// Replaces the user's structures: required, so that a body that leaves them out does not
    /// empty them (`PATCH` changes only what it names).
    structures: Vec<String>,
    /// Sets the account's password (SCRAM credentials), when given.
    #[serde(default)]
    password: Option<String>,
}

#[utoipa::path(put, path = "/users/{username}", tag = "users",
    summary = "Create or replace a user",
    description = "Moving a user to a structure where their profile has no chat access closes their sessions at once.",
    params(("username" = String, Path, description = "The JID localpart, lowercase")),
    request_body = UserBody,
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Bad input; `error` says what is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown structure", body = ErrorBody),
    ))]
pub(super) async fn put_user(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path(username): Path<String>,
    body: Body<UserBody>,
) -> Result<StatusCode> {
    let Json(body) = body?;
    // A password that cannot be set is refused before anything changes; one that can is set
    // in the directory change's own transaction.
    let mut credentials = Vec::new();
    if let Some(password) = body.password {
        let name = crate::auth::normalise_username(&username).ok_or_else(|| {
            AdminError::BadRequest(format!("{username:?} is not a valid username"))
        })?;
        credentials.push((name, password_credentials(&admin, password).await?));
    }
    let change = DirectoryChange::PutUser {
        username,
        display_name: body.display_name,
        profile: body.profile,
        structures: body.structures,
    };
    admin
        .change_with_credentials(&headers, vec![change], &credentials)
        .await
}

/// What a `PATCH` changes; what it leaves out stays as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    display_name: Option<String>,
    profile: Option<Profile>,
    /// Replaces the user's structures, when given.
    structures: Option<Vec<String>>,
    /// Sets the account's password, when given.
    password: Option<String>,
}

#[utoipa::path(patch, path = "/users/{username}", tag = "users",
    summary = "Change some of a user's fields",
    description = "Fields left out keep their values. Moving a user to a structure where their profile has no chat access closes their sessions at once.",
    params(("username" = String, Path, description = "The JID localpart, lowercase")),
    request_body = UserPatch,
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Bad input; `error` says what is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown user or structure", body = ErrorBody),
    ))]
pub(super) async fn patch_user(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path(username): Path<String>,
    body: Body<UserPatch>,
) -> Result<StatusCode> {
    let Json(patch) = body?;
    if !admin.policy().snapshot().users.contains_key(&username) {
        return Err(AdminError::NotFound(format!("unknown user {username:?}")));
    }
    let mut credentials = Vec::new();
    if let Some(password) = patch.password {
        credentials.push((
            username.clone(),
            password_credentials(&admin, password).await?,
        ));
    }
    // The entry is read and replaced with no other change in between: two patches of
    // different fields at once both hold.
    let build = move |state: &DirectoryState| {
        let current = state
            .users
            .get(&username)
            .ok_or_else(|| Invalid::UnknownUser(username.clone()))?;
        Ok(vec![DirectoryChange::PutUser {
            display_name: patch
                .display_name
                .unwrap_or_else(|| current.display_name.clone()),
            profile: patch.profile.unwrap_or(current.profile),
            structures: patch
                .structures
                .unwrap_or_else(|| current.structures.iter().cloned().collect()),
            username,
        }])
    };
    admin.change_from(&headers, build, &credentials).await
}

async fn password_credentials(
    admin: &AdminState,
    password: String,
) -> Result<Vec<ScramCredential>> {
    crate::accounts::credentials(password, admin.scram_iterations())
        .await
        .map_err(|e| match e {
            crate::accounts::Error::Password(p) => AdminError::BadRequest(p.to_string()),
            other => AdminError::Internal(other.to_string()),
        })
}

#[utoipa::path(delete, path = "/users/{username}", tag = "users",
    summary = "Delete a user",
    description = "Their sessions are closed at once (`not-authorized`).",
    params(("username" = String, Path, description = "The JID localpart, lowercase")),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
pub(super) async fn delete_user(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Result<StatusCode> {
    admin
        .change(&headers, vec![DirectoryChange::DeleteUser { username }])
        .await
}

#[utoipa::path(put, path = "/users/{username}/children/{child}", tag = "users",
    summary = "Link a parent to a child",
    params(
        ("username" = String, Path, description = "The parent's username"),
        ("child" = String, Path, description = "The child's username"),
    ),
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Bad input; `error` says what is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
pub(super) async fn link_child(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path((parent, child)): Path<(String, String)>,
) -> Result<StatusCode> {
    admin
        .change(
            &headers,
            vec![DirectoryChange::LinkParent { parent, child }],
        )
        .await
}

#[utoipa::path(delete, path = "/users/{username}/children/{child}", tag = "users",
    summary = "Unlink a parent from a child",
    params(
        ("username" = String, Path, description = "The parent's username"),
        ("child" = String, Path, description = "The child's username"),
    ),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
pub(super) async fn unlink_child(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path((parent, child)): Path<(String, String)>,
) -> Result<StatusCode> {
    admin
        .change(
            &headers,
            vec![DirectoryChange::UnlinkParent { parent, child }],
        )
        .await
}

#[cfg(feature = "fuzzing")]
pub(super) fn fuzz_bodies(bytes: &[u8]) {
    let _ = serde_json::from_slice::<UserBody>(bytes);
    let _ = serde_json::from_slice::<UserPatch>(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = user_query(text);
    }
}

/// The user list's query as the extractor reads it.
#[cfg(feature = "fuzzing")]
fn user_query(text: &str) -> Option<UserQuery> {
    axum::extract::Query::<UserQuery>::try_from_uri(&format!("/users?{text}").parse().ok()?)
        .ok()
        .map(|q| q.0)
}
