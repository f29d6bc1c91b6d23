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
use crate::policy::{Action, Decision, Relation};
use crate::reply::policy_error;
use crate::storage::StoredRoom;

const VCARD: &str = "vcard-temp";
/// Invitations one message may carry.
const MAX_INVITES: usize = 20;

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

fn now() -> DateTime {
    DateTime(chrono::Utc::now().fixed_offset())
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
        let history = stored
            .history
            .iter()
            .filter_map(|(xml, at)| {
                let element: Element = xml.parse().ok()?;
                let message = Message::try_from(element).ok()?;
                let stamp = chrono::DateTime::from_timestamp(*at, 0)?.fixed_offset();
                Some(HistoryItem {
                    message,
                    stamp: DateTime(stamp),
                })
            })
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
            history,
            gone: false,
        }
    }

    pub fn is_locked_by(&self, user: &BareJid) -> bool {
        self.locked.as_ref().is_some_and(|(_, by)| by == user)
    }

    pub fn locked_since(&self) -> Option<Instant> {
        self.locked.as_ref().map(|(at, _)| *at)
    }

    fn name(&self) -> &str {
        self.jid.node().map_or("", |n| n.as_str())
    }

    fn affiliation(&self, user: &BareJid) -> Affiliation {
        self.affiliations
            .get(user)
            .cloned()
            .unwrap_or(Affiliation::None)
    }

    fn role_for(&self, affiliation: &Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    fn by_session(&self, jid: &FullJid) -> Option<usize> {
        self.occupants.iter().position(|o| o.sessions.contains(jid))
    }

    fn by_user(&self, user: &BareJid) -> Option<usize> {
        self.occupants.iter().position(|o| o.user == *user)
    }

    fn by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }

    fn occupant_jid(&self, nick: &str) -> Jid {
        match ResourcePart::new(nick) {
            Ok(resource) => Jid::from(self.jid.with_resource(&resource)),
            Err(_) => Jid::from(self.jid.clone()),
        }
    }

    fn room_jid(&self) -> Jid {
        Jid::from(self.jid.clone())
    }

    fn is_moderator(&self, at: usize) -> bool {
        self.occupants[at].role == Role::Moderator
    }

    /// Everything addressed to the room or to one of its occupants.
    pub async fn handle(&mut self, cx: &Cx<'_>, from: &FullJid, to: &Jid, stanza: Stanza) -> After {
        let nick = to.resource().map(|r| r.as_str().to_owned());
        match stanza {
            Stanza::Presence(presence) => self.presence(cx, from, nick, presence).await,
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
                answer_iq(cx, from, &iq, answer.map(|(payload, _)| payload));
                after
            }
        }
    }

    // ----- Presence: joining, leaving, changing nickname or status -----

    async fn presence(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        nick: Option<String>,
        presence: Presence,
    ) -> After {
        match presence.type_ {
            PresenceType::Unavailable | PresenceType::Error => self.session_gone(cx, from).await,
            PresenceType::None => {
                let Some(nick) = nick else {
                    reply(
                        cx,
                        &Stanza::Presence(presence),
                        error(DefinedCondition::JidMalformed, texts::NICK_EMPTY),
                    );
                    return self.settled();
                };
                let result = match self.by_session(from) {
                    Some(at) if self.occupants[at].nick == nick => {
                        self.update_presence(cx, at, presence.clone());
                        Ok(())
                    }
                    Some(at) => self.change_nick(cx, at, &nick, &presence),
                    None => self.join(cx, from, &nick, &presence).await,
                };
                match result {
                    Ok(()) => After::Keep,
                    Err(err) => {
                        reply(cx, &Stanza::Presence(presence), err);
                        self.settled()
                    }
                }
            }
            // Subscriptions and probes mean nothing to a room.
            _ => After::Keep,
        }
    }

    /// What becomes of the room as it stands: kept while it has occupants or waits for its
    /// configuration; else it leaves memory (a refused join leaves a room just created for it
    /// to go).
    pub fn settled(&self) -> After {
        if !self.occupants.is_empty() {
            After::Keep
        } else if self.locked.is_some() || !self.config.persistent || !self.persisted {
            After::Forget
        } else {
            After::Unload
        }
    }

    /// The nickname a user appears under: the directory's name when the room says so.
    fn nick_for(&self, cx: &Cx<'_>, user: &BareJid, asked: &str) -> String {
        if !cx.rooms.settings.directory_nicks {
            return asked.to_owned();
        }
        let Some(name) = user
            .node()
            .and_then(|n| cx.rooms.policy.display_name(n.as_str()))
        else {
            return asked.to_owned();
        };
        let taken = |nick: &str| {
            self.occupants
                .iter()
                .any(|o| o.nick == nick && o.user != *user)
        };
        if !taken(&name) {
            return name;
        }
        // Two people of the same name: the username tells them apart.
        format!("{name} ({})", user.node().map_or("", |n| n.as_str()))
    }

    fn check_nick(&self, cx: &Cx<'_>, nick: &str) -> Outcome {
        let nick_ok = !nick.trim().is_empty()
            && nick.chars().count() <= cx.rooms.settings.max_nick_chars
            && !nick.chars().any(char::is_control);
        if !nick_ok {
            return Err(error(
                DefinedCondition::NotAcceptable,
                &format!(
                    "a nickname has 1 to {} characters and no control characters",
                    cx.rooms.settings.max_nick_chars
                ),
            ));
        }
        Ok(())
    }

    async fn join(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        asked: &str,
        presence: &Presence,
    ) -> Outcome {
        let user = from.to_bare();
        let affiliation = self.affiliation(&user);
        let creating = self.locked.is_some() && self.occupants.is_empty();
        if self.locked.is_some() && affiliation != Affiliation::Owner {
            return Err(error(DefinedCondition::ItemNotFound, texts::LOCKED_ERROR));
        }
        if affiliation == Affiliation::Outcast {
            return Err(error(DefinedCondition::Forbidden, texts::BANNED));
        }
        if self.config.members_only && rank(&affiliation) < rank(&Affiliation::Member) {
            return Err(error(
                DefinedCondition::RegistrationRequired,
                texts::MEMBERS_ONLY,
            ));
        }
        let muc = presence
            .payloads
            .iter()
            .find(|p| p.is("x", MUC))
            .map(|x| Muc::try_from(x.clone()));
        let history = match muc {
            Some(Err(_)) => {
                return Err(error(
                    DefinedCondition::BadRequest,
                    "invalid join request: <history/> takes non-negative numbers and a date",
                ));
            }
            Some(Ok(muc)) => muc.history,
            None => None,
        };
        self.check_nick(cx, asked)?;
        // The ENT's rules: a joiner may communicate with the room's owners.
        if let Some(username) = user.node() {
            for owner in self
                .affiliations
                .iter()
                .filter(|(_, a)| **a == Affiliation::Owner)
                .map(|(j, _)| j)
            {
                let Some(owner_name) = owner.node() else {
                    continue;
                };
                if let Decision::Deny(reason) = cx.rooms.policy.decide(
                    username.as_str(),
                    owner_name.as_str(),
                    Action::Join,
                    Relation::default(),
                ) {
                    return Err(Box::new(policy_error(reason)));
                }
            }
        }
        let existing = self.by_user(&user);
        let nick = match existing {
            Some(at) => self.occupants[at].nick.clone(),
            None => self.nick_for(cx, &user, asked),
        };
        if let Some(other) = self.by_nick(&nick)
            && self.occupants[other].user != user
        {
            return Err(error(DefinedCondition::Conflict, texts::NICK_TAKEN));
        }
        let is_privileged = rank(&affiliation) >= rank(&Affiliation::Admin);
        if existing.is_none() && self.occupants.len() >= self.config.max_users && !is_privileged {
            return Err(error(DefinedCondition::ServiceUnavailable, texts::FULL));
        }
        let mut shown = presence.clone();
        shown
            .payloads
            .retain(|p| !p.is("x", MUC) && !p.is("x", MUC_USER));
        shown.from = None;
        shown.to = None;
        shown.id = None;
        let at = match existing {
            Some(at) => {
                self.occupants[at].sessions.push(from.clone());
                at
            }
            None => {
                self.occupants.push(Occupant {
                    nick: nick.clone(),
                    user: user.clone(),
                    sessions: vec![from.clone()],
                    role: self.role_for(&affiliation),
                    presence: shown,
                });
                cx.rooms.note_joined(&user, self.name());
                self.occupants.len() - 1
            }
        };
        // The others first, then the newcomer to the others, then to itself (§7.2.3).
        let viewer_moderator = self.is_moderator(at);
        for (i, other) in self.occupants.iter().enumerate() {
            if i != at {
                let p = self.presence_of(other, viewer_moderator, &[]);
                send_presence(cx, from, p);
            }
        }
        if existing.is_none() {
            self.broadcast_presence(cx, at, &[], Some(from));
        }
        let mut statuses = vec![110];
        if self.config.real_jids_visible {
            statuses.push(100);
        }
        if creating {
            statuses.push(201);
        }
        if nick != asked {
            statuses.push(210);
        }
        let own = self.presence_of(&self.occupants[at], viewer_moderator, &statuses);
        send_presence(cx, from, own);
        self.send_history(cx, from, history);
        self.send_subject(cx, from);
        if creating {
            let mut notice = localised(&texts::LOCKED);
            notice.from = Some(self.room_jid());
            notice.to = Some(Jid::from(from.clone()));
            deliver(cx.router, from, Stanza::Message(notice));
        }
        Ok(())
    }

    /// The presence of `occupant` as a viewer sees it, with the status codes given.
    fn presence_of(
        &self,
        occupant: &Occupant,
        viewer_moderator: bool,
        statuses: &[u16],
    ) -> Presence {
        let mut p = occupant.presence.clone();
        p.type_ = PresenceType::None;
        p.from = Some(self.occupant_jid(&occupant.nick));
        let jid_visible = self.config.real_jids_visible || viewer_moderator;
        let item = ItemSpec {
            affiliation: affiliation_str(&self.affiliation(&occupant.user)),
            role: role_str(&occupant.role),
            jid: jid_visible.then(|| occupant.sessions[0].to_string()),
            ..ItemSpec::default()
        };
        p.payloads
            .push(user_x(vec![item.element(MUC_USER)], statuses));
        p
    }

    /// Sends an occupant's presence to every session in the room but `except`.
    fn broadcast_presence(
        &self,
        cx: &Cx<'_>,
        at: usize,
        statuses: &[u16],
        except: Option<&FullJid>,
    ) {
        for viewer in &self.occupants {
            let moderator = viewer.role == Role::Moderator;
            for session in &viewer.sessions {
                if Some(session) == except {
                    continue;
                }
                let mut codes = statuses.to_vec();
                if viewer.user == self.occupants[at].user {
                    codes.push(110);
                }
                let p = self.presence_of(&self.occupants[at], moderator, &codes);
                send_presence(cx, session, p);
            }
        }
    }

    fn update_presence(&mut self, cx: &Cx<'_>, at: usize, mut presence: Presence) {
        presence
            .payloads
            .retain(|p| !p.is("x", MUC) && !p.is("x", MUC_USER));
        presence.from = None;
        presence.to = None;
        presence.id = None;
        self.occupants[at].presence = presence;
        self.broadcast_presence(cx, at, &[], None);
    }

    fn change_nick(&mut self, cx: &Cx<'_>, at: usize, nick: &str, presence: &Presence) -> Outcome {
        let user = self.occupants[at].user.clone();
        if cx.rooms.settings.directory_nicks
            && user
                .node()
                .and_then(|n| cx.rooms.policy.display_name(n.as_str()))
                .is_some()
        {
            return Err(error(DefinedCondition::NotAcceptable, texts::NICK_FIXED));
        }
        self.check_nick(cx, nick)?;
        if self.by_nick(nick).is_some() {
            return Err(error(DefinedCondition::Conflict, texts::NICK_TAKEN));
        }
        // §7.6: unavailable under the old nick with 303 and the new one, then available.
        let old = self.occupants[at].nick.clone();
        for viewer in &self.occupants {
            let moderator = viewer.role == Role::Moderator;
            for session in &viewer.sessions {
                let mut codes = vec![303];
                if viewer.user == user {
                    codes.push(110);
                }
                let mut p = Presence::new(PresenceType::Unavailable);
                p.from = Some(self.occupant_jid(&old));
                let occupant = &self.occupants[at];
                let item = ItemSpec {
                    affiliation: affiliation_str(&self.affiliation(&occupant.user)),
                    role: role_str(&occupant.role),
                    jid: (self.config.real_jids_visible || moderator)
                        .then(|| occupant.sessions[0].to_string()),
                    nick: Some(nick),
                    ..ItemSpec::default()
                };
                p.payloads
                    .push(user_x(vec![item.element(MUC_USER)], &codes));
                send_presence(cx, session, p);
            }
        }
        self.occupants[at].nick = nick.to_owned();
        self.update_presence(cx, at, presence.clone());
        Ok(())
    }

    /// A session leaves (unavailable presence, an error, or the session's end). The occupant
    /// leaves with its last session.
    pub async fn session_gone(&mut self, cx: &Cx<'_>, jid: &FullJid) -> After {
        let Some(at) = self.by_session(jid) else {
            return After::Keep;
        };
        let occupant = &mut self.occupants[at];
        occupant.sessions.retain(|s| s != jid);
        let mut p = Presence::new(PresenceType::Unavailable);
        p.from = Some(self.occupant_jid(&self.occupants[at].nick));
        let item = ItemSpec {
            affiliation: affiliation_str(&self.affiliation(&self.occupants[at].user)),
            role: "none",
            ..ItemSpec::default()
        };
        p.payloads
            .push(user_x(vec![item.element(MUC_USER)], &[110]));
        send_presence(cx, jid, p);
        if !self.occupants[at].sessions.is_empty() {
            return After::Keep;
        }
        self.remove_occupant(cx, at, &[], None, None);
        self.after_leaving(cx).await
    }

    /// What becomes of the room once someone left.
    async fn after_leaving(&mut self, cx: &Cx<'_>) -> After {
        if !self.occupants.is_empty() {
            return After::Keep;
        }
        if self.locked.is_some() || !self.config.persistent || !self.persisted {
            if self.persisted
                && let Err(err) = cx.rooms.store.delete_room(self.name()).await
            {
                tracing::error!(room = %self.jid, error = %err, "cannot delete a room");
            }
            return After::Forget;
        }
        After::Unload
    }

    /// Takes an occupant out and tells everyone (it too, with `to_self`), with the status codes
    /// and the actor and reason of a removal.
    fn remove_occupant(
        &mut self,
        cx: &Cx<'_>,
        at: usize,
        statuses: &[u16],
        actor: Option<&str>,
        reason: Option<&str>,
    ) {
        let occupant = self.occupants.remove(at);
        cx.rooms.note_left(&occupant.user, self.name());
        let affiliation = affiliation_str(&self.affiliation(&occupant.user));
        let unavailable = |viewer_moderator: bool, own: bool| {
            let mut p = Presence::new(PresenceType::Unavailable);
            p.from = Some(self.occupant_jid(&occupant.nick));
            let item = ItemSpec {
                affiliation,
                role: "none",
                jid: (self.config.real_jids_visible || viewer_moderator)
                    .then(|| occupant.user.to_string()),
                actor,
                reason,
                ..ItemSpec::default()
            };
            let mut codes = statuses.to_vec();
            if own {
                codes.push(110);
            }
            p.payloads
                .push(user_x(vec![item.element(MUC_USER)], &codes));
            p
        };
        if !statuses.is_empty() {
            for session in &occupant.sessions {
                send_presence(cx, session, unavailable(false, true));
            }
        }
        for viewer in &self.occupants {
            let p = unavailable(viewer.role == Role::Moderator, false);
            for session in &viewer.sessions {
                send_presence(cx, session, p.clone());
            }
        }
    }

    fn send_history(
        &self,
        cx: &Cx<'_>,
        to: &FullJid,
        asked: Option<xmpp_parsers::muc::muc::History>,
    ) {
        let mut count = self.config.history_length.min(self.history.len());
        let mut since = None;
        let mut max_chars = usize::MAX;
        if let Some(h) = asked {
            if let Some(n) = h.maxstanzas {
                count = count.min(n as usize);
            }
            if let Some(chars) = h.maxchars {
                max_chars = chars as usize;
            }
            if let Some(seconds) = h.seconds {
                since = Some(chrono::Utc::now() - chrono::Duration::seconds(i64::from(seconds)));
            }
            if let Some(date) = h.since {
                let date = date.0.with_timezone(&chrono::Utc);
                since = Some(since.map_or(date, |s: chrono::DateTime<chrono::Utc>| s.max(date)));
            }
        }
        let mut chosen: Vec<&HistoryItem> = self
            .history
            .iter()
            .rev()
            .take(count)
            .filter(|h| since.is_none_or(|s| h.stamp.0 >= s))
            .collect();
        chosen.reverse();
        let mut chars = 0usize;
        for item in chosen {
            let mut message = item.message.clone();
            chars += message
                .bodies
                .values()
                .map(|b| b.len() + 100)
                .sum::<usize>();
            if chars > max_chars {
                break;
            }
            message.to = Some(Jid::from(to.clone()));
            message.payloads.push(
                Delay {
                    from: Some(self.room_jid()),
                    stamp: item.stamp.clone(),
                    data: None,
                }
                .into(),
            );
            deliver(cx.router, to, Stanza::Message(message));
        }
    }

    /// §7.2.15: the subject, empty when there is none, ends the join.
    fn send_subject(&self, cx: &Cx<'_>, to: &FullJid) {
        let mut message =
            Message::new_with_type(MessageType::Groupchat, Some(Jid::from(to.clone())));
        let (text, by) = self.subject.clone().unwrap_or_default();
        message.from = Some(if by.is_empty() {
            self.room_jid()
        } else {
            self.occupant_jid(&by)
        });
        message.subjects.insert(Lang::default(), text);
        deliver(cx.router, to, Stanza::Message(message));
    }

    /// A message from the room itself to every occupant.
    fn notice(&self, cx: &Cx<'_>, mut message: Message) {
        message.from = Some(self.room_jid());
        self.broadcast_message(cx, &message);
    }

    /// Sends a message to every occupant's sessions. Encoded once: each session writes the
    /// same bytes with its own `to` (a class of 30 in one room is the heaviest path of a
    /// school chat).
    fn broadcast_message(&self, cx: &Cx<'_>, message: &Message) {
        debug_assert!(message.to.is_none());
        let shared = match SharedStanza::encode(message) {
            Ok(shared) => Arc::new(shared),
            Err(err) => {
                tracing::warn!(room = %self.jid, error = %err, "a message that cannot be encoded");
                return;
            }
        };
        for occupant in &self.occupants {
            for session in &occupant.sessions {
                cx.router.deliver_shared(session, &shared);
            }
        }
    }

    // ----- Messages -----

    async fn message(&mut self, cx: &Cx<'_>, from: &FullJid, message: &Message) -> Outcome {
        if let Some(x) = message.payloads.iter().find(|p| p.is("x", MUC_USER)) {
            return self.invitation_or_decline(cx, from, x).await;
        }
        match message.type_ {
            MessageType::Groupchat => {}
            MessageType::Error => {
                // A client that bounces the room's messages is gone (§7.2.? "ghosts").
                return Ok(());
            }
            _ => {
                return Err(error(
                    DefinedCondition::NotAcceptable,
                    "messages to a conversation are of type groupchat",
                ));
            }
        }
        let Some(at) = self.by_session(from) else {
            return Err(error(DefinedCondition::NotAcceptable, texts::NOT_OCCUPANT));
        };
        if self.occupants[at].role == Role::Visitor {
            return Err(error(DefinedCondition::Forbidden, texts::VISITOR));
        }
        let nick = self.occupants[at].nick.clone();
        let mut out = message.clone();
        out.from = Some(self.occupant_jid(&nick));
        out.to = None;
        if !message.subjects.is_empty() && message.bodies.is_empty() {
            if !self.config.change_subject && !self.is_moderator(at) {
                return Err(error(DefinedCondition::Forbidden, texts::SUBJECT_FORBIDDEN));
            }
            let text = message
                .subjects
                .values()
                .next()
                .cloned()
                .unwrap_or_default();
            if text.chars().count() > cx.rooms.settings.max_subject_chars {
                return Err(error(
                    DefinedCondition::NotAcceptable,
                    &format!(
                        "a subject has at most {} characters",
                        cx.rooms.settings.max_subject_chars
                    ),
                ));
            }
            if self.persisted {
                cx.rooms
                    .store
                    .save_room_subject(self.name(), &text, &nick)
                    .await
                    .map_err(internal)?;
            }
            self.subject = Some((text, nick));
            self.broadcast_message(cx, &out);
            return Ok(());
        }
        self.broadcast_message(cx, &out);
        if !message.bodies.is_empty() && cx.rooms.settings.max_history > 0 {
            let stamp = now();
            if self.persisted {
                let xml = String::from(&Element::from(out.clone()));
                let row = (self.name().to_owned(), xml, stamp.0.timestamp());
                if cx.rooms.history.send(row).await.is_err() {
                    tracing::warn!(room = %self.jid, "history writer stopped");
                }
            }
            if self.history.len() == cx.rooms.settings.max_history {
                self.history.pop_front();
            }
            self.history.push_back(HistoryItem {
                message: out,
                stamp,
            });
        }
        Ok(())
    }

    /// §7.8.2 mediated invitations and their declines.
    async fn invitation_or_decline(&mut self, cx: &Cx<'_>, from: &FullJid, x: &Element) -> Outcome {
        let user_x = MucUser::try_from(x.clone())
            .map_err(|_| error(DefinedCondition::BadRequest, "invalid muc#user element"))?;
        if let Some(decline) = user_x.decline {
            let Some(to) = decline.to else {
                return Err(error(
                    DefinedCondition::BadRequest,
                    "a <decline/> needs a 'to'",
                ));
            };
            return self.relay_decline(cx, from, to, decline.reason);
        }
        let invites: Vec<&Element> = x.children().filter(|c| c.is("invite", MUC_USER)).collect();
        if invites.is_empty() {
            return Err(error(
                DefinedCondition::BadRequest,
                "nothing to do with this muc#user element",
            ));
        }
        if invites.len() > MAX_INVITES {
            return Err(error(
                DefinedCondition::PolicyViolation,
                &format!("at most {MAX_INVITES} invitations at once"),
            ));
        }
        self.may_invite(from)?;
        // Every invitation is checked before any is sent: a refused one changes nothing.
        let inviter = from.to_bare();
        let mut invitees = Vec::new();
        for invite in invites {
            let invite = xmpp_parsers::muc::user::Invite::try_from(invite.clone())
                .map_err(|_| error(DefinedCondition::BadRequest, "invalid <invite/>"))?;
            let Some(to) = invite.to else {
                return Err(error(
                    DefinedCondition::BadRequest,
                    "an <invite/> needs a 'to'",
                ));
            };
            let invitee = to.to_bare();
            self.check_invitee(cx, &inviter, &invitee)?;
            invitees.push((invitee, invite.reason));
        }
        let new_members = invitees
            .iter()
            .filter(|(i, _)| self.needs_membership(i))
            .count();
        if self.affiliations.len() + new_members > cx.rooms.settings.max_members {
            return Err(error(
                DefinedCondition::NotAllowed,
                texts::TOO_MANY_AFFILIATIONS,
            ));
        }
        for (invitee, reason) in invitees {
            if self.needs_membership(&invitee) {
                self.set_affiliation(cx, &invitee, Affiliation::Member)
                    .await?;
            }
            self.send_invitation(cx, &inviter, &invitee, reason).await;
        }
        Ok(())
    }

    /// Whether the sender of an invitation is an occupant who may invite.
    fn may_invite(&self, from: &FullJid) -> Outcome {
        let Some(at) = self.by_session(from) else {
            return Err(error(DefinedCondition::NotAcceptable, texts::NOT_OCCUPANT));
        };
        if !self.config.allow_invites && !self.is_moderator(at) {
            return Err(error(DefinedCondition::Forbidden, texts::INVITE_FORBIDDEN));
        }
        Ok(())
    }

    /// Whether `inviter` may invite `invitee` here: a user of this server, whom the ENT's rules
    /// let the inviter invite, and not banned from the room.
    fn check_invitee(&self, cx: &Cx<'_>, inviter: &BareJid, invitee: &BareJid) -> Outcome {
        if invitee.domain().as_str() != cx.rooms.users_domain || invitee.node().is_none() {
            return Err(error(DefinedCondition::JidMalformed, texts::OUTSIDERS));
        }
        if let (Some(a), Some(b)) = (inviter.node(), invitee.node())
            && let Decision::Deny(reason) =
                cx.rooms
                    .policy
                    .decide(a.as_str(), b.as_str(), Action::Invite, Relation::default())
        {
            return Err(Box::new(policy_error(reason)));
        }
        if self.affiliation(invitee) == Affiliation::Outcast {
            return Err(error(
                DefinedCondition::NotAllowed,
                "this person is banned from this conversation",
            ));
        }
        Ok(())
    }

    /// An invitee of a members-only room becomes a member, so that the room admits them.
    fn needs_membership(&self, invitee: &BareJid) -> bool {
        self.config.members_only && self.affiliation(invitee) == Affiliation::None
    }

    /// A direct invitation (XEP-0249) that the inviter sends the invitee themselves: checked
    /// as a mediated one, it makes the invitee a member of a members-only room.
    pub async fn direct_invitation(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        invitee: &BareJid,
    ) -> Outcome {
        self.may_invite(from)?;
        self.check_invitee(cx, &from.to_bare(), invitee)?;
        if self.needs_membership(invitee) {
            if self.affiliations.len() >= cx.rooms.settings.max_members {
                return Err(error(
                    DefinedCondition::NotAllowed,
                    texts::TOO_MANY_AFFILIATIONS,
                ));
            }
            self.set_affiliation(cx, invitee, Affiliation::Member)
                .await?;
        }
        Ok(())
    }

    /// A declined invitation goes back to the inviter, under the same rules as a private
    /// message: its reason is the decliner's text.
    fn relay_decline(
        &self,
        cx: &Cx<'_>,
        from: &FullJid,
        to: Jid,
        reason: Option<String>,
    ) -> Outcome {
        let inviter = to.to_bare();
        if inviter.domain().as_str() != cx.rooms.users_domain || inviter.node().is_none() {
            return Err(error(DefinedCondition::JidMalformed, texts::OUTSIDERS));
        }
        if let (Some(a), Some(b)) = (from.node(), inviter.node())
            && let Decision::Deny(reason) = cx.rooms.policy.decide(
                a.as_str(),
                b.as_str(),
                Action::PrivateMessage,
                Relation::default(),
            )
        {
            return Err(Box::new(policy_error(reason)));
        }
        let mut message = Message::new(Some(to.clone()));
        message.from = Some(self.room_jid());
        let mut decline = Element::builder("decline", MUC_USER)
            .attr(name("from"), from.to_bare().to_string())
            .build();
        if let Some(reason) = reason {
            decline.append_child(Element::builder("reason", MUC_USER).append(reason).build());
        }
        let mut x = Element::builder("x", MUC_USER).build();
        x.append_child(decline);
        message.payloads.push(x);
        // Online only: a decline is a courtesy, not worth keeping.
        let _ = cx.router.deliver_message(&to, message);
        Ok(())
    }

    async fn send_invitation(
        &self,
        cx: &Cx<'_>,
        inviter: &BareJid,
        invitee: &BareJid,
        reason: Option<String>,
    ) {
        let mut message = Message::new(Some(Jid::from(invitee.clone())));
        message.from = Some(self.room_jid());
        let mut invite = Element::builder("invite", MUC_USER)
            .attr(name("from"), inviter.to_string())
            .build();
        if let Some(reason) = reason {
            invite.append_child(Element::builder("reason", MUC_USER).append(reason).build());
        }
        let mut x = Element::builder("x", MUC_USER).build();
        x.append_child(invite);
        message.payloads.push(x);
        let body = if self.config.name.is_empty() {
            format!("Invitation à rejoindre la conversation {}", self.jid)
        } else {
            format!(
                "Invitation à rejoindre la conversation « {} »",
                self.config.name
            )
        };
        message.bodies.insert(Lang::default(), body);
        let to = Jid::from(invitee.clone());
        if let crate::router::MessageDelivery::Undelivered(message) =
            cx.router.deliver_message(&to, message)
        {
            // Kept for the invitee's next login, like any message; nothing tells the inviter
            // whether the account exists.
            let xml = String::from(&Element::from(message));
            let username = invitee.node().map_or("", |n| n.as_str());
            let _ = cx
                .rooms
                .store
                .push_offline(username, &xml, cx.rooms.max_offline_messages)
                .await;
        }
    }

    /// §7.5: a private message to an occupant, from the sender's nickname.
    fn private_message(
        &self,
        cx: &Cx<'_>,
        from: &FullJid,
        nick: &str,
        message: &Message,
    ) -> Outcome {
        let Some(at) = self.by_session(from) else {
            return Err(error(DefinedCondition::NotAcceptable, texts::NOT_OCCUPANT));
        };
        if message.type_ == MessageType::Groupchat {
            return Err(error(
                DefinedCondition::BadRequest,
                "groupchat messages go to the conversation, not to an occupant",
            ));
        }
        if message.type_ == MessageType::Error {
            return Ok(());
        }
        let allowed = match self.config.allow_pm {
            super::form::AllowPm::Anyone => true,
            super::form::AllowPm::Participants => self.occupants[at].role != Role::Visitor,
            super::form::AllowPm::Moderators => self.is_moderator(at),
            super::form::AllowPm::None => false,
        };
        if !allowed {
            return Err(error(DefinedCondition::NotAllowed, texts::PM_FORBIDDEN));
        }
        let Some(target) = self.by_nick(nick) else {
            return Err(error(DefinedCondition::ItemNotFound, texts::NO_SUCH_NICK));
        };
        let sender = &self.occupants[at];
        let recipient = &self.occupants[target];
        if let (Some(a), Some(b)) = (sender.user.node(), recipient.user.node())
            && let Decision::Deny(reason) = cx.rooms.policy.decide(
                a.as_str(),
                b.as_str(),
                Action::PrivateMessage,
                Relation::default(),
            )
        {
            return Err(Box::new(policy_error(reason)));
        }
        let mut out = message.clone();
        out.from = Some(self.occupant_jid(&sender.nick));
        out.payloads.retain(|p| !p.is("x", MUC_USER));
        out.payloads.push(Element::builder("x", MUC_USER).build());
        for session in &recipient.sessions {
            let mut copy = out.clone();
            copy.to = Some(Jid::from(session.clone()));
            deliver(cx.router, session, Stanza::Message(copy));
        }
        Ok(())
    }

    // ----- IQs -----

    /// IQs to an occupant: XEP-0410 self-pings are answered; others are not relayed.
    fn iq_to_occupant(
        &self,
        from: &FullJid,
        nick: &str,
        iq: &Iq,
    ) -> Outcome<(Option<Element>, After)> {
        let Iq::Get { payload, .. } = iq else {
            return Err(error(
                DefinedCondition::FeatureNotImplemented,
                "requests to occupants are not relayed",
            ));
        };
        if payload.is("ping", crate::ns::PING) {
            return match self.by_session(from) {
                Some(at) if self.occupants[at].nick == nick => Ok((None, After::Keep)),
                Some(_) => Err(error(
                    DefinedCondition::FeatureNotImplemented,
                    "pings to other occupants are not relayed",
                )),
                None => Err(error(DefinedCondition::NotAcceptable, texts::NOT_OCCUPANT)),
            };
        }
        Err(error(
            DefinedCondition::FeatureNotImplemented,
            "requests to occupants are not relayed",
        ))
    }

    async fn iq(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        iq: &Iq,
    ) -> Outcome<(Option<Element>, After)> {
        let keep = |payload: Option<Element>| Ok((payload, After::Keep));
        match iq {
            Iq::Get { payload, .. } => {
                if payload.is("query", DISCO_INFO) {
                    keep(Some(self.disco_info(from)?))
                } else if payload.is("query", DISCO_ITEMS) {
                    self.disco_info(from)?;
                    keep(Some(
                        DiscoItemsResult {
                            node: None,
                            items: Vec::new(),
                            rsm: None,
                        }
                        .into(),
                    ))
                } else if payload.is("query", MUC_OWNER) {
                    self.require_owner(from)?;
                    let mut query = Element::builder("query", MUC_OWNER).build();
                    query.append_child(self.config.form(&cx.rooms.settings).into());
                    keep(Some(query))
                } else if payload.is("query", MUC_ADMIN) {
                    keep(Some(self.admin_list(from, payload)?))
                } else if payload.is("vCard", VCARD) {
                    self.disco_info(from)?;
                    let vcard = self
                        .vcard
                        .as_deref()
                        .and_then(|v| v.parse::<Element>().ok())
                        .unwrap_or_else(|| Element::builder("vCard", VCARD).build());
                    keep(Some(vcard))
                } else if payload.is("ping", crate::ns::PING) {
                    if self.by_session(from).is_none() {
                        return Err(error(DefinedCondition::NotAcceptable, texts::NOT_OCCUPANT));
                    }
                    keep(None)
                } else {
                    Err(error(
                        DefinedCondition::ServiceUnavailable,
                        "the conversation does not answer this request",
                    ))
                }
            }
            Iq::Set { payload, .. } => {
                if payload.is("query", MUC_OWNER) {
                    self.require_owner(from)?;
                    self.owner_set(cx, from, payload).await
                } else if payload.is("query", MUC_ADMIN) {
                    self.admin_set(cx, from, payload).await?;
                    keep(None)
                } else if payload.is("vCard", VCARD) {
                    self.require_owner(from)?;
                    self.set_vcard(cx, payload).await?;
                    keep(None)
                } else {
                    Err(error(
                        DefinedCondition::ServiceUnavailable,
                        "the conversation does not answer this request",
                    ))
                }
            }
            Iq::Result { .. } | Iq::Error { .. } => keep(None),
        }
    }

    /// §6.4; a hidden room tells nothing to those who are neither in it nor affiliated.
    fn disco_info(&self, from: &FullJid) -> Outcome<Element> {
        let user = from.to_bare();
        let known = self.config.public
            || self.by_session(from).is_some()
            || rank(&self.affiliation(&user)) >= rank(&Affiliation::Member);
        if !known || (self.locked.is_some() && !self.is_locked_by(&user)) {
            return Err(error(
                DefinedCondition::ItemNotFound,
                "no such conversation",
            ));
        }
        let name = if self.config.name.is_empty() {
            self.name().to_owned()
        } else {
            self.config.name.clone()
        };
        let mut features: std::collections::BTreeSet<String> = [
            MUC,
            DISCO_INFO,
            DISCO_ITEMS,
            "muc_unsecured",
            VCARD,
            crate::ns::PING,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        features.extend(self.config.features().into_iter().map(str::to_owned));
        let subject = self.subject.as_ref().map_or("", |(s, _)| s.as_str());
        Ok(DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("conference", "text", "fr", name)],
            features,
            extensions: vec![self.config.info_form(subject, self.occupants.len())],
        }
        .into())
    }

    fn require_owner(&self, from: &FullJid) -> Outcome {
        if self.affiliation(&from.to_bare()) != Affiliation::Owner {
            return Err(error(DefinedCondition::Forbidden, texts::NOT_OWNER));
        }
        Ok(())
    }

    /// §10: configuration (or instant room), cancel, destroy.
    async fn owner_set(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        query: &Element,
    ) -> Outcome<(Option<Element>, After)> {
        if let Some(destroy) = query.get_child("destroy", MUC_OWNER) {
            let alternate = match destroy.attr("jid") {
                Some(j) => Some(Jid::new(j).map_err(|_| {
                    error(
                        DefinedCondition::JidMalformed,
                        "the alternate venue is not a valid JID",
                    )
                })?),
                None => None,
            };
            let reason = destroy.get_child("reason", MUC_OWNER).map(|r| r.text());
            if self.persisted {
                cx.rooms
                    .store
                    .delete_room(self.name())
                    .await
                    .map_err(internal)?;
                self.persisted = false;
            }
            tracing::info!(room = %self.jid, by = %from.to_bare(), "room destroyed");
            self.destroy(cx, alternate, reason.as_deref()).await;
            return Ok((None, After::Forget));
        }
        let form_element = query
            .get_child("x", xmpp_parsers::ns::DATA_FORMS)
            .ok_or_else(|| {
                error(
                    DefinedCondition::BadRequest,
                    "a configuration form is expected",
                )
            })?;
        let form = DataForm::try_from(form_element.clone())
            .map_err(|_| error(DefinedCondition::BadRequest, "invalid data form"))?;
        if form.type_ == DataFormType::Cancel {
            if self.locked.is_some() {
                // §10.1.3: cancelling the first configuration destroys the room.
                self.destroy(cx, None, None).await;
                return Ok((None, After::Forget));
            }
            return Ok((None, After::Keep));
        }
        let next = self
            .config
            .apply(&form, &cx.rooms.settings)
            .map_err(|invalid| error(DefinedCondition::NotAcceptable, &invalid.0))?;
        self.reconfigure(cx, from, next).await?;
        Ok((None, After::Keep))
    }

    /// Applies a new configuration: stored first, then shown.
    async fn reconfigure(&mut self, cx: &Cx<'_>, from: &FullJid, next: RoomConfig) -> Outcome {
        let json = serde_json::to_string(&next).map_err(|_| internal("serialising a config"))?;
        let unlocking = self.locked.is_some();
        match (self.persisted, next.persistent) {
            (false, true) => {
                let stored = StoredRoom {
                    name: self.name().to_owned(),
                    config: json,
                    subject: self.subject.as_ref().map(|(s, _)| s.clone()),
                    subject_by: self.subject.as_ref().map(|(_, b)| b.clone()),
                    vcard: self.vcard.clone(),
                    affiliations: self
                        .affiliations
                        .iter()
                        .map(|(j, a)| (j.to_string(), affiliation_str(a).to_owned()))
                        .collect(),
                    history: Vec::new(),
                };
                let owner = if unlocking {
                    from.to_bare().to_string()
                } else {
                    String::new()
                };
                let limit = if unlocking {
                    cx.rooms.settings.max_rooms_per_user
                } else {
                    u32::MAX
                };
                match cx
                    .rooms
                    .store
                    .create_room(&stored, next.public, &owner, limit)
                    .await
                {
                    Ok(()) => {}
                    Err(crate::storage::Error::LimitReached) => {
                        return Err(error(DefinedCondition::NotAllowed, texts::TOO_MANY_ROOMS));
                    }
                    Err(err) => return Err(internal(err)),
                }
                self.persisted = true;
            }
            (true, false) => {
                cx.rooms
                    .store
                    .delete_room(self.name())
                    .await
                    .map_err(internal)?;
                self.persisted = false;
            }
            (true, true) => cx
                .rooms
                .store
                .save_room_config(self.name(), &json, next.public)
                .await
                .map_err(internal)?,
            (false, false) => {}
        }
        let previous = std::mem::replace(&mut self.config, next);
        if unlocking {
            self.locked = None;
            self.notice(cx, localised(&texts::UNLOCKED));
        }
        // §10.2.1: occupants learn that the configuration changed.
        let mut codes = vec![104];
        if previous.real_jids_visible != self.config.real_jids_visible {
            codes.push(if self.config.real_jids_visible {
                172
            } else {
                173
            });
        }
        if !unlocking {
            let mut notice = Message::new_with_type(MessageType::Groupchat, None);
            notice.payloads.push(user_x(Vec::new(), &codes));
            self.notice(cx, notice);
        }
        // Roles follow the moderation setting; non-members leave a room now members-only.
        if previous.moderated != self.config.moderated {
            for at in 0..self.occupants.len() {
                let role = self.role_for(&self.affiliation(&self.occupants[at].user));
                if self.occupants[at].role != role {
                    self.occupants[at].role = role;
                    self.broadcast_presence(cx, at, &[], None);
                }
            }
        }
        if self.config.members_only && !previous.members_only {
            let mut at = 0;
            while at < self.occupants.len() {
                let user = self.occupants[at].user.clone();
                if rank(&self.affiliation(&user)) < rank(&Affiliation::Member) {
                    self.remove_occupant(cx, at, &[322], None, None);
                } else {
                    at += 1;
                }
            }
        }
        Ok(())
    }

    /// Everyone leaves with the destruction notice (§10.9); the room is gone afterwards.
    pub async fn destroy(&mut self, cx: &Cx<'_>, alternate: Option<Jid>, reason: Option<&str>) {
        for occupant in self.occupants.drain(..) {
            cx.rooms
                .note_left(&occupant.user, self.jid.node().map_or("", |n| n.as_str()));
            for session in &occupant.sessions {
                let mut p = Presence::new(PresenceType::Unavailable);
                p.from = Some(match ResourcePart::new(&occupant.nick) {
                    Ok(r) => Jid::from(self.jid.with_resource(&r)),
                    Err(_) => Jid::from(self.jid.clone()),
                });
                let item = ItemSpec {
                    affiliation: "none",
                    role: "none",
                    ..ItemSpec::default()
                };
                let mut x = user_x(vec![item.element(MUC_USER)], &[110]);
                let mut destroy = Element::builder("destroy", MUC_USER).build();
                if let Some(alternate) = &alternate {
                    destroy.set_attr(rxml::Namespace::NONE, name("jid"), alternate.to_string());
                }
                if let Some(reason) = reason {
                    destroy
                        .append_child(Element::builder("reason", MUC_USER).append(reason).build());
                }
                x.append_child(destroy);
                p.payloads.push(x);
                send_presence(cx, session, p);
            }
        }
        if self.persisted {
            if let Err(err) = cx.rooms.store.delete_room(self.name()).await {
                tracing::error!(room = %self.jid, error = %err, "cannot delete a room");
            }
            self.persisted = false;
        }
    }

    async fn set_vcard(&mut self, cx: &Cx<'_>, vcard: &Element) -> Outcome {
        let xml = String::from(vcard);
        if xml.len() > cx.rooms.settings.max_vcard_bytes {
            return Err(error(
                DefinedCondition::NotAcceptable,
                &format!(
                    "a conversation's vCard takes at most {} bytes",
                    cx.rooms.settings.max_vcard_bytes
                ),
            ));
        }
        if self.persisted {
            cx.rooms
                .store
                .save_room_vcard(self.name(), &xml)
                .await
                .map_err(internal)?;
        }
        self.vcard = Some(xml);
        let mut notice = Message::new_with_type(MessageType::Groupchat, None);
        notice.payloads.push(user_x(Vec::new(), &[104]));
        self.notice(cx, notice);
        Ok(())
    }

    /// §9.5, §8.5: lists by affiliation (owners and admins) or by role (moderators).
    fn admin_list(&self, from: &FullJid, query: &Element) -> Outcome<Element> {
        let item = query
            .get_child("item", MUC_ADMIN)
            .ok_or_else(|| error(DefinedCondition::BadRequest, "an <item/> is expected"))?;
        let user = from.to_bare();
        let mine = self.affiliation(&user);
        let moderator = self
            .by_session(from)
            .is_some_and(|at| self.is_moderator(at));
        let mut out = Element::builder("query", MUC_ADMIN).build();
        if let Some(a) = item.attr("affiliation") {
            let wanted = parse_affiliation(a)
                .filter(|a| *a != Affiliation::None)
                .ok_or_else(|| error(DefinedCondition::BadRequest, "unknown affiliation"))?;
            if rank(&mine) < rank(&Affiliation::Admin) {
                return Err(error(DefinedCondition::Forbidden, texts::NOT_MODERATOR));
            }
            for (jid, _) in self.affiliations.iter().filter(|(_, a)| **a == wanted) {
                let spec = ItemSpec {
                    affiliation: affiliation_str(&wanted),
                    role: self
                        .by_user(jid)
                        .map_or("none", |at| role_str(&self.occupants[at].role)),
                    jid: Some(jid.to_string()),
                    nick: self.by_user(jid).map(|at| self.occupants[at].nick.as_str()),
                    ..ItemSpec::default()
                };
                out.append_child(spec.element(MUC_ADMIN));
            }
            return Ok(out);
        }
        if let Some(r) = item.attr("role") {
            let wanted = parse_role(r)
                .filter(|r| *r != Role::None)
                .ok_or_else(|| error(DefinedCondition::BadRequest, "unknown role"))?;
            if !moderator {
                return Err(error(DefinedCondition::Forbidden, texts::NOT_MODERATOR));
            }
            for occupant in self.occupants.iter().filter(|o| o.role == wanted) {
                let spec = ItemSpec {
                    affiliation: affiliation_str(&self.affiliation(&occupant.user)),
                    role: role_str(&wanted),
                    jid: Some(occupant.sessions[0].to_string()),
                    nick: Some(&occupant.nick),
                    ..ItemSpec::default()
                };
                out.append_child(spec.element(MUC_ADMIN));
            }
            return Ok(out);
        }
        Err(error(
            DefinedCondition::BadRequest,
            "an <item/> names an affiliation or a role",
        ))
    }

    /// §8 and §9: roles by nickname (kick, voice, moderator), affiliations by JID (member,
    /// admin, owner, ban). Every item is checked before any applies.
    async fn admin_set(&mut self, cx: &Cx<'_>, from: &FullJid, query: &Element) -> Outcome {
        let Some(actor_at) = self.by_session(from) else {
            return Err(error(DefinedCondition::NotAcceptable, texts::NOT_OCCUPANT));
        };
        let actor_aff = self.affiliation(&from.to_bare());
        let items: Vec<&Element> = query
            .children()
            .filter(|c| c.is("item", MUC_ADMIN))
            .collect();
        if items.is_empty() || items.len() > MAX_INVITES {
            return Err(error(
                DefinedCondition::BadRequest,
                &format!("1 to {MAX_INVITES} <item/> are expected"),
            ));
        }
        enum Change {
            Role(String, Role, Option<String>),
            Affiliation(BareJid, Affiliation, Option<String>),
        }
        let mut changes = Vec::new();
        let mut owners = self
            .affiliations
            .values()
            .filter(|a| **a == Affiliation::Owner)
            .count();
        for item in items {
            let reason = item.get_child("reason", MUC_ADMIN).map(|r| r.text());
            if let (Some(nick), Some(role)) = (item.attr("nick"), item.attr("role")) {
                let role = parse_role(role)
                    .ok_or_else(|| error(DefinedCondition::BadRequest, "unknown role"))?;
                let target = self
                    .by_nick(nick)
                    .ok_or_else(|| error(DefinedCondition::ItemNotFound, texts::NO_SUCH_NICK))?;
                let target_aff = self.affiliation(&self.occupants[target].user);
                let allowed = match role {
                    Role::None if cx.rooms.settings.only_owners_kick => {
                        if actor_aff != Affiliation::Owner {
                            return Err(error(DefinedCondition::NotAllowed, texts::KICK_FORBIDDEN));
                        }
                        target != actor_at && target_aff != Affiliation::Owner
                    }
                    Role::None | Role::Participant | Role::Visitor => {
                        self.is_moderator(actor_at)
                            && target != actor_at
                            && rank(&target_aff) < rank(&actor_aff).max(rank(&Affiliation::Admin))
                    }
                    Role::Moderator => rank(&actor_aff) >= rank(&Affiliation::Admin),
                };
                if !allowed {
                    return Err(error(
                        DefinedCondition::NotAllowed,
                        "you may not change this occupant's role",
                    ));
                }
                changes.push(Change::Role(nick.to_owned(), role, reason));
            } else if let (Some(jid), Some(affiliation)) =
                (item.attr("jid"), item.attr("affiliation"))
            {
                let affiliation = parse_affiliation(affiliation)
                    .ok_or_else(|| error(DefinedCondition::BadRequest, "unknown affiliation"))?;
                let target = Jid::new(jid)
                    .map_err(|_| error(DefinedCondition::JidMalformed, "invalid JID"))?
                    .to_bare();
                if target.domain().as_str() != cx.rooms.users_domain || target.node().is_none() {
                    return Err(error(DefinedCondition::JidMalformed, texts::OUTSIDERS));
                }
                let current = self.affiliation(&target);
                let allowed = match actor_aff {
                    Affiliation::Owner => true,
                    Affiliation::Admin => {
                        rank(&current) <= rank(&Affiliation::Member)
                            && rank(&affiliation) <= rank(&Affiliation::Member)
                    }
                    _ => false,
                };
                if !allowed {
                    return Err(error(DefinedCondition::Forbidden, texts::NOT_OWNER));
                }
                if current == Affiliation::Owner && affiliation != Affiliation::Owner {
                    owners -= 1;
                    if owners == 0 {
                        return Err(error(DefinedCondition::Conflict, texts::LAST_OWNER));
                    }
                }
                if current == Affiliation::None
                    && affiliation != Affiliation::None
                    && self.affiliations.len() >= cx.rooms.settings.max_members
                {
                    return Err(error(
                        DefinedCondition::NotAllowed,
                        texts::TOO_MANY_AFFILIATIONS,
                    ));
                }
                // Granting a place in the room is inviting, whatever the affiliation.
                if rank(&affiliation) >= rank(&Affiliation::Member)
                    && let (Some(a), Some(b)) = (from.node(), target.node())
                    && let Decision::Deny(reason) = cx.rooms.policy.decide(
                        a.as_str(),
                        b.as_str(),
                        Action::Invite,
                        Relation::default(),
                    )
                {
                    return Err(Box::new(policy_error(reason)));
                }
                changes.push(Change::Affiliation(target, affiliation, reason));
            } else {
                return Err(error(
                    DefinedCondition::BadRequest,
                    "an <item/> has a nick and a role, or a jid and an affiliation",
                ));
            }
        }
        let actor_nick = self.occupants[actor_at].nick.clone();
        for change in changes {
            match change {
                Change::Role(nick, role, reason) => {
                    // Indices shift as occupants leave: the target is found again by nickname.
                    if let Some(at) = self.by_nick(&nick) {
                        self.apply_role(cx, &actor_nick, role, reason.as_deref(), at)
                            .await?;
                    }
                }
                Change::Affiliation(target, affiliation, reason) => {
                    self.set_affiliation(cx, &target, affiliation.clone())
                        .await?;
                    self.affiliation_changed(cx, &target, &actor_nick, reason.as_deref());
                }
            }
        }
        Ok(())
    }

    /// A role change; removing an occupant from a members-only room (the manual's "Retirer
    /// de la conversation") also ends its membership, so that it needs a new invitation.
    async fn apply_role(
        &mut self,
        cx: &Cx<'_>,
        actor: &str,
        role: Role,
        reason: Option<&str>,
        at: usize,
    ) -> Outcome {
        if role == Role::None {
            let user = self.occupants[at].user.clone();
            let mut statuses = vec![307];
            if self.config.members_only && self.affiliation(&user) == Affiliation::Member {
                self.set_affiliation(cx, &user, Affiliation::None).await?;
                statuses.push(321);
            }
            tracing::info!(room = %self.jid, removed = %user, by = actor, "occupant removed");
            self.remove_occupant(cx, at, &statuses, Some(actor), reason);
            return Ok(());
        }
        self.occupants[at].role = role;
        self.broadcast_presence(cx, at, &[], None);
        Ok(())
    }

    /// Stores an affiliation, then keeps it.
    async fn set_affiliation(
        &mut self,
        cx: &Cx<'_>,
        user: &BareJid,
        affiliation: Affiliation,
    ) -> Outcome {
        let stored = (affiliation != Affiliation::None).then(|| affiliation_str(&affiliation));
        if self.persisted {
            cx.rooms
                .store
                .set_room_affiliation(self.name(), &user.to_string(), stored)
                .await
                .map_err(internal)?;
        }
        if affiliation == Affiliation::None {
            self.affiliations.remove(user);
        } else {
            self.affiliations.insert(user.clone(), affiliation);
        }
        Ok(())
    }

    /// An occupant whose affiliation changed: banned (301) or no longer a member of a
    /// members-only room (321) leaves; others get their new role.
    fn affiliation_changed(
        &mut self,
        cx: &Cx<'_>,
        user: &BareJid,
        actor: &str,
        reason: Option<&str>,
    ) {
        let Some(at) = self.by_user(user) else {
            return;
        };
        let affiliation = self.affiliation(user);
        if affiliation == Affiliation::Outcast {
            self.remove_occupant(cx, at, &[301], Some(actor), reason);
        } else if self.config.members_only && affiliation == Affiliation::None {
            self.remove_occupant(cx, at, &[321], Some(actor), reason);
        } else {
            self.occupants[at].role = self.role_for(&affiliation);
            self.broadcast_presence(cx, at, &[], None);
        }
    }
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

fn answer_iq(cx: &Cx<'_>, from: &FullJid, iq: &Iq, answer: Outcome<Option<Element>>) {
    if matches!(iq, Iq::Result { .. } | Iq::Error { .. }) {
        return;
    }
    let stanza = match answer {
        Ok(payload) => Iq::Result {
            from: iq.to().cloned(),
            to: iq.from().cloned(),
            id: iq.id().to_owned(),
            payload,
        },
        Err(error) => Iq::Error {
            from: iq.to().cloned(),
            to: iq.from().cloned(),
            id: iq.id().to_owned(),
            error: *error,
            payload: None,
        },
    };
    deliver(cx.router, from, Stanza::Iq(stanza));
}
