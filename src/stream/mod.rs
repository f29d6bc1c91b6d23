//! Stream negotiation (RFC 6120 §4–§7): header checks, features, STARTTLS, SASL and resource
//! binding, then hands the bound stream to the session.

pub(crate) mod bound;
mod errors;
mod features;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jid::{DomainPart, FullJid, NodePart, ResourcePart};
use minidom::Element;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_xmpp::xmlstream::{
    AcceptedStream, FallibleStreamElement, ReadError, StreamElementError, StreamHeader, Timeouts,
    XmlStream, XmppStreamElement, accept_stream,
};
use tracing::Instrument;
use xmpp_parsers::bind::{BindQuery, BindResponse};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::sasl;
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition as StanzaCondition, ErrorType, StanzaError};
use xmpp_parsers::starttls;
use xmpp_parsers::stream_error::DefinedCondition;
use xso::FromXml;

use crate::Shared;
use crate::auth::{Authenticator, Exchange, Failure as AuthFailure, Step, Transport};
use crate::session::Bound;
use crate::transport::admission::LoggingIn;
use crate::transport::{Conn, ListenerKind, Socket};
pub use bound::BoundStream;
use errors::{CLOSE_TIMEOUT, classify_header_error, classify_read_error, send_raw_error};
pub use errors::{Fatal, raw_error_text, refusal_error};

/// What the client may send at the top level of its stream. Unknown elements are kept so that
/// they get the precise stream error (RFC 6120 §4.9.3).
#[derive(FromXml, Debug)]
#[xml()]
#[allow(
    clippy::large_enum_variant,
    reason = "moved once per stanza; boxing would allocate per stanza"
)]
pub enum ClientElement {
    #[xml(transparent)]
    Known(FallibleStreamElement),
    #[xml(transparent)]
    Unknown(Element),
}

pub type ClientStream<'a> = XmlStream<&'a mut Conn, ClientElement>;

/// SASL attempts per stream before it is closed (RFC 6120 §6.4.5: 2 to 5).
const MAX_SASL_FAILURES: u32 = 3;

/// One connection, from its first byte to its close.
/// `logging_in` counts the connection against the limits on connections still logging in,
/// until a resource is bound.
pub(crate) async fn run_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    logging_in: Box<LoggingIn>,
    shared: Arc<Shared>,
) {
    let span = tracing::info_span!("c2s", %peer, jid = tracing::field::Empty);
    async move {
        let mut logging_in = Some(logging_in);
        let now = Instant::now();
        let deadline = now + shared.config.negotiation_timeout();
        // Until TLS is up a connection costs little to open and nothing to keep silent: it
        // gets a shorter time.
        let tls_deadline = deadline.min(now + shared.config.tls_timeout());
        let limits = shared.config.limits.xml();
        let socket = match kind {
            ListenerKind::StartTls => Socket::Plain(tcp),
            ListenerKind::DirectTls => {
                match Box::pin(bounded(&shared, tls_deadline, shared.tls.accept(tcp))).await {
                    Ok(Ok(tls)) => Socket::Tls(Box::new(tls)),
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                }
            }
        };
        let mut io = Conn::new(socket, limits);
        let mut state = Negotiation {
            peer,
            deadline,
            tls_deadline,
        };
        loop {
            // Each phase is boxed and awaited to its end: the task's own future stays a few
            // hundred bytes, negotiation's state is freed before the session starts, and an
            // idle connection keeps only the session's.
            // Bound first: a temporary in the match's head would live, finished, as long as
            // the session does.
            let after = Box::pin(serve_stream(&mut io, &mut state, &shared)).await;
            match after {
                After::Closed => return,
                After::RawError(fatal, stream_id) => {
                    Box::pin(send_raw_error(
                        &mut io,
                        &shared.config.domain,
                        &stream_id,
                        &fatal,
                    ))
                    .await;
                    return;
                }
                After::StartTls => match Box::pin(upgrade(io, &shared, tls_deadline)).await {
                    Some(upgraded) => io = upgraded,
                    None => return,
                },
                After::Session(session) => {
                    logging_in.take();
                    tracing::Span::current().record("jid", tracing::field::display(&session.1.jid));
                    crate::session::start(session, shared.clone()).await;
                    return;
                }
            }
        }
    }
    .instrument(span)
    .await
}

struct Negotiation {
    peer: SocketAddr,
    /// Everything up to a bound resource must be done by then.
    deadline: Instant,
    /// The stream header and STARTTLS, where TLS is required, must be done by then.
    tls_deadline: Instant,
}

impl Negotiation {
    /// The deadline of the next step: TLS's while it is still required.
    fn deadline(&self, info: &ConnInfo) -> Instant {
        if info.tls_pending {
            self.tls_deadline
        } else {
            self.deadline
        }
    }
}

/// How one stream ended, and what the connection does next.
enum After<'a> {
    StartTls,
    Closed,
    /// A bad header: a whole stream carrying this error, written by the caller (which still
    /// owns the socket) since the XML stream is gone.
    RawError(Fatal, String),
    /// Boxed: the task keeps this value for the whole connection.
    Session(Box<(BoundStream<'a>, Bound)>),
}

/// What the stream knows of its connection, read before the XML stream borrows it.
struct ConnInfo {
    mute: Arc<AtomicBool>,
    tls: bool,
    /// TLS is required and not yet negotiated: only STARTTLS is allowed.
    tls_pending: bool,
    transport: Transport,
}

impl ConnInfo {
    fn of(conn: &Conn, state: &Negotiation, shared: &Shared) -> Self {
        let allow_plaintext =
            shared.config.tls.allow_plaintext_on_loopback && state.peer.ip().is_loopback();
        let tls = conn.is_tls();
        Self {
            mute: conn.mute_switch(),
            tls,
            tls_pending: !tls && !allow_plaintext,
            transport: Transport {
                peer_ip: state.peer.ip(),
                tls_exporter: conn.tls_exporter(),
                secure: tls || allow_plaintext,
            },
        }
    }

    fn features(&self) -> Element {
        if self.tls_pending {
            return features::wrap([features::starttls(true)]);
        }
        let mut children = Vec::new();
        if !self.tls {
            children.push(features::starttls(false));
        }
        children.extend(features::mechanisms(
            &Authenticator::mechanisms(&self.transport),
            self.transport.tls_exporter.is_some(),
        ));
        features::wrap(children)
    }
}

async fn upgrade(io: Conn, shared: &Shared, deadline: Instant) -> Option<Conn> {
    // Whatever the client sent before the handshake is dropped: see `Conn::into_socket`.
    let Socket::Plain(tcp) = io.into_socket() else {
        return None;
    };
    match bounded(shared, deadline, shared.tls.accept(tcp)).await {
        Ok(Ok(tls)) => Some(Conn::new(
            Socket::Tls(Box::new(tls)),
            shared.config.limits.xml(),
        )),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "STARTTLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Why negotiation stopped waiting.
enum Interrupted {
    Deadline,
    Shutdown,
}

impl Interrupted {
    fn fatal(self) -> Fatal {
        match self {
            Interrupted::Deadline => Fatal::new(
                DefinedCondition::ConnectionTimeout,
                "stream negotiation took too long",
            ),
            Interrupted::Shutdown => shutting_down(),
        }
    }
}

pub const SHUTTING_DOWN: &str = "the server is shutting down";

pub fn shutting_down() -> Fatal {
    Fatal::new(DefinedCondition::SystemShutdown, SHUTTING_DOWN)
}

/// Waits for `work` until the negotiation deadline or server shutdown.
async fn bounded<F: std::future::Future>(
    shared: &Shared,
    deadline: Instant,
    work: F,
) -> Result<F::Output, Interrupted> {
    tokio::select! {
        output = tokio::time::timeout_at(deadline, work) => output.map_err(|_| Interrupted::Deadline),
        _ = shared.shutdown.cancelled() => Err(Interrupted::Shutdown),
    }
}

fn new_stream_id() -> String {
    let bytes: [u8; 12] = rand::thread_rng().r#gen();
    hex::encode(bytes)
}

fn timeouts(shared: &Shared) -> Timeouts {
    Timeouts {
        read_timeout: Duration::from_secs(shared.config.limits.ping_after_secs),
        response_timeout: Duration::from_secs(shared.config.limits.ping_timeout_secs),
    }
}

/// Serves one stream of a connection, up to STARTTLS, a bound session, or its end. The XML
/// stream borrows the socket, so a bad header comes back as `RawError` for the caller, who
/// owns the socket, to write.
async fn serve_stream<'a>(
    io: &'a mut Conn,
    state: &mut Negotiation,
    shared: &Arc<Shared>,
) -> After<'a> {
    let info = ConnInfo::of(&*io, state, shared);
    let stream_id = new_stream_id();
    let header = bounded(
        shared,
        state.deadline(&info),
        accept_stream(&mut *io, xmpp_parsers::ns::JABBER_CLIENT, timeouts(shared)),
    )
    .await;
    let accepted = match header {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "bad stream header");
            return match classify_header_error(&err) {
                Some(fatal) => After::RawError(fatal, stream_id),
                None => After::Closed,
            };
        }
        Err(interrupted) => return After::RawError(interrupted.fatal(), stream_id),
    };
    let Some(mut xml) = answer(accepted, shared, stream_id, &info.mute, &info.features()).await
    else {
        return After::Closed;
    };
    let (success, username) = match authenticate(&mut xml, &info, state, shared).await {
        Authenticated::StartTls => {
            let proceed = starttls::Nonza::Proceed(starttls::Proceed);
            return match xml.send(&proceed).await {
                Ok(()) => After::StartTls,
                Err(_) => After::Closed,
            };
        }
        Authenticated::Closed => return After::Closed,
        Authenticated::Yes(success, username) => (success, username),
    };

    // RFC 6120 §6.4.6: <success/>, then the client opens a new stream on the same connection.
    // Its header primes the session's parser (`bound::Primed`).
    conn(&xml).restart_stream();
    let stream_id = new_stream_id();
    let restart = bounded(
        shared,
        state.deadline,
        xml.accept_reset(&sasl::Nonza::Success(success)),
    )
    .await;
    let accepted = match restart {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(err)) => {
            return match classify_header_error(&err) {
                Some(fatal) => After::RawError(fatal, stream_id),
                None => After::Closed,
            };
        }
        Err(interrupted) => return After::RawError(interrupted.fatal(), stream_id),
    };
    let bind_features = features::wrap(features::bind());
    let Some(mut xml) = answer(accepted, shared, stream_id, &info.mute, &bind_features).await
    else {
        return After::Closed;
    };
    let header = conn(&xml).take_captured().unwrap_or_default();
    let primed = match bound::Primed::from_header(&header) {
        Ok(primed) => primed,
        Err(fatal) => {
            close_with_error(&mut xml, &fatal).await;
            return After::Closed;
        }
    };
    drop(header);
    let Some(bound) = bind(&mut xml, &username, state, shared).await else {
        return After::Closed;
    };
    let limits = &shared.config.limits;
    let stream = BoundStream::new(
        xml.into_inner(),
        primed,
        bound::Timeouts {
            read: Duration::from_secs(limits.ping_after_secs),
            response: Duration::from_secs(limits.ping_timeout_secs),
            stanza: Duration::from_secs(limits.stanza_timeout_secs),
        },
    );
    After::Session(Box::new((stream, bound)))
}

/// Answers an accepted stream header: our header, then `features`.
async fn answer<'a>(
    accepted: AcceptedStream<&'a mut Conn>,
    shared: &Shared,
    stream_id: String,
    mute: &AtomicBool,
    features_element: &Element,
) -> Option<ClientStream<'a>> {
    let domain = shared.config.domain.as_str();
    // RFC 6120 §4.7.2: `to` names the server; a client may leave it out.
    let wrong_host = accepted
        .header()
        .to
        .is_some_and(|to| !to.trim_end_matches('.').eq_ignore_ascii_case(domain));
    let pending = accepted
        .send_header(StreamHeader {
            from: Some(Cow::Borrowed(domain)),
            to: None,
            id: Some(Cow::Owned(stream_id)),
        })
        .await
        .ok()?;
    if wrong_host {
        let fatal = Fatal::new(
            DefinedCondition::HostUnknown,
            format!("this server serves {domain} only"),
        );
        let _ =
            tokio::time::timeout(CLOSE_TIMEOUT, pending.send_error(&fatal.to_stream_error())).await;
        return None;
    }
    let xml = features::send(pending, mute, features_element).await.ok()?;
    Some(xml)
}

/// The connection under a stream.
pub fn conn<'s>(xml: &'s ClientStream<'_>) -> &'s Conn {
    xml.get_stream()
}

/// Sends a stream error and closes the stream (RFC 6120 §4.9.1.1).
pub async fn close_with_error(xml: &mut ClientStream<'_>, fatal: &Fatal) {
    tracing::debug!(condition = ?fatal.condition, text = %fatal.text, "closing stream with error");
    let close = async {
        xml.send(&fatal.to_stream_error()).await?;
        xml.shutdown().await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}

/// Closes the stream cleanly, answering the client's `</stream:stream>` or ending ours.
pub async fn close(xml: &mut ClientStream<'_>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, xml.shutdown()).await;
}

/// The next element, or the reason to stop.
pub enum Incoming {
    /// Boxed: a session keeps room for this value in its idle state (it is alive while the
    /// stanza is handled), and an element is 400 bytes.
    Element(Box<ClientElement>),
    /// The client closed its stream, or the connection is gone.
    Closed,
    Fatal(Fatal),
    /// No data for the read timeout: the caller may ping.
    Idle,
}

pub async fn next_element(xml: &mut ClientStream<'_>) -> Incoming {
    match xml.next().await {
        Some(Ok(element)) => Incoming::Element(Box::new(element)),
        Some(Err(ReadError::SoftTimeout)) => Incoming::Idle,
        Some(Err(ReadError::StreamFooterReceived)) | None => Incoming::Closed,
        Some(Err(ReadError::HardError(err))) => match classify_read_error(&err) {
            Some(fatal) => Incoming::Fatal(fatal),
            None => Incoming::Closed,
        },
        Some(Err(ReadError::ParseError(err))) => {
            Incoming::Fatal(Fatal::new(DefinedCondition::BadFormat, err.to_string()))
        }
    }
}

#[allow(
    clippy::large_enum_variant,
    reason = "moved once per stanza; boxing would allocate per stanza"
)]
enum Negotiating {
    Element(XmppStreamElement),
    /// An `<auth/>` naming a mechanism this server does not know.
    UnknownMechanism,
    /// An `<auth/>` or `<response/>` whose content is not base64 (RFC 6120 §6.5.2).
    IncorrectEncoding,
}

/// Whether a SASL element failed to parse because of its base64 content.
fn is_bad_base64(error: &xso::error::Error) -> bool {
    matches!(error, xso::error::Error::TextParseError(inner) if inner.is::<base64::DecodeError>())
}

/// Negotiation's next element, within the negotiation deadline.
async fn next_negotiation_element(
    xml: &mut ClientStream<'_>,
    shared: &Shared,
    deadline: Instant,
) -> Result<Negotiating, ()> {
    loop {
        let incoming = bounded(shared, deadline, next_element(xml))
            .await
            .unwrap_or_else(|interrupted| Incoming::Fatal(interrupted.fatal()));
        let fatal = match incoming {
            Incoming::Element(element) => match *element {
                ClientElement::Known(FallibleStreamElement::Ok(element)) => {
                    return Ok(Negotiating::Element(element));
                }
                ClientElement::Known(FallibleStreamElement::Err(
                    StreamElementError::InvalidNonza { qname, error },
                )) if qname.0.as_str() == xmpp_parsers::ns::SASL
                    && matches!(qname.1.as_str(), "auth" | "response") =>
                {
                    return Ok(if is_bad_base64(&error) {
                        Negotiating::IncorrectEncoding
                    } else if qname.1.as_str() == "auth" {
                        Negotiating::UnknownMechanism
                    } else {
                        Negotiating::IncorrectEncoding
                    });
                }
                other => unexpected(&other),
            },
            Incoming::Idle => continue,
            Incoming::Closed => {
                close(xml).await;
                return Err(());
            }
            Incoming::Fatal(fatal) => fatal,
        };
        close_with_error(xml, &fatal).await;
        return Err(());
    }
}

/// Stream error for an element the stream does not accept where it stands.
pub fn unexpected(element: &ClientElement) -> Fatal {
    let wrong_namespace = || {
        Fatal::new(
            DefinedCondition::InvalidNamespace,
            "stanzas must be in the jabber:client namespace",
        )
    };
    match element {
        ClientElement::Unknown(el) if matches!(el.name(), "message" | "presence" | "iq") => {
            wrong_namespace()
        }
        ClientElement::Known(FallibleStreamElement::Err(StreamElementError::InvalidStanza {
            ns,
            ..
        })) if ns.as_str() != xmpp_parsers::ns::JABBER_CLIENT => wrong_namespace(),
        ClientElement::Unknown(el) => Fatal::new(
            DefinedCondition::UnsupportedStanzaType,
            format!("unsupported element {{{}}}{}", el.ns(), el.name()),
        ),
        _ => Fatal::new(
            DefinedCondition::UnsupportedStanzaType,
            "this element is not allowed at this point of the stream",
        ),
    }
}

enum Authenticated {
    StartTls,
    Yes(sasl::Success, String),
    Closed,
}

fn sasl_failure(condition: sasl::DefinedCondition, text: &str) -> sasl::Nonza {
    let mut texts = std::collections::BTreeMap::new();
    texts.insert("en".into(), text.to_owned());
    sasl::Nonza::Failure(sasl::Failure {
        defined_condition: condition,
        texts,
    })
}

/// STARTTLS and SASL (RFC 6120 §5, §6), up to `<success/>`.
async fn authenticate(
    xml: &mut ClientStream<'_>,
    info: &ConnInfo,
    state: &Negotiation,
    shared: &Shared,
) -> Authenticated {
    let mut exchange: Option<Exchange> = None;
    let mut failures = 0;
    loop {
        let element = match next_negotiation_element(xml, shared, state.deadline(info)).await {
            Ok(Negotiating::Element(element)) => Some(element),
            Ok(Negotiating::UnknownMechanism) => {
                let failure = sasl_failure(
                    sasl::DefinedCondition::InvalidMechanism,
                    "unknown mechanism: use one of those offered in the stream features",
                );
                if xml.send(&failure).await.is_err() {
                    return Authenticated::Closed;
                }
                continue;
            }
            Ok(Negotiating::IncorrectEncoding) => None,
            Err(()) => return Authenticated::Closed,
        };
        let step = match element {
            // The exchange in progress, if any, is over (RFC 6120 §6.4.5).
            None => Step::Failure(AuthFailure {
                condition: sasl::DefinedCondition::IncorrectEncoding,
                text: "the SASL data must be base64 (RFC 4648)",
            }),
            Some(XmppStreamElement::Starttls(starttls::Nonza::Request(_))) if !info.tls => {
                return Authenticated::StartTls;
            }
            Some(XmppStreamElement::Sasl(_)) if info.tls_pending => Step::Failure(AuthFailure {
                condition: sasl::DefinedCondition::EncryptionRequired,
                text: "negotiate TLS first (STARTTLS)",
            }),
            Some(XmppStreamElement::Sasl(sasl::Nonza::Auth(auth))) => {
                match shared
                    .auth
                    .start(mechanism_name(&auth.mechanism), &info.transport)
                {
                    Err(failure) => Step::Failure(failure),
                    Ok(mut started) if auth.data.is_empty() => {
                        // RFC 6120 §6.4.2: no initial response; ask for it.
                        started.awaiting_initial_response = true;
                        exchange = Some(started);
                        Step::Challenge(Vec::new())
                    }
                    Ok(mut started) => {
                        let step = shared.auth.step(&mut started, auth.data).await;
                        exchange = Some(started);
                        step
                    }
                }
            }
            Some(XmppStreamElement::Sasl(sasl::Nonza::Response(response))) => {
                match exchange.as_mut() {
                    Some(started) => {
                        started.awaiting_initial_response = false;
                        shared.auth.step(started, response.data).await
                    }
                    None => Step::Failure(AuthFailure {
                        condition: sasl::DefinedCondition::MalformedRequest,
                        text: "no authentication exchange is in progress",
                    }),
                }
            }
            Some(XmppStreamElement::Sasl(sasl::Nonza::Abort(_))) => Step::Failure(AuthFailure {
                condition: sasl::DefinedCondition::Aborted,
                text: "authentication aborted",
            }),
            Some(XmppStreamElement::Stanza(_)) => {
                let fatal = Fatal::new(
                    DefinedCondition::NotAuthorized,
                    "authenticate before sending stanzas",
                );
                close_with_error(xml, &fatal).await;
                return Authenticated::Closed;
            }
            Some(other) => {
                let fatal = unexpected(&ClientElement::Known(FallibleStreamElement::Ok(other)));
                close_with_error(xml, &fatal).await;
                return Authenticated::Closed;
            }
        };
        let reply = match step {
            Step::Challenge(data) => sasl::Nonza::Challenge(sasl::Challenge { data }),
            Step::Success {
                username,
                additional_data,
            } => {
                if let Err(reason) = shared.policy.login_allowed(&username) {
                    // The ENT admin turned chat access off for this user's profile.
                    tracing::info!(user = %username, "login refused: profile without chat access");
                    exchange = None;
                    let mut refusal =
                        sasl_failure(sasl::DefinedCondition::AccountDisabled, reason.english());
                    if let sasl::Nonza::Failure(failure) = &mut refusal {
                        failure
                            .texts
                            .insert("fr".into(), reason.french().to_owned());
                    }
                    if xml.send(&refusal).await.is_err() {
                        return Authenticated::Closed;
                    }
                    continue;
                }
                tracing::info!(user = %username, "authenticated");
                return Authenticated::Yes(
                    sasl::Success {
                        data: additional_data,
                    },
                    username,
                );
            }
            Step::Failure(failure) => {
                exchange = None;
                failures += 1;
                tracing::info!(reason = failure.text, "authentication failed");
                sasl_failure(failure.condition, failure.text)
            }
        };
        if xml.send(&reply).await.is_err() {
            return Authenticated::Closed;
        }
        if failures >= MAX_SASL_FAILURES {
            let fatal = Fatal::new(
                DefinedCondition::PolicyViolation,
                "too many failed authentication attempts",
            );
            close_with_error(xml, &fatal).await;
            return Authenticated::Closed;
        }
    }
}

/// Resource binding (RFC 6120 §7): the session, registered with the router.
async fn bind(
    xml: &mut ClientStream<'_>,
    username: &str,
    state: &Negotiation,
    shared: &Shared,
) -> Option<Bound> {
    loop {
        let element = next_negotiation_element(xml, shared, state.deadline)
            .await
            .ok()?;
        let Negotiating::Element(XmppStreamElement::Stanza(Stanza::Iq(Iq::Set {
            id,
            payload,
            ..
        }))) = element
        else {
            let fatal = Fatal::new(
                DefinedCondition::NotAuthorized,
                "bind a resource before sending anything else (RFC 6120 §7)",
            );
            close_with_error(xml, &fatal).await;
            return None;
        };
        let requested = BindQuery::try_from(payload).ok();
        let Some(query) = requested else {
            let fatal = Fatal::new(
                DefinedCondition::NotAuthorized,
                "bind a resource before sending anything else (RFC 6120 §7)",
            );
            close_with_error(xml, &fatal).await;
            return None;
        };
        let resource = match query.resource.filter(|r| !r.is_empty()) {
            Some(resource) => resource,
            None => new_resource(),
        };
        let jid = match make_jid(username, &shared.config.domain, &resource) {
            Ok(jid) => jid,
            Err(text) => {
                let error =
                    StanzaError::new(ErrorType::Modify, StanzaCondition::BadRequest, "en", text);
                if xml
                    .send(&Iq::Error {
                        from: None,
                        to: None,
                        id,
                        error,
                        payload: None,
                    })
                    .await
                    .is_err()
                {
                    return None;
                }
                continue;
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
                let refusal = Iq::Error {
                    from: None,
                    to: None,
                    id,
                    error,
                    payload: None,
                };
                if xml.send(&refusal).await.is_err() {
                    return None;
                }
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot load the roster");
                let fatal = Fatal::new(
                    DefinedCondition::InternalServerError,
                    "the account could not be loaded; try again",
                );
                close_with_error(xml, &fatal).await;
                return None;
            }
        };
        let result = Iq::Result {
            from: None,
            to: None,
            id,
            payload: Some(BindResponse { jid }.into()),
        };
        if xml.send(&result).await.is_err() {
            bound.abandon(shared).await;
            return None;
        }
        tracing::info!(jid = %bound.jid, "resource bound");
        note_login(shared, username).await;
        return Some(bound);
    }
}

/// Reads a client's negotiation from `bytes` as a connection would (without TLS or SASL
/// checks): every element goes through the mapping negotiation applies to it.
#[cfg(feature = "fuzzing")]
pub async fn fuzz_negotiation(bytes: &[u8]) {
    let io = tokio::io::join(bytes, tokio::io::sink());
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(3600),
        response_timeout: Duration::from_secs(3600),
    };
    let accepted = match accept_stream(io, xmpp_parsers::ns::JABBER_CLIENT, timeouts).await {
        Ok(accepted) => accepted,
        Err(err) => {
            let _ = classify_header_error(&err);
            return;
        }
    };
    let Ok(pending) = accepted
        .send_header(StreamHeader {
            from: Some(Cow::Borrowed("localhost")),
            to: None,
            id: Some(Cow::Borrowed("fuzz")),
        })
        .await
    else {
        return;
    };
    let Ok(mut xml) = pending
        .send_features::<ClientElement>(&xmpp_parsers::stream_features::StreamFeatures::default())
        .await
    else {
        return;
    };
    while let Some(read) = xml.next().await {
        let element = match read {
            Ok(element) => element,
            Err(ReadError::HardError(err)) => {
                let _ = classify_read_error(&err);
                return;
            }
            Err(_) => return,
        };
        match &element {
            ClientElement::Known(FallibleStreamElement::Ok(XmppStreamElement::Sasl(
                sasl::Nonza::Auth(auth),
            ))) => {
                let _ = mechanism_name(&auth.mechanism);
            }
            ClientElement::Known(FallibleStreamElement::Ok(XmppStreamElement::Stanza(
                Stanza::Iq(Iq::Set { payload, .. }),
            ))) => {
                if let Ok(query) = BindQuery::try_from(payload.clone())
                    && let Some(resource) = query.resource
                {
                    let _ = make_jid("user", "localhost", &resource);
                }
            }
            ClientElement::Known(FallibleStreamElement::Err(
                StreamElementError::InvalidNonza { error, .. },
            )) => {
                let _ = is_bad_base64(error);
            }
            _ => {}
        }
        let _ = unexpected(&element);
    }
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
