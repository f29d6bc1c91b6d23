//! SASL (RFC 6120 §6) on the server side, with rsasl: SCRAM-SHA-256(-PLUS), SCRAM-SHA-1(-PLUS)
//! and PLAIN, checked against stored SCRAM credentials.
//!
//! rsasl is synchronous and asks for credentials from inside its callback, so each step runs
//! on the blocking pool, behind a semaphore so that logins (PLAIN hashes the password) cannot
//! starve message delivery; the callback fetches credentials with `Handle::block_on`, which is
//! allowed on blocking-pool threads.

pub mod scram;
pub mod throttle;
pub mod token;

use std::io::Cursor;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::prelude::{
    ChannelBindingCallback, Mechanism, Mechname, Registry, SASLConfig, SASLServer, SessionError,
    State,
};
use rsasl::property::{AuthId, AuthzId, Password};
use rsasl::validate::{Validate, Validation, ValidationError};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use xmpp_parsers::sasl::DefinedCondition;

use crate::storage::{DynStore, ScramHash};
use throttle::{Throttle, Throttled};
use token::{TokenRefused, TokenVerifier};

/// The channel-binding type offered with the -PLUS mechanisms (RFC 9266), and its exporter label.
pub const CHANNEL_BINDING_TYPE: &str = "tls-exporter";
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

// Order of preference, as advertised (RFC 6120 §6.3.3).
static WITH_CHANNEL_BINDING: [Mechanism; 5] = [
    rsasl::mechanisms::scram::SCRAM_SHA256_PLUS,
    rsasl::mechanisms::scram::SCRAM_SHA1_PLUS,
    rsasl::mechanisms::scram::SCRAM_SHA256,
    rsasl::mechanisms::scram::SCRAM_SHA1,
    rsasl::mechanisms::plain::PLAIN,
];
static WITHOUT_CHANNEL_BINDING: [Mechanism; 3] = [
    rsasl::mechanisms::scram::SCRAM_SHA256,
    rsasl::mechanisms::scram::SCRAM_SHA1,
    rsasl::mechanisms::plain::PLAIN,
];

/// A SASL failure: the RFC 6120 §6.5 condition and a text for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub condition: DefinedCondition,
    pub text: &'static str,
}

impl Failure {
    const fn new(condition: DefinedCondition, text: &'static str) -> Self {
        Self { condition, text }
    }
}

pub enum Step {
    Challenge(Vec<u8>),
    Success {
        username: String,
        additional_data: Vec<u8>,
    },
    Failure(Failure),
}

/// What the connection knows about its transport when SASL starts.
pub struct Transport {
    pub peer_ip: IpAddr,
    /// RFC 9266 channel-binding data, when the TLS session can give it (TLS 1.3).
    pub tls_exporter: Option<Box<[u8]>>,
    /// PLAIN and the others are refused unless the stream is encrypted or plaintext is allowed.
    pub secure: bool,
}

pub struct Authenticator {
    store: DynStore,
    domain: Arc<str>,
    throttle: Arc<Throttle>,
    workers: Semaphore,
    /// ENT sign-on tokens, accepted as PLAIN passwords when configured.
    tokens: Option<Arc<TokenVerifier>>,
}

/// The validated identity: the normalised localpart.
struct Login;
impl Validation for Login {
    type Value = String;
}

struct ExporterBinding(Option<Box<[u8]>>);
impl ChannelBindingCallback for ExporterBinding {
    fn get_cb_data(&self, cbname: &str) -> Option<&[u8]> {
        match &self.0 {
            Some(data) if cbname == CHANNEL_BINDING_TYPE => Some(data),
            _ => None,
        }
    }
}

/// One login's callback: it remembers which account was tried, for throttling, and checks
/// nothing for an account that must wait (see `throttle`).
struct LoginCallback {
    store: DynStore,
    domain: Arc<str>,
    runtime: Handle,
    attempted: Arc<Mutex<Option<String>>>,
    throttle: Arc<Throttle>,
    peer_ip: IpAddr,
    tokens: Option<Arc<TokenVerifier>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the account store could not be read")]
struct StoreUnavailable;

impl LoginCallback {
    fn note_attempt(&self, authid: &str) -> Option<String> {
        let username = normalise_username(authid)?;
        if let Ok(mut slot) = self.attempted.lock() {
            *slot = Some(username.clone());
        }
        Some(username)
    }
}

fn hash_of(mechanism: &str) -> ScramHash {
    if mechanism.starts_with("SCRAM-SHA-1") {
        ScramHash::Sha1
    } else {
        ScramHash::Sha256
    }
}

/// The localpart as stored: nodeprep (RFC 6122) through the jid crate.
pub fn normalise_username(authid: &str) -> Option<String> {
    jid::NodePart::new(authid).ok().map(|n| n.to_string())
}

impl LoginCallback {
    /// A sign-on token instead of a password: valid, for this user, who has an account.
    fn check_token(
        &self,
        tokens: &TokenVerifier,
        token: &str,
        username: &str,
    ) -> Result<(), ValidationError> {
        let refused = |refused: TokenRefused| ValidationError::Boxed(Box::new(refused));
        let subject = tokens.verify(token).map_err(refused)?;
        if normalise_username(&subject).as_deref() != Some(username) {
            return Err(refused(TokenRefused::OtherUser));
        }
        // The signature vouches for the name only: the account must exist here too.
        match self.runtime.block_on(self.store.user_exists(username)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(refused(TokenRefused::UnknownUser)),
            Err(_) => Err(ValidationError::Boxed(Box::new(StoreUnavailable))),
        }
    }
}

impl SessionCallback for LoginCallback {
    fn callback(
        &self,
        session_data: &SessionData,
        context: &Context,
        request: &mut Request,
    ) -> Result<(), SessionError> {
        if !request.is::<ScramStoredPassword>() {
            return Ok(());
        }
        let Some(username) = context
            .get_ref::<AuthId>()
            .and_then(|a| self.note_attempt(a))
        else {
            // Unknown or malformed user: rsasl goes on with made-up parameters, so the client
            // cannot tell whether the account exists.
            return Ok(());
        };
        self.throttle
            .check(Some(&username), self.peer_ip)
            .map_err(|throttled| SessionError::Boxed(Box::new(throttled)))?;
        let hash = hash_of(session_data.mechanism().mechanism.as_str());
        let credential = self
            .runtime
            .block_on(self.store.credential(&username, hash))
            .map_err(|_| SessionError::Boxed(Box::new(StoreUnavailable)))?;
        if let Some(c) = credential {
            request.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(
                c.iterations,
                &c.salt,
                &c.stored_key,
                &c.server_key,
            ))?;
        }
        Ok(())
    }

    fn validate(
        &self,
        session_data: &SessionData,
        context: &Context,
        validate: &mut Validate<'_>,
    ) -> Result<(), ValidationError> {
        let Some(authid) = context.get_ref::<AuthId>() else {
            return Ok(());
        };
        let Some(username) = self.note_attempt(authid) else {
            return Ok(());
        };
        // We only log users in as themselves: an authorization identity, if any, must name
        // the same account (RFC 6120 §6.3.8).
        if let Some(authzid) = context.get_ref::<AuthzId>().filter(|z| !z.is_empty()) {
            let own_jid = jid::BareJid::new(authzid).ok().is_some_and(|j| {
                j.node().map(|n| n.as_str()) == Some(username.as_str())
                    && j.domain().as_str() == &*self.domain
            });
            if !own_jid {
                return Ok(());
            }
        }
        if session_data.mechanism().mechanism.as_str() == "PLAIN" {
            self.throttle
                .check(Some(&username), self.peer_ip)
                .map_err(|throttled| ValidationError::Boxed(Box::new(throttled)))?;
            let Some(password) = context
                .get_ref::<Password>()
                .and_then(|p| std::str::from_utf8(p).ok())
            else {
                return Ok(());
            };
            if let Some(tokens) = &self.tokens
                && token::looks_like_token(password)
            {
                self.check_token(tokens, password, &username)?;
                validate.with::<Login, _>(|| Ok(username))?;
                return Ok(());
            }
            let credential = self
                .runtime
                .block_on(self.store.credential(&username, ScramHash::Sha256))
                .map_err(|_| ValidationError::Boxed(Box::new(StoreUnavailable)))?;
            if !credential.is_some_and(|c| scram::verify(password, &c)) {
                return Ok(());
            }
        }
        // SCRAM calls validate only once the client proof has been verified.
        validate.with::<Login, _>(|| Ok(username))?;
        Ok(())
    }
}

/// One SASL exchange on one stream.
pub struct Exchange {
    session: Option<rsasl::prelude::Session<Login, ExporterBinding>>,
    attempted: Arc<Mutex<Option<String>>>,
    peer_ip: IpAddr,
    /// The client sent no initial response: the next `<response/>` is the first message.
    pub awaiting_initial_response: bool,
    scram: bool,
    /// Client messages fed to the exchange so far.
    messages: u8,
}

impl Exchange {
    /// The account the client tried to log in as, once it said (for the logs).
    pub fn attempted_user(&self) -> Option<String> {
        self.attempted.lock().ok().and_then(|slot| slot.clone())
    }
}

impl Authenticator {
    pub fn new(
        store: DynStore,
        domain: &str,
        throttle: Throttle,
        workers: usize,
        tokens: Option<TokenVerifier>,
    ) -> Self {
        Self {
            store,
            domain: Arc::from(domain),
            throttle: Arc::new(throttle),
            workers: Semaphore::new(workers.max(1)),
            tokens: tokens.map(Arc::new),
        }
    }

    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The user an ENT sign-on token names, when tokens are configured and it is valid.
    pub fn verify_token(&self, token: &str) -> Result<String, TokenRefused> {
        let tokens = self.tokens.as_deref().ok_or(TokenRefused::Malformed)?;
        let subject = tokens.verify(token)?;
        normalise_username(&subject).ok_or(TokenRefused::UnknownUser)
    }

    /// The same, for a token that may serve once (minting an app password).
    pub fn verify_token_once(&self, token: &str) -> Result<String, TokenRefused> {
        let tokens = self.tokens.as_deref().ok_or(TokenRefused::Malformed)?;
        let subject = tokens.verify_once(token)?;
        normalise_username(&subject).ok_or(TokenRefused::UnknownUser)
    }

    /// Makes a token spent by `verify_token_once` usable again (what it was to do failed).
    pub fn refund_token(&self, token: &str) {
        if let Some(tokens) = &self.tokens {
            tokens.refund(token);
        }
    }

    /// Forgets what the token verifier remembers of expired tokens.
    pub fn purge_tokens(&self) {
        if let Some(tokens) = &self.tokens {
            tokens.purge();
        }
    }

    /// Whether ENT sign-on tokens are accepted.
    pub fn tokens_enabled(&self) -> bool {
        self.tokens.is_some()
    }

    /// Mechanism names to advertise, most preferred first.
    pub fn mechanisms(transport: &Transport) -> Vec<&'static str> {
        let list: &[Mechanism] = if transport.tls_exporter.is_some() {
            &WITH_CHANNEL_BINDING
        } else {
            &WITHOUT_CHANNEL_BINDING
        };
        list.iter()
            .map(|m| m.mechanism.as_str())
            .filter(|name| transport.secure || *name != "PLAIN")
            .collect()
    }

    pub fn start(&self, mechanism: &str, transport: &Transport) -> Result<Exchange, Failure> {
        if !Self::mechanisms(transport).contains(&mechanism) {
            return Err(if mechanism == "PLAIN" {
                Failure::new(
                    DefinedCondition::EncryptionRequired,
                    "PLAIN is only allowed over TLS",
                )
            } else {
                Failure::new(
                    DefinedCondition::InvalidMechanism,
                    "this mechanism is not offered",
                )
            });
        }
        let registry = Registry::with_mechanisms(if transport.tls_exporter.is_some() {
            &WITH_CHANNEL_BINDING
        } else {
            &WITHOUT_CHANNEL_BINDING
        });
        let attempted = Arc::new(Mutex::new(None));
        let callback = LoginCallback {
            store: self.store.clone(),
            domain: self.domain.clone(),
            runtime: Handle::current(),
            attempted: attempted.clone(),
            throttle: self.throttle.clone(),
            peer_ip: transport.peer_ip,
            tokens: self.tokens.clone(),
        };
        let internal = || Failure::new(DefinedCondition::TemporaryAuthFailure, "internal error");
        let config = SASLConfig::builder()
            .with_registry(registry)
            .with_callback(callback)
            .map_err(|_| internal())?;
        let name = Mechname::parse(mechanism.as_bytes()).map_err(|_| internal())?;
        let session = SASLServer::<Login, _>::with_cb(
            config,
            ExporterBinding(transport.tls_exporter.clone()),
        )
        .start_suggested(name)
        .map_err(|_| internal())?;
        Ok(Exchange {
            session: Some(session),
            attempted,
            peer_ip: transport.peer_ip,
            awaiting_initial_response: false,
            scram: mechanism.starts_with("SCRAM-"),
            messages: 0,
        })
    }

    /// Feeds one client message to the exchange.
    pub async fn step(&self, exchange: &mut Exchange, input: Vec<u8>) -> Step {
        let Some(mut session) = exchange.session.take() else {
            return Step::Failure(Failure::new(
                DefinedCondition::MalformedRequest,
                "the exchange is already over",
            ));
        };
        let first = exchange.messages == 0;
        exchange.messages = exchange.messages.saturating_add(1);
        if exchange.scram && !scram::attributes_well_formed(&input, first) {
            let attempted = exchange.attempted.lock().ok().and_then(|s| s.clone());
            self.throttle
                .record_failure(attempted.as_deref(), exchange.peer_ip);
            return Step::Failure(Failure::new(
                DefinedCondition::MalformedRequest,
                "malformed SCRAM message (RFC 5802 §7)",
            ));
        }
        let Ok(_permit) = self.workers.acquire().await else {
            return Step::Failure(Failure::new(
                DefinedCondition::TemporaryAuthFailure,
                "server shutting down",
            ));
        };
        let joined = tokio::task::spawn_blocking(move || {
            let mut out = Cursor::new(Vec::new());
            let state = session.step(Some(&input), &mut out);
            (session, state, out.into_inner())
        })
        .await;
        let Ok((mut session, state, output)) = joined else {
            return Step::Failure(Failure::new(
                DefinedCondition::TemporaryAuthFailure,
                "internal error",
            ));
        };
        let attempted = exchange.attempted.lock().ok().and_then(|s| s.clone());
        match state {
            Ok(State::Running) => {
                exchange.session = Some(session);
                Step::Challenge(output)
            }
            Ok(State::Finished(_)) => match session.validation() {
                Some(username) => {
                    self.throttle.record_success(&username, exchange.peer_ip);
                    Step::Success {
                        username,
                        additional_data: output,
                    }
                }
                None => {
                    self.throttle
                        .record_failure(attempted.as_deref(), exchange.peer_ip);
                    Step::Failure(Failure::new(
                        DefinedCondition::NotAuthorized,
                        "wrong username or password",
                    ))
                }
            },
            // Not checked: the same answer whatever the password, and it does not count.
            Err(err) if is_throttled(&err) => Step::Failure(THROTTLED),
            Err(err) => {
                self.throttle
                    .record_failure(attempted.as_deref(), exchange.peer_ip);
                match token_refused(&err) {
                    Some(refused) => {
                        tracing::info!(reason = %refused, "sign-on token refused");
                        Step::Failure(Failure::new(
                            DefinedCondition::NotAuthorized,
                            refused.text(),
                        ))
                    }
                    None => Step::Failure(failure_of(&err)),
                }
            }
        }
    }
}

/// The answer to every attempt that must wait.
const THROTTLED: Failure = Failure::new(
    DefinedCondition::TemporaryAuthFailure,
    "too many failed logins; try again later",
);

fn is_throttled(err: &SessionError) -> bool {
    match err {
        SessionError::Boxed(inner) => inner.is::<Throttled>(),
        SessionError::ValidationError(ValidationError::Boxed(inner)) => inner.is::<Throttled>(),
        _ => false,
    }
}

fn token_refused(err: &SessionError) -> Option<TokenRefused> {
    match err {
        SessionError::ValidationError(ValidationError::Boxed(inner)) => {
            inner.downcast_ref::<TokenRefused>().copied()
        }
        _ => None,
    }
}

fn failure_of(err: &SessionError) -> Failure {
    match err {
        SessionError::MissingChannelBindingData(_) => Failure::new(
            DefinedCondition::NotAuthorized,
            "unsupported channel binding; this server offers tls-exporter",
        ),
        SessionError::InputDataRequired => {
            Failure::new(DefinedCondition::MalformedRequest, "input data required")
        }
        SessionError::Boxed(_) | SessionError::CallbackError(_) => Failure::new(
            DefinedCondition::TemporaryAuthFailure,
            "the account store is unavailable; try again later",
        ),
        SessionError::MechanismError(_) => Failure::new(
            DefinedCondition::NotAuthorized,
            "wrong username or password, or malformed SASL message",
        ),
        _ => Failure::new(DefinedCondition::MalformedRequest, "malformed SASL message"),
    }
}
