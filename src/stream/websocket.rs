//! The WebSocket link (RFC 7395): each message is one complete XML element, the stream opens
//! and closes with `<open/>` and `<close/>` in the framing namespace, and there is no STARTTLS
//! (TLS is the HTTP connection's). Negotiation is the TCP path's `Negotiator`, fed message by
//! message; once a resource is bound the same `WsLink` is handed to the session.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures::{Sink, SinkExt, StreamExt};
use jid::FullJid;
use minidom::Element;
use tokio::time::{Instant, Sleep};
use xmpp_parsers::stream_error::DefinedCondition;
use xso::AsXml;

use super::elements::parse_document;
use super::errors::CLOSE_TIMEOUT;
use super::framed::{FRAMING, FramedLink};
use super::negotiation::{Deadlines, Negotiator, Security};
use super::{Fatal, Incoming, Link};
use crate::Shared;
use crate::auth::Transport;
use crate::link::{ClientElement, SharedStanza, encode_standalone};
use crate::transport::XmlLimits;
use crate::transport::admission::LoggingIn;

/// Who is at the other end of a web link, as the HTTP layer established it.
#[derive(Debug, Clone, Copy)]
pub struct WebClient {
    /// The client's address (from `X-Forwarded-For` behind a trusted proxy).
    pub ip: IpAddr,
    /// The client reached us over TLS (ours, or a trusted proxy's).
    pub tls: bool,
}

impl WebClient {
    /// The negotiation's view of the link: no STARTTLS; PLAIN over TLS, or from loopback when
    /// `tls.allow_plaintext_on_loopback` is set.
    pub(crate) fn security(&self, shared: &Shared) -> Security {
        let loopback_plaintext =
            shared.config.tls.allow_plaintext_on_loopback && self.ip.is_loopback();
        Security {
            tls: self.tls,
            plaintext_allowed: true,
            starttls: false,
            transport: Transport {
                peer_ip: self.ip,
                tls_exporter: None,
                secure: self.tls || loopback_plaintext,
            },
        }
    }
}

/// Serves one WebSocket connection, from its `<open/>` to its close. `keep` (the connection's
/// slot, the task tracker's token) lives as long as the connection.
///
/// Every connection's task keeps this future while the session lasts, so it holds only two
/// boxes: negotiation's (the socket and the negotiator, freed once a resource is bound) and
/// then the session's.
pub(crate) fn serve<K: Send + 'static>(
    socket: WebSocket,
    client: WebClient,
    logging_in: LoggingIn,
    shared: Arc<Shared>,
    keep: K,
) -> impl Future<Output = ()> + Send + 'static {
    let negotiation = Box::pin(negotiate_session(socket, client, logging_in, shared));
    async move {
        let _keep = keep;
        let session = negotiation.await;
        if let Some(session) = session {
            session.await;
        }
    }
}

/// Negotiates on the socket; the bound session, ready to run.
async fn negotiate_session(
    socket: WebSocket,
    client: WebClient,
    logging_in: LoggingIn,
    shared: Arc<Shared>,
) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
    let span = tracing::info_span!("ws", peer = %client.ip, jid = tracing::field::Empty);
    let limits = &shared.config.limits;
    let mut link = WsLink::new(
        socket,
        limits.xml(),
        Duration::from_secs(limits.ping_after_secs),
        Duration::from_secs(limits.ping_timeout_secs),
    );
    let bound_by = Instant::now() + shared.config.negotiation_timeout();
    let elsewhere = &shared.config.http.websocket_see_other_uri;
    if !elsewhere.is_empty() {
        let _ = tokio::time::timeout_at(bound_by, link.next_element()).await;
        link.redirect(elsewhere).await;
        return None;
    }
    let negotiator = Negotiator::new(
        client.security(&shared),
        Deadlines {
            tls: bound_by,
            bound: bound_by,
        },
    );
    let bound = tracing::Instrument::instrument(
        super::framed::negotiate(&mut link, negotiator, &shared),
        span.clone(),
    )
    .await?;
    drop(logging_in);
    span.record("jid", tracing::field::display(&bound.jid));
    let session = crate::session::start(link, bound, shared);
    Some(Box::pin(tracing::Instrument::instrument(session, span)))
}

/// A WebSocket connection carrying an XMPP stream.
pub struct WsLink {
    socket: WebSocket,
    limits: XmlLimits,
    shaper: crate::transport::Shaper,
    timer: Pin<Box<Sleep>>,
    last_data: Instant,
    /// Set when a WebSocket ping was sent and nothing was read since.
    pinged: Option<Instant>,
    /// Set while the client must wait before more is read (`Shaper`).
    slowed: Option<Pin<Box<Sleep>>>,
    read_timeout: Duration,
    response_timeout: Duration,
}

impl WsLink {
    fn new(
        socket: WebSocket,
        limits: XmlLimits,
        read_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            socket,
            limits,
            shaper: crate::transport::Shaper::new(limits.rate),
            timer: Box::pin(tokio::time::sleep_until(now + read_timeout)),
            last_data: now,
            pinged: None,
            slowed: None,
            read_timeout,
            response_timeout,
        }
    }

    /// Our `<open/>` in answer to the client's (RFC 7395 §3.4).
    async fn open_stream(&mut self, shared: &Shared, stream_id: &str) -> io::Result<()> {
        let open = xmpp_parsers::websocket::Open {
            from: Some(shared.domain.clone()),
            to: None,
            id: Some(stream_id.to_owned()),
            version: Some("1.0".into()),
            xml_lang: Some("en".into()),
        };
        self.feed(&open).await
    }

    /// RFC 7395 §3.6.1: the client is to connect to `uri` instead.
    async fn redirect(&mut self, uri: &str) {
        let close = Element::builder("close", FRAMING)
            .attr(crate::ns::name("see-other-uri"), uri)
            .build();
        let redirect = async {
            self.feed(&close).await?;
            self.close_websocket(close_code::NORMAL).await
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, redirect).await;
    }

    /// Sends our close frame after what was fed, and reads until the client's answers it
    /// (RFC 6455 §5.5.1); the connection ends after it.
    async fn close_websocket(&mut self, code: u16) -> io::Result<()> {
        self.socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Default::default(),
            })))
            .await
            .map_err(io::Error::other)?;
        while let Some(Ok(_)) = self.socket.next().await {}
        Ok(())
    }

    async fn feed_bytes(&mut self, xml: Vec<u8>) -> io::Result<()> {
        let text = String::from_utf8(xml)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        self.socket
            .feed(Message::Text(text.into()))
            .await
            .map_err(io::Error::other)
    }

    /// The next element, polled like `TcpLink`'s: the session keeps this future in its idle
    /// state, so it holds nothing but the link.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        loop {
            if let Some(slowed) = self.slowed.as_mut() {
                ready!(slowed.as_mut().poll(cx));
                self.slowed = None;
            }
            let message = match self.socket.poll_next_unpin(cx) {
                Poll::Pending => return self.poll_timer(cx),
                Poll::Ready(None) => return Poll::Ready(Incoming::Lost),
                Poll::Ready(Some(Err(err))) => return Poll::Ready(read_error(err, &self.limits)),
                Poll::Ready(Some(Ok(message))) => message,
            };
            self.last_data = Instant::now();
            self.pinged = None;
            match message {
                Message::Text(text) => {
                    self.shaper.spend(text.len());
                    if let Some(wait) = self.shaper.wait(self.last_data) {
                        // Past its budget the client is read more slowly, as on TCP.
                        self.slowed = Some(Box::pin(tokio::time::sleep(wait)));
                    }
                    if xso::is_xml_whitespace(text.as_bytes()) {
                        continue;
                    }
                    return Poll::Ready(match parse_document(text.as_bytes(), &self.limits) {
                        // RFC 7395 §3.6: the client closes its stream with `<close/>`.
                        Ok(element) if is_close(&element) => Incoming::Closed,
                        Ok(element) => Incoming::Element(Box::new(element)),
                        Err(fatal) => Incoming::Fatal(fatal),
                    });
                }
                Message::Binary(_) => {
                    return Poll::Ready(Incoming::Fatal(Fatal::new(
                        DefinedCondition::BadFormat,
                        "binary frames are not XMPP: send each element as a text frame (RFC 7395 §3.2)",
                    )));
                }
                Message::Close(_) => return Poll::Ready(Incoming::Closed),
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    }

    /// A WebSocket ping after `read_timeout` of silence (browsers answer it by themselves), a
    /// failure after `response_timeout` more. The timer moves only when it fires.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            let due = match self.pinged {
                Some(at) => at + self.response_timeout,
                None => self.last_data + self.read_timeout,
            };
            if now < due {
                self.timer.as_mut().reset(due);
                continue;
            }
            if self.pinged.is_some() {
                return Poll::Ready(Incoming::Fatal(Fatal::new(
                    DefinedCondition::ConnectionTimeout,
                    "no data received for too long",
                )));
            }
            self.pinged = Some(now);
            self.timer.as_mut().reset(now + self.response_timeout);
            // A client that reads nothing has no room for the ping: its silence ends it.
            let mut sink = Pin::new(&mut self.socket);
            if let Poll::Ready(Ok(())) = sink.as_mut().poll_ready(cx)
                && sink
                    .as_mut()
                    .start_send(Message::Ping(Default::default()))
                    .is_ok()
            {
                let _ = sink.poll_flush(cx);
            }
        }
    }
}

/// What a failed read means: a message over the size limit, a broken frame, or a peer gone.
fn read_error(err: axum::Error, limits: &XmlLimits) -> Incoming {
    let inner = err.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Incoming::Fatal(Fatal::new(
            DefinedCondition::PolicyViolation,
            format!(
                "stanza too large: the limit is {} bytes",
                limits.max_stanza_size
            ),
        )),
        Some(tungstenite::Error::Protocol(protocol)) => {
            tracing::debug!(error = %protocol, "WebSocket protocol error");
            Incoming::Lost
        }
        Some(tungstenite::Error::Utf8(_)) => Incoming::Fatal(Fatal::new(
            DefinedCondition::NotWellFormed,
            "a text frame that is not UTF-8",
        )),
        _ => Incoming::Lost,
    }
}

/// `<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>`, the end of a WebSocket stream.
fn is_close(element: &ClientElement) -> bool {
    matches!(element, ClientElement::Unknown(el) if el.is("close", FRAMING))
}

/// The WebSocket close code that goes with a stream error (RFC 6455 §7.4.1).
fn close_code_of(error: Option<&Fatal>) -> u16 {
    let Some(fatal) = error else {
        return close_code::NORMAL;
    };
    match fatal.condition {
        DefinedCondition::SystemShutdown => close_code::AWAY,
        DefinedCondition::PolicyViolation => close_code::POLICY,
        DefinedCondition::BadFormat
        | DefinedCondition::NotWellFormed
        | DefinedCondition::InvalidNamespace
        | DefinedCondition::InvalidXml
        | DefinedCondition::UnsupportedStanzaType => close_code::PROTOCOL,
        DefinedCondition::InternalServerError => close_code::ERROR,
        _ => close_code::NORMAL,
    }
}

impl FramedLink for WsLink {
    async fn open(&mut self, shared: &Shared, stream_id: &str) -> io::Result<()> {
        self.open_stream(shared, stream_id).await
    }
}

impl Link for WsLink {
    fn next_element(&mut self) -> impl Future<Output = Incoming> + Send + '_ {
        std::future::poll_fn(|cx| self.poll_next(cx))
    }

    async fn feed(&mut self, element: &(impl AsXml + Sync)) -> io::Result<()> {
        let mut xml = Vec::new();
        encode_standalone(element, &mut xml)?;
        self.feed_bytes(xml).await
    }

    async fn feed_shared(&mut self, stanza: &SharedStanza, to: &FullJid) -> io::Result<()> {
        let mut xml = Vec::with_capacity(stanza.len() + 64);
        stanza.write_standalone_to(to, &mut xml);
        self.feed_bytes(xml).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.socket.flush().await.map_err(io::Error::other)
    }

    async fn close(&mut self, error: Option<&Fatal>) {
        let close = async {
            if let Some(fatal) = error {
                tracing::debug!(condition = ?fatal.condition, text = %fatal.text, "closing stream with error");
                self.feed(&fatal.to_stream_error()).await?;
            }
            self.feed(&Element::builder("close", FRAMING).build())
                .await?;
            self.close_websocket(close_code_of(error)).await
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    }
}
