//! `/structures`: schools and other structures, their chat access per profile and their
//! communication rules.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AdminError, AdminState, Body, ErrorBody, Result, profile_of};
use crate::directory::{DirectoryChange, Profile, Scope};
use crate::policy::directory::{DirectoryState, Structure as Indexed};

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
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
}

/// A structure (a school), with its classes, its chat access and its rules.
#[derive(Serialize, ToSchema)]
pub struct Structure {
    id: String,
    name: String,
    /// How many users belong to it.
    members: usize,
    /// Members with at least one session now.
    online: usize,
    classes: Vec<ClassSummary>,
    profiles: ProfileAccess,
    rules: Rules,
}

#[derive(Serialize, ToSchema)]
pub struct ClassSummary {
    id: String,
    name: String,
    /// How many users are in the class.
    members: usize,
}

/// Whether each profile has chat access in the structure (on unless turned off).
#[derive(Serialize, ToSchema)]
pub struct ProfileAccess {
    student: bool,
    teacher: bool,
    parent: bool,
    staff: bool,
    partner: bool,
}

/// How far each profile (first key) may reach each profile (second key) in the structure:
/// the cells the ENT set, the shipped matrix elsewhere.
#[derive(Serialize, ToSchema)]
pub struct Rules {
    student: RulesFrom,
    teacher: RulesFrom,
    parent: RulesFrom,
    staff: RulesFrom,
    partner: RulesFrom,
}

/// The scopes of one profile towards each profile.
#[derive(Serialize, ToSchema)]
pub struct RulesFrom {
    student: Scope,
    teacher: Scope,
    parent: Scope,
    staff: Scope,
    partner: Scope,
}

impl ProfileAccess {
    fn of(structure: &Indexed) -> Self {
        let enabled = |profile| structure.access.get(&profile).copied().unwrap_or(true);
        Self {
            student: enabled(Profile::Student),
            teacher: enabled(Profile::Teacher),
            parent: enabled(Profile::Parent),
            staff: enabled(Profile::Staff),
            partner: enabled(Profile::Partner),
        }
    }
}

impl RulesFrom {
    fn of(structure: &Indexed, from: Profile) -> Self {
        let scope = |to| {
            structure
                .rules
                .get(&(from, to))
                .copied()
                .unwrap_or_else(|| crate::policy::default_scope(from, to))
        };
        Self {
            student: scope(Profile::Student),
            teacher: scope(Profile::Teacher),
            parent: scope(Profile::Parent),
            staff: scope(Profile::Staff),
            partner: scope(Profile::Partner),
        }
    }
}

impl Rules {
    fn of(structure: &Indexed) -> Self {
        Self {
            student: RulesFrom::of(structure, Profile::Student),
            teacher: RulesFrom::of(structure, Profile::Teacher),
            parent: RulesFrom::of(structure, Profile::Parent),
            staff: RulesFrom::of(structure, Profile::Staff),
            partner: RulesFrom::of(structure, Profile::Partner),
        }
    }
}

fn indexed<'a>(state: &'a DirectoryState, id: &str) -> Result<&'a Indexed> {
    state
        .structures
        .get(id)
        .ok_or_else(|| AdminError::NotFound(format!("unknown structure {id:?}")))
}

/// How many members of each structure have a session now.
fn online_by_structure(admin: &AdminState, state: &DirectoryState) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for username in admin.online_users() {
        if let Some(user) = state.users.get(&username) {
            for structure in &user.structures {
                *counts.entry(structure.clone()).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn structure(
    state: &DirectoryState,
    id: &str,
    online: &HashMap<String, usize>,
) -> Result<Structure> {
    let indexed = indexed(state, id)?;
    let mut classes: Vec<ClassSummary> = state
        .classes
        .iter()
        .filter(|(_, c)| c.structure == id)
        .map(|(cid, c)| ClassSummary {
            id: cid.clone(),
            name: c.name.clone(),
            members: c.members.len(),
        })
        .collect();
    classes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Structure {
        id: id.to_owned(),
        name: indexed.name.clone(),
        members: indexed.members.len(),
        online: online.get(id).copied().unwrap_or(0),
        classes,
        profiles: ProfileAccess::of(indexed),
        rules: Rules::of(indexed),
    })
}

#[utoipa::path(get, path = "/structures", tag = "structures",
    summary = "Every structure, by id",
    responses(
        (status = 200, description = "The structures, by id", body = [Structure]),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(super) async fn list_structures(
    State(admin): State<AdminState>,
) -> Result<Json<Vec<Structure>>> {
    let state = admin.policy().snapshot();
    let online = online_by_structure(&admin, &state);
    let mut ids: Vec<&String> = state.structures.keys().collect();
    ids.sort();
    let list = ids
        .into_iter()
        .map(|id| structure(&state, id, &online))
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(list))
}

#[utoipa::path(get, path = "/structures/{id}", tag = "structures",
    summary = "One structure",
    params(("id" = String, Path, description = "The structure's id (its UAI, for a school)")),
    responses(
        (status = 200, description = "The structure", body = Structure),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
    ))]
pub(super) async fn get_structure(
    State(admin): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Structure>> {
    let state = admin.policy().snapshot();
    let online = online_by_structure(&admin, &state);
    Ok(Json(structure(&state, &id, &online)?))
}

/// A name.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    name: String,
}

#[utoipa::path(put, path = "/structures/{id}", tag = "structures",
    summary = "Create or rename a structure",
    params(("id" = String, Path, description = "The structure's id (its UAI, for a school)")),
    request_body = NameBody,
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Bad input; `error` says what is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(super) async fn put_structure(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body<NameBody>,
) -> Result<StatusCode> {
    let Json(body) = body?;
    let change = DirectoryChange::PutStructure {
        id,
        name: body.name,
    };
    admin.change(&headers, vec![change]).await
}

#[utoipa::path(delete, path = "/structures/{id}", tag = "structures",
    summary = "Delete a structure, its classes and its members' memberships",
    params(("id" = String, Path, description = "The structure's id")),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
    ))]
pub(super) async fn delete_structure(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    admin
        .change(&headers, vec![DirectoryChange::DeleteStructure { id }])
        .await
}

#[utoipa::path(get, path = "/structures/{id}/profiles", tag = "structures",
    summary = "Chat access per profile",
    params(("id" = String, Path, description = "The structure's id")),
    responses(
        (status = 200, description = "Whether each profile has chat access", body = ProfileAccess),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
    ))]
pub(super) async fn get_profiles(
    State(admin): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<ProfileAccess>> {
    let state = admin.policy().snapshot();
    Ok(Json(ProfileAccess::of(indexed(&state, &id)?)))
}

/// Whether a profile has chat access.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnabledBody {
    enabled: bool,
}

#[utoipa::path(put, path = "/structures/{id}/profiles/{profile}", tag = "structures",
    summary = "Turn chat access on or off for a profile",
    description = "Turning it off closes the sessions of the users who lose access, at once.",
    params(
        ("id" = String, Path, description = "The structure's id"),
        ("profile" = Profile, Path, description = "The profile"),
    ),
    request_body = EnabledBody,
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Bad input; `error` says what is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown id or profile", body = ErrorBody),
    ))]
pub(super) async fn put_profile(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path((id, profile)): Path<(String, String)>,
    body: Body<EnabledBody>,
) -> Result<StatusCode> {
    let profile = profile_of(&profile)?;
    let Json(body) = body?;
    let change = DirectoryChange::SetProfileAccess {
        structure: id,
        profile,
        enabled: body.enabled,
    };
    admin.change(&headers, vec![change]).await
}

#[utoipa::path(get, path = "/structures/{id}/rules", tag = "structures",
    summary = "The communication rules",
    params(("id" = String, Path, description = "The structure's id")),
    responses(
        (status = 200, description = "The scope of each profile towards each profile", body = Rules),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
    ))]
pub(super) async fn get_rules(
    State(admin): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Rules>> {
    let state = admin.policy().snapshot();
    Ok(Json(Rules::of(indexed(&state, &id)?)))
}

/// How far one profile may reach another.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    scope: Scope,
}

#[utoipa::path(put, path = "/structures/{id}/rules/{from}/{to}", tag = "structures",
    summary = "Set one cell of the communication rules",
    params(
        ("id" = String, Path, description = "The structure's id"),
        ("from" = Profile, Path, description = "The profile that writes"),
        ("to" = Profile, Path, description = "The profile written to"),
    ),
    request_body = ScopeBody,
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Bad input; `error` says what is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown id or profile", body = ErrorBody),
    ))]
pub(super) async fn put_rule(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Path((id, from, to)): Path<(String, String, String)>,
    body: Body<ScopeBody>,
) -> Result<StatusCode> {
    let (from, to) = (profile_of(&from)?, profile_of(&to)?);
    let Json(body) = body?;
    let change = DirectoryChange::SetRule {
        structure: id,
        from,
        to,
        scope: body.scope,
    };
    admin.change(&headers, vec![change]).await
}

#[cfg(feature = "fuzzing")]
pub(super) fn fuzz_bodies(bytes: &[u8]) {
    let _ = serde_json::from_slice::<NameBody>(bytes);
    let _ = serde_json::from_slice::<EnabledBody>(bytes);
    let _ = serde_json::from_slice::<ScopeBody>(bytes);
}
