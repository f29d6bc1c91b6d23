//! Requests to the room: discovery, the owner's configuration and destruction (§10), roles
//! and affiliations (§8, §9), the room's vCard, pings.

use super::*;

/// XEP-0045 §7.2.4: the disco#info node of the user's reserved nickname.
const RESERVED_NICK_NODE: &str = "x-roomuser-item";

impl Room {
    pub(super) fn iq_to_occupant(
        &self,
        from: &FullJid,
        nick: &str,
        iq: &Iq,
    ) -> Outcome<(Option<Element>, After)> {
        if let Iq::Get { payload, .. } = iq
            && payload.is("ping", crate::ns::PING)
        {
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

    pub(super) async fn iq(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        iq: &Iq,
    ) -> Outcome<(Option<Element>, After)> {
        let keep = |payload: Option<Element>| Ok((payload, After::Keep));
        match iq {
            Iq::Get { payload, .. } => {
                if payload.is("query", DISCO_INFO) {
                    match payload.attr("node") {
                        None => keep(Some(self.disco_info(from)?)),
                        Some(RESERVED_NICK_NODE) => keep(Some(self.reserved_nick(cx, from)?)),
                        Some(_) => Err(error(DefinedCondition::ItemNotFound, "no such node")),
                    }
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

    /// §7.2.4: the nickname the user has here before asking for one: the one they are in the
    /// room under, or the directory's name, which the room gives them anyway. Clients that
    /// ask (Converse.js) join under it rather than prompt for one.
    fn reserved_nick(&self, cx: &Cx<'_>, from: &FullJid) -> Outcome<Element> {
        self.disco_info(from)?;
        let user = from.to_bare();
        let nick = match self.occupants.iter().find(|o| o.user == user) {
            Some(occupant) => occupant.nick.clone(),
            None => self.nick_for(cx, &user, ""),
        };
        let identities = if nick.is_empty() {
            Vec::new()
        } else {
            vec![Identity::new("conference", "text", "fr", nick)]
        };
        Ok(DiscoInfoResult {
            node: Some(RESERVED_NICK_NODE.to_owned()),
            identities,
            features: Default::default(),
            extensions: Vec::new(),
        }
        .into())
    }

    /// §6.4; a hidden room tells nothing to those who are neither in it nor affiliated.
    pub(super) fn disco_info(&self, from: &FullJid) -> Outcome<Element> {
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
        let mut info = self.config.info_form(subject, self.occupants.len());
        if let Some(hash) = self.avatar_hash() {
            // XEP-0486: clients fetch the vCard when this changes.
            info.fields
                .push(xmpp_parsers::data_forms::Field::text_single(
                    "muc#roominfo_avatarhash",
                    &hash,
                ));
        }
        Ok(DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("conference", "text", "fr", name)],
            features,
            extensions: vec![info],
        }
        .into())
    }

    /// The SHA-1 of the room's logo (the vCard's PHOTO), in hex, as XEP-0153 hashes avatars.
    fn avatar_hash(&self) -> Option<String> {
        use base64::Engine;
        use sha1::Digest;
        let vcard: Element = self.vcard.as_deref()?.parse().ok()?;
        let binval = vcard
            .get_child("PHOTO", VCARD)?
            .get_child("BINVAL", VCARD)?
            .text();
        let compact: String = binval.split_whitespace().collect();
        let photo = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .ok()?;
        Some(hex::encode(sha1::Sha1::digest(&photo)))
    }

    pub(super) fn require_owner(&self, from: &FullJid) -> Outcome {
        if self.affiliation(&from.to_bare()) != Affiliation::Owner {
            return Err(error(DefinedCondition::Forbidden, texts::NOT_OWNER));
        }
        Ok(())
    }

    /// §10: configuration (or instant room), cancel, destroy.
    pub(super) async fn owner_set(
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
    pub(super) async fn reconfigure(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        next: RoomConfig,
    ) -> Outcome {
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
                // The room's owners are counted already (in memory): the store checks the
                // limit again for the one who makes it persistent, the other owners' rooms
                // having been checked when they were granted ownership.
                let owner = from.to_bare().to_string();
                let limit = cx.rooms.settings.max_rooms_per_user;
                match self
                    .store(cx)
                    .await?
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
            (true, true) => self
                .store(cx)
                .await?
                .save_room_config(self.name(), &json, next.public)
                .await
                .map_err(internal)?,
            (false, false) => {}
        }
        self.owners_dirty = true;
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
            destroy.append_child(Element::builder("reason", MUC_USER).append(reason).build());
        }
        x.append_child(destroy);
        for occupant in std::mem::take(&mut self.occupants) {
            cx.rooms.note_left(&occupant.user, self.name());
            let mut p = Presence::new(PresenceType::Unavailable);
            p.from = Some(self.occupant_jid(&occupant.nick));
            p.payloads.push(x.clone());
            for session in &occupant.sessions {
                send_presence(cx, session, p.clone());
            }
        }
        if self.persisted {
            if let Err(err) = cx.rooms.store.delete_room(self.name()).await {
                tracing::error!(room = %self.jid, error = %err, "cannot delete a room");
            }
            self.persisted = false;
        }
    }

    pub(super) async fn set_vcard(&mut self, cx: &Cx<'_>, vcard: &Element) -> Outcome {
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
            self.store(cx)
                .await?
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
    pub(super) fn admin_list(&self, from: &FullJid, query: &Element) -> Outcome<Element> {
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
    pub(super) async fn admin_set(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        query: &Element,
    ) -> Outcome {
        // Roles are an occupant's business; an owner or admin may change affiliations from
        // outside the room too (§9, §10).
        let actor_at = self.by_session(from);
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
                let Some(actor_at) = actor_at else {
                    return Err(error(DefinedCondition::NotAcceptable, texts::NOT_OCCUPANT));
                };
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
                        // §8.2: not to anyone affiliated at or above the moderator.
                        self.is_moderator(actor_at)
                            && target != actor_at
                            && rank(&target_aff) < rank(&actor_aff)
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
                // Where only owners remove participants, a ban or a revoked membership is a
                // removal too.
                if cx.rooms.settings.only_owners_kick
                    && actor_aff != Affiliation::Owner
                    && rank(&affiliation) < rank(&current)
                {
                    return Err(error(DefinedCondition::NotAllowed, texts::KICK_FORBIDDEN));
                }
                // Granting a place in the room is inviting, whatever the affiliation.
                if rank(&affiliation) >= rank(&Affiliation::Member) {
                    rules_allow(cx, &from.to_bare(), &target, Action::Invite)?;
                    if rank(&current) < rank(&Affiliation::Member) {
                        self.within_everyones_rules(cx, &target)?;
                    }
                }
                // Owning a room counts against `rooms.max_rooms_per_user`, however it came.
                if affiliation == Affiliation::Owner && current != Affiliation::Owner {
                    let owned = cx.rooms.owned_by(&target).await.map_err(internal)?;
                    if owned >= u64::from(cx.rooms.settings.max_rooms_per_user) {
                        return Err(error(DefinedCondition::NotAllowed, texts::OWNS_TOO_MANY));
                    }
                }
                changes.push(Change::Affiliation(target, affiliation, reason));
            } else {
                return Err(error(
                    DefinedCondition::BadRequest,
                    "an <item/> has a nick and a role, or a jid and an affiliation",
                ));
            }
        }
        let actor_nick = match actor_at {
            Some(at) => self.occupants[at].nick.clone(),
            None => from
                .node()
                .map_or_else(String::new, |n| n.as_str().to_owned()),
        };
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
    pub(super) async fn apply_role(
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
            if cx.rooms.settings.kick_revokes_membership
                && self.config.members_only
                && self.affiliation(&user) == Affiliation::Member
            {
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
    pub(super) async fn set_affiliation(
        &mut self,
        cx: &Cx<'_>,
        user: &BareJid,
        affiliation: Affiliation,
    ) -> Outcome {
        let stored = (affiliation != Affiliation::None).then(|| affiliation_str(&affiliation));
        if self.persisted {
            self.store(cx)
                .await?
                .set_room_affiliation(self.name(), &user.to_string(), stored)
                .await
                .map_err(internal)?;
        }
        if affiliation == Affiliation::None {
            self.affiliations.remove(user);
        } else {
            self.affiliations.insert(user.clone(), affiliation);
        }
        self.owners_dirty = true;
        Ok(())
    }

    /// An occupant whose affiliation changed: banned (301) or no longer a member of a
    /// members-only room (321) leaves; others get their new role.
    pub(super) fn affiliation_changed(
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
