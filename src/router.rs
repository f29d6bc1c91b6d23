//! The router: bare JID → bound resources → each session's bounded outbound queue.
//!
//! The map is sharded (DashMap), so delivery takes one shard's read lock, never a global lock,
//! and never awaits while holding it: queues are fed with `try_send`. A full queue means the
//! session does not read what it is sent; it is closed rather than allowed to grow memory.
//! Sessions' state stays behind the router: handlers deliver, and ask what they need of an
//! account (its resources' current presence, who asked for the roster, closing its sessions)
//! through the router's methods, never through a session handle. So a router backed by a
//! message bus can replace this one when Causette runs on several nodes.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI8, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use tokio::sync::{Notify, mpsc};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::presence::Presence;
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stream_error::DefinedCondition;

use crate::link::SharedStanza;

/// A stanza on its way to one session. Boxed: the queue allocates its slots up front.
pub type Outbound = Box<Stanza>;

/// What a session's queue carries: a stanza for it alone, or one encoded once for many
/// recipients (a room's broadcast), which the session writes with its own `to`.
#[derive(Debug)]
pub enum Queued {
    Stanza(Outbound),
    Shared(Arc<SharedStanza>),
}

impl Queued {
    /// What it is counted for against the session's byte limit.
    fn cost(&self) -> usize {
        match self {
            Queued::Stanza(stanza) => stanza_cost(stanza),
            // The bytes are shared; the recipient and the slot are this session's.
            Queued::Shared(shared) => STANZA_OVERHEAD + shared.len(),
        }
    }
}

/// Why a session is being closed from outside, and the stream error it gets.
#[derive(Debug, Clone)]
pub struct CloseReason {
    pub condition: DefinedCondition,
    pub text: &'static str,
    /// The text in French, for closes a user must understand (decisions of the ENT).
    pub french: Option<&'static str>,
}

const MAX_DIRECTED: usize = 64;
/// IQ requests from other users a session may still answer; the oldest is forgotten first.
const MAX_OPEN_REQUESTS: usize = 32;

/// State a session shares with the router and with whoever may close it.
#[derive(Debug, Default)]
pub struct SessionControl {
    /// Estimated bytes of the stanzas in the session's queue (`stanza_cost`).
    queued_bytes: AtomicUsize,
    close: Notify,
    reason: Mutex<Option<CloseReason>>,
    /// Has sent initial presence and not gone unavailable (RFC 6121 §4.2).
    available: AtomicBool,
    priority: AtomicI8,
    /// Has asked for the roster, so gets roster pushes (RFC 6121 §2.1.6).
    roster_requested: AtomicBool,
    /// The last available presence broadcast, answered to probes (RFC 6121 §4.3.2).
    last_presence: Mutex<Option<Box<Presence>>>,
    /// Entities this session sent directed presence to (RFC 6121 §4.6), told when it leaves.
    directed: Mutex<Vec<Jid>>,
    /// IQ requests delivered to this session (asker, id): its answers to them pass the
    /// policy gate whatever the rules say of the way back.
    open_requests: Mutex<Vec<(FullJid, Box<str>)>>,
}

impl SessionControl {
    /// Asks the session to end with a stream error. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        if let Ok(mut slot) = self.reason.lock()
            && slot.is_none()
        {
            *slot = Some(reason);
        }
        self.close.notify_one();
    }

    /// Resolves once `close` has been called (also if it was called before).
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.reason.lock().ok().and_then(|r| r.clone()) {
                return reason;
            }
            self.close.notified().await;
        }
    }

    /// The session took a stanza out of its queue.
    pub fn dequeued(&self, queued: &Queued) {
        self.queued_bytes
            .fetch_sub(queued.cost(), Ordering::Relaxed);
    }

    pub fn set_presence(&self, available: bool, priority: i8) {
        self.priority.store(priority, Ordering::Relaxed);
        self.available.store(available, Ordering::Relaxed);
    }

    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    pub fn priority(&self) -> i8 {
        self.priority.load(Ordering::Relaxed)
    }

    pub fn set_roster_requested(&self) {
        self.roster_requested.store(true, Ordering::Relaxed);
    }

    pub fn roster_requested(&self) -> bool {
        self.roster_requested.load(Ordering::Relaxed)
    }

    pub fn set_last_presence(&self, presence: Option<Presence>) {
        if let Ok(mut slot) = self.last_presence.lock() {
            *slot = presence.map(Box::new);
        }
    }

    pub fn last_presence(&self) -> Option<Presence> {
        self.last_presence
            .lock()
            .ok()
            .and_then(|p| p.as_deref().cloned())
    }

    /// Remembers a directed presence target; bounded, since it only serves a courtesy.
    pub fn note_directed(&self, to: Jid) {
        if let Ok(mut list) = self.directed.lock()
            && !list.contains(&to)
            && list.len() < MAX_DIRECTED
        {
            list.push(to);
        }
    }

    pub fn forget_directed(&self, to: &Jid) {
        if let Ok(mut list) = self.directed.lock() {
            list.retain(|j| j != to);
        }
    }

    fn note_request(&self, from: &FullJid, id: &str) {
        if let Ok(mut open) = self.open_requests.lock() {
            if open.len() == MAX_OPEN_REQUESTS {
                open.remove(0);
            }
            open.push((from.clone(), id.into()));
        }
    }

    /// Whether a result or error to `to` with `id` answers a request this session was sent;
    /// an answer is let through once.
    pub fn answered(&self, to: &Jid, id: &str) -> bool {
        let Ok(to) = to.try_as_full() else {
            return false;
        };
        let Ok(mut open) = self.open_requests.lock() else {
            return false;
        };
        match open.iter().position(|(asker, i)| asker == to && &**i == id) {
            Some(at) => {
                open.remove(at);
                true
            }
            None => false,
        }
    }

    pub fn take_directed(&self) -> Vec<Jid> {
        self.directed
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// A bound session as the router knows it: where to queue its stanzas and its shared state.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    jid: FullJid,
    queue: mpsc::Sender<Queued>,
    control: Arc<SessionControl>,
}

/// Why a session that does not read what it is sent is closed.
pub const SLOW_READER: &str = "too much queued for this session: it does not read fast enough";

impl SessionHandle {
    pub fn new(jid: FullJid, queue: mpsc::Sender<Queued>, control: Arc<SessionControl>) -> Self {
        Self {
            jid,
            queue,
            control,
        }
    }

    /// Asks this session to end with a stream error.
    pub fn close(&self, reason: CloseReason) {
        self.control.close(reason);
    }

    /// Queues a stanza unless the queue is full in stanzas or in bytes: then the session does
    /// not read what it is sent, and is closed rather than allowed to grow memory.
    fn push(&self, stanza: Outbound, max_bytes: usize) -> bool {
        self.push_queued(Queued::Stanza(stanza), max_bytes)
    }

    fn push_queued(&self, stanza: Queued, max_bytes: usize) -> bool {
        let cost = stanza.cost();
        let before = self.control.queued_bytes.fetch_add(cost, Ordering::Relaxed);
        let over_bytes = before + cost > max_bytes;
        let full = if over_bytes {
            true
        } else {
            match self.queue.try_send(stanza) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(_)) => true,
                // The session is ending: it unregisters itself.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        };
        self.control.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
        if full {
            tracing::warn!(jid = %self.jid, "outbound queue full: closing slow session");
            self.control.close(CloseReason {
                condition: DefinedCondition::PolicyViolation,
                text: SLOW_READER,
                french: None,
            });
        }
        false
    }
}

/// What a queued stanza costs beyond its text and markup: its slot and the structure around.
const STANZA_OVERHEAD: usize = 128;

/// What a queued stanza is counted for against the session's byte limit: its text and markup,
/// estimated without serialising it.
pub fn stanza_cost(stanza: &Stanza) -> usize {
    const OVERHEAD: usize = STANZA_OVERHEAD;
    let texts = |texts: &mut dyn Iterator<Item = &String>| texts.map(String::len).sum::<usize>();
    match stanza {
        Stanza::Message(m) => {
            OVERHEAD
                + texts(&mut m.bodies.values())
                + texts(&mut m.subjects.values())
                + m.payloads.iter().map(element_cost).sum::<usize>()
        }
        Stanza::Presence(p) => {
            OVERHEAD
                + texts(&mut p.statuses.values())
                + p.payloads.iter().map(element_cost).sum::<usize>()
        }
        Stanza::Iq(iq) => {
            OVERHEAD
                + match iq {
                    xmpp_parsers::iq::Iq::Get { payload, .. }
                    | xmpp_parsers::iq::Iq::Set { payload, .. } => element_cost(payload),
                    xmpp_parsers::iq::Iq::Result { payload, .. } => {
                        payload.as_ref().map_or(0, element_cost)
                    }
                    xmpp_parsers::iq::Iq::Error { error, payload, .. } => {
                        texts(&mut error.texts.values()) + payload.as_ref().map_or(0, element_cost)
                    }
                }
        }
    }
}

/// An element's names, attributes and text, walked without recursion.
fn element_cost(root: &minidom::Element) -> usize {
    let mut total = 0;
    let mut pending = vec![root];
    while let Some(element) = pending.pop() {
        total += 2 * element.name().len() + element.ns().len() + 5;
        total += element
            .attrs()
            .iter()
            .map(|((_, name), value)| name.len() + value.len() + 4)
            .sum::<usize>();
        for node in element.nodes() {
            match node {
                minidom::Node::Element(child) => pending.push(child),
                minidom::Node::Text(text) => total += text.len(),
            }
        }
    }
    total
}

/// How a stanza to a bare JID picks its resources (RFC 6121 §8.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareDelivery {
    /// Message of type normal or chat: the available resources with the highest non-negative
    /// priority (all of them on a tie).
    HighestPriority,
    /// Headline messages and presence: every available resource with non-negative priority.
    AllNonNegative,
    /// Every available resource, whatever its priority (presence broadcast).
    AllAvailable,
}

/// `Stanza` is not `Clone`; its variants are.
pub fn clone_stanza(stanza: &Stanza) -> Stanza {
    match stanza {
        Stanza::Iq(iq) => Stanza::Iq(iq.clone()),
        Stanza::Message(m) => Stanza::Message(m.clone()),
        Stanza::Presence(p) => Stanza::Presence(p.clone()),
    }
}

/// The session a stanza comes from, while it is handled.
pub struct Sender<'a> {
    pub jid: &'a FullJid,
    pub control: &'a SessionControl,
    /// Stanzas for this very session (answers, errors, initial presence), which the session
    /// writes itself once the handler is done, instead of queueing them: initial presence
    /// may bring more than a queue holds.
    replies: Mutex<Vec<Stanza>>,
    /// The session should deliver the offline messages once the handler is done.
    offline: AtomicBool,
}

impl<'a> Sender<'a> {
    pub fn new(jid: &'a FullJid, control: &'a SessionControl) -> Self {
        Self {
            jid,
            control,
            replies: Mutex::new(Vec::new()),
            offline: AtomicBool::new(false),
        }
    }

    pub fn request_offline_messages(&self) {
        self.offline.store(true, Ordering::Relaxed);
    }

    pub fn offline_requested(&self) -> bool {
        self.offline.load(Ordering::Relaxed)
    }

    /// The one way back to the sender.
    pub fn reply(&self, stanza: Stanza) {
        if let Ok(mut replies) = self.replies.lock() {
            replies.push(stanza);
        }
    }

    pub fn take_replies(&self) -> Vec<Stanza> {
        self.replies
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }
}

/// A service at a domain of its own (rooms at `conference.<domain>`, uploads next), to which
/// the router hands every stanza addressed to that domain or to an entity at it.
#[async_trait::async_trait]
pub trait Component: Send + Sync + 'static {
    /// Its name in the server's disco#items (XEP-0030).
    fn name(&self) -> &str;

    /// A stanza from a local user, `from` stamped with the user's full JID. Answers go back
    /// through `router`, like any delivery.
    async fn handle(&self, router: &Router, stanza: Stanza);

    /// A local session ended or went unavailable (RFC 6121 §4.5.2): whatever the component
    /// holds for it (a room occupancy) goes. Told to every component.
    async fn session_ended(&self, _router: &Router, _jid: &FullJid) {}

    /// A user sends a direct invitation (XEP-0249) to `invitee` naming `about`, an entity of
    /// this component: the component may act on it (a room grants membership), or refuse it,
    /// and the invitation is then not delivered.
    async fn direct_invitation(
        &self,
        _router: &Router,
        _from: &FullJid,
        _invitee: &BareJid,
        _about: &BareJid,
    ) -> Result<(), Box<xmpp_parsers::stanza_error::StanzaError>> {
        Ok(())
    }
}

type Components = Vec<(jid::DomainPart, Arc<dyn Component>)>;

/// What became of a message to a local user (RFC 6121 §8.5.2, §8.5.3).
pub enum MessageDelivery {
    Delivered,
    /// No resource takes this chat or normal message: offline storage's turn, or an error.
    Undelivered(Message),
    /// Not for a user: the sender gets `service-unavailable` with this text.
    Refused(Message, &'static str),
    /// Dropped without an error (headlines for nobody, errors).
    Dropped,
}

pub struct Router {
    sessions: DashMap<BareJid, Vec<SessionHandle>>,
    /// Read for every stanza to another domain, written at start: a lock-free snapshot.
    components: ArcSwap<Components>,
    limits: RouterLimits,
}

/// What the router bounds.
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    /// Estimated bytes queued for one session before it counts as a slow reader.
    pub max_queued_bytes: usize,
    /// Resources one account may have bound at once.
    pub max_resources: usize,
}

/// The account already has as many resources bound as it may.
#[derive(Debug, thiserror::Error)]
#[error("too many resources bound for this account")]
pub struct TooManyResources;

impl Router {
    pub fn new(limits: RouterLimits) -> Self {
        Self {
            sessions: DashMap::new(),
            components: ArcSwap::from_pointee(Vec::new()),
            limits,
        }
    }

    /// Routes `domain` and every entity at it to `component`, replacing any component there.
    pub fn register_component(&self, domain: jid::DomainPart, component: Arc<dyn Component>) {
        self.components.rcu(|current| {
            let mut next: Components = current
                .iter()
                .filter(|(d, _)| *d != domain)
                .cloned()
                .collect();
            next.push((domain.clone(), component.clone()));
            next
        });
    }

    /// The component serving `domain`, if any.
    pub fn component(&self, domain: &str) -> Option<Arc<dyn Component>> {
        self.components
            .load()
            .iter()
            .find(|(d, _)| d.as_str() == domain)
            .map(|(_, c)| c.clone())
    }

    /// Tells every component that a local session ended or went unavailable.
    pub async fn session_ended(&self, jid: &FullJid) {
        let components = self.components.load_full();
        for (_, component) in components.iter() {
            component.session_ended(self, jid).await;
        }
    }

    /// Every component's domain and name, for the server's disco#items.
    pub fn components(&self) -> Vec<(jid::DomainPart, String)> {
        self.components
            .load()
            .iter()
            .map(|(d, c)| (d.clone(), c.name().to_owned()))
            .collect()
    }

    /// Delivers a message to a local user by the rules of RFC 6121 §8.5: to the full JID when
    /// that resource is bound, else as to the bare JID, where chat and normal messages go to
    /// the available resources of highest non-negative priority and headlines to all of them.
    /// A `groupchat` message is never delivered this way, to a full JID as to a bare one: rooms
    /// broadcast their own (RFC 6121 §8.5.3.2.1).
    pub fn deliver_message(&self, to: &Jid, message: Message) -> MessageDelivery {
        if message.type_ == MessageType::Groupchat {
            return MessageDelivery::Refused(message, "groupchat messages go to rooms");
        }
        let message = match to.try_as_full() {
            Ok(full) => match self.deliver_to_full(full, Box::new(Stanza::Message(message))) {
                Ok(()) => return MessageDelivery::Delivered,
                Err(back) => match *back {
                    Stanza::Message(m) => m,
                    _ => return MessageDelivery::Dropped,
                },
            },
            Err(_) => message,
        };
        let mode = match message.type_ {
            MessageType::Chat | MessageType::Normal => BareDelivery::HighestPriority,
            MessageType::Headline => BareDelivery::AllNonNegative,
            MessageType::Error | MessageType::Groupchat => return MessageDelivery::Dropped,
        };
        let bare = to.to_bare();
        match self.deliver_to_bare(&bare, Box::new(Stanza::Message(message)), mode) {
            Ok(_) => MessageDelivery::Delivered,
            Err(back) => match *back {
                // §8.5.2.1.1: one-to-one messages are kept; §8.5.2.2.1: headlines dropped.
                Stanza::Message(m)
                    if matches!(m.type_, MessageType::Chat | MessageType::Normal) =>
                {
                    MessageDelivery::Undelivered(m)
                }
                _ => MessageDelivery::Dropped,
            },
        }
    }

    /// Delivers a stanza as addressed: to that resource, or to every available resource of a
    /// bare JID. Gives it back when nobody takes it.
    pub fn deliver_to(&self, to: &Jid, stanza: Outbound) -> Result<(), Outbound> {
        match to.try_as_full() {
            Ok(full) => self.deliver_to_full(full, stanza),
            Err(bare) => self
                .deliver_to_bare(bare, stanza, BareDelivery::AllAvailable)
                .map(|_| ()),
        }
    }

    /// Adds a bound session. Returns the session it replaces (same full JID), which the caller
    /// closes with `<conflict/>`; refuses a new resource past the account's limit.
    pub fn register(
        &self,
        handle: SessionHandle,
    ) -> Result<Option<SessionHandle>, TooManyResources> {
        let mut resources = self.sessions.entry(handle.jid.to_bare()).or_default();
        if let Some(slot) = resources.iter_mut().find(|h| h.jid == handle.jid) {
            return Ok(Some(std::mem::replace(slot, handle)));
        }
        if resources.len() >= self.limits.max_resources {
            return Err(TooManyResources);
        }
        resources.push(handle);
        Ok(None)
    }

    /// Removes a session, only if the entry is still this session (a replacement may hold
    /// the same full JID by now).
    pub fn unregister(&self, jid: &FullJid, control: &Arc<SessionControl>) {
        let bare = jid.to_bare();
        self.sessions.remove_if_mut(&bare, |_, resources| {
            resources.retain(|h| !(h.jid == *jid && Arc::ptr_eq(&h.control, control)));
            resources.is_empty()
        });
    }

    #[cfg(test)]
    fn session(&self, jid: &FullJid) -> Option<SessionHandle> {
        let resources = self.sessions.get(&jid.to_bare())?;
        resources.iter().find(|h| h.jid == *jid).cloned()
    }

    /// The current presence of each available resource of an account (RFC 6121 §4.3.2: what
    /// a probe is answered), `from` stamped with the resource.
    pub fn presences(&self, bare: &BareJid) -> Vec<Presence> {
        let Some(resources) = self.sessions.get(bare) else {
            return Vec::new();
        };
        resources
            .iter()
            .filter_map(|h| h.control.last_presence())
            .collect()
    }

    /// The full JIDs of an account's available resources.
    pub fn available_resources(&self, bare: &BareJid) -> Vec<FullJid> {
        let Some(resources) = self.sessions.get(bare) else {
            return Vec::new();
        };
        resources
            .iter()
            .filter(|h| h.control.is_available())
            .map(|h| h.jid.clone())
            .collect()
    }

    /// Queues, for each resource of an account that asked for its roster (RFC 6121 §2.1.6),
    /// the stanzas `make` builds for it (roster pushes).
    pub fn deliver_to_roster_readers(
        &self,
        bare: &BareJid,
        mut make: impl FnMut(&FullJid) -> Vec<Stanza>,
    ) {
        let readers: Vec<SessionHandle> = match self.sessions.get(bare) {
            Some(resources) => resources
                .iter()
                .filter(|h| h.control.roster_requested())
                .cloned()
                .collect(),
            None => return,
        };
        // Built outside the shard's lock.
        for handle in readers {
            for stanza in make(&handle.jid) {
                handle.push(Box::new(stanza), self.limits.max_queued_bytes);
            }
        }
    }

    /// Asks every session of an account to close (an admin decision).
    pub fn close_account(&self, bare: &BareJid, reason: CloseReason) {
        if let Some(resources) = self.sessions.get(bare) {
            for handle in resources.iter() {
                handle.control.close(reason.clone());
            }
        }
    }

    /// Asks every bound session to close (server shutdown). Sessions bound after this call
    /// see the shutdown themselves when they start.
    pub fn close_all(&self, reason: CloseReason) {
        for resources in self.sessions.iter() {
            for handle in resources.iter() {
                handle.control.close(reason.clone());
            }
        }
    }

    /// Accounts with at least one bound session now.
    pub fn online_accounts(&self) -> Vec<BareJid> {
        self.sessions
            .iter()
            .filter(|entry| !entry.value().is_empty())
            .map(|entry| entry.key().clone())
            .collect()
    }

    pub fn online_count(&self) -> usize {
        self.sessions.iter().map(|r| r.len()).sum()
    }

    /// Queues a stanza for one full JID. Gives the stanza back when no such session is bound.
    pub fn deliver_to_full(&self, to: &FullJid, stanza: Outbound) -> Result<(), Outbound> {
        let Some(resources) = self.sessions.get(&to.to_bare()) else {
            return Err(stanza);
        };
        match resources.iter().find(|h| h.jid == *to) {
            Some(handle) => {
                handle.push(stanza, self.limits.max_queued_bytes);
                Ok(())
            }
            None => Err(stanza),
        }
    }

    /// Queues a stanza encoded once for many recipients for one full JID, which it reaches
    /// with that JID as `to`. False when no such session is bound.
    pub fn deliver_shared(&self, to: &FullJid, stanza: &Arc<SharedStanza>) -> bool {
        let Some(resources) = self.sessions.get(&to.to_bare()) else {
            return false;
        };
        match resources.iter().find(|h| h.jid == *to) {
            Some(handle) => {
                handle.push_queued(Queued::Shared(stanza.clone()), self.limits.max_queued_bytes);
                true
            }
            None => false,
        }
    }

    /// Queues an IQ request from `from` for one full JID, which may then answer it whatever the
    /// rules say of the way back. Gives the stanza back when no such session is bound.
    pub fn deliver_iq_to_full(
        &self,
        from: &FullJid,
        to: &FullJid,
        stanza: Outbound,
    ) -> Result<(), Outbound> {
        let Some(resources) = self.sessions.get(&to.to_bare()) else {
            return Err(stanza);
        };
        match resources.iter().find(|h| h.jid == *to) {
            Some(handle) => {
                if let Stanza::Iq(iq) = &*stanza {
                    handle.control.note_request(from, iq.id());
                }
                handle.push(stanza, self.limits.max_queued_bytes);
                Ok(())
            }
            None => Err(stanza),
        }
    }

    /// Queues a stanza for the resources of a bare JID that `mode` selects. Gives the stanza
    /// back when none qualifies.
    pub fn deliver_to_bare(
        &self,
        to: &BareJid,
        stanza: Outbound,
        mode: BareDelivery,
    ) -> Result<usize, Outbound> {
        let Some(resources) = self.sessions.get(to) else {
            return Err(stanza);
        };
        let selected = |h: &&SessionHandle| {
            h.control.is_available()
                && (mode == BareDelivery::AllAvailable || h.control.priority() >= 0)
        };
        let top = if mode == BareDelivery::HighestPriority {
            resources
                .iter()
                .filter(selected)
                .map(|h| h.control.priority())
                .max()
        } else {
            None
        };
        let targets: Vec<&SessionHandle> = resources
            .iter()
            .filter(selected)
            .filter(|h| top.is_none_or(|p| h.control.priority() == p))
            .collect();
        let Some((last, others)) = targets.split_last() else {
            return Err(stanza);
        };
        for handle in others {
            handle.push(
                Box::new(clone_stanza(&stanza)),
                self.limits.max_queued_bytes,
            );
        }
        last.push(stanza, self.limits.max_queued_bytes);
        Ok(targets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::message::Message;

    fn session(
        jid: &str,
        priority: i8,
        available: bool,
    ) -> (SessionHandle, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(4);
        let control = Arc::new(SessionControl::default());
        control.set_presence(available, priority);
        (
            SessionHandle::new(FullJid::new(jid).unwrap(), tx, control),
            rx,
        )
    }

    fn router() -> Router {
        Router::new(RouterLimits {
            max_queued_bytes: 1 << 20,
            max_resources: 8,
        })
    }

    fn msg() -> Outbound {
        Box::new(Stanza::Message(Message::chat(None)))
    }

    #[test]
    fn highest_priority_wins_and_ties_share() {
        let router = router();
        let (a, mut ra) = session("u@x/a", 5, true);
        let (b, mut rb) = session("u@x/b", 5, true);
        let (c, mut rc) = session("u@x/c", 1, true);
        let (d, mut rd) = session("u@x/d", 9, false);
        for h in [a, b, c, d] {
            assert!(router.register(h).unwrap().is_none());
        }
        let bare = BareJid::new("u@x").unwrap();
        assert_eq!(
            router
                .deliver_to_bare(&bare, msg(), BareDelivery::HighestPriority)
                .unwrap(),
            2
        );
        assert!(ra.try_recv().is_ok() && rb.try_recv().is_ok());
        assert!(rc.try_recv().is_err() && rd.try_recv().is_err());
        assert_eq!(
            router
                .deliver_to_bare(&bare, msg(), BareDelivery::AllNonNegative)
                .unwrap(),
            3
        );
    }

    #[test]
    fn negative_priority_gets_no_bare_messages() {
        let router = router();
        let (a, _ra) = session("u@x/a", -1, true);
        router.register(a).unwrap();
        let bare = BareJid::new("u@x").unwrap();
        assert!(
            router
                .deliver_to_bare(&bare, msg(), BareDelivery::HighestPriority)
                .is_err()
        );
        assert_eq!(
            router
                .deliver_to_bare(&bare, msg(), BareDelivery::AllAvailable)
                .unwrap(),
            1
        );
    }

    #[test]
    fn replacement_and_guarded_unregister() {
        let router = router();
        let (old, _r1) = session("u@x/r", 0, true);
        let (new, _r2) = session("u@x/r", 0, true);
        let old_control = old.control.clone();
        router.register(old).unwrap();
        let replaced = router
            .register(new.clone())
            .unwrap()
            .expect("old session replaced");
        assert!(Arc::ptr_eq(&replaced.control, &old_control));
        // The old session's exit must not remove its replacement.
        router.unregister(&new.jid, &old_control);
        assert!(router.session(&new.jid).is_some());
        router.unregister(&new.jid, &new.control);
        assert!(router.session(&new.jid).is_none());
        assert_eq!(router.online_count(), 0);
    }

    #[test]
    fn full_queue_closes_the_slow_session() {
        let router = router();
        let (a, _ra) = session("u@x/a", 0, true);
        let control = a.control.clone();
        router.register(a.clone()).unwrap();
        for _ in 0..5 {
            let _ = router.deliver_to_full(&a.jid, msg());
        }
        let reason = control.reason.lock().unwrap().clone().expect("closed");
        assert_eq!(reason.condition, DefinedCondition::PolicyViolation);
    }
}
