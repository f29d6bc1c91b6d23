//! Joining, leaving, nicknames and presence (XEP-0045 §7.1–7.7), history and subject on
//! join, and what the room sends to everyone.

use super::*;

impl Room {
    pub(super) async fn presence(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        nick: Option<String>,
        presence: Presence,
    ) -> After {
        match presence.type_ {
            // §7.14: an exit status is passed on with the departure.
            PresenceType::Unavailable => self.session_leaves(cx, from, &[], &presence.statuses),
            // A client that bounces the room's presence is gone (status 333).
            PresenceType::Error => self.session_bounced(cx, from),
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
                    Some(at)
                        if self.occupants[at].nick == nick
                            && presence.payloads.iter().any(|p| p.is("x", MUC)) =>
                    {
                        self.rejoin(cx, from, at, presence.clone())
                    }
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

    /// What becomes of the room as it stands: kept while it has occupants; else it leaves
    /// memory, unloaded when it is stored, forgotten when it was locked or temporary (so a
    /// refused join leaves a room just created for it to go).
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
    pub(super) fn nick_for(&self, cx: &Cx<'_>, user: &BareJid, asked: &str) -> String {
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

    pub(super) fn check_nick(&self, cx: &Cx<'_>, nick: &str) -> Outcome {
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

    pub(super) async fn join(
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
        // The ENT's rules: a joiner may communicate with the room's owners (whose chat
        // access must be open), and meet everyone in the room.
        for (owner, _) in self
            .affiliations
            .iter()
            .filter(|(_, a)| **a == Affiliation::Owner)
        {
            rules_allow(cx, &user, owner, Action::Join)?;
        }
        let existing = self.by_user(&user);
        if existing.is_none() {
            self.within_everyones_rules(cx, &user)?;
        }
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
        // Admitted: now the history is worth reading (a refused join never reads it).
        self.ensure_history(cx).await.map_err(internal)?;
        // Entering answers every invitation the user had: none is declinable any more.
        self.invitations.retain(|(invitee, _)| *invitee != user);
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
                    presence: shown(presence.clone()),
                });
                cx.rooms.note_joined(&user, self.name());
                self.occupants.len() - 1
            }
        };
        if existing.is_none() {
            self.broadcast_presence(cx, at, &[], Some(from));
        }
        let mut statuses = Vec::new();
        if creating {
            statuses.push(201);
        }
        if nick != asked {
            statuses.push(210);
        }
        self.welcome(cx, from, at, &statuses, history);
        if creating {
            let mut notice = localised(&texts::LOCKED);
            notice.from = Some(self.room_jid());
            notice.to = Some(Jid::from(from.clone()));
            deliver(cx.router, from, Stanza::Message(notice));
        }
        Ok(())
    }

    /// What a session that enters gets (§7.2.3): the others' presence, its own (110, and 100
    /// when real JIDs are shown, with `statuses`), the history it asks for, the subject.
    fn welcome(
        &self,
        cx: &Cx<'_>,
        from: &FullJid,
        at: usize,
        statuses: &[u16],
        history: Option<xmpp_parsers::muc::muc::History>,
    ) {
        let viewer_moderator = self.is_moderator(at);
        for (i, other) in self.occupants.iter().enumerate() {
            if i != at {
                let p = self.presence_of(other, viewer_moderator, &[]);
                send_presence(cx, from, p);
            }
        }
        let mut codes = vec![110];
        if self.config.real_jids_visible {
            codes.push(100);
        }
        codes.extend_from_slice(statuses);
        let own = self.presence_of(&self.occupants[at], viewer_moderator, &codes);
        send_presence(cx, from, own);
        self.send_history(cx, from, history);
        self.send_subject(cx, from);
    }

    /// A join from a session already in the room (a client that lost track of it, a window
    /// reloaded): it gets everything a newcomer gets, and the others see its presence again.
    fn rejoin(&mut self, cx: &Cx<'_>, from: &FullJid, at: usize, presence: Presence) -> Outcome {
        let history = match presence.payloads.iter().find(|p| p.is("x", MUC)) {
            Some(x) => Muc::try_from(x.clone())
                .map_err(|_| {
                    error(
                        DefinedCondition::BadRequest,
                        "invalid join request: <history/> takes non-negative numbers and a date",
                    )
                })?
                .history,
            None => None,
        };
        self.occupants[at].presence = shown(presence);
        self.broadcast_presence(cx, at, &[], Some(from));
        self.welcome(cx, from, at, &[], history);
        Ok(())
    }

    /// The presence of `occupant` as a viewer sees it, with the status codes given.
    pub(super) fn presence_of(
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

    /// The occupants, the one at `at` last: what concerns an occupant reaches the others
    /// before it (§7.2.3: the self-presence comes last).
    fn others_then(&self, at: usize) -> impl Iterator<Item = &Occupant> {
        let (before, rest) = self.occupants.split_at(at);
        let (own, after) = rest.split_at(1.min(rest.len()));
        before.iter().chain(after).chain(own)
    }

    /// Sends an occupant's presence to every session in the room but `except`.
    pub(super) fn broadcast_presence(
        &self,
        cx: &Cx<'_>,
        at: usize,
        statuses: &[u16],
        except: Option<&FullJid>,
    ) {
        for viewer in self.others_then(at) {
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

    pub(super) fn update_presence(&mut self, cx: &Cx<'_>, at: usize, presence: Presence) {
        self.occupants[at].presence = shown(presence);
        self.broadcast_presence(cx, at, &[], None);
    }

    pub(super) fn change_nick(
        &mut self,
        cx: &Cx<'_>,
        at: usize,
        nick: &str,
        presence: &Presence,
    ) -> Outcome {
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
        // §7.6: unavailable under the old nick with 303 and the new one, then available;
        // the others first, so that they know before the one who changed it does.
        let old = self.occupants[at].nick.clone();
        for viewer in self.others_then(at) {
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
    pub fn session_gone(&mut self, cx: &Cx<'_>, jid: &FullJid) -> After {
        self.session_leaves(cx, jid, &[], &BTreeMap::new())
    }

    /// An occupant's session answered the room with an error that means it is not there any
    /// more: it leaves, with status 333 (as Prosody and ejabberd do).
    pub(super) fn session_bounced(&mut self, cx: &Cx<'_>, jid: &FullJid) -> After {
        tracing::debug!(room = %self.jid, session = %jid, "occupant removed after an error");
        self.session_leaves(cx, jid, &[333], &BTreeMap::new())
    }

    /// One session leaves, telling it (110) and, when it was the occupant's last, everyone,
    /// with `statuses` and the exit status the client gave.
    pub(super) fn session_leaves(
        &mut self,
        cx: &Cx<'_>,
        jid: &FullJid,
        statuses: &[u16],
        exit: &BTreeMap<Lang, String>,
    ) -> After {
        let Some(at) = self.by_session(jid) else {
            return After::Keep;
        };
        let mut p = Presence::new(PresenceType::Unavailable);
        p.from = Some(self.occupant_jid(&self.occupants[at].nick));
        p.statuses = exit.clone();
        let item = ItemSpec {
            affiliation: affiliation_str(&self.affiliation(&self.occupants[at].user)),
            role: "none",
            jid: Some(jid.to_string()),
            ..ItemSpec::default()
        };
        let mut codes = statuses.to_vec();
        codes.push(110);
        p.payloads
            .push(user_x(vec![item.element(MUC_USER)], &codes));
        send_presence(cx, jid, p);
        self.occupants[at].sessions.retain(|s| s != jid);
        if !self.occupants[at].sessions.is_empty() {
            return After::Keep;
        }
        self.remove_occupant_with(cx, at, statuses, None, None, exit, Some(jid));
        self.settled()
    }

    /// Takes an occupant out and tells everyone, with the status codes and the actor and
    /// reason of a removal (then the removed occupant's sessions are told too).
    pub(super) fn remove_occupant(
        &mut self,
        cx: &Cx<'_>,
        at: usize,
        statuses: &[u16],
        actor: Option<&str>,
        reason: Option<&str>,
    ) {
        self.remove_occupant_with(cx, at, statuses, actor, reason, &BTreeMap::new(), None);
    }

    /// `remove_occupant`, with the exit status to pass on and, when its last session has just
    /// gone, that session (whose full JID the others see where real JIDs are shown, §7.2.3).
    #[allow(clippy::too_many_arguments)]
    fn remove_occupant_with(
        &mut self,
        cx: &Cx<'_>,
        at: usize,
        statuses: &[u16],
        actor: Option<&str>,
        reason: Option<&str>,
        exit: &BTreeMap<Lang, String>,
        last_session: Option<&FullJid>,
    ) {
        let occupant = self.occupants.remove(at);
        cx.rooms.note_left(&occupant.user, self.name());
        let affiliation = affiliation_str(&self.affiliation(&occupant.user));
        let full_jid = last_session
            .or(occupant.sessions.first())
            .map_or_else(|| occupant.user.to_string(), ToString::to_string);
        let unavailable = |viewer_moderator: bool, own: bool| {
            let mut p = Presence::new(PresenceType::Unavailable);
            p.from = Some(self.occupant_jid(&occupant.nick));
            p.statuses = exit.clone();
            let item = ItemSpec {
                affiliation,
                role: "none",
                jid: (self.config.real_jids_visible || viewer_moderator).then(|| full_jid.clone()),
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

    pub(super) fn send_history(
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
    pub(super) fn send_subject(&self, cx: &Cx<'_>, to: &FullJid) {
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
    pub(super) fn notice(&self, cx: &Cx<'_>, mut message: Message) {
        message.from = Some(self.room_jid());
        let _ = self.broadcast_message(cx, &message);
    }

    /// Sends a message to every occupant's sessions, and says how many bytes it takes. Encoded
    /// once: each session writes the same bytes with its own `to` (a class of 30 in one room
    /// is the heaviest path of a school chat).
    pub(super) fn broadcast_message(&self, cx: &Cx<'_>, message: &Message) -> Option<usize> {
        debug_assert!(message.to.is_none());
        let shared = match SharedStanza::encode(message) {
            Ok(shared) => Arc::new(shared),
            Err(err) => {
                tracing::warn!(room = %self.jid, error = %err, "a message that cannot be encoded");
                return None;
            }
        };
        for occupant in &self.occupants {
            for session in &occupant.sessions {
                cx.router.deliver_shared(session, &shared);
            }
        }
        Some(shared.len())
    }
}

/// What an occupant shows of its presence, kept without addresses or the MUC elements.
fn shown(mut presence: Presence) -> Presence {
    presence
        .payloads
        .retain(|p| !p.is("x", MUC) && !p.is("x", MUC_USER));
    presence.from = None;
    presence.to = None;
    presence.id = None;
    presence
}
