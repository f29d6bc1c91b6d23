//! ENT sign-on tokens for the tests: the configuration the server gets and tokens signed the
//! way an ENT's back end signs them (HS256).

use causette::Config;

pub const SECRET: &str = "the ENT and Causette share this secret";
pub const ISSUER: &str = "https://ent.example.fr";
pub const AUDIENCE: &str = "causette";

pub fn configure(config: &mut Config) {
    let token = &mut config.auth.token;
    token.enabled = true;
    token.secret = SECRET.into();
    token.issuer = ISSUER.into();
    token.audience = AUDIENCE.into();
}

/// A token for `sub` expiring `expires_in` seconds from now (in the past if negative).
pub fn token(sub: &str, expires_in: i64, issuer: &str, audience: &str, secret: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({
        "sub": sub, "iat": now.min(now + expires_in) - 60, "exp": now + expires_in,
        "iss": issuer, "aud": audience,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A directory with one school and the student `eleve1`.
pub async fn school(server: &crate::common::TestServer) -> String {
    let token = server.server().admin_token().to_owned();
    let batch = "{\"op\":\"put_structure\",\"id\":\"0750001A\",\"name\":\"Collège Victor Hugo\"}\n\
                 {\"op\":\"put_user\",\"username\":\"eleve1\",\"display_name\":\"MARTIN Léa\",\"profile\":\"student\",\"structures\":[\"0750001A\"]}\n\
                 {\"op\":\"put_user\",\"username\":\"prof1\",\"display_name\":\"DURAND Paul\",\"profile\":\"teacher\",\"structures\":[\"0750001A\"]}\n";
    let (status, body) = crate::common::http(
        server.http,
        "POST",
        "/admin/api/v1/import",
        Some(&token),
        Some(batch),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    token
}
