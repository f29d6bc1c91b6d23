//! The TCP link of a bound session: rxml's parser and xso's builders over the connection it
//! owns, with the state an idle connection keeps cut to what it needs.
//!
//! Negotiation runs on tokio-xmpp's `XmlStream`; once a resource is bound the connection
//! switches to this stream. tokio-xmpp keeps, per connection and for ever, the parser's 8 KiB
//! token scratchpad (reserved by the first token, released only by
//! `release_temporaries`, which its stream never calls) and its write buffer; here both are
//! freed whenever the connection has nothing to do, which halves an idle session.
//!
//! The switch loses nothing: the parser of the negotiation stops exactly after the `>` of the
//! bind request, so the bytes after it are still in the connection, and the new parser is
//! primed with the client's own stream header (captured by `Tap` as it was read) so that it
//! knows the namespaces, prefixes and `xml:lang` the client declared there.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rxml::Parse;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};
use xmpp_parsers::stream_error::DefinedCondition;
use xso::AsXml;

use super::elements::{Elements, Primed};
use super::errors::{CLOSE_TIMEOUT, classify_read_error};
use super::{Fatal, Incoming, Link};
use crate::link::SharedStanza;
use crate::transport::Conn;
use jid::FullJid;

/// Serialised stanzas waiting for the socket are written out beyond this, even mid-batch.
const WRITE_HIGH_WATER: usize = 64 * 1024;

const STREAM_FOOTER: &[u8] = b"</stream:stream>";

/// A bound session's TCP connection.
pub struct TcpLink {
    /// The connection and its parser: writes go to the connection through it.
    reader: rxml::AsyncReader<Conn>,
    elements: Elements,
    /// Serialised and not yet written; freed once written.
    pending: Vec<u8>,
    timer: Pin<Box<Sleep>>,
    last_data: Instant,
    /// Set when `Incoming::Idle` was reported and nothing was read since.
    idle_since: Option<Instant>,
    read_timeout: Duration,
    response_timeout: Duration,
    stanza_timeout: Duration,
}

/// How long the stream waits for the client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Silence after which the session is told `Idle` (and pings).
    pub read: Duration,
    /// Further silence after which the stream fails.
    pub response: Duration,
    /// Time one stanza may take to arrive in full. It is checked when the read timer fires,
    /// so that reading a stanza never moves a timer: a stanza may last up to the larger of
    /// this and `read`.
    pub stanza: Duration,
}

impl TcpLink {
    pub fn new(conn: Conn, primed: Primed, timeouts: Timeouts) -> Self {
        let now = Instant::now();
        let (read_timeout, response_timeout) = (timeouts.read, timeouts.response);
        let (parser, elements) = Elements::after(primed);
        Self {
            reader: rxml::AsyncReader::wrap(conn, parser),
            elements,
            pending: Vec::new(),
            timer: Box::pin(tokio::time::sleep_until(now + read_timeout)),
            last_data: now,
            idle_since: None,
            read_timeout,
            response_timeout,
            stanza_timeout: timeouts.stanza,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        // The timeouts count in seconds: one clock read per wake-up is enough.
        let mut stamped = false;
        loop {
            // Whitespace between stanzas (keepalives) comes as events of its own instead of
            // piling up in the parser.
            let buffering = self.elements.building.is_some();
            self.reader.parser_mut().set_text_buffering(buffering);
            match Pin::new(&mut self.reader).poll_read(cx) {
                Poll::Ready(Ok(Some(event))) => {
                    if !stamped {
                        stamped = true;
                        self.last_data = Instant::now();
                        self.idle_since = None;
                    }
                    if let Some(incoming) = self.elements.take_event(event, self.last_data) {
                        return Poll::Ready(incoming);
                    }
                }
                // The footer comes as an event (`Elements::take_event`): an end of file here is
                // a connection gone without closing its stream.
                Poll::Ready(Ok(None)) => return Poll::Ready(Incoming::Lost),
                Poll::Ready(Err(err)) if is_eof(&err) => return Poll::Ready(Incoming::Lost),
                Poll::Ready(Err(err)) => {
                    return Poll::Ready(match classify_read_error(&err) {
                        Some(fatal) => Incoming::Fatal(fatal),
                        None => Incoming::Lost,
                    });
                }
                Poll::Pending => {
                    // Nothing more to read for now: the connection may stay idle for hours.
                    // `shrink_to_fit` keeps whatever part of a token was read.
                    self.reader.parser_mut().release_temporaries();
                    return self.poll_timer(cx);
                }
            }
        }
    }

    fn conn(&mut self) -> &mut Conn {
        self.reader.inner_mut()
    }

    /// `Idle` after `read_timeout` of silence, a failure after `response_timeout` more. The
    /// timer is moved only when it fires, never per stanza: resetting it takes the runtime's
    /// timer lock, which every session shares.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            let due = match self.idle_since {
                Some(since) => since + self.response_timeout,
                None => self.last_data + self.read_timeout,
            };
            // Text inside a stanza is buffered by the parser and stamps no `last_data`: a
            // stanza that trickles in looks idle, and only its own deadline ends it.
            let stanza_end = self
                .elements
                .stanza_started
                .map(|s| s + self.stanza_timeout);
            if stanza_end.is_some_and(|end| now >= end) {
                return Poll::Ready(Incoming::Fatal(Fatal::new(
                    DefinedCondition::PolicyViolation,
                    format!(
                        "a stanza took longer than {} s to arrive",
                        self.stanza_timeout.as_secs()
                    ),
                )));
            }
            let next = |at: Instant| stanza_end.map_or(at, |end| end.min(at));
            if now < due {
                self.timer.as_mut().reset(next(due));
                continue;
            }
            if self.idle_since.is_some() {
                return Poll::Ready(Incoming::Fatal(Fatal::new(
                    DefinedCondition::ConnectionTimeout,
                    "no data received for too long",
                )));
            }
            self.idle_since = Some(now);
            self.timer.as_mut().reset(next(now + self.response_timeout));
            return Poll::Ready(Incoming::Idle);
        }
    }

    fn encode(&mut self, element: &impl AsXml) -> io::Result<()> {
        crate::link::encode_in_stream(element, &mut self.pending)
    }

    async fn write_pending(&mut self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.conn().write_all(&pending).await
    }

    async fn write_footer(&mut self) -> io::Result<()> {
        // Our header was written with the `stream` prefix (see `new`).
        self.pending.extend_from_slice(STREAM_FOOTER);
        self.flush().await?;
        self.conn().shutdown().await
    }
}

impl Link for TcpLink {
    fn next_element(&mut self) -> impl Future<Output = Incoming> + Send + '_ {
        std::future::poll_fn(|cx| self.poll_next(cx))
    }

    /// Serialises `element` for the next flush; writes out what is pending past the high-water
    /// mark. An element that cannot be serialised is left out whole.
    async fn feed_shared(&mut self, stanza: &SharedStanza, to: &FullJid) -> io::Result<()> {
        stanza.write_to(to, &mut self.pending);
        if self.pending.len() >= WRITE_HIGH_WATER {
            self.write_pending().await?;
        }
        Ok(())
    }

    async fn feed(&mut self, element: &(impl AsXml + Sync)) -> io::Result<()> {
        let before = self.pending.len();
        if let Err(err) = self.encode(element) {
            self.pending.truncate(before);
            return Err(err);
        }
        if self.pending.len() >= WRITE_HIGH_WATER {
            self.write_pending().await?;
        }
        Ok(())
    }

    /// Writes what was fed, then frees the buffer.
    async fn flush(&mut self) -> io::Result<()> {
        self.write_pending().await?;
        self.conn().flush().await
    }

    async fn close(&mut self, error: Option<&Fatal>) {
        let close = async {
            if let Some(fatal) = error {
                tracing::debug!(condition = ?fatal.condition, text = %fatal.text, "closing stream with error");
                self.feed(&fatal.to_stream_error()).await?;
            }
            self.write_footer().await
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    }
}

/// The connection ended without a stream footer: the client is gone, nobody is left to read
/// a stream error.
fn is_eof(err: &io::Error) -> bool {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rxml::Error>())
        .is_some_and(|err| matches!(err, rxml::Error::InvalidEof(_)))
}
