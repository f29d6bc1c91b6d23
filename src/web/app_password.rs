//! App passwords: how users of desktop and mobile clients get credentials when the ENT signs
//! them in with tokens. A signed-in user's page (or the ENT's back end on their behalf) posts
//! their sign-on token to `/api/v1/app-password`; the server makes a new random password,
//! stores it as SCRAM (like every password), and shows it once. A new one replaces the old.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;

use super::Connection;
use crate::Shared;

/// Characters of an app password: no look-alikes (0/O, 1/l/I), easy to type on a phone.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

fn error(status: StatusCode, text: &str) -> Response {
    (status, Json(serde_json::json!({ "error": text }))).into_response()
}

fn new_password() -> String {
    let mut rng = rand::thread_rng();
    let groups: Vec<String> = (0..4)
        .map(|_| {
            (0..5)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        })
        .collect();
    groups.join("-")
}

pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
) -> Response {
    if !super::cors::origin_allowed(&shared, connection, &headers) {
        return error(StatusCode::FORBIDDEN, "this page's origin is not allowed");
    }
    // A token goes in, a password comes out: neither crosses the network in clear.
    let client = super::web_client(&shared, connection, &headers);
    if !client.security(&shared).transport.secure {
        return error(StatusCode::FORBIDDEN, "use HTTPS");
    }
    if !shared.auth.tokens_enabled() {
        return error(
            StatusCode::NOT_FOUND,
            "app passwords need ENT sign-on tokens (auth.token)",
        );
    }
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "send the ENT sign-on token as Authorization: Bearer <token>",
        );
    };
    let token = token.trim();
    if token.len() > crate::auth::token::MAX_TOKEN_BYTES {
        return error(StatusCode::UNAUTHORIZED, "the sign-on token is too long");
    }
    let username = match shared.auth.verify_token(token) {
        Ok(username) => username,
        Err(refused) => return error(StatusCode::UNAUTHORIZED, refused.text()),
    };
    if let Err(reason) = shared.policy.login_allowed(&username) {
        return error(StatusCode::FORBIDDEN, reason.english());
    }
    // Hashing a password costs CPU: one user may not ask for many in a row.
    if !shared.writes.try_spend(&username) {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many changes in the last minute; try again later",
        );
    }
    // A token mints one app password: one copied from a page or a log cannot mint more.
    // Spent only now, so that a refused request leaves it usable.
    if let Err(refused) = shared.auth.verify_token_once(token) {
        return error(StatusCode::UNAUTHORIZED, refused.text());
    }
    let password = new_password();
    let iterations = shared.config.auth.scram_iterations;
    let stored =
        crate::accounts::set_password(&shared.store, &username, password.clone(), iterations).await;
    if stored.is_err() {
        shared.auth.refund_token(token);
    }
    match stored {
        Ok(_) => {
            tracing::info!(user = %username, "app password set");
            let jid = format!("{username}@{}", shared.config.domain);
            (
                StatusCode::CREATED,
                [(header::CACHE_CONTROL, "no-store")],
                Json(serde_json::json!({ "jid": jid, "password": password })),
            )
                .into_response()
        }
        Err(crate::accounts::Error::NotFound(_)) => error(
            StatusCode::NOT_FOUND,
            "the sign-on token names a user this server does not know",
        ),
        Err(err) => {
            tracing::error!(error = %err, "cannot store an app password");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the password could not be stored",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn app_passwords_are_long_and_unambiguous() {
        let password = super::new_password();
        assert_eq!(password.len(), 23, "{password}");
        assert!(
            password
                .bytes()
                .all(|b| b == b'-' || super::ALPHABET.contains(&b))
        );
        assert_ne!(password, super::new_password());
    }
}
