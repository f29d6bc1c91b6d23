//! A bound resource: one task waits on the next stanza from the client, its outbound queue,
//! an external close and server shutdown.
//!
//! The session knows nothing of instant messaging: what happens when it is bound, handles a
//! stanza, delivers its backlog and ends is the `Lifecycle` registered in `Shared` (`im`'s).
//! Everything it sends goes through its `Outbox`, and top-level elements that are not stanzas
//! go to `nonza::dispatch`.

use std::sync::Arc;

use jid::{FullJid, Jid};
use tokio::sync::mpsc;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, RawStanzaHeader, StreamElementError, XmppStreamElement,
};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::ping::Ping;
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition as StanzaCondition, ErrorType, StanzaError};
use xmpp_parsers::stream_error::DefinedCondition;

use crate::Shared;
use crate::link::{ClientElement, Fatal, Incoming, Link, shutting_down, unexpected};
use crate::router::Sender;
use crate::router::{CloseReason, Queued, SessionControl, SessionHandle};

mod nonza;
mod outbox;

pub use outbox::Outbox;

/// What the layers above a session do at the points of its life.
#[async_trait::async_trait]
pub trait Lifecycle: Send + Sync + 'static {
    /// Before the resource is bound: loads what the account needs while it is online.
    async fn binding(&self, shared: &Shared, jid: &FullJid) -> Result<(), crate::storage::Error>;

    /// Undoes `binding` for a resource that was not bound after all.
    async fn unbound(&self, shared: &Shared, jid: &FullJid);

    /// A stanza from the client, `from` stamped with the session's full JID.
    async fn stanza(&self, shared: &Shared, sender: &Sender<'_>, stanza: Stanza);

    /// What was kept for the account while it was away, after id `after`, in batches: the
    /// session writes a batch, then a ping whose answer proves the client read it (a stream
    /// is ordered), and only then calls `acknowledged`.
    async fn backlog(&self, shared: &Shared, jid: &FullJid, after: i64) -> Option<Backlog>;

    /// The client has the backlog through `last_id`: it may be deleted.
    async fn acknowledged(&self, shared: &Shared, jid: &FullJid, last_id: i64);

    /// The link is gone, and how. Today `ended` follows at once; with stream resumption
    /// (XEP-0198) a session whose link was `Departure::Lost` will wait here, its state kept,
    /// for the client to come back.
    fn detached(&self, shared: &Shared, jid: &FullJid, departure: Departure);

    /// The session is over: it is unregistered, and the rest of the world learns it is gone.
    async fn ended(&self, shared: &Shared, jid: &FullJid, control: &SessionControl);
}

/// How a session's link went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The client closed its stream, or the stream ended with an error, or the server closed
    /// it: the session is over.
    Ended,
    /// The connection went away without the stream being closed, or could no longer be
    /// written to: the client may come back for the session.
    Lost,
}

/// One batch of a session's backlog.
pub struct Backlog {
    pub stanzas: Vec<Stanza>,
    /// The id that `Lifecycle::acknowledged` takes once the client has the batch.
    pub last_id: i64,
}

/// A session's receiving end, created when its resource is bound.
pub struct Bound {
    pub jid: FullJid,
    queue: mpsc::Receiver<Queued>,
    control: Arc<SessionControl>,
    /// The last id of a backlog batch written to the client, followed by a ping
    /// (`offline-<id>`) whose answer acknowledges it.
    backlog_written: Option<i64>,
}

/// The prefix of the ping ids after a backlog batch (the backlog is the offline messages).
const BACKLOG_PING: &str = "offline-";

impl Bound {
    /// Whether `element` is the client's answer to the ping after a backlog batch; if so,
    /// the last id of that batch.
    fn backlog_acknowledged(&mut self, element: &ClientElement) -> Option<i64> {
        let written = self.backlog_written?;
        let ClientElement::Known(FallibleStreamElement::Ok(XmppStreamElement::Stanza(Stanza::Iq(
            iq @ (Iq::Result { .. } | Iq::Error { .. }),
        )))) = element
        else {
            return None;
        };
        let to_server = iq.to().is_none_or(|to| to.node().is_none());
        let acknowledged = iq
            .id()
            .strip_prefix(BACKLOG_PING)
            .and_then(|id| id.parse::<i64>().ok());
        if !to_server || acknowledged != Some(written) {
            return None;
        }
        self.backlog_written.take()
    }
}

impl Bound {
    pub fn unregister(&self, shared: &Shared) {
        shared.router.unregister(&self.jid, &self.control);
    }

    /// Undoes `register` for a session that never ran.
    pub async fn abandon(self, shared: &Shared) {
        self.unregister(shared);
        shared.lifecycle.unbound(shared, &self.jid).await;
    }
}

/// Why a resource could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    #[error(transparent)]
    TooManyResources(#[from] crate::router::TooManyResources),
}

/// Loads the account's roster if it is not online yet, then registers the bound resource
/// with the router. A session already bound to the same full JID is closed with
/// `<conflict/>` (RFC 6120 §7.7.2.2: the new one wins).
pub async fn register(jid: &FullJid, shared: &Shared) -> Result<Bound, RegisterError> {
    shared.lifecycle.binding(shared, jid).await?;
    let (queue_tx, queue) = mpsc::channel(shared.config.limits.session_queue);
    let control = Arc::new(SessionControl::default());
    let handle = SessionHandle::new(jid.clone(), queue_tx, control.clone());
    match shared.router.register(handle) {
        Ok(Some(old)) => old.close(CloseReason {
            french: None,
            condition: DefinedCondition::Conflict,
            text: "replaced by a new connection bound to the same resource",
        }),
        Ok(None) => {}
        Err(too_many) => {
            shared.lifecycle.unbound(shared, jid).await;
            return Err(too_many.into());
        }
    }
    Ok(Bound {
        jid: jid.clone(),
        queue,
        control,
        backlog_written: None,
    })
}

/// How a session ends.
enum End {
    /// With a stream error.
    /// Boxed: the loop's state keeps room for it.
    Error(Box<Fatal>),
    /// By closing the stream, after the client closed its own.
    Clean,
    /// By closing the stream as far as the connection still takes it: it went away without
    /// the stream being closed.
    Lost,
    /// By dropping the connection: writing to it no longer works.
    Abort,
    /// By dropping the connection: the server closed the session while a write was stuck.
    Stuck,
}

impl End {
    fn departure(&self) -> Departure {
        match self {
            End::Lost | End::Abort => Departure::Lost,
            End::Error(_) | End::Clean | End::Stuck => Departure::Ended,
        }
    }
}

/// What an idle session may keep in its own state, in bytes (the stream itself is boxed
/// apart). Every connection holds it: see bench/RESULTS.md before raising it. Stanza handling,
/// writes, pings and closes are rare next to waiting, so they are boxed, and so is each
/// element read (`Incoming`).
const IDLE_STATE_BUDGET: usize = 512;

/// The session's future, boxed, so that the connection's task stays small.
pub fn start<L: Link>(
    link: L,
    bound: Bound,
    shared: Arc<Shared>,
) -> std::pin::Pin<Box<impl std::future::Future<Output = ()> + Send>> {
    let future = run(Box::new((Outbox::new(link), bound)), shared);
    debug_assert!(
        std::mem::size_of_val(&future) <= IDLE_STATE_BUDGET,
        "session state grew to {} bytes",
        std::mem::size_of_val(&future)
    );
    Box::pin(future)
}

/// Runs a bound session to its end. The stream stays in its box: an async fn keeps both its
/// arguments and their moved copies in its state.
async fn run<L: Link>(mut session: Box<(Outbox<L>, Bound)>, shared: Arc<Shared>) {
    let (outbox, bound) = &mut *session;
    let control = bound.control.clone();
    // Made once and polled by every turn of the loop: making it anew each turn registered and
    // dropped a waiter per stanza. Server shutdown arrives the same way (`Router::close_all`),
    // so that the loop takes no lock shared with other sessions.
    let mut close_request = std::pin::pin!(control.closed());
    let mut pings: u64 = 0;
    // Bound after `close_all` went through the router: nobody else will tell this session.
    let end = if shared.shutdown.is_cancelled() {
        End::Error(Box::new(shutting_down()))
    } else {
        loop {
            tokio::select! {
                biased;
                reason = &mut close_request => {
                    closed_by_server(&shared, &bound.jid, &reason);
                    let fatal = Fatal::new(reason.condition, reason.text);
                    break End::Error(Box::new(match reason.french {
                        Some(french) => fatal.with_french(french),
                        None => fatal,
                    }));
                }
                Some(first) = bound.queue.recv() => {
                    // A client that stops reading blocks this write: a close request or shutdown
                    // must still end the session, without waiting on that socket any more.
                    tokio::select! {
                        // Boxed, as a timeout with its timer and writes in flight is most of
                        // the loop's state, and the loop waits far more than it writes.
                        written = Box::pin(outbox.write_queued(first, &mut bound.queue, &bound.control, &bound.jid, &shared.metrics.stanzas_out)) => {
                            if !written {
                                break End::Abort;
                            }
                        }
                        reason = &mut close_request => {
                            closed_by_server(&shared, &bound.jid, &reason);
                            break End::Stuck;
                        }
                    }
                }
                incoming = outbox.link().next_element() => match incoming {
                    Incoming::Element(element) => {
                        if let Some(last_id) = bound.backlog_acknowledged(&element) {
                            Box::pin(shared.lifecycle.acknowledged(&shared, &bound.jid, last_id)).await;
                            if !Box::pin(deliver_backlog(outbox, &shared, bound, last_id)).await {
                                break End::Abort;
                            }
                            continue;
                        }
                        // Boxed: stanza handling is deep and brief; the idle session must stay
                        // small.
                        match Box::pin(handle(&shared, bound, element)).await {
                            Ok(handled) => {
                                if !handled.replies.is_empty()
                                    && !Box::pin(outbox.write_all(&handled.replies, &shared.metrics.stanzas_out)).await
                                {
                                    break End::Abort;
                                }
                                if !handled.nonzas.is_empty()
                                    && !Box::pin(outbox.write_nonzas(&handled.nonzas)).await
                                {
                                    break End::Abort;
                                }
                                if handled.backlog
                                    && bound.backlog_written.is_none()
                                    && !Box::pin(deliver_backlog(outbox, &shared, bound, 0)).await
                                {
                                    break End::Abort;
                                }
                            }
                            Err(fatal) => break End::Error(Box::new(fatal)),
                        }
                    }
                    Incoming::Idle => {
                        // XEP-0199: any answer, even an error, proves the client is there.
                        pings += 1;
                        if !Box::pin(ping(outbox, &shared, &bound.jid, pings)).await {
                            break End::Abort;
                        }
                    }
                    Incoming::Closed => break End::Clean,
                    Incoming::Lost => break End::Lost,
                    Incoming::Fatal(fatal) => break End::Error(Box::new(fatal)),
                }
            }
        }
    };
    let departure = end.departure();
    shared.lifecycle.detached(&shared, &bound.jid, departure);
    bound.unregister(&shared);
    Box::pin(shared.lifecycle.ended(&shared, &bound.jid, &bound.control)).await;
    match end {
        End::Error(fatal) => Box::pin(outbox.link().close(Some(&fatal))).await,
        End::Clean | End::Lost => Box::pin(outbox.link().close(None)).await,
        // The socket is stuck or gone: dropping it is all that is left to do.
        End::Abort | End::Stuck => {}
    }
    tracing::info!(jid = %bound.jid, ?departure, "session ended");
}

/// Logs why the server closes a session (a policy change, a slow reader, a conflict,
/// shutdown), and counts slow readers.
fn closed_by_server(shared: &Shared, jid: &FullJid, reason: &CloseReason) {
    if reason.text == crate::router::SLOW_READER {
        shared.metrics.slow_reader_closes.inc();
    }
    tracing::info!(
        jid = %jid,
        condition = reason.condition.to_string(),
        reason = reason.text,
        "session closed by the server"
    );
}

/// Writes the next batch of the backlog after id `after`, then a ping; the batch is
/// acknowledged when the client answers it (`Bound::backlog_acknowledged`), and the next one
/// follows. A client that goes away before answering gets the batch again at its next login.
async fn deliver_backlog<L: Link>(
    outbox: &mut Outbox<L>,
    shared: &Shared,
    bound: &mut Bound,
    after: i64,
) -> bool {
    let Some(batch) = shared.lifecycle.backlog(shared, &bound.jid, after).await else {
        return true;
    };
    let ping = server_ping(
        shared,
        &bound.jid,
        format!("{BACKLOG_PING}{}", batch.last_id),
    );
    let counts = &shared.metrics.stanzas_out;
    if !outbox.write_paced(&batch.stanzas, counts).await
        || !outbox.write_all(std::slice::from_ref(&ping), counts).await
    {
        return false;
    }
    counts_delivered(shared, batch.stanzas.len());
    bound.backlog_written = Some(batch.last_id);
    true
}

fn counts_delivered(shared: &Shared, count: usize) {
    shared.metrics.offline_delivered.inc_by(count as u64);
}

/// Sends an XEP-0199 ping to the client.
async fn ping<L: Link>(outbox: &mut Outbox<L>, shared: &Shared, to: &FullJid, count: u64) -> bool {
    let ping = server_ping(shared, to, format!("c2s-ping-{count}"));
    outbox
        .write_all(std::slice::from_ref(&ping), &shared.metrics.stanzas_out)
        .await
}

/// An XEP-0199 ping from the server to a session.
fn server_ping(shared: &Shared, to: &FullJid, id: String) -> Stanza {
    Stanza::Iq(Iq::Get {
        from: Some(Jid::from(shared.domain.clone())),
        to: Some(Jid::from(to.clone())),
        id,
        payload: Ping.into(),
    })
}

/// What the session does itself once an element is handled.
#[derive(Default)]
struct Handled {
    /// Stanzas for the client, written at once.
    replies: Vec<Stanza>,
    /// Top-level elements that are not stanzas, for the client.
    nonzas: Vec<minidom::Element>,
    /// Deliver the backlog.
    backlog: bool,
}

/// Handles one element from the client.
async fn handle(
    shared: &Shared,
    bound: &mut Bound,
    element: Box<ClientElement>,
) -> Result<Handled, Fatal> {
    match *element {
        ClientElement::Known(FallibleStreamElement::Ok(XmppStreamElement::Stanza(stanza))) => {
            shared.metrics.stanzas_in.count(&stanza);
            let sender = Sender::new(&bound.jid, &bound.control);
            let stanza = stamp_from(stanza, &bound.jid)?;
            shared.lifecycle.stanza(shared, &sender, stanza).await;
            Ok(Handled {
                replies: sender.take_replies(),
                backlog: sender.offline_requested(),
                nonzas: Vec::new(),
            })
        }
        ClientElement::Known(FallibleStreamElement::Err(StreamElementError::InvalidStanza {
            ns,
            name,
            header,
            error,
        })) if ns.as_str() == xmpp_parsers::ns::JABBER_CLIENT => {
            let direct = invalid_stanza_reply(
                shared,
                &bound.jid,
                &name.to_string(),
                header,
                &error.to_string(),
            );
            Ok(Handled {
                replies: direct.into_iter().collect(),
                ..Handled::default()
            })
        }
        ClientElement::Known(FallibleStreamElement::Ok(XmppStreamElement::SM(sm))) => {
            let element = xso::transform::<minidom::Element, _>(&sm)
                .map_err(|err| Fatal::new(DefinedCondition::BadFormat, err.to_string()))?;
            Ok(Handled {
                nonzas: nonza::dispatch(bound, &element)?,
                ..Handled::default()
            })
        }
        ClientElement::Unknown(element) => Ok(Handled {
            nonzas: nonza::dispatch(bound, &element)?,
            ..Handled::default()
        }),
        other => Err(unexpected(&other)),
    }
}

/// What the session computes of an element a client sent, before routing it.
#[cfg(feature = "fuzzing")]
pub fn fuzz_element(element: ClientElement) {
    let ClientElement::Known(FallibleStreamElement::Ok(XmppStreamElement::Stanza(stanza))) =
        element
    else {
        let _ = unexpected(&element);
        return;
    };
    let Ok(jid) = FullJid::new("user@localhost/fuzz") else {
        return;
    };
    if let Ok(stanza) = stamp_from(stanza, &jid) {
        let _ = crate::router::stanza_cost(&stanza);
        let error = StanzaError::new(ErrorType::Cancel, StanzaCondition::Forbidden, "en", "fuzz");
        let _ = crate::reply::error_reply(&stanza, error);
    }
}

/// RFC 6120 §8.1.2.1: the server stamps the sender's full JID. A client may put its own bare
/// or full JID there, nothing else.
fn stamp_from(mut stanza: Stanza, jid: &FullJid) -> Result<Stanza, Fatal> {
    let from = match &mut stanza {
        Stanza::Message(m) => &mut m.from,
        Stanza::Presence(p) => &mut p.from,
        Stanza::Iq(iq) => iq.from_mut(),
    };
    if let Some(claimed) = from.as_ref() {
        let own = match claimed.try_as_full() {
            Ok(full) => full == jid,
            Err(bare) => *bare == jid.to_bare(),
        };
        if !own {
            return Err(Fatal::new(
                DefinedCondition::InvalidFrom,
                "the from address does not match the bound JID",
            ));
        }
    }
    *from = Some(Jid::from(jid.clone()));
    Ok(stanza)
}

/// The error for a stanza that could not be parsed (a malformed address, a bad attribute…),
/// built from what could be read of its header. `None` for errors and for stanzas whose
/// reply could not be addressed.
fn invalid_stanza_reply(
    shared: &Shared,
    own: &FullJid,
    kind: &str,
    header: RawStanzaHeader,
    reason: &str,
) -> Option<Stanza> {
    if header.type_.as_deref() == Some("error") {
        return None;
    }
    let bad_address = header.to.as_deref().is_some_and(|to| Jid::new(to).is_err());
    let (condition, text) = if bad_address {
        (
            StanzaCondition::JidMalformed,
            format!("malformed address: {reason}"),
        )
    } else {
        (
            StanzaCondition::BadRequest,
            format!("malformed stanza: {reason}"),
        )
    };
    let error = StanzaError::new(ErrorType::Modify, condition, "en", text);
    // Reply from the addressee when its address is valid, else from the server.
    let from = header
        .to
        .as_deref()
        .and_then(|to| Jid::new(to).ok())
        .or_else(|| Some(Jid::from(shared.domain.clone())));
    let to = Some(Jid::from(own.clone()));
    Some(match kind {
        "message" => {
            let mut reply = Message::new_with_type(MessageType::Error, to);
            reply.from = from;
            reply.id = header.id.map(xmpp_parsers::message::Id);
            reply.payloads.push(error.into());
            Stanza::Message(reply)
        }
        "presence" => {
            let mut reply = Presence::new(PresenceType::Error);
            reply.from = from;
            reply.to = to;
            reply.id = header.id;
            reply.payloads.push(error.into());
            Stanza::Presence(reply)
        }
        _ => {
            if matches!(header.type_.as_deref(), Some("result")) {
                return None;
            }
            Stanza::Iq(Iq::Error {
                from,
                to,
                id: header.id.unwrap_or_default(),
                error,
                payload: None,
            })
        }
    })
}
