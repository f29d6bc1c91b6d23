//! Stream negotiation (RFC 6120 §4–§7) as a state machine without I/O: it is told that the
//! client opened a stream and fed the client's elements, and answers with what to send and
//! what the link does next. Every link (TCP with STARTTLS or direct TLS, and the web links
//! after it) drives the same machine; only the framing differs.
//!
//! It awaits the authenticator and the session registry, never a socket: deadlines, reads and
//! writes belong to the link that drives it.

use jid::{DomainPart, FullJid, NodePart, ResourcePart};
use minidom::Element;
use rand::Rng;
use tokio::time::Instant;
use tokio_xmpp::xmlstream::{FallibleStreamElement, StreamElementError, XmppStreamElement};
use xmpp_parsers::bind::{BindQuery, BindResponse};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::sasl;
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition as StanzaCondition, ErrorType, StanzaError};
use xmpp_parsers::stream_error::DefinedCondition;

use super::Fatal;
use super::{ClientElement, features, unexpected};
use crate::Shared;
use crate::auth::{Authenticator, Exchange, Failure as AuthFailure, Step as AuthStep, Transport};
use crate::session::Bound;

/// SASL attempts per stream before it is closed (RFC 6120 §6.4.5: 2 to 5).
const MAX_SASL_FAILURES: u32 = 3;

/// What the link knows of its security when a stream starts.
pub struct Security {
    /// The link is encrypted (TLS, or HTTPS for the web links).
    pub tls: bool,
    /// Plaintext is allowed without TLS (loopback, when configured; the web links, which
    /// cannot start TLS themselves).
    pub plaintext_allowed: bool,
    /// The link can start TLS in the stream (STARTTLS: TCP only, RFC 7395 §3.6 rules it
    /// out on WebSocket).
    pub starttls: bool,
    pub transport: Transport,
}

/// The deadlines of a negotiation.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// The stream header and STARTTLS, where TLS is required, must be done by then.
    pub tls: Instant,
    /// Everything up to a bound resource must be done by then.
    pub bound: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before SASL success: STARTTLS and SASL.
    Authenticating,
    /// After SASL success: resource binding.
    Binding,
}

/// One connection's negotiation.
pub struct Negotiator {
    stage: Stage,
    security: Security,
    deadlines: Deadlines,
    exchange: Option<Exchange>,
    failures: u32,
    /// The authenticated account, once SASL succeeded.
    username: Option<String>,
}

/// What a link sends in negotiation, besides stream headers and features.
#[derive(Debug)]
pub enum Outgoing {
    Sasl(sasl::Nonza),
    /// Boxed: rare (a refused bind), and an IQ is ten times a SASL element.
    Iq(Box<Iq>),
}

/// What the link does after an element.
pub enum Step {
    /// Send this, and go on reading.
    Reply(Outgoing),
    /// Send `<proceed/>`, then the TLS handshake; the client opens a new stream
    /// (`Negotiator::secured`, then `opened`).
    StartTls,
    /// Send `<success/>`; the client opens a new stream on the same link (`opened`).
    Authenticated(sasl::Success),
    /// Send the bind result: the session starts. If it cannot be sent, `Bound::abandon`.
    Bound(Box<(Iq, Bound)>),
    /// Send `before` if any, then close the stream with the error.
    Close(Option<Outgoing>, Fatal),
}

impl Negotiator {
    pub fn new(security: Security, deadlines: Deadlines) -> Self {
        Self {
            stage: Stage::Authenticating,
            security,
            deadlines,
            exchange: None,
            failures: 0,
            username: None,
        }
    }

    /// TLS is required and not yet negotiated: only STARTTLS is allowed.
    fn tls_pending(&self) -> bool {
        !self.security.tls && !self.security.plaintext_allowed
    }

    /// When the current step must be done: TLS's deadline while TLS is still required.
    pub fn deadline(&self) -> Instant {
        if self.tls_pending() {
            self.deadlines.tls
        } else {
            self.deadlines.bound
        }
    }

    /// The link is now encrypted (after STARTTLS): the client opens a new stream.
    pub fn secured(&mut self, transport: Transport) {
        self.security.tls = true;
        self.security.transport = transport;
        self.exchange = None;
    }

    /// The client opened a stream addressed to `to`: the features to send after our header,
    /// or the error that closes it (RFC 6120 §4.7.2: `to` names the server; a client may
    /// leave it out).
    pub fn opened(&mut self, shared: &Shared, to: Option<&str>) -> Result<Element, Fatal> {
        let domain = shared.config.domain.as_str();
        if to.is_some_and(|to| !to.trim_end_matches('.').eq_ignore_ascii_case(domain)) {
            return Err(Fatal::new(
                DefinedCondition::HostUnknown,
                format!("this server serves {domain} only"),
            ));
        }
        Ok(self.features())
    }

    fn features(&self) -> Element {
        if self.stage == Stage::Binding {
            return features::wrap(features::bind());
        }
        if self.tls_pending() {
            return features::wrap([features::starttls(true)]);
        }
        let mut children = Vec::new();
        if !self.security.tls && self.security.starttls {
            children.push(features::starttls(false));
        }
        let transport = &self.security.transport;
        children.extend(features::mechanisms(
            &Authenticator::mechanisms(transport),
            transport.tls_exporter.is_some(),
        ));
        features::wrap(children)
    }

    /// Takes one element from the client.
    pub async fn element(&mut self, shared: &Shared, element: ClientElement) -> Step {
        let element = match classify(element) {
            Ok(element) => element,
            Err(fatal) => return Step::Close(None, fatal),
        };
        match self.stage {
            Stage::Authenticating => self.authenticate(shared, element).await,
            Stage::Binding => self.bind(shared, element).await,
        }
    }

    /// STARTTLS and SASL (RFC 6120 §5, §6), up to `<success/>`.
    async fn authenticate(&mut self, shared: &Shared, element: Negotiating) -> Step {
        let auth_step = match element {
            // The exchange in progress, if any, is over (RFC 6120 §6.4.5).
            Negotiating::IncorrectEncoding => AuthStep::Failure(AuthFailure {
                condition: sasl::DefinedCondition::IncorrectEncoding,
                text: "the SASL data must be base64 (RFC 4648)",
            }),
            Negotiating::UnknownMechanism => {
                return Step::Reply(sasl_failure(
                    sasl::DefinedCondition::InvalidMechanism,
                    "unknown mechanism: use one of those offered in the stream features",
                ));
            }
            Negotiating::Element(XmppStreamElement::Starttls(
                xmpp_parsers::starttls::Nonza::Request(_),
            )) if !self.security.tls && self.security.starttls => return Step::StartTls,
            Negotiating::Element(XmppStreamElement::Sasl(_)) if self.tls_pending() => {
                AuthStep::Failure(AuthFailure {
                    condition: sasl::DefinedCondition::EncryptionRequired,
                    text: "negotiate TLS first (STARTTLS)",
                })
            }
            Negotiating::Element(XmppStreamElement::Sasl(sasl::Nonza::Auth(auth))) => {
                match shared
                    .auth
                    .start(mechanism_name(&auth.mechanism), &self.security.transport)
                {
                    Err(failure) => AuthStep::Failure(failure),
                    Ok(mut started) if auth.data.is_empty() => {
                        // RFC 6120 §6.4.2: no initial response; ask for it.
                        started.awaiting_initial_response = true;
                        self.exchange = Some(started);
                        AuthStep::Challenge(Vec::new())
                    }
                    Ok(mut started) => {
                        let step = shared.auth.step(&mut started, auth.data).await;
                        self.exchange = Some(started);
                        step
                    }
                }
            }
            Negotiating::Element(XmppStreamElement::Sasl(sasl::Nonza::Response(response))) => {
                match self.exchange.as_mut() {
                    Some(started) => {
                        started.awaiting_initial_response = false;
                        shared.auth.step(started, response.data).await
                    }
                    None => AuthStep::Failure(AuthFailure {
                        condition: sasl::DefinedCondition::MalformedRequest,
                        text: "no authentication exchange is in progress",
                    }),
                }
            }
            Negotiating::Element(XmppStreamElement::Sasl(sasl::Nonza::Abort(_))) => {
                AuthStep::Failure(AuthFailure {
                    condition: sasl::DefinedCondition::Aborted,
                    text: "authentication aborted",
                })
            }
            Negotiating::Element(XmppStreamElement::Stanza(_)) => {
                return Step::Close(
                    None,
                    Fatal::new(
                        DefinedCondition::NotAuthorized,
                        "authenticate before sending stanzas",
                    ),
                );
            }
            Negotiating::Element(other) => {
                let fatal = unexpected(&ClientElement::Known(FallibleStreamElement::Ok(other)));
                return Step::Close(None, fatal);
            }
        };
        match auth_step {
            AuthStep::Challenge(data) => {
                Step::Reply(Outgoing::Sasl(sasl::Nonza::Challenge(sasl::Challenge {
                    data,
                })))
            }
            AuthStep::Success {
                username,
                additional_data,
            } => {
                self.exchange = None;
                if let Err(reason) = shared.policy.login_allowed(&username) {
                    // The ENT admin turned chat access off for this user's profile.
                    tracing::info!(user = %username, "login refused: profile without chat access");
                    shared.metrics.login_failed("account-disabled");
                    let mut refusal =
                        sasl_failure(sasl::DefinedCondition::AccountDisabled, reason.english());
                    if let Outgoing::Sasl(sasl::Nonza::Failure(failure)) = &mut refusal {
                        failure
                            .texts
                            .insert("fr".into(), reason.french().to_owned());
                    }
                    return Step::Reply(refusal);
                }
                tracing::info!(user = %username, "authenticated");
                shared.metrics.logins.inc();
                self.username = Some(username);
                self.stage = Stage::Binding;
                Step::Authenticated(sasl::Success {
                    data: additional_data,
                })
            }
            AuthStep::Failure(failure) => {
                // Who was tried and from where, for the operator; never what was sent.
                let user = self.exchange.take().and_then(|e| e.attempted_user());
                self.failures += 1;
                shared
                    .metrics
                    .login_failed(condition_name(&failure.condition));
                tracing::info!(
                    user = user.as_deref().unwrap_or("-"),
                    peer = %self.security.transport.peer_ip,
                    reason = failure.text,
                    "authentication failed"
                );
                let reply = sasl_failure(failure.condition, failure.text);
                if self.failures >= MAX_SASL_FAILURES {
                    return Step::Close(
                        Some(reply),
                        Fatal::new(
                            DefinedCondition::PolicyViolation,
                            "too many failed authentication attempts",
                        ),
                    );
                }
                Step::Reply(reply)
            }
        }
    }

    /// Resource binding (RFC 6120 §7): the session, registered with the router.
    async fn bind(&mut self, shared: &Shared, element: Negotiating) -> Step {
        let bind_first = || {
            Step::Close(
                None,
                Fatal::new(
                    DefinedCondition::NotAuthorized,
                    "bind a resource before sending anything else (RFC 6120 §7)",
                ),
            )
        };
        let Negotiating::Element(XmppStreamElement::Stanza(Stanza::Iq(Iq::Set {
            id,
            payload,
            ..
        }))) = element
        else {
            return bind_first();
        };
        let Ok(query) = BindQuery::try_from(payload) else {
            return bind_first();
        };
        let Some(username) = self.username.as_deref() else {
            return bind_first();
        };
        let resource = match query.resource.filter(|r| !r.is_empty()) {
            Some(resource) => resource,
            None => new_resource(),
        };
        let refuse = |id, error| {
            Step::Reply(Outgoing::Iq(Box::new(Iq::Error {
                from: None,
                to: None,
                id,
                error,
                payload: None,
            })))
        };
        let jid = match make_jid(username, &shared.config.domain, &resource) {
            Ok(jid) => jid,
            Err(text) => {
                let error =
                    StanzaError::new(ErrorType::Modify, StanzaCondition::BadRequest, "en", text);
                return refuse(id, error);
            }
        };
        let bound = match crate::session::register(&jid, shared).await {
            Ok(bound) => bound,
            Err(crate::session::RegisterError::TooManyResources(_)) => {
                // RFC 6120 §7.6.2.1.
                let error = StanzaError::new(
                    ErrorType::Wait,
                    StanzaCondition::ResourceConstraint,
                    "en",
                    format!(
                        "this account already has {} connections, the most it may have",
                        shared.config.limits.max_resources_per_account
                    ),
                );
                return refuse(id, error);
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot load the roster");
                return Step::Close(
                    None,
                    Fatal::new(
                        DefinedCondition::InternalServerError,
                        "the account could not be loaded; try again",
                    ),
                );
            }
        };
        tracing::info!(jid = %bound.jid, "resource bound");
        note_login(shared, username).await;
        let result = Iq::Result {
            from: None,
            to: None,
            id,
            payload: Some(BindResponse { jid }.into()),
        };
        Step::Bound(Box::new((result, bound)))
    }
}

/// What negotiation reads of an element.
#[allow(
    clippy::large_enum_variant,
    reason = "moved once per element; boxing would allocate per element"
)]
enum Negotiating {
    Element(XmppStreamElement),
    /// An `<auth/>` naming a mechanism this server does not know.
    UnknownMechanism,
    /// An `<auth/>` or `<response/>` whose content is not base64 (RFC 6120 §6.5.2).
    IncorrectEncoding,
}

fn classify(element: ClientElement) -> Result<Negotiating, Fatal> {
    match element {
        ClientElement::Known(FallibleStreamElement::Ok(element)) => {
            Ok(Negotiating::Element(element))
        }
        ClientElement::Known(FallibleStreamElement::Err(StreamElementError::InvalidNonza {
            qname,
            error,
        })) if qname.0.as_str() == xmpp_parsers::ns::SASL
            && matches!(qname.1.as_str(), "auth" | "response") =>
        {
            Ok(if is_bad_base64(&error) || qname.1.as_str() == "response" {
                Negotiating::IncorrectEncoding
            } else {
                Negotiating::UnknownMechanism
            })
        }
        other => Err(unexpected(&other)),
    }
}

/// Whether a SASL element failed to parse because of its base64 content.
fn is_bad_base64(error: &xso::error::Error) -> bool {
    matches!(error, xso::error::Error::TextParseError(inner) if inner.is::<base64::DecodeError>())
}

/// A SASL condition's element name (RFC 6120 §6.5), for the metrics.
fn condition_name(condition: &sasl::DefinedCondition) -> &'static str {
    use sasl::DefinedCondition::*;
    match condition {
        Aborted => "aborted",
        AccountDisabled => "account-disabled",
        CredentialsExpired => "credentials-expired",
        EncryptionRequired => "encryption-required",
        IncorrectEncoding => "incorrect-encoding",
        InvalidAuthzid => "invalid-authzid",
        InvalidMechanism => "invalid-mechanism",
        MalformedRequest => "malformed-request",
        MechanismTooWeak => "mechanism-too-weak",
        NotAuthorized => "not-authorized",
        TemporaryAuthFailure => "temporary-auth-failure",
    }
}

fn sasl_failure(condition: sasl::DefinedCondition, text: &str) -> Outgoing {
    let mut texts = std::collections::BTreeMap::new();
    texts.insert("en".into(), text.to_owned());
    Outgoing::Sasl(sasl::Nonza::Failure(sasl::Failure {
        defined_condition: condition,
        texts,
    }))
}

/// A fresh stream id (RFC 6120 §4.7.3: unpredictable).
pub fn new_stream_id() -> String {
    let bytes: [u8; 12] = rand::thread_rng().r#gen();
    hex::encode(bytes)
}

/// Remembers a user's first login: only users who logged in once appear in search.
async fn note_login(shared: &Shared, username: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if shared.policy.note_login(username, now)
        && let Err(err) = shared.store.record_first_login(username, now).await
    {
        tracing::warn!(error = %err, "cannot record the first login");
    }
}

fn mechanism_name(mechanism: &sasl::Mechanism) -> &'static str {
    match mechanism {
        sasl::Mechanism::Plain => "PLAIN",
        sasl::Mechanism::ScramSha1 => "SCRAM-SHA-1",
        sasl::Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
        sasl::Mechanism::ScramSha256 => "SCRAM-SHA-256",
        sasl::Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
        sasl::Mechanism::Anonymous => "ANONYMOUS",
    }
}

fn new_resource() -> String {
    let bytes: [u8; 6] = rand::thread_rng().r#gen();
    format!("causette-{}", hex::encode(bytes))
}

fn make_jid(username: &str, domain: &str, resource: &str) -> Result<FullJid, &'static str> {
    let node = NodePart::new(username).map_err(|_| "invalid username")?;
    let domain = DomainPart::new(domain).map_err(|_| "invalid domain")?;
    let resource = ResourcePart::new(resource).map_err(|err| match err {
        jid::Error::ResourceTooLong => "invalid resource: longer than 1023 bytes (RFC 7622)",
        _ => {
            "invalid resource: it has characters that resource names may not hold (RFC 7622), \
             such as control characters, or emoji and other symbols newer than Unicode 3.2"
        }
    })?;
    Ok(FullJid::from_parts(Some(&node), &domain, &resource))
}

/// What negotiation computes of an element a client sent (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub fn fuzz_element(element: ClientElement) {
    match classify(element) {
        Ok(Negotiating::Element(XmppStreamElement::Sasl(sasl::Nonza::Auth(auth)))) => {
            let _ = mechanism_name(&auth.mechanism);
        }
        Ok(Negotiating::Element(XmppStreamElement::Stanza(Stanza::Iq(Iq::Set {
            payload,
            ..
        })))) => {
            if let Ok(query) = BindQuery::try_from(payload)
                && let Some(resource) = query.resource
            {
                let _ = make_jid("user", "localhost", &resource);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
