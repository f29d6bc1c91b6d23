//! A bound resource: one task waits on the next stanza from the client, its outbound queue,
//! an external close and server shutdown.

use std::sync::Arc;
use std::time::Duration;

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
use crate::im;
use crate::router::Sender;
use crate::router::{CloseReason, Outbound, SessionControl, SessionHandle};
use crate::stream::{ClientElement, Fatal, Incoming, Link, shutting_down, unexpected};

/// Stanzas written to the socket before one flush.
const WRITE_BATCH: usize = 64;
/// A client that takes longer than this to accept a batch is gone or hostile.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A session's receiving end, created when its resource is bound.
pub struct Bound {
    pub jid: FullJid,
    queue: mpsc::Receiver<Outbound>,
    control: Arc<SessionControl>,
    /// The last id of a batch of offline messages written to the client, followed by a ping
    /// (`offline-<id>`) whose answer proves the client read them all (a stream is ordered):
    /// only then are they deleted.
    offline_written: Option<i64>,
}

const OFFLINE_PING: &str = "offline-";

impl Bound {
    fn username(&self) -> &str {
        self.jid.node().map_or("", |n| n.as_str())
    }

    /// Whether `element` is the client's answer to the ping after an offline batch; if so,
    /// the last id of that batch.
    fn offline_acknowledged(&mut self, element: &ClientElement) -> Option<i64> {
        let written = self.offline_written?;
        let ClientElement::Known(FallibleStreamElement::Ok(XmppStreamElement::Stanza(Stanza::Iq(
            iq @ (Iq::Result { .. } | Iq::Error { .. }),
        )))) = element
        else {
            return None;
        };
        let to_server = iq.to().is_none_or(|to| to.node().is_none());
        let acknowledged = iq
            .id()
            .strip_prefix(OFFLINE_PING)
            .and_then(|id| id.parse::<i64>().ok());
        if !to_server || acknowledged != Some(written) {
            return None;
        }
        self.offline_written.take()
    }
}

impl Bound {
    pub fn unregister(&self, shared: &Shared) {
        shared.router.unregister(&self.jid, &self.control);
    }

    /// Undoes `register` for a session that never ran.
    pub async fn abandon(self, shared: &Shared) {
        self.unregister(shared);
        shared.rosters.detach(&self.jid.to_bare()).await;
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
    shared.rosters.attach(shared, &jid.to_bare()).await?;
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
            shared.rosters.detach(&jid.to_bare()).await;
            return Err(too_many.into());
        }
    }
    Ok(Bound {
        jid: jid.clone(),
        queue,
        control,
        offline_written: None,
    })
}

/// How a session ends.
enum End {
    /// With a stream error.
    /// Boxed: the loop's state keeps room for it.
    Error(Box<Fatal>),
    /// By closing the stream, after the client closed its own or went away.
    Clean,
    /// By dropping the connection: writing to it no longer works.
    Abort,
}

/// What an idle session may keep in its own state, in bytes (the stream itself is boxed
/// apart). Every connection holds it: see bench/RESULTS.md before raising it. Stanza handling,
/// writes, pings and closes are rare next to waiting, so they are boxed, and so is each
/// element read (`Incoming`).
const IDLE_STATE_BUDGET: usize = 512;

/// The session's future, boxed, so that the connection's task stays small.
pub fn start<L: Link>(
    session: Box<(L, Bound)>,
    shared: Arc<Shared>,
) -> std::pin::Pin<Box<impl std::future::Future<Output = ()> + Send>> {
    let future = run(session, shared);
    debug_assert!(
        std::mem::size_of_val(&future) <= IDLE_STATE_BUDGET,
        "session state grew to {} bytes",
        std::mem::size_of_val(&future)
    );
    Box::pin(future)
}

/// Runs a bound session to its end. The stream stays in its box: an async fn keeps both its
/// arguments and their moved copies in its state.
async fn run<L: Link>(mut session: Box<(L, Bound)>, shared: Arc<Shared>) {
    let (xml, bound) = &mut *session;
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
                        written = Box::pin(write_batch(xml, first, &mut bound.queue, &bound.control)) => {
                            if !written {
                                break End::Abort;
                            }
                        }
                        reason = &mut close_request => {
                            tracing::info!(jid = %bound.jid, reason = reason.text, "closed while blocked writing");
                            break End::Abort;
                        }
                    }
                }
                incoming = xml.next_element() => match incoming {
                    Incoming::Element(element) => {
                        if let Some(last_id) = bound.offline_acknowledged(&element) {
                            Box::pin(im::offline::acknowledge(&shared, bound.username(), last_id)).await;
                            if !Box::pin(deliver_offline(xml, &shared, bound, last_id)).await {
                                break End::Abort;
                            }
                            continue;
                        }
                        // Boxed: stanza handling is deep and brief; the idle session must stay
                        // small.
                        match Box::pin(handle(&shared, bound, element)).await {
                            Ok(handled) => {
                                if !handled.direct.is_empty()
                                    && !Box::pin(write_all(xml, &handled.direct)).await
                                {
                                    break End::Abort;
                                }
                                if handled.offline
                                    && bound.offline_written.is_none()
                                    && !Box::pin(deliver_offline(xml, &shared, bound, 0)).await
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
                        if !Box::pin(ping(xml, &shared, &bound.jid, pings)).await {
                            break End::Abort;
                        }
                    }
                    Incoming::Closed => break End::Clean,
                    Incoming::Fatal(fatal) => break End::Error(Box::new(fatal)),
                }
            }
        }
    };
    bound.unregister(&shared);
    im::presence::session_ended(&shared, &bound.jid, &bound.control);
    Box::pin(shared.rosters.detach(&bound.jid.to_bare())).await;
    match end {
        End::Error(fatal) => Box::pin(xml.close(Some(&fatal))).await,
        End::Clean => Box::pin(xml.close(None)).await,
        // The socket is stuck or gone: dropping it is all that is left to do.
        End::Abort => {}
    }
    tracing::info!(jid = %bound.jid, "session ended");
}

/// Writes the next batch of offline messages after id `after`, then a ping; the batch is
/// deleted when the client answers it (`Bound::offline_acknowledged`), and the next one
/// follows. A client that goes away before answering gets the batch again at its next login.
/// Each write has its own timeout: a slow reader gets its backlog at its own pace.
async fn deliver_offline(
    xml: &mut impl Link,
    shared: &Shared,
    bound: &mut Bound,
    after: i64,
) -> bool {
    let Some(batch) = im::offline::next_batch(shared, bound.username(), after).await else {
        return true;
    };
    let ping = server_ping(
        shared,
        &bound.jid,
        format!("{OFFLINE_PING}{}", batch.last_id),
    );
    for message in batch.messages {
        let message = Stanza::Message(message);
        if !matches!(
            tokio::time::timeout(WRITE_TIMEOUT, xml.feed(&message)).await,
            Ok(Ok(()))
        ) {
            return false;
        }
    }
    if !matches!(
        tokio::time::timeout(WRITE_TIMEOUT, xml.send(&ping)).await,
        Ok(Ok(()))
    ) {
        return false;
    }
    bound.offline_written = Some(batch.last_id);
    true
}

/// Writes stanzas with a single flush.
async fn write_all(xml: &mut impl Link, stanzas: &[Stanza]) -> bool {
    let write = async {
        for stanza in stanzas {
            xml.feed(stanza).await?;
        }
        xml.flush().await
    };
    matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
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

/// Sends an XEP-0199 ping to the client.
async fn ping(xml: &mut impl Link, shared: &Shared, to: &FullJid, count: u64) -> bool {
    let ping = server_ping(shared, to, format!("c2s-ping-{count}"));
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, xml.send(&ping)).await,
        Ok(Ok(()))
    )
}

/// Writes what the queue holds, up to a batch, with a single flush.
async fn write_batch(
    xml: &mut impl Link,
    first: Outbound,
    queue: &mut mpsc::Receiver<Outbound>,
    control: &SessionControl,
) -> bool {
    let write = async {
        control.dequeued(&first);
        xml.feed(&*first).await?;
        for _ in 1..WRITE_BATCH {
            match queue.try_recv() {
                Ok(next) => {
                    control.dequeued(&next);
                    xml.feed(&*next).await?
                }
                Err(_) => break,
            }
        }
        xml.flush().await
    };
    matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

/// What the session does itself once a stanza is handled.
struct Handled {
    /// Stanzas to write at once.
    direct: Vec<Stanza>,
    /// Deliver the offline messages.
    offline: bool,
}

/// Handles one element from the client.
async fn handle(
    shared: &Shared,
    bound: &Bound,
    element: Box<ClientElement>,
) -> Result<Handled, Fatal> {
    let sender = Sender::new(&bound.jid, &bound.control);
    match *element {
        ClientElement::Known(FallibleStreamElement::Ok(XmppStreamElement::Stanza(stanza))) => {
            let stanza = stamp_from(stanza, &bound.jid)?;
            crate::routing::route(shared, &sender, stanza).await;
            Ok(Handled {
                direct: sender.take_replies(),
                offline: sender.offline_requested(),
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
                direct: direct.into_iter().collect(),
                offline: false,
            })
        }
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
