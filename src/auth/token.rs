//! ENT single sign-on: a JSON Web Token (RFC 7519) that the ENT's back end signs for its
//! signed-in user, which the web client presents as the password of SASL PLAIN (the
//! convention of ejabberd's and Prosody's token authentication).
//!
//! The token names the user in `sub` (the directory's user id, the account's username), and
//! must carry `exp`, `iat`, `iss` and `aud` as configured. It proves who the user is, nothing
//! more: whether that user may chat is still the directory's to say, after SASL.

use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// ENT single sign-on (JWT, RFC 7519): the ENT's back end signs a short-lived token for its
/// signed-in user and the web client presents it as the password of SASL PLAIN.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    pub enabled: bool,
    /// `HS256` (a shared secret), `RS256` or `ES256` (the ENT's public key).
    pub algorithm: String,
    /// The shared secret of HS256, or the file that holds it (`secret_file` wins).
    pub secret: String,
    pub secret_file: Option<std::path::PathBuf>,
    /// PEM public key of RS256 or ES256.
    pub public_key_file: Option<std::path::PathBuf>,
    /// Required `iss` and `aud` claims.
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Longest lifetime (`exp` - `iat`) accepted, in seconds: the ENT must sign short-lived
    /// tokens.
    pub max_lifetime_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            algorithm: "HS256".into(),
            secret: String::new(),
            secret_file: None,
            public_key_file: None,
            issuer: String::new(),
            audience: String::new(),
            leeway_secs: 30,
            max_lifetime_secs: 24 * 3600,
        }
    }
}

/// Checks tokens against the ENT's key and the configured claims.
/// Longest token accepted, in bytes: real ones are well under 2 KB; anything longer is
/// refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    max_lifetime: u64,
    leeway: u64,
    /// Tokens already spent where a token may serve once (minting an app password), by a
    /// keyed hash, with their `exp`: forgotten once expired.
    spent: DashMap<u64, u64>,
    hasher: RandomState,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
}

/// Why a token is refused: each says so to the client, in a SASL failure's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefused {
    Expired,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    NotYetValid,
    TooLong,
    OtherUser,
    UnknownUser,
    Malformed,
    /// Already used where a token serves once.
    Spent,
}

impl std::fmt::Display for TokenRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for TokenRefused {}

impl TokenRefused {
    /// The SASL failure text (static: SASL failures carry `&'static str`).
    pub fn text(self) -> &'static str {
        match self {
            Self::Expired => "the sign-on token has expired; sign in to the ENT again",
            Self::BadSignature => "the sign-on token is not signed by this ENT",
            Self::WrongIssuer => "the sign-on token was issued by another ENT (wrong iss)",
            Self::WrongAudience => "the sign-on token is meant for another service (wrong aud)",
            Self::NotYetValid => "the sign-on token is not valid yet",
            Self::TooLong => "the sign-on token lives longer than this server accepts",
            Self::OtherUser => "the sign-on token was issued for another user",
            Self::UnknownUser => "the sign-on token names a user this server does not know",
            Self::Malformed => {
                "malformed sign-on token (a JWT with sub, exp, iat, iss and aud is expected)"
            }
            Self::Spent => "this sign-on token has been used already; sign in to the ENT again",
        }
    }
}

/// Whether a PLAIN password is a token rather than a password: three base64url parts, the
/// first a JSON header (`eyJ` is `{"` in base64). A password of that shape is not plausible.
pub fn looks_like_token(password: &str) -> bool {
    password.starts_with("eyJ")
        && password.bytes().filter(|b| *b == b'.').count() == 2
        && password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl TokenVerifier {
    /// The verifier the configuration asks for, or none when tokens are off.
    pub fn from_config(config: &TokenConfig) -> Result<Option<Self>, String> {
        if !config.enabled {
            return Ok(None);
        }
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err("auth.token needs issuer and audience".into());
        }
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let (algorithm, key) = match config.algorithm.as_str() {
            "HS256" => {
                let secret = match &config.secret_file {
                    Some(path) => read(path)?.trim_ascii_end().to_vec(),
                    None => config.secret.clone().into_bytes(),
                };
                if secret.len() < 32 {
                    return Err("auth.token: an HS256 secret needs at least 32 bytes".into());
                }
                (Algorithm::HS256, DecodingKey::from_secret(&secret))
            }
            name @ ("RS256" | "ES256") => {
                let path = config
                    .public_key_file
                    .as_deref()
                    .ok_or_else(|| format!("auth.token: {name} needs public_key_file"))?;
                let pem = read(path)?;
                let key = if name == "RS256" {
                    DecodingKey::from_rsa_pem(&pem)
                } else {
                    DecodingKey::from_ec_pem(&pem)
                }
                .map_err(|e| format!("auth.token: invalid public key: {e}"))?;
                let algorithm = if name == "RS256" {
                    Algorithm::RS256
                } else {
                    Algorithm::ES256
                };
                (algorithm, key)
            }
            other => {
                return Err(format!(
                    "auth.token.algorithm: {other:?} is not one of HS256, RS256, ES256"
                ));
            }
        };
        // Only the configured algorithm: a token may not choose how it is checked.
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.leeway = config.leeway_secs;
        validation.validate_nbf = true;
        Ok(Some(Self {
            key,
            validation,
            max_lifetime: config.max_lifetime_secs,
            leeway: config.leeway_secs,
            spent: DashMap::new(),
            hasher: RandomState::new(),
        }))
    }

    /// The user a token names, if it is valid now.
    pub fn verify(&self, token: &str) -> Result<String, TokenRefused> {
        self.verify_at(token, unix_now()).map(|claims| claims.sub)
    }

    /// The user a token names, if it is valid now and has not served here before: a token
    /// copied from a page cannot mint credentials twice, however long it lives.
    pub fn verify_once(&self, token: &str) -> Result<String, TokenRefused> {
        let now = unix_now();
        let claims = self.verify_at(token, now)?;
        let key = self.hasher.hash_one(token);
        match self.spent.entry(key) {
            dashmap::Entry::Occupied(_) => return Err(TokenRefused::Spent),
            dashmap::Entry::Vacant(entry) => {
                entry.insert(claims.exp.saturating_add(self.leeway));
            }
        }
        Ok(claims.sub)
    }

    /// Makes a spent token usable again.
    pub fn refund(&self, token: &str) {
        self.spent.remove(&self.hasher.hash_one(token));
    }

    /// Forgets the spent tokens that have expired (they are refused as expired anyway).
    pub fn purge(&self) {
        let now = unix_now();
        self.spent.retain(|_, exp| *exp >= now);
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenRefused> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRefused::Malformed);
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|err| {
                match err.kind() {
                    ErrorKind::ExpiredSignature => TokenRefused::Expired,
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                        TokenRefused::BadSignature
                    }
                    ErrorKind::InvalidIssuer => TokenRefused::WrongIssuer,
                    ErrorKind::InvalidAudience => TokenRefused::WrongAudience,
                    ErrorKind::ImmatureSignature => TokenRefused::NotYetValid,
                    _ => TokenRefused::Malformed,
                }
            })?;
        let claims = data.claims;
        // Issued in the future (beyond the skew), or living longer than allowed from now or
        // from its issue: a token dated ahead must not buy itself a longer life.
        if claims.iat > now.saturating_add(self.leeway) {
            return Err(TokenRefused::NotYetValid);
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime
            || claims.exp.saturating_sub(now) > self.max_lifetime
        {
            return Err(TokenRefused::TooLong);
        }
        Ok(claims)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "a shared secret of at least 32 bytes!";

    fn config() -> TokenConfig {
        TokenConfig {
            enabled: true,
            secret: SECRET.into(),
            issuer: "https://ent.example.fr".into(),
            audience: "causette".into(),
            ..TokenConfig::default()
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn claims(exp_in: i64) -> serde_json::Value {
        let now = now() as i64;
        serde_json::json!({
            "sub": "eleve1", "iat": now, "exp": now + exp_in,
            "iss": "https://ent.example.fr", "aud": "causette",
        })
    }

    #[test]
    fn valid_and_refused_tokens() {
        let verifier = TokenVerifier::from_config(&config()).unwrap().unwrap();
        let good = sign(claims(300), SECRET);
        assert!(looks_like_token(&good));
        assert_eq!(verifier.verify(&good), Ok("eleve1".into()));
        assert_eq!(
            verifier.verify(&sign(claims(-120), SECRET)),
            Err(TokenRefused::Expired)
        );
        assert_eq!(
            verifier.verify(&sign(claims(300), "another secret of at least 32 bytes")),
            Err(TokenRefused::BadSignature)
        );
        let mut wrong = claims(300);
        wrong["iss"] = "https://other.example.fr".into();
        assert_eq!(
            verifier.verify(&sign(wrong, SECRET)),
            Err(TokenRefused::WrongIssuer)
        );
        let mut wrong = claims(300);
        wrong["aud"] = "another".into();
        assert_eq!(
            verifier.verify(&sign(wrong, SECRET)),
            Err(TokenRefused::WrongAudience)
        );
        let mut wrong = claims(300);
        wrong.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            verifier.verify(&sign(wrong, SECRET)),
            Err(TokenRefused::Malformed)
        );
        assert_eq!(
            verifier.verify(&sign(claims(7 * 24 * 3600), SECRET)),
            Err(TokenRefused::TooLong)
        );
        // A token may not pick its algorithm ("none", or HS256 against a public key).
        let unsigned = format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none","typ":"JWT"}"#),
            base64_url(&claims(300).to_string())
        );
        assert!(verifier.verify(&unsigned).is_err());
        assert!(!looks_like_token("correct horse battery staple"));
    }

    /// Regression: a token dated in the future passed `max_lifetime_secs`, checked as
    /// `exp - iat` only; a huge token was decoded whatever its size.
    #[test]
    fn tokens_dated_ahead_or_too_large_are_refused() {
        let verifier = TokenVerifier::from_config(&config()).unwrap().unwrap();
        let now = now() as i64;
        let ahead = |iat_in: i64, exp_in: i64| {
            sign(
                serde_json::json!({
                    "sub": "eleve1", "iat": now + iat_in, "exp": now + exp_in,
                    "iss": "https://ent.example.fr", "aud": "causette",
                }),
                SECRET,
            )
        };
        // Issued a week ahead, living a day from then: eight days from now.
        assert_eq!(
            verifier.verify(&ahead(7 * 24 * 3600, 8 * 24 * 3600)),
            Err(TokenRefused::NotYetValid)
        );
        // Within the clock skew, fine.
        assert_eq!(verifier.verify(&ahead(10, 300)), Ok("eleve1".into()));
        let mut huge = claims(300);
        huge["padding"] = "x".repeat(MAX_TOKEN_BYTES).into();
        assert_eq!(
            verifier.verify(&sign(huge, SECRET)),
            Err(TokenRefused::Malformed)
        );
    }

    #[test]
    fn a_token_serves_once_where_it_must() {
        let verifier = TokenVerifier::from_config(&config()).unwrap().unwrap();
        let token = sign(claims(300), SECRET);
        assert_eq!(verifier.verify_once(&token), Ok("eleve1".into()));
        assert_eq!(verifier.verify_once(&token), Err(TokenRefused::Spent));
        // Logging in with it still works: only minting is once.
        assert_eq!(verifier.verify(&token), Ok("eleve1".into()));
        verifier.refund(&token);
        assert_eq!(verifier.verify_once(&token), Ok("eleve1".into()));
        verifier.purge();
        assert_eq!(verifier.spent.len(), 1);
    }

    fn base64_url(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    #[test]
    fn es256_with_the_ent_public_key() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("ent.pem");
        std::fs::write(&public, key.public_key_pem()).unwrap();
        let config = TokenConfig {
            algorithm: "ES256".into(),
            secret: String::new(),
            public_key_file: Some(public),
            ..config()
        };
        let verifier = TokenVerifier::from_config(&config).unwrap().unwrap();
        let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(300), &signing).unwrap();
        assert_eq!(verifier.verify(&token), Ok("eleve1".into()));
        // An HS256 token signed with the public key as a secret: the old algorithm confusion.
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(300),
            &EncodingKey::from_secret(key.public_key_pem().as_bytes()),
        )
        .unwrap();
        assert_eq!(verifier.verify(&confused), Err(TokenRefused::BadSignature));
    }

    #[test]
    fn configuration_is_checked() {
        let mut short = config();
        short.secret = "short".into();
        assert!(TokenVerifier::from_config(&short).is_err());
        let mut no_audience = config();
        no_audience.audience.clear();
        assert!(TokenVerifier::from_config(&no_audience).is_err());
        let mut unknown = config();
        unknown.algorithm = "none".into();
        assert!(TokenVerifier::from_config(&unknown).is_err());
        assert!(
            TokenVerifier::from_config(&TokenConfig::default())
                .unwrap()
                .is_none()
        );
    }
}
