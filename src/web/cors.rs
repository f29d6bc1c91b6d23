//! Which pages may use the web endpoints: the ENT's origins (`http.allowed_origins`) and the
//! server's own. A browser asks first (CORS preflight) before it posts XML to BOSH; WebSocket
//! has no preflight, so its upgrade checks the origin itself (`origin_allowed`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Connection;
use crate::Shared;

/// Origins remembered as refused and logged, at most: past it the memory starts again.
const REFUSED_ORIGINS_KEPT: usize = 1024;
/// How often one refused origin is logged.
const REFUSED_ORIGIN_LOG_EVERY: Duration = Duration::from_secs(60);

/// The refused origins and when each was last logged: an integrator whose page is refused
/// finds why in the log, once a minute per origin, however many requests it makes.
#[derive(Default)]
pub(crate) struct RefusedOrigins {
    logged: DashMap<String, Instant>,
}

impl RefusedOrigins {
    fn note(&self, origin: &str) {
        let now = Instant::now();
        if let Some(last) = self.logged.get(origin)
            && now.duration_since(*last) < REFUSED_ORIGIN_LOG_EVERY
        {
            return;
        }
        if self.logged.len() >= REFUSED_ORIGINS_KEPT {
            self.logged.clear();
        }
        self.logged.insert(origin.to_owned(), now);
        tracing::warn!(
            origin,
            "a page of this origin was refused: add it to http.allowed_origins if it is the ENT's"
        );
    }
}

/// Whether the page that sent these headers may use the endpoints. A request without
/// `Origin` comes from no page (a desktop client, a tool): origins do not concern it. An
/// origin is its scheme, host and port: the server's own pages are those of the scheme and
/// host the request came by.
pub(crate) fn origin_allowed(shared: &Shared, connection: Connection, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        shared.refused_origins.note("(not text)");
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
    let scheme = if super::web_client(shared, connection, headers).tls {
        "https"
    } else {
        "http"
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let own = origin
        .split_once("://")
        .is_some_and(|(their_scheme, authority)| {
            their_scheme.eq_ignore_ascii_case(scheme)
                && host.is_some_and(|host| host.eq_ignore_ascii_case(authority))
        });
    if !own {
        shared.refused_origins.note(origin);
    }
    own
}

/// The refusal of a request from a page whose origin is not allowed, if it is one.
pub(crate) fn refuse_origin(
    shared: &Shared,
    connection: Connection,
    headers: &HeaderMap,
) -> Option<Response> {
    (!origin_allowed(shared, connection, headers)).then(|| {
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
    let connection = request.extensions().get::<Connection>().copied();
    let allowed = public
        || connection
            .is_some_and(|connection| origin_allowed(&shared, connection, request.headers()));
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
