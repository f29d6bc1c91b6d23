//! `/audit`: the log of every directory change, newest first.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{AdminError, AdminState, ErrorBody, QueryOf, Result};
use crate::directory::AuditEntry;

pub(super) fn routes() -> Router<AdminState> {
    Router::new().route("/audit", get(audit))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct AuditQuery {
    /// How many entries, 1 to 1000 (100 by default).
    limit: Option<u32>,
    /// Only entries older than this id (the next page).
    before: Option<i64>,
    /// Only entries with this text in their actor, action or change (ignoring case).
    q: Option<String>,
}

#[utoipa::path(get, path = "/audit", tag = "audit",
    summary = "The audit log, newest first",
    params(AuditQuery),
    responses(
        (status = 200, description = "Entries, newest first", body = [AuditEntry]),
        (status = 400, description = "Bad query; `error` says what is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(super) async fn audit(
    State(admin): State<AdminState>,
    query: QueryOf<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let entries = admin
        .store()
        .audit_log(limit, query.before, query.q.as_deref())
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    Ok(Json(entries))
}
