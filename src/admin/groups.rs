//! `/groups`: ENT groups (groupes ENT) and their members; a group widens who may write to whom.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AdminError, AdminState, Body, ErrorBody, Result};
use crate::directory::DirectoryChange;

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/groups", get(list_groups))
        .route(
            "/groups/{id}",
            get(get_group).put(put_group).delete(delete_group),
        )
        .route(
            "/groups/{id}/members/{username}",
            put(add_group_member).delete(remove_group_member),
        )
}

/// An ENT group: its members may write to each other whatever the matrix says.
#[derive(Serialize, ToSchema)]
pub struct Group {
    id: String,
    name: String,
    /// Usernames, in order.
    members: Vec<String>,
}

/// A group as listed: its size, not its members.
#[derive(Serialize, ToSchema)]
pub struct GroupSummary {
    id: String,
    name: String,
    members: usize,
}

#[utoipa::path(get, path = "/groups", tag = "groups",
    summary = "Every ENT group, by id",
    responses(
        (status = 200, description = "The groups, by id", body = [GroupSummary]),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(super) async fn list_groups(State(admin): State<AdminState>) -> Json<Vec<GroupSummary>> {
    let state = admin.policy().snapshot();
    let mut groups: Vec<GroupSummary> = state
        .groups
        .iter()
        .map(|(id, group)| GroupSummary {
            id: id.clone(),
            name: group.name.clone(),
            members: group.members.len(),
        })
        .collect();
    groups.sort_by(|a, b| a.id.cmp(&b.id));
    Json(groups)
}

#[utoipa::path(get, path = "/groups/{id}", tag = "groups",
    summary = "One group",
    params(("id" = String, Path, description = "The group's id")),
    responses(
        (status = 200, description = "The group", body = Group),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
    ))]
pub(super) async fn get_group(
    State(admin): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Group>> {
    let state = admin.policy().snapshot();
    let group = state
        .groups
        .get(&id)
        .ok_or_else(|| AdminError::NotFound(format!("unknown group {id:?}")))?;
    Ok(Json(Group {
        name: group.name.clone(),
        members: group.members.iter().cloned().collect(),
        id,
    }))
}

/// A group as the ENT provisions it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    name: String,
    /// Replaces the members, when given.
    #[serde(default)]
    members: Option<Vec<String>>,
}

#[utoipa::path(put, path = "/groups/{id}", tag = "groups",
    summary = "Create or replace a group",
    params(("id" = String, Path, description = "The group's id")),
    request_body = GroupBody,
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Bad input; `error` says what is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown member", body = ErrorBody),
    ))]
pub(super) async fn put_group(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body<GroupBody>,
) -> Result<StatusCode> {
    let Json(body) = body?;
    let change = DirectoryChange::PutGroup {
        id,
        name: body.name,
        members: body.members,
    };
    admin.change(&headers, vec![change]).await
}

#[utoipa::path(delete, path = "/groups/{id}", tag = "groups",
    summary = "Delete a group",
    params(("id" = String, Path, description = "The group's id")),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
    ))]
pub(super) async fn delete_group(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    admin
        .change(&headers, vec![DirectoryChange::DeleteGroup { id }])
        .await
}

#[utoipa::path(put, path = "/groups/{id}/members/{username}", tag = "groups",
    summary = "Add a member to a group",
    params(
        ("id" = String, Path, description = "The group's id"),
        ("username" = String, Path, description = "The JID localpart, lowercase"),
    ),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown group or user", body = ErrorBody),
    ))]
pub(super) async fn add_group_member(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path((group, username)): Path<(String, String)>,
) -> Result<StatusCode> {
    let change = DirectoryChange::AddGroupMember { group, username };
    admin.change(&headers, vec![change]).await
}

#[utoipa::path(delete, path = "/groups/{id}/members/{username}", tag = "groups",
    summary = "Remove a member from a group",
    params(
        ("id" = String, Path, description = "The group's id"),
        ("username" = String, Path, description = "The JID localpart, lowercase"),
    ),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown group or user", body = ErrorBody),
    ))]
pub(super) async fn remove_group_member(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path((group, username)): Path<(String, String)>,
) -> Result<StatusCode> {
    let change = DirectoryChange::RemoveGroupMember { group, username };
    admin.change(&headers, vec![change]).await
}

#[cfg(feature = "fuzzing")]
pub(super) fn fuzz_bodies(bytes: &[u8]) {
    let _ = serde_json::from_slice::<GroupBody>(bytes);
}
