//! The TCP link (RFC 6120 over TCP, STARTTLS or direct TLS, XEP-0368): drives negotiation
//! over tokio-xmpp's XML stream, then hands the connection, owned, to the session as a
//! `TcpLink`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_xmpp::xmlstream::{
    AcceptedStream, ReadError, StreamHeader, Timeouts, XmlStream, accept_stream,
};
use tracing::Instrument;
use xmpp_parsers::sasl;
use xmpp_parsers::starttls;
use xmpp_parsers::stream_error::DefinedCondition;

use super::elements::Primed;
use super::errors::{CLOSE_TIMEOUT, classify_header_error, classify_read_error, send_raw_error};
use super::negotiation::{Deadlines, Negotiator, Outgoing, Security, Step, new_stream_id};
use super::tap::Tap;
use super::tcp_link::TcpLink;
use super::{ClientElement, Fatal, Incoming, features};
use crate::Shared;
use crate::auth::Transport;
use crate::transport::ListenerKind;
use crate::transport::admission::LoggingIn;
use crate::transport::{Conn, Socket};

type ClientStream<'a> = XmlStream<&'a mut Tap, ClientElement>;

/// One TCP connection, from its first byte to its close.
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
        let now = Instant::now();
        let bound = now + shared.config.negotiation_timeout();
        // Until TLS is up a connection costs little to open and nothing to keep silent: it
        // gets a shorter time.
        let deadlines = Deadlines {
            tls: bound.min(now + shared.config.tls_timeout()),
            bound,
        };
        let socket = match kind {
            ListenerKind::StartTls => Socket::Plain(tcp),
            ListenerKind::DirectTls => {
                let handshake = crate::transport::tls::handshake(&shared.tls, tcp);
                let handshake =
                    unless_evicted(&logging_in, bounded(&shared, deadlines.tls, handshake));
                match Box::pin(handshake).await {
                    Some(Ok(Ok(tls))) => {
                        logging_in.progressed();
                        tls
                    }
                    Some(Ok(Err(err))) => {
                        tracing::debug!(error = %err, "TLS handshake failed");
                        return;
                    }
                    Some(Err(_)) | None => return,
                }
            }
        };
        serve_socket(socket, peer, deadlines, logging_in, shared).await;
    }
    .instrument(span)
    .await
}

/// Runs `step` of a connection still logging in, unless a newcomer from the same address takes
/// its place first (transport::admission): then `None`, and the connection closes. Only
/// negotiation runs under it: a bound session is never evicted, and its wakeups do not poll
/// the eviction.
async fn unless_evicted<T>(
    logging_in: &LoggingIn,
    step: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        done = step => Some(done),
        () = logging_in.evicted() => {
            tracing::debug!("closed for a newcomer from the same address");
            None
        }
    }
}

/// Negotiates on `socket`, then runs the session.
pub(crate) async fn serve_socket(
    socket: Socket,
    peer: SocketAddr,
    deadlines: Deadlines,
    logging_in: Box<LoggingIn>,
    shared: Arc<Shared>,
) {
    let conn = Conn::new(socket, shared.config.limits.xml());
    let negotiator = Negotiator::new(security(&conn, peer, &shared), deadlines);
    // Boxed and awaited to its end: negotiation's state is freed before the session starts,
    // and an idle connection keeps only the session's.
    let negotiation = negotiate(conn, negotiator, peer, &logging_in, &shared);
    let Some(Some(link)) = Box::pin(unless_evicted(&logging_in, negotiation)).await else {
        return;
    };
    drop(logging_in);
    // Moved out in a block of its own: a box moved out of is freed only when its binding
    // goes out of scope, which would keep it for the whole session.
    let (link, bound) = {
        let boxed = link;
        *boxed
    };
    tracing::Span::current().record("jid", tracing::field::display(&bound.jid));
    crate::session::start(link, bound, shared.clone()).await;
}

fn security(conn: &Conn, peer: SocketAddr, shared: &Shared) -> Security {
    let plaintext_allowed =
        shared.config.tls.allow_plaintext_on_loopback && peer.ip().is_loopback();
    let tls = conn.is_tls();
    Security {
        tls,
        plaintext_allowed,
        starttls: true,
        transport: Transport {
            peer_ip: peer.ip(),
            tls_exporter: conn.tls_exporter(),
            secure: tls || plaintext_allowed,
        },
    }
}

/// Negotiates streams on the connection, across STARTTLS, up to a bound session.
async fn negotiate(
    conn: Conn,
    mut negotiator: Negotiator,
    peer: SocketAddr,
    logging_in: &LoggingIn,
    shared: &Shared,
) -> Option<Box<(TcpLink, crate::session::Bound)>> {
    let mut tap = Tap::new(conn);
    loop {
        match serve_stream(&mut tap, &mut negotiator, logging_in, shared).await {
            After::Closed => return None,
            After::RawError(fatal, stream_id) => {
                send_raw_error(&mut tap, &shared.config.domain, &stream_id, &fatal).await;
                return None;
            }
            After::StartTls => {
                // Whatever the client sent before the handshake is dropped on purpose:
                // plaintext must not be read as if it came through TLS (the STARTTLS
                // command-injection attack).
                let Socket::Plain(tcp) = tap.into_conn().into_socket() else {
                    return None;
                };
                let handshake = crate::transport::tls::handshake(&shared.tls, tcp);
                let socket = match bounded(shared, negotiator.deadline(), handshake).await {
                    Ok(Ok(socket)) => socket,
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "STARTTLS handshake failed");
                        return None;
                    }
                    Err(_) => return None,
                };
                let conn = Conn::new(socket, shared.config.limits.xml());
                negotiator.secured(security(&conn, peer, shared).transport);
                tap = Tap::new(conn);
            }
            After::Bound(bound) => {
                let (primed, bound) = *bound;
                let limits = &shared.config.limits;
                let link = TcpLink::new(
                    tap.into_conn(),
                    primed,
                    super::tcp_link::Timeouts {
                        read: Duration::from_secs(limits.ping_after_secs),
                        response: Duration::from_secs(limits.ping_timeout_secs),
                        stanza: Duration::from_secs(limits.stanza_timeout_secs),
                    },
                );
                return Some(Box::new((link, bound)));
            }
        }
    }
}

/// How one stream ended, and what the connection does next.
enum After {
    StartTls,
    Closed,
    /// A bad header: a whole stream carrying this error, written by the caller (which still
    /// owns the socket) since the XML stream is gone.
    RawError(Fatal, String),
    /// Boxed: the parser is large, and this is the rarest way out.
    Bound(Box<(Primed, crate::session::Bound)>),
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
            Interrupted::Shutdown => super::shutting_down(),
        }
    }
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

fn timeouts(shared: &Shared) -> Timeouts {
    Timeouts {
        read_timeout: Duration::from_secs(shared.config.limits.ping_after_secs),
        response_timeout: Duration::from_secs(shared.config.limits.ping_timeout_secs),
    }
}

/// Serves one stream of a connection, up to STARTTLS, a bound session, or its end. The XML
/// stream borrows the connection, so a bad header comes back as `RawError` for the caller,
/// who owns it, to write.
async fn serve_stream(
    tap: &mut Tap,
    negotiator: &mut Negotiator,
    logging_in: &LoggingIn,
    shared: &Shared,
) -> After {
    let stream_id = new_stream_id();
    let mute = tap.mute_switch();
    let header = bounded(
        shared,
        negotiator.deadline(),
        accept_stream(&mut *tap, xmpp_parsers::ns::JABBER_CLIENT, timeouts(shared)),
    )
    .await;
    let accepted = match header {
        Ok(Ok(accepted)) => {
            logging_in.progressed();
            accepted
        }
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "bad stream header");
            return match classify_header_error(&err) {
                Some(fatal) => After::RawError(fatal, stream_id),
                None => After::Closed,
            };
        }
        Err(interrupted) => return After::RawError(interrupted.fatal(), stream_id),
    };
    let Some(xml) = answer(accepted, &mute, negotiator, shared, stream_id).await else {
        return After::Closed;
    };
    serve_elements(xml, negotiator, shared, None).await
}

/// Feeds the stream's elements to the negotiator and does what it says. `primed` is the
/// session's parser once the client opened its stream after authentication.
async fn serve_elements(
    mut xml: ClientStream<'_>,
    negotiator: &mut Negotiator,
    shared: &Shared,
    primed: Option<Primed>,
) -> After {
    loop {
        let element = match next_element(&mut xml, shared, negotiator.deadline()).await {
            Incoming::Element(element) => element,
            Incoming::Idle => continue,
            Incoming::Closed | Incoming::Lost => {
                close(&mut xml, None).await;
                return After::Closed;
            }
            Incoming::Fatal(fatal) => {
                close(&mut xml, Some(&fatal)).await;
                return After::Closed;
            }
        };
        match negotiator.element(shared, *element).await {
            Step::Reply(outgoing) => {
                if send(&mut xml, &outgoing).await.is_err() {
                    return After::Closed;
                }
            }
            Step::StartTls => {
                let proceed = starttls::Nonza::Proceed(starttls::Proceed);
                return match xml.send(&proceed).await {
                    Ok(()) => After::StartTls,
                    Err(_) => After::Closed,
                };
            }
            Step::Authenticated(success) => {
                return Box::pin(restart(xml, negotiator, shared, success)).await;
            }
            Step::Bound(bound) => {
                let (result, bound) = *bound;
                if xml.send(&result).await.is_err() {
                    bound.abandon(shared).await;
                    return After::Closed;
                }
                // The parser stopped right after the bind request's `>`: what follows is still
                // in the connection, for the link's own parser.
                return match primed {
                    Some(primed) => After::Bound(Box::new((primed, bound))),
                    None => {
                        // Binding follows a restart, which primed the parser.
                        bound.abandon(shared).await;
                        After::Closed
                    }
                };
            }
            Step::Close(before, fatal) => {
                if let Some(before) = before
                    && send(&mut xml, &before).await.is_err()
                {
                    return After::Closed;
                }
                close(&mut xml, Some(&fatal)).await;
                return After::Closed;
            }
        }
    }
}

/// RFC 6120 §6.4.6: `<success/>`, then the client opens a new stream on the same connection,
/// whose header primes the session's parser (`Primed`).
async fn restart(
    xml: ClientStream<'_>,
    negotiator: &mut Negotiator,
    shared: &Shared,
    success: sasl::Success,
) -> After {
    xml.get_stream().restart_stream();
    let mute = xml.get_stream().mute_switch();
    let stream_id = new_stream_id();
    let restart = bounded(
        shared,
        negotiator.deadline(),
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
    let Some(mut xml) = answer(accepted, &mute, negotiator, shared, stream_id).await else {
        return After::Closed;
    };
    let header = xml.get_stream().take_captured().unwrap_or_default();
    let primed = match Primed::from_header(&header) {
        Ok(primed) => primed,
        Err(fatal) => {
            close(&mut xml, Some(&fatal)).await;
            return After::Closed;
        }
    };
    drop(header);
    serve_elements(xml, negotiator, shared, Some(primed)).await
}

/// Answers an accepted stream header: our header, then the features or the error that closes
/// the stream.
async fn answer<'a>(
    accepted: AcceptedStream<&'a mut Tap>,
    mute: &AtomicBool,
    negotiator: &mut Negotiator,
    shared: &Shared,
    stream_id: String,
) -> Option<ClientStream<'a>> {
    let opened = negotiator.opened(shared, accepted.header().to.as_deref());
    let pending = accepted
        .send_header(StreamHeader {
            from: Some(Cow::Borrowed(shared.config.domain.as_str())),
            to: None,
            id: Some(Cow::Owned(stream_id)),
        })
        .await
        .ok()?;
    match opened {
        Ok(features_element) => features::send(pending, mute, &features_element).await.ok(),
        Err(fatal) => {
            let _ =
                tokio::time::timeout(CLOSE_TIMEOUT, pending.send_error(&fatal.to_stream_error()))
                    .await;
            None
        }
    }
}

async fn send(xml: &mut ClientStream<'_>, outgoing: &Outgoing) -> std::io::Result<()> {
    match outgoing {
        Outgoing::Sasl(nonza) => xml.send(nonza).await,
        Outgoing::Iq(iq) => xml.send(&**iq).await,
    }
}

/// Closes the stream: with a stream error (RFC 6120 §4.9.1.1), or cleanly, answering the
/// client's `</stream:stream>` or ending ours.
async fn close(xml: &mut ClientStream<'_>, fatal: Option<&Fatal>) {
    let close = async {
        if let Some(fatal) = fatal {
            tracing::debug!(condition = ?fatal.condition, text = %fatal.text, "closing stream with error");
            xml.send(&fatal.to_stream_error()).await?;
        }
        xml.shutdown().await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}

/// The next element within `deadline` (negotiation's) or the reason to stop.
async fn next_element(xml: &mut ClientStream<'_>, shared: &Shared, deadline: Instant) -> Incoming {
    let read = async {
        match xml.next().await {
            Some(Ok(element)) => Incoming::Element(Box::new(element)),
            Some(Err(ReadError::SoftTimeout)) => Incoming::Idle,
            Some(Err(ReadError::StreamFooterReceived)) => Incoming::Closed,
            None => Incoming::Lost,
            Some(Err(ReadError::HardError(err))) => match classify_read_error(&err) {
                Some(fatal) => Incoming::Fatal(fatal),
                None => Incoming::Lost,
            },
            Some(Err(ReadError::ParseError(err))) => {
                Incoming::Fatal(Fatal::new(DefinedCondition::BadFormat, err.to_string()))
            }
        }
    };
    bounded(shared, deadline, read)
        .await
        .unwrap_or_else(|interrupted| Incoming::Fatal(interrupted.fatal()))
}

#[cfg(test)]
mod tests;
