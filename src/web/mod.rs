//! The HTTP front: the listeners (plain or TLS, bounded per address), and the routes of the
//! web client beside the admin API: XMPP over WebSocket (`/xmpp-websocket`), over BOSH
//! (`/http-bind`), their discovery (`/.well-known/host-meta`, XEP-0156), and CORS for the
//! ENT's pages.
//!
//! The links themselves are the stream layer's (`stream::websocket`, `stream::bosh`): this
//! module only says who the client is (its address and whether it came over TLS, from a
//! trusted proxy's headers when there is one) and whether its page may talk to us.

mod app_password;
pub(crate) mod cors;
mod health;
mod host_meta;
mod listener;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::Shared;
use crate::metrics::Transport;
use crate::stream::websocket::WebClient;

pub(crate) use listener::serve;

/// What the listener knows of a connection, handed to every request on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Connection {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Every HTTP route: the web client's and the admin API's.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let http = &shared.config.http;
    let mut web = Router::new()
        .route("/api/v1/app-password", post(app_password::create))
        .route("/.well-known/host-meta", get(host_meta::xrd))
        .route("/.well-known/host-meta.json", get(host_meta::json));
    if http.websocket {
        web = web.route("/xmpp-websocket", get(websocket));
    }
    if http.bosh {
        web = web.route("/http-bind", post(bosh));
    }
    // Monitoring is not for pages: outside the CORS layer.
    let mut monitoring = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    if http.metrics {
        monitoring = monitoring.route("/metrics", get(health::metrics));
    }
    web.layer(axum::middleware::from_fn_with_state(
        shared.clone(),
        cors::layer,
    ))
    .merge(monitoring)
    .with_state(shared.clone())
    .merge(crate::admin::router(shared))
}

/// Who the client is: behind a trusted reverse proxy, the address and scheme it forwarded.
fn web_client(shared: &Shared, connection: Connection, headers: &HeaderMap) -> WebClient {
    let peer = connection.peer.ip();
    let trusted = shared
        .config
        .http
        .trusted_proxies
        .iter()
        .any(|net| net.contains(&peer));
    if !trusted {
        return WebClient {
            ip: peer,
            tls: connection.tls,
        };
    }
    // The proxy appends the address it saw: the last entry is the one it vouches for.
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    WebClient {
        ip: forwarded.unwrap_or(peer),
        tls: connection.tls || https,
    }
}

/// A plain-text refusal for the HTTP layer.
fn refuse(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

/// `/xmpp-websocket`: the upgrade to XMPP over WebSocket (RFC 7395).
async fn websocket(
    State(shared): State<Arc<Shared>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = cors::refuse_origin(&shared, connection, &headers) {
        return refused;
    }
    let upgrade = upgrade.protocols(["xmpp"]);
    if upgrade.selected_protocol().is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "ask for the xmpp WebSocket subprotocol (RFC 7395 §3.1)",
        );
    }
    let client = web_client(&shared, connection, &headers);
    let logging_in = match shared.admission.admit(client.ip) {
        Ok(logging_in) => {
            // A whole HTTP request came: no newcomer takes its place.
            logging_in.progressed();
            logging_in
        }
        Err(refusal) => {
            shared.metrics.refused(refusal.limit());
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections logging in; try again shortly",
            );
        }
    };
    let Ok(slot) = shared.connection_slots.clone().try_acquire_owned() else {
        shared.metrics.refused("max_connections");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server has as many connections as it takes",
        );
    };
    let limits = &shared.config.limits;
    // One message is one stanza: the frame and message limits are the stanza limit. The read
    // buffer grows for a large message and starts small, since every idle session keeps it.
    let max_message = limits.max_stanza_size;
    let tracked = shared.tasks.token();
    upgrade
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            let open = shared.metrics.connection(Transport::WebSocket);
            crate::stream::websocket::serve(
                socket,
                client,
                logging_in,
                shared,
                (slot, tracked, open),
            )
        })
}

/// `/http-bind`: one BOSH request (XEP-0124, XEP-0206). Every answer is `200 OK` with a body,
/// terminal conditions included (XEP-0124 §17), but for a body over the size limit.
async fn bosh(
    State(shared): State<Arc<Shared>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = cors::refuse_origin(&shared, connection, &headers) {
        return refused;
    }
    let limit = shared.config.http.max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(err) if listener::is_too_slow(&err) => {
            let answer = crate::stream::bosh::terminal("policy-violation", &err.to_string());
            return (StatusCode::REQUEST_TIMEOUT, xml(answer)).into_response();
        }
        Err(_) => {
            let text = format!("the request body is larger than {limit} bytes");
            let answer = crate::stream::bosh::terminal("policy-violation", &text);
            return (StatusCode::PAYLOAD_TOO_LARGE, xml(answer)).into_response();
        }
    };
    let client = web_client(&shared, connection, &headers);
    let answer = crate::stream::bosh::request(&shared, client, &bytes).await;
    xml(answer).into_response()
}

fn xml(body: Arc<[u8]>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        Bytes::from_owner(body),
    )
}
