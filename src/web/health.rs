//! What monitoring asks: `/healthz` (the process answers), `/readyz` (it can serve: listeners
//! up, store answering, not shutting down) and `/metrics` (OpenMetrics text).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Connection, web_client};
use crate::Shared;

/// Longer than this, the store counts as unreachable.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn healthz() -> Response {
    text(StatusCode::OK, "alive\n")
}

pub(super) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.shutdown.is_cancelled() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        );
    }
    if !shared.ready.load(Ordering::Acquire) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "not ready: starting\n");
    }
    match tokio::time::timeout(STORE_CHECK_TIMEOUT, shared.store.ping()).await {
        Ok(Ok(())) => text(StatusCode::OK, "ready\n"),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness check: the store fails");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the store fails\n",
            )
        }
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the store does not answer\n",
        ),
    }
}

pub(super) async fn metrics(
    State(shared): State<Arc<Shared>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
) -> Response {
    let client = web_client(&shared, connection, &headers);
    let allowed = shared
        .config
        .http
        .metrics_allowed
        .iter()
        .any(|net| net.contains(&client.ip));
    if !allowed && !crate::admin::bearer_matches(&shared, &headers) {
        return (
            StatusCode::FORBIDDEN,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "metrics are for http.metrics_allowed addresses or the admin token\n",
        )
            .into_response();
    }
    let metrics = &shared.metrics;
    metrics
        .negotiating
        .set(gauge(shared.admission.negotiating()));
    metrics.bound.set(gauge(shared.router.online_count()));
    metrics.bosh_sessions.set(gauge(shared.bosh.len()));
    metrics
        .rooms
        .set(gauge(shared.rooms.as_ref().map_or(0, |r| r.active_count())));
    metrics
        .certificate_not_after
        .set(shared.certificates.not_after().unwrap_or(0));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
