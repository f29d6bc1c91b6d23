//! Which pages may use the web endpoints: the ENT's origins (`http.allowed_origins`) and the
//! server's own. A browser asks first (CORS preflight) before it posts XML to BOSH; WebSocket
//! has no preflight, so its upgrade checks the origin itself (`origin_allowed`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Shared;

/// Whether the page that sent these headers may use the endpoints. A request without
/// `Origin` comes from no page (a desktop client, a tool): origins do not concern it.
pub(crate) fn origin_allowed(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if shared
        .config
        .http
        .allowed_origins
        .iter()
        .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // The server's own pages: the origin names the host the request was sent to.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = origin.split_once("://").map(|(_, authority)| authority);
    matches!((host, authority), (Some(host), Some(authority)) if host.eq_ignore_ascii_case(authority))
}

/// The refusal of a request from a page whose origin is not allowed, if it is one.
pub(crate) fn refuse_origin(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    (!origin_allowed(shared, headers)).then(|| {
        super::refuse(
            StatusCode::FORBIDDEN,
            "this page's origin is not allowed to use this server (http.allowed_origins)",
        )
    })
}

/// Answers preflight requests and marks the answers an allowed page may read. Discovery
/// (`/.well-known/`) is public: any page may read it.
pub(super) async fn layer(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let public = request.uri().path().starts_with("/.well-known/");
    let allowed = public || origin_allowed(&shared, request.headers());
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let Some(origin) = origin.filter(|_| allowed) else {
        return response;
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Authorization"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    response
}
