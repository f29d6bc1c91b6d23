//! Conversations: the multi-user chat service (XEP-0045), a component of the router at
//! `conference.<domain>`.
//!
//! Each active room is a `Room` behind its own async lock, so rooms work in parallel and a
//! room's changes are serialised (a change is written to the store before it shows). Rooms
//! without occupants are unloaded and read back from the store when addressed again; locked
//! rooms and temporary rooms live in memory only. Groupchat history is written by one task in
//! batches, off the delivery path.
//!
//! The ENT rules apply at the doors: joining and inviting ask the policy (`Action::Join`,
//! `Action::Invite`), private messages between occupants too (`Action::PrivateMessage`).

mod form;
mod room;
mod texts;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tokio::sync::{Mutex, MutexGuard};
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult, Identity, Item};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::presence::Type as PresenceType;
use xmpp_parsers::rsm::{First, SetResult};
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, StanzaError};

use crate::budget::WriteBudget;
use crate::config::RoomsConfig;
use crate::policy::Policy;
use crate::reply::{error_reply, error_type_of, iq_answer};
use crate::router::{Component, Router};
use crate::storage::batch::{BatchSink, BatchTask, BatchWriter};
use crate::storage::{self, DynStore, HistoryBound};

pub use form::RoomConfig;
use room::Room;

pub const MUC: &str = "http://jabber.org/protocol/muc";
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// The disco#items node listing the rooms where the asker is owner, admin or member
/// (docs/extensions.md).
pub const MY_ROOMS_NODE: &str = "urn:causette:rooms:mine";
/// Public rooms listed per disco#items page (XEP-0059), whatever the client asks.
const MAX_PAGE: usize = 50;
/// Groupchat messages waiting for the history writer before senders wait for it.
const HISTORY_QUEUE: usize = 4096;
/// Rows the history writer puts in one transaction.
const HISTORY_BATCH: usize = 256;

/// One groupchat message to keep: room, stanza XML, Unix seconds.
type HistoryRow = (String, String, i64);

/// Where the batched writer commits groupchat history: each room keeps only what the
/// settings allow.
pub struct HistorySink {
    store: DynStore,
    keep: HistoryBound,
}

#[async_trait::async_trait]
impl BatchSink<HistoryRow> for HistorySink {
    async fn commit(&self, rows: &[HistoryRow]) -> Result<(), storage::Error> {
        self.store.append_room_history(rows, self.keep).await
    }
    fn what(&self) -> &'static str {
        "room history"
    }
}

/// The task writing groupchat history; runs until shutdown, then drains.
pub type HistoryWriter = BatchTask<HistoryRow, HistorySink>;

/// The conference service.
pub struct Rooms {
    domain: jid::DomainPart,
    /// The server's own domain: only its users take part (there is no federation).
    users_domain: String,
    settings: RoomsConfig,
    store: DynStore,
    policy: Arc<Policy>,
    max_offline_messages: u32,
    /// The rooms in memory: those with occupants, and locked ones.
    active: DashMap<String, Arc<Mutex<Room>>>,
    /// The rooms where each user has an occupant, to leave them when the user's session ends.
    joined: DashMap<BareJid, Vec<String>>,
    /// Groupchat messages on their way to the store, a room change waiting for those before.
    history: BatchWriter<HistoryRow>,
    /// Rooms owned per user among those not in the store (locked and temporary rooms), kept
    /// by `settle` from what each room last counted (`Room::recount_owners`).
    owned_in_memory: DashMap<BareJid, u64>,
    /// Room loads from the store, per user (`rooms.max_loads_per_minute`).
    loads: WriteBudget,
    /// Mediated invitations, per inviter (`rooms.max_invitations_per_minute`).
    invitations: WriteBudget,
}

/// Why a room could not be looked up.
enum Unfound {
    /// The user has read too many rooms from the store this minute.
    Budget,
    Store(storage::Error),
}

impl Unfound {
    fn error(&self, room: &str) -> StanzaError {
        match self {
            Unfound::Budget => stanza_error(
                DefinedCondition::ResourceConstraint,
                "too many conversations looked up in a short time; wait a moment",
            ),
            Unfound::Store(err) => {
                tracing::error!(error = %err, room, "cannot load a room");
                stanza_error(
                    DefinedCondition::InternalServerError,
                    "the conversation cannot be reached right now; try again",
                )
            }
        }
    }
}

/// How much history the settings keep per room.
fn history_bound(settings: &RoomsConfig) -> HistoryBound {
    HistoryBound {
        messages: u32::try_from(settings.max_history).unwrap_or(u32::MAX),
        bytes: u64::try_from(settings.max_history_bytes).unwrap_or(u64::MAX),
    }
}

/// What a room handler needs besides the room.
pub(crate) struct Cx<'a> {
    pub router: &'a Router,
    pub rooms: &'a Rooms,
}

/// What becomes of a room once a stanza has been handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    Keep,
    /// No occupant left: the room leaves memory (it stays in the store).
    Unload,
    /// The room is gone (destroyed, or temporary and empty).
    Forget,
}

impl Rooms {
    /// Rooms in memory now.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    pub fn new(
        server_domain: &str,
        settings: RoomsConfig,
        store: DynStore,
        policy: Arc<Policy>,
        max_offline_messages: u32,
    ) -> Result<(Arc<Rooms>, HistoryWriter), jid::Error> {
        let domain = jid::DomainPart::new(&settings.service_domain(server_domain))?.into_owned();
        let sink = HistorySink {
            store: store.clone(),
            keep: history_bound(&settings),
        };
        let (history, writer) = BatchWriter::new(sink, HISTORY_QUEUE, HISTORY_BATCH);
        let loads = WriteBudget::new(settings.max_loads_per_minute);
        let invitations = WriteBudget::new(settings.max_invitations_per_minute);
        let rooms = Rooms {
            domain,
            users_domain: server_domain.to_owned(),
            settings,
            store,
            policy,
            max_offline_messages,
            active: DashMap::new(),
            joined: DashMap::new(),
            owned_in_memory: DashMap::new(),
            history,
            loads,
            invitations,
        };
        Ok((Arc::new(rooms), writer))
    }

    pub fn domain(&self) -> &jid::DomainPart {
        &self.domain
    }

    /// The room called `name`: in memory, else loaded from the store (without its history,
    /// which an accepted join reads in), within `by`'s budget of loads.
    async fn find(&self, name: &str, by: &BareJid) -> Result<Option<Arc<Mutex<Room>>>, Unfound> {
        if let Some(room) = self.active.get(name) {
            return Ok(Some(room.clone()));
        }
        if !self.loads.try_spend(&by.to_string()) {
            return Err(Unfound::Budget);
        }
        let Some(stored) = self.store.load_room(name).await.map_err(Unfound::Store)? else {
            return Ok(None);
        };
        let Ok(node) = jid::NodePart::new(name) else {
            return Ok(None);
        };
        let jid = BareJid::from_parts(Some(&node), &self.domain);
        let room = Room::from_store(jid, stored, &self.settings);
        // Another task may have loaded it meanwhile: theirs wins.
        Ok(Some(
            self.active
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Mutex::new(room)))
                .clone(),
        ))
    }

    /// Queues a groupchat message for the history writer.
    async fn keep_history(&self, row: HistoryRow) {
        if self.history.write(row).await.is_err() {
            tracing::warn!("history writer stopped");
        }
    }

    /// Waits until every groupchat message queued so far is in the store.
    async fn history_written(&self) -> Result<(), &'static str> {
        match self.history.written().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("room history could not be stored"),
            Err(_) => Err("the history writer stopped"),
        }
    }

    /// Forgets the load budgets that are whole again.
    pub fn purge_budgets(&self) {
        self.loads.purge();
        self.invitations.purge();
    }

    /// Rooms a user owns, whatever their kind: in the store, and in memory only.
    async fn owned_by(&self, user: &BareJid) -> Result<u64, storage::Error> {
        let stored = self.store.rooms_owned(&user.to_string()).await?;
        let in_memory = self.owned_in_memory.get(user).map_or(0, |n| *n);
        Ok(stored + in_memory)
    }

    /// Moves a room's owners in the tally of rooms owned in memory only.
    fn recount_owners(&self, before: &[BareJid], now: &[BareJid]) {
        for owner in before.iter().filter(|o| !now.contains(o)) {
            self.owned_in_memory.remove_if_mut(owner, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
        for owner in now.iter().filter(|o| !before.contains(o)) {
            *self.owned_in_memory.entry(owner.clone()).or_default() += 1;
        }
    }

    fn note_joined(&self, user: &BareJid, room: &str) {
        let mut rooms = self.joined.entry(user.clone()).or_default();
        if !rooms.iter().any(|r| r == room) {
            rooms.push(room.to_owned());
        }
    }

    fn note_left(&self, user: &BareJid, room: &str) {
        self.joined.remove_if_mut(user, |_, rooms| {
            rooms.retain(|r| r != room);
            rooms.is_empty()
        });
    }

    /// Ends a handler's hold on a room: a room that leaves memory is marked gone (so that a
    /// task waiting on its lock looks it up again), unlocked, then taken out of the map.
    fn settle(
        &self,
        name: &str,
        room: &Arc<Mutex<Room>>,
        mut guard: MutexGuard<'_, Room>,
        after: After,
    ) {
        if let Some((before, now)) = guard.recount_owners(after == After::Keep) {
            self.recount_owners(&before, &now);
        }
        if after == After::Keep {
            return;
        }
        guard.gone = true;
        drop(guard);
        self.active
            .remove_if(name, |_, current| Arc::ptr_eq(current, room));
    }

    /// A session ended, or its user went unavailable: it leaves every room.
    async fn leave_all(&self, router: &Router, jid: &FullJid) {
        let bare = jid.to_bare();
        let names = match self.joined.get(&bare) {
            Some(rooms) => rooms.clone(),
            None => return,
        };
        let cx = Cx {
            router,
            rooms: self,
        };
        for name in names {
            let Some(room) = self.active.get(&name).map(|r| r.clone()) else {
                self.note_left(&bare, &name);
                continue;
            };
            let mut guard = room.lock().await;
            if guard.gone {
                continue;
            }
            let after = guard.session_gone(&cx, jid);
            self.settle(&name, &room, guard, after);
        }
    }

    /// Destroys the rooms left locked past `rooms.locked_timeout_secs`.
    pub async fn sweep(&self, router: &Router) {
        let timeout = Duration::from_secs(self.settings.locked_timeout_secs);
        let now = Instant::now();
        let rooms: Vec<(String, Arc<Mutex<Room>>)> = self
            .active
            .iter()
            .map(|r| (r.key().clone(), r.value().clone()))
            .collect();
        let cx = Cx {
            router,
            rooms: self,
        };
        for (name, room) in rooms {
            let mut guard = room.lock().await;
            if guard.gone || guard.locked_since().is_none_or(|t| now - t < timeout) {
                continue;
            }
            tracing::info!(room = %name, "destroying a room never configured");
            guard
                .destroy(&cx, None, Some(texts::NEVER_CONFIGURED))
                .await;
            self.settle(&name, &room, guard, After::Forget);
        }
    }

    /// A direct invitation (XEP-0249) from `from` to `invitee`, about `room`: refused with an
    /// error when the inviter may not invite there; a members-only room makes the invitee a
    /// member. Rooms of other services are not ours to judge.
    async fn invited(
        &self,
        router: &Router,
        from: &FullJid,
        invitee: &BareJid,
        room: &BareJid,
    ) -> Result<(), Box<StanzaError>> {
        if room.domain().as_str() != self.domain.as_str() {
            return Ok(());
        }
        let not_found = || {
            Box::new(stanza_error(
                DefinedCondition::ItemNotFound,
                "no such conversation",
            ))
        };
        let Some(name) = room.node() else {
            return Err(not_found());
        };
        let found = self
            .find(name.as_str(), &from.to_bare())
            .await
            .map_err(|unfound| Box::new(unfound.error(name.as_str())))?;
        let Some(found) = found else {
            return Err(not_found());
        };
        let mut guard = found.lock().await;
        if guard.gone {
            return Err(not_found());
        }
        let cx = Cx {
            router,
            rooms: self,
        };
        let done = guard.direct_invitation(&cx, from, invitee).await;
        let after = guard.settled();
        self.settle(name.as_str(), &found, guard, after);
        done
    }

    /// How often `sweep` should run.
    pub fn sweep_period(&self) -> Duration {
        Duration::from_secs((self.settings.locked_timeout_secs / 4).clamp(1, 60))
    }

    /// Stanzas to the service itself: discovery.
    async fn to_service(&self, router: &Router, from: &FullJid, stanza: Stanza) {
        let Stanza::Iq(iq) = &stanza else {
            return reply_error(
                router,
                &stanza,
                DefinedCondition::ServiceUnavailable,
                "the conference service takes only discovery requests; write to a room",
            );
        };
        let Iq::Get { payload, .. } = iq else {
            if matches!(iq, Iq::Set { .. }) {
                return reply_error(
                    router,
                    &stanza,
                    DefinedCondition::ServiceUnavailable,
                    "the conference service takes no such request",
                );
            }
            return;
        };
        let answer = if payload.is("query", DISCO_INFO) {
            if payload.attr("node").is_some() {
                Err((DefinedCondition::ItemNotFound, "no such node"))
            } else {
                Ok(self.service_info())
            }
        } else if payload.is("query", DISCO_ITEMS) {
            match DiscoItemsQuery::try_from(payload.clone()) {
                Ok(query) => self.service_items(from, query).await,
                Err(_) => Err((DefinedCondition::BadRequest, "invalid disco#items request")),
            }
        } else if payload.is("ping", crate::ns::PING) {
            Ok(None)
        } else {
            Err((
                DefinedCondition::ServiceUnavailable,
                "the conference service does not answer this request",
            ))
        };
        let answer = answer.map_err(|(condition, text)| Box::new(stanza_error(condition, text)));
        answer_iq(router, from, iq, answer);
    }

    fn service_info(&self) -> Option<Element> {
        let info = DiscoInfoResult {
            node: None,
            identities: vec![Identity::new(
                "conference",
                "text",
                "fr",
                texts::SERVICE_NAME,
            )],
            features: [
                DISCO_INFO,
                DISCO_ITEMS,
                MUC,
                crate::ns::PING,
                "jabber:iq:rsm",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            extensions: Vec::new(),
        };
        Some(info.into())
    }

    /// The public rooms, paged (XEP-0059), or with the `MY_ROOMS_NODE` node the asker's.
    async fn service_items(
        &self,
        from: &FullJid,
        query: DiscoItemsQuery,
    ) -> Result<Option<Element>, (DefinedCondition, &'static str)> {
        let failed = |err: storage::Error| {
            tracing::error!(error = %err, "cannot list rooms");
            (
                DefinedCondition::InternalServerError,
                "the rooms cannot be listed right now",
            )
        };
        let listing = |name: String, config: &str| {
            let config: RoomConfig = serde_json::from_str(config).unwrap_or_default();
            let jid = BareJid::from_parts(jid::NodePart::new(&name).ok().as_deref(), &self.domain);
            Item {
                jid: Jid::from(jid),
                node: None,
                name: (!config.name.is_empty()).then_some(config.name),
            }
        };
        match query.node.as_deref() {
            Some(MY_ROOMS_NODE) => {
                let mine = self
                    .store
                    .rooms_of(
                        &from.to_bare().to_string(),
                        self.settings.max_rooms_per_user.max(1) * 4,
                    )
                    .await
                    .map_err(failed)?;
                let items = mine
                    .into_iter()
                    .map(|r| listing(r.name, &r.config))
                    .collect();
                Ok(Some(
                    DiscoItemsResult {
                        node: query.node,
                        items,
                        rsm: None,
                    }
                    .into(),
                ))
            }
            Some(_) => Err((DefinedCondition::ItemNotFound, "no such node")),
            None => {
                let (max, after) = match &query.rsm {
                    Some(rsm) => {
                        if rsm.before.is_some() || rsm.index.is_some() {
                            return Err((
                                DefinedCondition::FeatureNotImplemented,
                                "pages go forward only: use <after/>",
                            ));
                        }
                        (rsm.max.unwrap_or(MAX_PAGE).min(MAX_PAGE), rsm.after.clone())
                    }
                    None => (MAX_PAGE, None),
                };
                let (rooms, count) = self
                    .store
                    .public_rooms(after.as_deref(), max as u32)
                    .await
                    .map_err(failed)?;
                let first = rooms.first().map(|r| r.name.clone());
                let last = rooms.last().map(|r| r.name.clone());
                let items = rooms
                    .into_iter()
                    .map(|r| listing(r.name, &r.config))
                    .collect();
                let rsm = SetResult {
                    first: first.map(|item| First { index: None, item }),
                    last,
                    count: Some(count as usize),
                };
                Ok(Some(
                    DiscoItemsResult {
                        node: None,
                        items,
                        rsm: Some(rsm),
                    }
                    .into(),
                ))
            }
        }
    }

    /// A stanza to a room or to an occupant.
    async fn to_room(&self, router: &Router, from: FullJid, to: Jid, stanza: Stanza) {
        let Some(name) = to.node().map(|n| n.as_str().to_owned()) else {
            return;
        };
        let cx = Cx {
            router,
            rooms: self,
        };
        // A room unloaded between lookup and lock is looked up again, once.
        for _ in 0..2 {
            let room = match self.find(&name, &from.to_bare()).await {
                Ok(room) => room,
                Err(unfound) => {
                    return reply_with(router, &stanza, unfound.error(&name));
                }
            };
            let room = match room {
                Some(room) => room,
                None => match self.create(&cx, &from, &to, &stanza, &name).await {
                    Some(room) => room,
                    None => return,
                },
            };
            let mut guard = room.lock().await;
            if guard.gone {
                continue;
            }
            let mut after = guard.handle(&cx, &from, &to, stanza).await;
            if after == After::Keep {
                // A room looked at from outside (discovery, a refused join) leaves memory
                // again when nobody is in it.
                after = guard.settled();
            }
            self.settle(&name, &room, guard, after);
            return;
        }
        reply_error(
            router,
            &stanza,
            DefinedCondition::ResourceConstraint,
            "the conversation is busy; try again",
        );
    }

    /// A stanza to a room that does not exist: a join creates it (locked until configured);
    /// anything else is answered `item-not-found`.
    async fn create(
        &self,
        cx: &Cx<'_>,
        from: &FullJid,
        to: &Jid,
        stanza: &Stanza,
        name: &str,
    ) -> Option<Arc<Mutex<Room>>> {
        let joining = matches!(stanza, Stanza::Presence(p) if p.type_ == PresenceType::None)
            && to.resource().is_some();
        if !joining {
            // Nothing tells a stranger whether a room exists but is hidden from it.
            if !matches!(stanza, Stanza::Presence(_)) {
                reply_error(
                    cx.router,
                    stanza,
                    DefinedCondition::ItemNotFound,
                    "no such conversation",
                );
            } else if to.resource().is_none() {
                reply_error(
                    cx.router,
                    stanza,
                    DefinedCondition::JidMalformed,
                    "a nickname is needed to join: address room@service/nickname",
                );
            }
            return None;
        }
        let creator = from.to_bare();
        match self.owned_by(&creator).await {
            Ok(n) if n >= u64::from(self.settings.max_rooms_per_user) => {
                reply_error(
                    cx.router,
                    stanza,
                    DefinedCondition::NotAllowed,
                    texts::TOO_MANY_ROOMS,
                );
                return None;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::error!(error = %err, "cannot count a user's rooms");
                reply_error(
                    cx.router,
                    stanza,
                    DefinedCondition::InternalServerError,
                    "the conversation cannot be created right now; try again",
                );
                return None;
            }
        }
        let jid = to.to_bare();
        let room = Room::create(jid, creator, &self.settings);
        Some(
            self.active
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Mutex::new(room)))
                .clone(),
        )
    }
}

#[async_trait::async_trait]
impl Component for Rooms {
    fn name(&self) -> &str {
        texts::SERVICE_NAME
    }

    async fn session_ended(&self, router: &Router, jid: &FullJid) {
        self.leave_all(router, jid).await
    }

    async fn direct_invitation(
        &self,
        router: &Router,
        from: &FullJid,
        invitee: &BareJid,
        about: &BareJid,
    ) -> Result<(), Box<StanzaError>> {
        self.invited(router, from, invitee, about).await
    }

    async fn handle(&self, router: &Router, stanza: Stanza) {
        let (from, to) = match &stanza {
            Stanza::Message(m) => (m.from.clone(), m.to.clone()),
            Stanza::Presence(p) => (p.from.clone(), p.to.clone()),
            Stanza::Iq(iq) => (iq.from().cloned(), iq.to().cloned()),
        };
        let (Some(from), Some(to)) = (from, to) else {
            return;
        };
        let Ok(from) = from.try_into_full() else {
            return;
        };
        if from.domain().as_str() != self.users_domain {
            return;
        }
        if to.node().is_none() {
            return self.to_service(router, &from, stanza).await;
        }
        self.to_room(router, from, to, stanza).await
    }
}

/// Queues a stanza for a user's session; a session gone meanwhile misses it.
fn deliver(router: &Router, to: &FullJid, stanza: Stanza) {
    let _ = router.deliver_to_full(to, Box::new(stanza));
}

fn stanza_error(condition: DefinedCondition, text: &str) -> StanzaError {
    StanzaError::new(error_type_of(&condition), condition, "en", text)
}

/// Answers an IQ request from a user (results and errors are not answered).
fn answer_iq(
    router: &Router,
    from: &FullJid,
    iq: &Iq,
    answer: Result<Option<Element>, Box<StanzaError>>,
) {
    if matches!(iq, Iq::Get { .. } | Iq::Set { .. }) {
        deliver(
            router,
            from,
            Stanza::Iq(iq_answer(iq, answer.map_err(|e| *e))),
        );
    }
}

/// Answers a stanza with an error from where it was sent (RFC 6120 §8.3).
fn reply_error(router: &Router, stanza: &Stanza, condition: DefinedCondition, text: &str) {
    reply_with(router, stanza, stanza_error(condition, text));
}

fn reply_with(router: &Router, stanza: &Stanza, error: StanzaError) {
    let to = match stanza {
        Stanza::Message(m) => m.from.clone(),
        Stanza::Presence(p) => p.from.clone(),
        Stanza::Iq(iq) => iq.from().cloned(),
    };
    if let (Some(reply), Some(to)) = (error_reply(stanza, error), to)
        && let Ok(full) = to.try_as_full()
    {
        deliver(router, full, reply);
    }
}
