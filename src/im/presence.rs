//! Presence (RFC 6121 §4): broadcast to the user's own resources and to subscribers, probes
//! and pending requests at initial presence, directed presence, unavailable at the end; the
//! presences that subscription changes send (`im::subscription` decides, this module delivers).

use jid::{BareJid, FullJid, Jid};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza::Stanza;

use crate::im::Context;
use crate::policy::{Action, Decision, Relation};
use crate::router::Sender;
use crate::router::{BareDelivery, SessionControl};

/// Presence with no `to` (RFC 6121 §4.2, §4.4, §4.5).
pub async fn broadcast(cx: &Context<'_>, sender: &Sender<'_>, mut presence: Presence) {
    let available = match presence.type_ {
        PresenceType::None => true,
        PresenceType::Unavailable => false,
        // Subscription requests need an addressee; errors to nobody are dropped.
        _ => return,
    };
    presence.from = Some(Jid::from(sender.jid.clone()));
    let initial = available && !sender.control.is_available();
    if available {
        sender.control.set_presence(true, presence.priority.0);
        sender.control.set_last_presence(Some(presence.clone()));
    }
    spread(cx, sender.jid, sender.control, presence);
    if !available {
        sender.control.set_presence(false, 0);
        sender.control.set_last_presence(None);
    }
    if initial {
        initial_presence(cx, sender).await;
    }
}

/// Sends a broadcast presence to the user's own available resources (RFC 6121 §4.2.2, the
/// sender included), to every contact subscribed to the user, and, when it says unavailable,
/// to those who got directed presence.
fn spread(cx: &Context<'_>, jid: &FullJid, control: &SessionControl, presence: Presence) {
    let user = jid.to_bare();
    let subscribers = cx
        .rosters
        .contacts_where(&user, |i| i.subscription.has_from());
    for contact in subscribers {
        let Ok(contact) = BareJid::new(&contact) else {
            continue;
        };
        let mut copy = presence.clone();
        copy.to = Some(Jid::from(contact.clone()));
        to_available(cx, &contact, copy);
    }
    if presence.type_ == PresenceType::Unavailable {
        for target in control.take_directed() {
            let mut copy = presence.clone();
            copy.to = Some(target.clone());
            deliver_presence(cx, &target, copy);
        }
    }
    let _ = cx.router.deliver_to_bare(
        &user,
        Box::new(Stanza::Presence(presence)),
        BareDelivery::AllAvailable,
    );
}

fn deliver_presence(cx: &Context<'_>, to: &Jid, presence: Presence) {
    match to.try_as_full() {
        Ok(full) => {
            let presence = as_allowed(cx, &full.to_bare(), presence);
            let _ = cx
                .router
                .deliver_to_full(full, Box::new(Stanza::Presence(presence)));
        }
        Err(bare) => to_available(cx, bare, presence),
    }
}

/// What a session gets when it first becomes available: its contacts' presence (probes,
/// RFC 6121 §4.2.2), the requests waiting for an answer ("Mes demandes"), and offline messages
/// (XEP-0160) when its priority is not negative.
async fn initial_presence(cx: &Context<'_>, sender: &Sender<'_>) {
    let user = sender.jid.to_bare();
    let to_self = |stanza: Stanza| sender.reply(stanza);
    for contact in cx
        .rosters
        .contacts_where(&user, |i| i.subscription.has_to())
    {
        let Ok(contact) = BareJid::new(&contact) else {
            continue;
        };
        for mut presence in cx.router.presences(&contact) {
            presence.to = Some(Jid::from(sender.jid.clone()));
            to_self(Stanza::Presence(as_allowed(cx, &user, presence)));
        }
    }
    match cx
        .store
        .subscription_requests(crate::im::roster::local(&user))
        .await
    {
        Ok(requests) => {
            for request in requests {
                let Ok(requester) = BareJid::new(&request.requester) else {
                    continue;
                };
                let mut presence = with_nick(
                    cx,
                    subscription_presence(PresenceType::Subscribe, &requester, &user),
                    &requester,
                );
                if let Some(status) = request.status {
                    presence.set_status("", status);
                }
                to_self(Stanza::Presence(presence));
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot read pending subscription requests"),
    }
    if sender.control.priority() >= 0 {
        sender.request_offline_messages();
    }
}

/// A contact's presence as `to` may see it. Contacts whom the communication rules no longer
/// allow to write to each other (a pupil moved to another class) still see whether the other is
/// online, away or busy, since the contact stays in their list until one of them deletes it,
/// but no status text or payload: those are writing.
pub fn as_allowed(cx: &Context<'_>, to: &BareJid, mut presence: Presence) -> Presence {
    if !matches!(
        presence.type_,
        PresenceType::None | PresenceType::Unavailable
    ) {
        return presence;
    }
    let Some(from) = presence.from.as_ref().map(|f| f.to_bare()) else {
        return presence;
    };
    if from == *to {
        return presence;
    }
    // Contacts, by construction.
    let decision = cx.policy.decide(
        crate::im::roster::local(&from),
        crate::im::roster::local(to),
        Action::SeeStatus,
        Relation {
            listed: true,
            ..Relation::default()
        },
    );
    if let Decision::Deny(_) = decision {
        presence.statuses.clear();
        presence.payloads.clear();
    }
    presence
}

/// XEP-0172: a contact request says who asks under the directory's name, for the dialog
/// that asks the contact to accept.
pub fn with_nick(cx: &Context<'_>, mut presence: Presence, requester: &BareJid) -> Presence {
    if let Some(name) = requester
        .node()
        .and_then(|node| cx.policy.display_name(node.as_str()))
    {
        presence.payloads.push(
            minidom::Element::builder("nick", crate::ns::NICK)
                .append(name)
                .build(),
        );
    }
    presence
}

/// A subscription-related presence from `from` to `to`, both bare (RFC 6121 §3.1.2).
pub fn subscription_presence(type_: PresenceType, from: &BareJid, to: &BareJid) -> Presence {
    let mut presence = Presence::new(type_);
    presence.from = Some(Jid::from(from.clone()));
    presence.to = Some(Jid::from(to.clone()));
    presence
}

/// Delivers a presence to every available resource of `user`.
pub fn to_available(cx: &Context<'_>, user: &BareJid, presence: Presence) {
    let presence = as_allowed(cx, user, presence);
    let _ = cx.router.deliver_to_bare(
        user,
        Box::new(Stanza::Presence(presence)),
        BareDelivery::AllAvailable,
    );
}

/// Sends the current presence of each available resource of `from` to `to`'s available
/// resources (RFC 6121 §3.1.5: once subscribed, the user learns the contact's presence).
pub fn send_current_presence(cx: &Context<'_>, from: &BareJid, to: &BareJid) {
    for mut presence in cx.router.presences(from) {
        presence.to = Some(Jid::from(to.clone()));
        to_available(cx, to, presence);
    }
}

/// Tells `to` that every available resource of `from` is gone (RFC 6121 §3.2.2, §3.3.2).
pub fn send_unavailable(cx: &Context<'_>, from: &BareJid, to: &BareJid) {
    for resource in cx.router.available_resources(from) {
        let mut presence = Presence::new(PresenceType::Unavailable);
        presence.from = Some(Jid::from(resource));
        presence.to = Some(Jid::from(to.clone()));
        to_available(cx, to, presence);
    }
}

/// Called when a session ends without saying unavailable: its contacts learn it is gone
/// (RFC 6121 §4.5.2).
pub fn session_ended(cx: &Context<'_>, jid: &FullJid, control: &SessionControl) {
    if !control.is_available() {
        return;
    }
    control.set_presence(false, 0);
    control.set_last_presence(None);
    let mut presence = Presence::new(PresenceType::Unavailable);
    presence.from = Some(Jid::from(jid.clone()));
    spread(cx, jid, control, presence);
}

/// Directed presence (RFC 6121 §4.6) to a user of this server.
pub fn directed(cx: &Context<'_>, sender: &Sender<'_>, to: &Jid, presence: Presence) {
    let user = sender.jid.to_bare();
    let subscriber = cx
        .rosters
        .cached_item(&user, &to.to_bare().to_string())
        .flatten()
        .is_some_and(|i| i.subscription.has_from());
    match presence.type_ {
        PresenceType::None if !subscriber => sender.control.note_directed(to.clone()),
        PresenceType::Unavailable => sender.control.forget_directed(to),
        _ => {}
    }
    deliver_presence(cx, to, presence);
}

/// A probe from a client (RFC 6121 §4.3): answered with the contact's presence when the
/// prober is subscribed to it.
pub async fn probe(cx: &Context<'_>, sender: &Sender<'_>, contact: &BareJid) {
    let user = sender.jid.to_bare();
    let allowed = cx
        .rosters
        .item(cx, contact, &user.to_string())
        .await
        .ok()
        .flatten()
        .is_some_and(|i| i.subscription.has_from());
    if !allowed {
        return;
    }
    for mut presence in cx.router.presences(contact) {
        presence.to = Some(Jid::from(sender.jid.clone()));
        sender.reply(Stanza::Presence(as_allowed(cx, &user, presence)));
    }
}
