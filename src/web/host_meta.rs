//! Discovery of the web endpoints (XEP-0156): `/.well-known/host-meta` (XRD) and
//! `/.well-known/host-meta.json` (JRD) name the WebSocket and BOSH URLs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Connection;
use crate::Shared;

const WEBSOCKET_REL: &str = "urn:xmpp:alt-connections:websocket";
const BOSH_REL: &str = "urn:xmpp:alt-connections:xbosh";

fn no_host() -> Response {
    super::refuse(StatusCode::BAD_REQUEST, "a valid Host header is required")
}

/// The advertised endpoints, as (rel, href).
fn links(
    shared: &Shared,
    connection: Connection,
    headers: &HeaderMap,
) -> Option<Vec<(&'static str, String)>> {
    let http = &shared.config.http;
    let (secure, authority) = if http.public_url.is_empty() {
        let client = super::web_client(shared, connection, headers);
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            })?;
        (client.tls, host.to_owned())
    } else {
        let url = http.public_url.trim_end_matches('/');
        match url.split_once("://") {
            Some((scheme, rest)) => (scheme.eq_ignore_ascii_case("https"), rest.to_owned()),
            None => (true, url.to_owned()),
        }
    };
    let (ws, web) = if secure {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    let mut links = Vec::new();
    if http.websocket {
        links.push((WEBSOCKET_REL, format!("{ws}://{authority}/xmpp-websocket")));
    }
    if http.bosh {
        links.push((BOSH_REL, format!("{web}://{authority}/http-bind")));
    }
    Some(links)
}

pub(super) async fn xrd(
    State(shared): State<Arc<Shared>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
) -> Response {
    let Some(links) = links(&shared, connection, &headers) else {
        return no_host();
    };
    let mut xrd = minidom::Element::builder("XRD", "http://docs.oasis-open.org/ns/xri/xrd-1.0");
    for (rel, href) in links {
        xrd = xrd.append(
            minidom::Element::builder("Link", "http://docs.oasis-open.org/ns/xri/xrd-1.0")
                .attr(crate::ns::name("rel"), rel)
                .attr(crate::ns::name("href"), href)
                .build(),
        );
    }
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n{}",
        String::from(&xrd.build())
    );
    (
        [(header::CONTENT_TYPE, "application/xrd+xml; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(super) async fn json(
    State(shared): State<Arc<Shared>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
) -> Response {
    let Some(links) = links(&shared, connection, &headers) else {
        return no_host();
    };
    let links: Vec<_> = links
        .into_iter()
        .map(|(rel, href)| serde_json::json!({ "rel": rel, "href": href }))
        .collect();
    Json(serde_json::json!({ "links": links })).into_response()
}
