//! One room (XEP-0045): its occupants, affiliations, configuration, subject and history, and
//! what it does with each stanza addressed to it. The service holds the room's lock while a
//! handler runs; a change reaches the store before anyone is told of it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use jid::{BareJid, FullJid, Jid, ResourcePart};
use minidom::Element;
use xmpp_parsers::data_forms::{DataForm, DataFormType};
use xmpp_parsers::date::DateTime;
use xmpp_parsers::delay::Delay;
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::{Lang, Message, MessageType};
use xmpp_parsers::muc::Muc;
use xmpp_parsers::muc::user::{Affiliation, MucUser, Role};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, StanzaError};

use super::form::RoomConfig;
use super::texts::{self, Text};
use super::{After, Cx, DISCO_INFO, DISCO_ITEMS, MUC, MUC_ADMIN, MUC_OWNER, MUC_USER, deliver};
use crate::config::RoomsConfig;
use crate::link::SharedStanza;
use crate::ns::name;
use crate::policy::{Action, Decision, Reason, Relation};
use crate::reply::policy_error;
use crate::storage::{DynStore, StoredRoom};

mod admin;
mod messages;
mod occupancy;

const VCARD: &str = "vcard-temp";
/// Invitations one message may carry.
const MAX_INVITES: usize = 20;
/// Invitations a room remembers, to let each invitee decline once to its inviter (§7.8.2):
/// past it, the oldest can no longer be declined.
const MAX_PENDING_INVITATIONS: usize = 256;

/// A user in the room under one nickname, with one or more sessions.
struct Occupant {
    nick: String,
    user: BareJid,
    sessions: Vec<FullJid>,
    role: Role,
    /// What it shows (show, status, other payloads), kept without addresses.
    presence: Presence,
}

struct HistoryItem {
    /// As broadcast, without a recipient.
    message: Message,
    stamp: DateTime,
    /// Its size as written, counted against `rooms.max_history_bytes`.
    bytes: usize,
}

pub(super) struct Room {
    jid: BareJid,
    config: RoomConfig,
    /// Set from creation until the owner confirms a configuration: when, and by whom.
    locked: Option<(Instant, BareJid)>,
    /// The room has its row in the store (configured and persistent).
    persisted: bool,
    /// The subject and the nickname that set it.
    subject: Option<(String, String)>,
    vcard: Option<String>,
    affiliations: BTreeMap<BareJid, Affiliation>,
    occupants: Vec<Occupant>,
    history: VecDeque<HistoryItem>,
    history_bytes: usize,
    /// The stored history has been read in (always, for a room created in memory): a room
    /// read back from the store reads it only for an accepted join or a message to keep.
    history_loaded: bool,
    /// Groupchat messages queued for the history writer since the last room change stored:
    /// the next change waits until they are written.
    history_pending: bool,
    /// The owners this room adds to `Rooms`' tally of rooms owned in memory only (those of a
    /// room not in the store), as last counted; `owners_dirty` when that may have changed.
    counted_owners: Vec<BareJid>,
    owners_dirty: bool,
    /// (invitee, inviter) of the invitations sent and not yet answered by a join or a decline,
    /// oldest first, at most `MAX_PENDING_INVITATIONS`; in memory only.
    invitations: VecDeque<(BareJid, BareJid)>,
    /// Unloaded or destroyed while a task waited for the lock: look the room up again.
    pub gone: bool,
}

fn affiliation_str(a: &Affiliation) -> &'static str {
    match a {
        Affiliation::Owner => "owner",
        Affiliation::Admin => "admin",
        Affiliation::Member => "member",
        Affiliation::Outcast => "outcast",
        Affiliation::None => "none",
    }
}

fn parse_affiliation(text: &str) -> Option<Affiliation> {
    Some(match text {
        "owner" => Affiliation::Owner,
        "admin" => Affiliation::Admin,
        "member" => Affiliation::Member,
        "outcast" => Affiliation::Outcast,
        "none" => Affiliation::None,
        _ => return None,
    })
}

fn role_str(r: &Role) -> &'static str {
    match r {
        Role::Moderator => "moderator",
        Role::Participant => "participant",
        Role::Visitor => "visitor",
        Role::None => "none",
    }
}

fn parse_role(text: &str) -> Option<Role> {
    Some(match text {
        "moderator" => Role::Moderator,
        "participant" => Role::Participant,
        "visitor" => Role::Visitor,
        "none" => Role::None,
        _ => return None,
    })
}

fn rank(a: &Affiliation) -> u8 {
    match a {
        Affiliation::Owner => 4,
        Affiliation::Admin => 3,
        Affiliation::Member => 2,
        Affiliation::None => 1,
        Affiliation::Outcast => 0,
    }
}

/// A `<item/>` of `muc#user` or `muc#admin`.
#[derive(Default)]
struct ItemSpec<'a> {
    affiliation: &'a str,
    role: &'a str,
    jid: Option<String>,
    nick: Option<&'a str>,
    actor: Option<&'a str>,
    reason: Option<&'a str>,
}

impl ItemSpec<'_> {
    fn element(&self, ns: &str) -> Element {
        let mut item = Element::builder("item", ns)
            .attr(name("affiliation"), self.affiliation)
            .attr(name("role"), self.role)
            .build();
        if let Some(jid) = &self.jid {
            item.set_attr(rxml::Namespace::NONE, name("jid"), jid.as_str());
        }
        if let Some(nick) = self.nick {
            item.set_attr(rxml::Namespace::NONE, name("nick"), nick);
        }
        if let Some(actor) = self.actor {
            item.append_child(
                Element::builder("actor", ns)
                    .attr(name("nick"), actor)
                    .build(),
            );
        }
        if let Some(reason) = self.reason {
            item.append_child(Element::builder("reason", ns).append(reason).build());
        }
        item
    }
}

/// The `<x xmlns='…muc#user'/>` of a room's presence or notice.
fn user_x(items: Vec<Element>, statuses: &[u16]) -> Element {
    let mut x = Element::builder("x", MUC_USER).build();
    for item in items {
        x.append_child(item);
    }
    for code in statuses {
        x.append_child(
            Element::builder("status", MUC_USER)
                .attr(name("code"), code.to_string())
                .build(),
        );
    }
    x
}

/// Now, to the millisecond: XEP-0082 allows fractions of a second, but clients' date parsers
/// (slixmpp's among them) take at most milliseconds.
fn now() -> DateTime {
    use chrono::SubsecRound;
    DateTime(chrono::Utc::now().trunc_subsecs(3).fixed_offset())
}

fn localised(text: &Text) -> Message {
    let mut message = Message::new_with_type(MessageType::Groupchat, None);
    message
        .bodies
        .insert(Lang::default(), text.french.to_owned());
    message
        .bodies
        .insert(Lang("en".into()), text.english.to_owned());
    message
}

/// The ENT's rules between two users, for the rooms' doors: the policy's bilingual error when
/// they refuse. Accounts without a localpart are not users and are never asked about.
fn rules_allow(cx: &Cx<'_>, actor: &BareJid, target: &BareJid, action: Action) -> Outcome {
    let (Some(actor), Some(target)) = (actor.node(), target.node()) else {
        return Ok(());
    };
    match cx
        .rooms
        .policy
        .decide(actor.as_str(), target.as_str(), action, Relation::default())
    {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(Box::new(policy_error(reason))),
    }
}

/// Whether the ENT's rules let two users meet, either way: a room keeps apart whom they keep
/// apart. Only the rules count here: a profile whose chat access is closed does not close the
/// rooms its users belong to (its users cannot log in).
fn rules_let_meet(cx: &Cx<'_>, a: &BareJid, b: &BareJid) -> Outcome {
    let (Some(a), Some(b)) = (a.node(), b.node()) else {
        return Ok(());
    };
    for (actor, target) in [(a, b), (b, a)] {
        if let Decision::Deny(Reason::Rules) = cx.rooms.policy.decide(
            actor.as_str(),
            target.as_str(),
            Action::Join,
            Relation::default(),
        ) {
            return Err(Box::new(policy_error(Reason::Rules)));
        }
    }
    Ok(())
}

/// A stanza error with a text of the moment.
fn error(condition: DefinedCondition, text: &str) -> Box<StanzaError> {
    Box::new(super::stanza_error(condition, text))
}

/// What a request changes, or why not.
type Outcome<T = ()> = Result<T, Box<StanzaError>>;
impl Room {
    /// A new room, locked until its creator configures it.
    pub fn create(jid: BareJid, creator: BareJid, settings: &RoomsConfig) -> Room {
        let mut affiliations = BTreeMap::new();
        affiliations.insert(creator.clone(), Affiliation::Owner);
        Room {
            jid,
            config: RoomConfig::new(&settings.defaults, settings),
            locked: Some((Instant::now(), creator)),
            persisted: false,
            subject: None,
            vcard: None,
            affiliations,
            occupants: Vec::new(),
            history: VecDeque::new(),
            history_bytes: 0,
            history_loaded: true,
            history_pending: false,
            counted_owners: Vec::new(),
            owners_dirty: true,
            invitations: VecDeque::new(),
            gone: false,
        }
    }

    /// A persistent room read back from the store.
    pub fn from_store(jid: BareJid, stored: StoredRoom, settings: &RoomsConfig) -> Room {
        let config = serde_json::from_str(&stored.config).unwrap_or_else(|err| {
            tracing::error!(room = %jid, error = %err, "unreadable room configuration: defaults");
            RoomConfig::new(&settings.defaults, settings)
        });
        let affiliations = stored
            .affiliations
            .iter()
            .filter_map(|(jid, a)| Some((BareJid::new(jid).ok()?, parse_affiliation(a)?)))
            .collect();
        Room {
            jid,
            config,
            locked: None,
            persisted: true,
            subject: stored
                .subject
                .map(|s| (s, stored.subject_by.unwrap_or_default())),
            vcard: stored.vcard,
            affiliations,
            occupants: Vec::new(),
            history: VecDeque::new(),
            history_bytes: 0,
            history_loaded: false,
            history_pending: false,
            counted_owners: Vec::new(),
            owners_dirty: false,
            invitations: VecDeque::new(),
            gone: false,
        }
    }

    /// Reads the stored history in, the first time it is needed. The writer's queue is
    /// drained first, so that messages kept before the room left memory are found.
    pub(super) async fn ensure_history(&mut self, cx: &Cx<'_>) -> Result<(), String> {
        if self.history_loaded {
            return Ok(());
        }
        cx.rooms.history_written().await?;
        let stored = cx
            .rooms
            .store
            .load_room_history(self.name(), super::history_bound(&cx.rooms.settings))
            .await
            .map_err(|err| err.to_string())?;
        for (xml, at) in stored {
            let Some(item) = stored_item(&xml, at) else {
                tracing::warn!(room = %self.jid, "unreadable message in the room history");
                continue;
            };
            self.keep_in_history(item, &cx.rooms.settings);
        }
        self.history_loaded = true;
        Ok(())
    }

    /// The store, for a change to this room: once the messages reflected before it are
    /// written, so that the change is never durable while they are not.
    pub(super) async fn store<'a>(&mut self, cx: &Cx<'a>) -> Outcome<&'a DynStore> {
        if self.history_pending {
            cx.rooms.history_written().await.map_err(internal)?;
            self.history_pending = false;
        }
        Ok(&cx.rooms.store)
    }

    /// Keeps a groupchat message just broadcast: queued for the store when the room is
    /// persistent, and in memory.
    async fn keep(&mut self, cx: &Cx<'_>, item: HistoryItem) {
        if let Err(err) = self.ensure_history(cx).await {
            // The message is out; the copy in memory lacks the older ones until a reload.
            tracing::error!(room = %self.jid, error = %err, "cannot read the room history");
            self.history_loaded = true;
        }
        if self.persisted {
            let xml = String::from(&Element::from(item.message.clone()));
            let row = (self.name().to_owned(), xml, item.stamp.0.timestamp());
            cx.rooms.keep_history(row).await;
            self.history_pending = true;
        }
        self.keep_in_history(item, &cx.rooms.settings);
    }

    /// Adds a message to the history, forgetting the oldest past `rooms.max_history` messages
    /// or `rooms.max_history_bytes` (the newest always stays).
    fn keep_in_history(&mut self, item: HistoryItem, settings: &RoomsConfig) {
        self.history_bytes += item.bytes;
        self.history.push_back(item);
        while self.history.len() > settings.max_history
            || (self.history_bytes > settings.max_history_bytes && self.history.len() > 1)
        {
            if let Some(old) = self.history.pop_front() {
                self.history_bytes -= old.bytes;
            }
        }
    }

    /// A room stays within the rules of everyone in it: `newcomer` may enter, be invited or be
    /// granted a place only if the rules let them meet every occupant and every member (owners
    /// and admins included), whoever owns the room now.
    fn within_everyones_rules(&self, cx: &Cx<'_>, newcomer: &BareJid) -> Outcome {
        let members = self
            .affiliations
            .iter()
            .filter(|(_, a)| rank(a) >= rank(&Affiliation::Member))
            .map(|(jid, _)| jid);
        let others = self
            .occupants
            .iter()
            .map(|o| &o.user)
            .filter(|u| rank(&self.affiliation(u)) < rank(&Affiliation::Member));
        for other in members.chain(others).filter(|u| *u != newcomer) {
            rules_let_meet(cx, newcomer, other)?;
        }
        Ok(())
    }

    fn is_locked_by(&self, user: &BareJid) -> bool {
        self.locked.as_ref().is_some_and(|(_, by)| by == user)
    }

    /// What this room adds to the tally of rooms owned in memory only, once a handler is
    /// done with it (`staying`: it stays in memory): the owners counted before and now, when
    /// they differ. A room in the store counts there instead.
    pub fn recount_owners(&mut self, staying: bool) -> Option<(Vec<BareJid>, Vec<BareJid>)> {
        let now: Vec<BareJid> = if staying && !self.persisted {
            if !self.owners_dirty {
                return None;
            }
            self.affiliations
                .iter()
                .filter(|(_, a)| **a == Affiliation::Owner)
                .map(|(jid, _)| jid.clone())
                .collect()
        } else {
            Vec::new()
        };
        self.owners_dirty = false;
        if now == self.counted_owners {
            return None;
        }
        let before = std::mem::replace(&mut self.counted_owners, now.clone());
        Some((before, now))
    }

    pub fn locked_since(&self) -> Option<Instant> {
        self.locked.as_ref().map(|(at, _)| *at)
    }

    pub(super) fn name(&self) -> &str {
        self.jid.node().map_or("", |n| n.as_str())
    }

    pub(super) fn affiliation(&self, user: &BareJid) -> Affiliation {
        self.affiliations
            .get(user)
            .cloned()
            .unwrap_or(Affiliation::None)
    }

    pub(super) fn role_for(&self, affiliation: &Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    pub(super) fn by_session(&self, jid: &FullJid) -> Option<usize> {
        self.occupants.iter().position(|o| o.sessions.contains(jid))
    }

    pub(super) fn by_user(&self, user: &BareJid) -> Option<usize> {
        self.occupants.iter().position(|o| o.user == *user)
    }

    pub(super) fn by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }

    pub(super) fn occupant_jid(&self, nick: &str) -> Jid {
        match ResourcePart::new(nick) {
            Ok(resource) => Jid::from(self.jid.with_resource(&resource)),
            Err(_) => Jid::from(self.jid.clone()),
        }
    }

    pub(super) fn room_jid(&self) -> Jid {
        Jid::from(self.jid.clone())
    }

    pub(super) fn is_moderator(&self, at: usize) -> bool {
        self.occupants[at].role == Role::Moderator
    }

    /// Everything addressed to the room or to one of its occupants.
    pub async fn handle(&mut self, cx: &Cx<'_>, from: &FullJid, to: &Jid, stanza: Stanza) -> After {
        let nick = to.resource().map(|r| r.as_str().to_owned());
        match stanza {
            Stanza::Presence(presence) => self.presence(cx, from, nick, presence).await,
            Stanza::Message(message)
                if message.type_ == MessageType::Error && self.by_session(from).is_some() =>
            {
                if bounced_for_good(&message.payloads) {
                    self.session_bounced(cx, from)
                } else {
                    After::Keep
                }
            }
            Stanza::Message(message) => {
                let result = match nick {
                    Some(nick) => self.private_message(cx, from, &nick, &message),
                    None => self.message(cx, from, &message).await,
                };
                if let Err(err) = result {
                    reply(cx, &Stanza::Message(message), err);
                }
                After::Keep
            }
            Stanza::Iq(iq) => {
                let answer = match nick {
                    Some(nick) => self.iq_to_occupant(from, &nick, &iq),
                    None => self.iq(cx, from, &iq).await,
                };
                let after = match &answer {
                    Ok((_, after)) => *after,
                    Err(_) => After::Keep,
                };
                super::answer_iq(cx.router, from, &iq, answer.map(|(payload, _)| payload));
                after
            }
        }
    }
}

/// Whether an error an occupant's client sent back means that it is not there any more (the
/// conditions Prosody removes occupants for): then it leaves the room with status 333. A
/// client refusing one message for its content stays.
fn bounced_for_good(payloads: &[Element]) -> bool {
    let Some(error) = payloads.iter().find(|p| p.name() == "error") else {
        return true;
    };
    let Ok(error) = StanzaError::try_from(error.clone()) else {
        return true;
    };
    matches!(
        error.defined_condition,
        DefinedCondition::Gone { .. }
            | DefinedCondition::InternalServerError
            | DefinedCondition::ItemNotFound
            | DefinedCondition::JidMalformed
            | DefinedCondition::RecipientUnavailable
            | DefinedCondition::Redirect { .. }
            | DefinedCondition::RemoteServerNotFound
            | DefinedCondition::RemoteServerTimeout
            | DefinedCondition::ServiceUnavailable
    )
}

/// A message of the stored history, as kept in memory.
fn stored_item(xml: &str, at: i64) -> Option<HistoryItem> {
    let element: Element = xml.parse().ok()?;
    let message = Message::try_from(element).ok()?;
    let stamp = chrono::DateTime::from_timestamp(at, 0)?.fixed_offset();
    Some(HistoryItem {
        message,
        stamp: DateTime(stamp),
        bytes: xml.len(),
    })
}

fn internal(err: impl std::fmt::Display) -> Box<StanzaError> {
    tracing::error!(error = %err, "room change not stored");
    error(
        DefinedCondition::InternalServerError,
        "the change could not be saved; nothing changed",
    )
}

fn send_presence(cx: &Cx<'_>, to: &FullJid, mut presence: Presence) {
    presence.to = Some(Jid::from(to.clone()));
    deliver(cx.router, to, Stanza::Presence(presence));
}

fn reply(cx: &Cx<'_>, stanza: &Stanza, error: Box<StanzaError>) {
    super::reply_with(cx.router, stanza, *error);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(bytes: usize) -> HistoryItem {
        HistoryItem {
            message: Message::new_with_type(MessageType::Groupchat, None),
            stamp: now(),
            bytes,
        }
    }

    #[test]
    fn history_is_bounded_in_messages_and_in_bytes() {
        let settings = RoomsConfig {
            max_history: 3,
            max_history_bytes: 1000,
            ..RoomsConfig::default()
        };
        let jid = BareJid::new("r@conference.localhost").unwrap();
        let mut room = Room::create(jid, BareJid::new("o@localhost").unwrap(), &settings);
        for _ in 0..5 {
            room.keep_in_history(item(100), &settings);
        }
        assert_eq!((room.history.len(), room.history_bytes), (3, 300));
        room.keep_in_history(item(800), &settings);
        assert_eq!((room.history.len(), room.history_bytes), (3, 1000));
        room.keep_in_history(item(200), &settings);
        assert_eq!((room.history.len(), room.history_bytes), (2, 1000));
        // One message larger than the bound stays alone: the newest is always kept.
        room.keep_in_history(item(5000), &settings);
        assert_eq!((room.history.len(), room.history_bytes), (1, 5000));
    }
}
