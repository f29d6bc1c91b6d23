//! `/classes`: classes and their members.

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
        .route(
            "/classes/{id}",
            get(get_class).put(put_class).delete(delete_class),
        )
        .route(
            "/classes/{id}/members/{username}",
            put(add_class_member).delete(remove_class_member),
        )
}

/// A class of a structure.
#[derive(Serialize, ToSchema)]
pub struct Class {
    id: String,
    structure: String,
    name: String,
    /// Usernames, in order.
    members: Vec<String>,
}

#[utoipa::path(get, path = "/classes/{id}", tag = "classes",
    summary = "One class",
    params(("id" = String, Path, description = "The class's id")),
    responses(
        (status = 200, description = "The class", body = Class),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
    ))]
pub(super) async fn get_class(
    State(admin): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Class>> {
    let state = admin.policy().snapshot();
    let class = state
        .classes
        .get(&id)
        .ok_or_else(|| AdminError::NotFound(format!("unknown class {id:?}")))?;
    Ok(Json(Class {
        structure: class.structure.clone(),
        name: class.name.clone(),
        members: class.members.iter().cloned().collect(),
        id,
    }))
}

/// A class as the ENT provisions it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassBody {
    structure: String,
    name: String,
    /// Replaces the members, when given.
    #[serde(default)]
    members: Option<Vec<String>>,
}

#[utoipa::path(put, path = "/classes/{id}", tag = "classes",
    summary = "Create or replace a class",
    params(("id" = String, Path, description = "The class's id")),
    request_body = ClassBody,
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Bad input; `error` says what is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown structure or member", body = ErrorBody),
    ))]
pub(super) async fn put_class(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body<ClassBody>,
) -> Result<StatusCode> {
    let Json(body) = body?;
    let change = DirectoryChange::PutClass {
        id,
        structure: body.structure,
        name: body.name,
        members: body.members,
    };
    admin.change(&headers, vec![change]).await
}

#[utoipa::path(delete, path = "/classes/{id}", tag = "classes",
    summary = "Delete a class",
    params(("id" = String, Path, description = "The class's id")),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
    ))]
pub(super) async fn delete_class(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    admin
        .change(&headers, vec![DirectoryChange::DeleteClass { id }])
        .await
}

#[utoipa::path(put, path = "/classes/{id}/members/{username}", tag = "classes",
    summary = "Add a member to a class",
    params(
        ("id" = String, Path, description = "The class's id"),
        ("username" = String, Path, description = "The JID localpart, lowercase"),
    ),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown class or user", body = ErrorBody),
    ))]
pub(super) async fn add_class_member(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path((class, username)): Path<(String, String)>,
) -> Result<StatusCode> {
    let change = DirectoryChange::AddClassMember { class, username };
    admin.change(&headers, vec![change]).await
}

#[utoipa::path(delete, path = "/classes/{id}/members/{username}", tag = "classes",
    summary = "Remove a member from a class",
    params(
        ("id" = String, Path, description = "The class's id"),
        ("username" = String, Path, description = "The JID localpart, lowercase"),
    ),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown class or user", body = ErrorBody),
    ))]
pub(super) async fn remove_class_member(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path((class, username)): Path<(String, String)>,
) -> Result<StatusCode> {
    let change = DirectoryChange::RemoveClassMember { class, username };
    admin.change(&headers, vec![change]).await
}

#[cfg(feature = "fuzzing")]
pub(super) fn fuzz_bodies(bytes: &[u8]) {
    let _ = serde_json::from_slice::<ClassBody>(bytes);
}
