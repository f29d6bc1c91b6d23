//! The session's side of a BOSH session: it reads the stanzas of each request in `rid` order
//! and puts its own in the next answer.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use jid::FullJid;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use xmpp_parsers::stream_error::DefinedCondition;
use xso::AsXml;

use super::session::{BoshSession, Inbound, Taken};
use crate::Shared;
use crate::link::{Fatal, Incoming, Link, SharedStanza, encode_standalone};
use crate::stream::framed::FramedLink;

pub struct BoshLink {
    session: Arc<BoshSession>,
    woken: mpsc::Receiver<()>,
    /// The rest of the request being read.
    ready: VecDeque<Inbound>,
    /// Encoded and not yet handed to the session.
    pending: Vec<u8>,
    /// When the session expires if no request comes.
    timer: Pin<Box<Sleep>>,
}

impl BoshLink {
    pub fn new(session: Arc<BoshSession>, woken: mpsc::Receiver<()>) -> Self {
        let expiry = Instant::now() + session.granted.inactivity;
        Self {
            session,
            woken,
            ready: VecDeque::new(),
            pending: Vec::new(),
            timer: Box::pin(tokio::time::sleep_until(expiry)),
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Poll::Ready(match item {
                    Inbound::Element(element) => Incoming::Element(element),
                    Inbound::End => Incoming::Closed,
                });
            }
            let expiry = match self.session.take_inbound(Instant::now()) {
                Taken::Batch(items) => {
                    self.ready = items.into();
                    continue;
                }
                // Ended by the server (inactivity, a request out of the window) after the
                // client stopped sending: its `terminate` would have come as `Inbound::End`.
                Taken::Ended => return Poll::Ready(Incoming::Lost),
                Taken::Nothing(expiry) => expiry,
            };
            match self.woken.poll_recv(cx) {
                Poll::Ready(Some(())) => continue,
                Poll::Ready(None) => return Poll::Ready(Incoming::Lost),
                Poll::Pending => {}
            }
            if let Some(at) = expiry {
                if self.timer.deadline() != at {
                    self.timer.as_mut().reset(at);
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            return Poll::Pending;
        }
    }
}

impl FramedLink for BoshLink {
    /// The session's parameters in the answer to the creation request stand for it.
    async fn open(&mut self, _shared: &Shared, _stream_id: &str) -> io::Result<()> {
        Ok(())
    }
}

impl Link for BoshLink {
    fn next_element(&mut self) -> impl Future<Output = Incoming> + Send + '_ {
        std::future::poll_fn(|cx| self.poll_next(cx))
    }

    async fn feed(&mut self, element: &(impl AsXml + Sync)) -> io::Result<()> {
        encode_standalone(element, &mut self.pending)
    }

    async fn feed_shared(&mut self, stanza: &SharedStanza, to: &FullJid) -> io::Result<()> {
        stanza.write_standalone_to(to, &mut self.pending);
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.session.push_outbound(&mut self.pending).map_err(|()| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the BOSH client stopped collecting what it is sent",
            )
        })
    }

    async fn close(&mut self, error: Option<&Fatal>) {
        let mut payload = std::mem::take(&mut self.pending);
        let condition = match error {
            None => "",
            Some(fatal) if fatal.condition == DefinedCondition::SystemShutdown => "system-shutdown",
            Some(fatal) => {
                tracing::debug!(condition = ?fatal.condition, text = %fatal.text, "closing stream with error");
                if encode_standalone(&fatal.to_stream_error(), &mut payload).is_err() {
                    payload.clear();
                }
                "remote-stream-error"
            }
        };
        self.session.close(condition, &payload);
    }
}
