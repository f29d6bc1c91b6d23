//! Groupchat messages and subjects, invitations (mediated §7.8.2 and direct, XEP-0249) and
//! declines, private messages between occupants (§7.5).

use super::*;
use crate::muc::form::AllowPm;
use xmpp_parsers::muc::user::{Decline, Invite};

impl Room {
    pub(super) async fn message(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        message: &Message,
    ) -> Outcome {
        if let Some(x) = message.payloads.iter().find(|p| {
            p.is("x", MUC_USER)
                && (p.has_child("invite", MUC_USER) || p.has_child("decline", MUC_USER))
        }) {
            return self.invitation_or_decline(cx, from, x).await;
        }
        match message.type_ {
            MessageType::Groupchat => {}
            // An error from a client is never answered with an error (RFC 6120 §8.3.1).
            MessageType::Error => return Ok(()),
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
                self.store(cx)
                    .await?
                    .save_room_subject(self.name(), &text, &nick)
                    .await
                    .map_err(internal)?;
            }
            self.subject = Some((text, nick));
            self.broadcast_message(cx, &out);
            return Ok(());
        }
        let Some(bytes) = self.broadcast_message(cx, &out) else {
            return Ok(());
        };
        if !message.bodies.is_empty() && cx.rooms.settings.max_history > 0 {
            let item = HistoryItem {
                message: out,
                stamp: now(),
                bytes,
            };
            self.keep(cx, item).await;
        }
        Ok(())
    }

    /// §7.8.2 mediated invitations and their declines.
    pub(super) async fn invitation_or_decline(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        x: &Element,
    ) -> Outcome {
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
            let invite = Invite::try_from(invite.clone())
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
        // Each invitation carries the inviter's text to someone who may not be a contact:
        // counted per inviter, like the changes a user makes.
        let count = u32::try_from(invitees.len()).unwrap_or(u32::MAX);
        if !cx
            .rooms
            .invitations
            .try_spend_many(&inviter.to_string(), count)
        {
            return Err(error(
                DefinedCondition::ResourceConstraint,
                "too many invitations in a short time; wait a moment",
            ));
        }
        if self.affiliations.len() + new_members > cx.rooms.settings.max_members {
            return Err(error(
                DefinedCondition::NotAllowed,
                texts::TOO_MANY_AFFILIATIONS,
            ));
        }
        for (invitee, reason) in invitees {
            // Only the invitation that opens the door is kept for an invitee who is offline:
            // repeated ones cannot fill their offline storage.
            let first = self.needs_membership(&invitee);
            if first {
                self.set_affiliation(cx, &invitee, Affiliation::Member)
                    .await?;
            }
            self.send_invitation(cx, &inviter, &invitee, reason, first)
                .await;
        }
        Ok(())
    }

    /// Whether the sender of an invitation is an occupant who may invite.
    pub(super) fn may_invite(&self, from: &FullJid) -> Outcome {
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
    pub(super) fn check_invitee(
        &self,
        cx: &Cx<'_>,
        inviter: &BareJid,
        invitee: &BareJid,
    ) -> Outcome {
        if invitee.domain().as_str() != cx.rooms.users_domain || invitee.node().is_none() {
            return Err(error(DefinedCondition::JidMalformed, texts::OUTSIDERS));
        }
        rules_allow(cx, inviter, invitee, Action::Invite)?;
        self.within_everyones_rules(cx, invitee)?;
        if self.affiliation(invitee) == Affiliation::Outcast {
            return Err(error(
                DefinedCondition::NotAllowed,
                "this person is banned from this conversation",
            ));
        }
        Ok(())
    }

    /// An invitee of a members-only room becomes a member, so that the room admits them.
    pub(super) fn needs_membership(&self, invitee: &BareJid) -> bool {
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

    /// A declined invitation goes back to its inviter only, once (§7.8.2), under the same
    /// rules as a private message: its reason is the decliner's text.
    pub(super) fn relay_decline(
        &mut self,
        cx: &Cx<'_>,
        from: &FullJid,
        to: Jid,
        reason: Option<String>,
    ) -> Outcome {
        let inviter = to.to_bare();
        if inviter.domain().as_str() != cx.rooms.users_domain || inviter.node().is_none() {
            return Err(error(DefinedCondition::JidMalformed, texts::OUTSIDERS));
        }
        let decliner = from.to_bare();
        let Some(at) = self
            .invitations
            .iter()
            .position(|(invitee, by)| *invitee == decliner && *by == inviter)
        else {
            return Err(error(
                DefinedCondition::NotAcceptable,
                "there is no invitation from this person to decline",
            ));
        };
        rules_allow(cx, &decliner, &inviter, Action::PrivateMessage)?;
        self.invitations.remove(at);
        let decline = MucUser {
            decline: Some(Decline {
                from: Some(Jid::from(from.to_bare())),
                to: None,
                reason,
            }),
            ..MucUser::default()
        };
        let message = self.mediated(to.clone(), decline);
        // Online only: a decline is a courtesy, not worth keeping.
        let _ = cx.router.deliver_message(&to, message);
        Ok(())
    }

    /// A mediated invitation or decline (§7.8.2), from the room.
    fn mediated(&self, to: Jid, x: MucUser) -> Message {
        let mut message = Message::new(Some(to));
        message.from = Some(self.room_jid());
        message.payloads.push(x.into());
        message
    }

    pub(super) async fn send_invitation(
        &mut self,
        cx: &Cx<'_>,
        inviter: &BareJid,
        invitee: &BareJid,
        reason: Option<String>,
        keep_offline: bool,
    ) {
        // Declinable once, to this inviter.
        self.invitations
            .retain(|(i, by)| !(i == invitee && by == inviter));
        if self.invitations.len() >= MAX_PENDING_INVITATIONS {
            self.invitations.pop_front();
        }
        self.invitations
            .push_back((invitee.clone(), inviter.clone()));
        // The same invitation as XEP-0249 has it, for clients that know only direct
        // invitations (Converse.js, the ENT window, among them).
        let mut direct = Element::builder("x", crate::ns::CONFERENCE)
            .attr(crate::ns::name("jid"), self.jid.as_str());
        if let Some(reason) = &reason {
            direct = direct.attr(crate::ns::name("reason"), reason.as_str());
        }
        let invite = MucUser {
            invite: Some(Invite {
                from: Some(Jid::from(inviter.clone())),
                to: None,
                reason,
            }),
            ..MucUser::default()
        };
        let mut message = self.mediated(Jid::from(invitee.clone()), invite);
        message.payloads.push(direct.build());
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
            && keep_offline
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
    pub(super) fn private_message(
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
            AllowPm::Anyone => true,
            AllowPm::Participants => self.occupants[at].role != Role::Visitor,
            AllowPm::Moderators => self.is_moderator(at),
            AllowPm::None => false,
        };
        if !allowed {
            return Err(error(DefinedCondition::NotAllowed, texts::PM_FORBIDDEN));
        }
        let Some(target) = self.by_nick(nick) else {
            return Err(error(DefinedCondition::ItemNotFound, texts::NO_SUCH_NICK));
        };
        let sender = &self.occupants[at];
        let recipient = &self.occupants[target];
        rules_allow(cx, &sender.user, &recipient.user, Action::PrivateMessage)?;
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
}
