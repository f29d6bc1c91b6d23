//! Presence subscriptions (RFC 6121 §3) between local users, with the ENT behaviour on top
//! (each a server option, on by default): mutual acceptance, persisted refusal, symmetric
//! removal.
//!
//! Both ends are local, so each request is processed at once on the user's side (outbound)
//! and on the contact's side (inbound), under each user's roster lock in turn.

use jid::{BareJid, Jid};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza::Stanza;

use crate::im::Context;
use crate::im::roster::{Error, Update, local};
use crate::router::BareDelivery;
use crate::storage::{RosterItem, Subscription, SubscriptionRequest};

/// A new roster item for `contact`, named as the ENT's directory names them ("NOM Prénom"),
/// which the user may change like any name.
fn new_item(cx: &Context<'_>, contact: &BareJid) -> RosterItem {
    RosterItem {
        contact: contact.to_string(),
        name: contact
            .node()
            .and_then(|node| cx.policy.display_name(node.as_str())),
        ..RosterItem::default()
    }
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
    let presence = crate::im::presence::as_allowed(cx, user, presence);
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

/// Characters of a contact request's text that are kept for the contact.
const MAX_REQUEST_TEXT: usize = 1000;

/// `user` asks to see `contact`'s presence ("ajouter un contact").
pub async fn subscribe(
    cx: &Context<'_>,
    user: &BareJid,
    contact: &BareJid,
    status: Option<String>,
) -> Result<(), Error> {
    let rosters = &cx.rosters;
    let change = rosters
        .update(cx, user, &contact.to_string(), |current| {
            let mut item = current.unwrap_or_else(|| new_item(cx, contact));
            if item.subscription.has_to() {
                return Update::Keep;
            }
            item.ask = true;
            item.refused = false;
            Update::Save(item)
        })
        .await?;
    if change
        .after
        .as_ref()
        .is_some_and(|i| i.subscription.has_to())
    {
        // Already subscribed: the contact's server answers on its behalf (RFC 6121 §3.1.3).
        to_available(
            cx,
            user,
            subscription_presence(PresenceType::Subscribed, contact, user),
        );
        return Ok(());
    }
    // The contact's side.
    let contact_item = rosters.item(cx, contact, &user.to_string()).await?;
    let contact_item = contact_item.unwrap_or_default();
    if contact_item.subscription.has_from() {
        return subscribed_arrives(cx, user, contact).await;
    }
    if contact_item.approved {
        // Pre-approved (RFC 6121 §3.4): accepted at once.
        return accept(cx, contact, user).await;
    }
    // The request waits, with its text, in the contact's store: both are bounded.
    let status = status.map(|s| s.chars().take(MAX_REQUEST_TEXT).collect::<String>());
    let saved = cx
        .store
        .save_subscription_request(
            local(contact),
            &SubscriptionRequest {
                requester: user.to_string(),
                status: status.clone(),
            },
            cx.config.max_pending_requests,
        )
        .await;
    if let Err(err) = saved {
        // A failed request changes nothing: the requester's item goes back as it was.
        let before = change.before;
        rosters
            .update(cx, user, &contact.to_string(), |_| match before {
                Some(item) => Update::Save(item),
                None => Update::Remove,
            })
            .await?;
        return Err(err);
    }
    let mut request = with_nick(
        cx,
        subscription_presence(PresenceType::Subscribe, user, contact),
        user,
    );
    if let Some(status) = status {
        request.set_status("", status);
    }
    to_available(cx, contact, request);
    Ok(())
}

/// `user` asks to see the presence of an account that does not exist: the requester's item
/// waits as for any request not answered yet; nothing is stored for nobody.
pub async fn ask_nobody(cx: &Context<'_>, user: &BareJid, contact: &BareJid) -> Result<(), Error> {
    cx.rosters
        .update(cx, user, &contact.to_string(), |current| {
            let mut item = current.unwrap_or_else(|| new_item(cx, contact));
            if item.ask {
                return Update::Keep;
            }
            item.ask = true;
            item.refused = false;
            Update::Save(item)
        })
        .await?;
    Ok(())
}

/// `contact` approves `user`'s request ("accepter une demande"), or pre-approves it.
pub async fn approve(cx: &Context<'_>, contact: &BareJid, user: &BareJid) -> Result<(), Error> {
    let pending = cx
        .store
        .delete_subscription_request(local(contact), &user.to_string())
        .await?;
    let asked = cx
        .rosters
        .item(cx, user, &contact.to_string())
        .await?
        .is_some_and(|i| i.ask);
    if !pending && !asked {
        let already = cx
            .rosters
            .item(cx, contact, &user.to_string())
            .await?
            .is_some_and(|i| i.subscription.has_from());
        if !already {
            // RFC 6121 §3.4: pre-approval, used when the user asks later.
            cx.rosters
                .update(cx, contact, &user.to_string(), |current| {
                    let mut item = current.unwrap_or_else(|| new_item(cx, user));
                    item.approved = true;
                    Update::Save(item)
                })
                .await?;
        }
        return Ok(());
    }
    accept(cx, contact, user).await
}

/// `contact` lets `user` see its presence; with mutual acceptance, the reverse holds too.
async fn accept(cx: &Context<'_>, contact: &BareJid, user: &BareJid) -> Result<(), Error> {
    let change = cx
        .rosters
        .update(cx, contact, &user.to_string(), |current| {
            let mut item = current.unwrap_or_else(|| new_item(cx, user));
            item.subscription = item.subscription.with_from(true);
            item.approved = false;
            Update::Save(item)
        })
        .await?;
    subscribed_arrives(cx, user, contact).await?;
    let contact_sees_user = change
        .after
        .as_ref()
        .is_some_and(|i| i.subscription.has_to());
    if cx.config.mutual_acceptance && !contact_sees_user {
        // The user asked first, so its consent to being seen by the contact is implied.
        cx.rosters
            .update(cx, user, &contact.to_string(), |current| {
                let mut item = current.unwrap_or_else(|| new_item(cx, contact));
                item.subscription = item.subscription.with_from(true);
                Update::Save(item)
            })
            .await?;
        cx.rosters
            .update(cx, contact, &user.to_string(), |current| {
                let mut item = current.unwrap_or_else(|| new_item(cx, user));
                item.subscription = item.subscription.with_to(true);
                item.ask = false;
                item.refused = false;
                Update::Save(item)
            })
            .await?;
        let _ = cx
            .store
            .delete_subscription_request(local(user), &contact.to_string())
            .await?;
        to_available(
            cx,
            contact,
            subscription_presence(PresenceType::Subscribed, user, contact),
        );
        send_current_presence(cx, user, contact);
    }
    Ok(())
}

/// `contact`'s approval reaches `user`, whose request was pending (RFC 6121 §3.1.6).
async fn subscribed_arrives(
    cx: &Context<'_>,
    user: &BareJid,
    contact: &BareJid,
) -> Result<(), Error> {
    let change = cx
        .rosters
        .update(cx, user, &contact.to_string(), |current| match current {
            Some(mut item) if item.ask || !item.subscription.has_to() => {
                item.subscription = item.subscription.with_to(true);
                item.ask = false;
                item.refused = false;
                Update::Save(item)
            }
            _ => Update::Keep,
        })
        .await?;
    let newly = change
        .before
        .as_ref()
        .is_some_and(|i| !i.subscription.has_to())
        && change
            .after
            .as_ref()
            .is_some_and(|i| i.subscription.has_to());
    if newly {
        to_available(
            cx,
            user,
            subscription_presence(PresenceType::Subscribed, contact, user),
        );
        send_current_presence(cx, contact, user);
    }
    Ok(())
}

/// `user` no longer wants `contact`'s presence, or withdraws its request.
pub async fn unsubscribe(cx: &Context<'_>, user: &BareJid, contact: &BareJid) -> Result<(), Error> {
    let change = cx
        .rosters
        .update(cx, user, &contact.to_string(), |current| match current {
            Some(mut item) if item.ask || item.subscription.has_to() => {
                item.subscription = item.subscription.with_to(false);
                item.ask = false;
                Update::Save(item)
            }
            _ => Update::Keep,
        })
        .await?;
    let was_subscribed = change
        .before
        .as_ref()
        .is_some_and(|i| i.subscription.has_to());
    let withdrawn = cx
        .store
        .delete_subscription_request(local(contact), &user.to_string())
        .await?;
    let contact_change = cx
        .rosters
        .update(cx, contact, &user.to_string(), |current| match current {
            Some(mut item) if item.subscription.has_from() => {
                item.subscription = item.subscription.with_from(false);
                Update::Save(item)
            }
            _ => Update::Keep,
        })
        .await?;
    let contact_had_from = contact_change
        .before
        .as_ref()
        .is_some_and(|i| i.subscription.has_from());
    if withdrawn || contact_had_from {
        to_available(
            cx,
            contact,
            subscription_presence(PresenceType::Unsubscribe, user, contact),
        );
    }
    if was_subscribed {
        send_unavailable(cx, contact, user);
    }
    Ok(())
}

/// `contact` refuses `user`'s request ("refuser une demande") or cancels `user`'s
/// subscription to it.
pub async fn unsubscribed(
    cx: &Context<'_>,
    contact: &BareJid,
    user: &BareJid,
) -> Result<(), Error> {
    let had_request = cx
        .store
        .delete_subscription_request(local(contact), &user.to_string())
        .await?;
    let contact_change = cx
        .rosters
        .update(cx, contact, &user.to_string(), |current| match current {
            Some(mut item) if item.subscription.has_from() || item.approved => {
                item.subscription = item.subscription.with_from(false);
                item.approved = false;
                Update::Save(item)
            }
            _ => Update::Keep,
        })
        .await?;
    let user_was_seeing = contact_change
        .before
        .as_ref()
        .is_some_and(|i| i.subscription.has_from());
    let persist_refusal = cx.config.persist_refusal;
    let user_change = cx
        .rosters
        .update(cx, user, &contact.to_string(), |current| match current {
            Some(mut item) if item.ask || item.subscription.has_to() => {
                // A pending request turned down is a refusal; a cancelled subscription is not.
                item.refused = persist_refusal && item.ask;
                item.ask = false;
                item.subscription = item.subscription.with_to(false);
                Update::Save(item)
            }
            _ => Update::Keep,
        })
        .await?;
    let user_affected = user_change
        .before
        .as_ref()
        .is_some_and(|i| i.ask || i.subscription.has_to());
    if user_affected || had_request {
        to_available(
            cx,
            user,
            subscription_presence(PresenceType::Unsubscribed, contact, user),
        );
    }
    if user_was_seeing {
        send_unavailable(cx, contact, user);
    }
    Ok(())
}

/// Roster removal (RFC 6121 §2.5.3): cancels subscriptions both ways and, with symmetric
/// removal, takes the user out of the contact's roster as well. Whether there was an item.
pub async fn remove_contact(
    cx: &Context<'_>,
    user: &BareJid,
    contact: &BareJid,
) -> Result<bool, Error> {
    let change = cx
        .rosters
        .update(cx, user, &contact.to_string(), |current| match current {
            Some(_) => Update::Remove,
            None => Update::Keep,
        })
        .await?;
    let Some(before) = change.before else {
        return Ok(false);
    };
    let _ = cx
        .store
        .delete_subscription_request(local(user), &contact.to_string())
        .await?;
    let withdrawn = cx
        .store
        .delete_subscription_request(local(contact), &user.to_string())
        .await?;
    let symmetric = cx.config.symmetric_removal;
    let contact_change = cx
        .rosters
        .update(cx, contact, &user.to_string(), |current| match current {
            Some(_) if symmetric => Update::Remove,
            Some(mut item) => {
                item.subscription = Subscription::None;
                item.ask = false;
                item.approved = false;
                Update::Save(item)
            }
            None => Update::Keep,
        })
        .await?;
    let contact_before = contact_change.before.unwrap_or_default();
    if before.subscription.has_to() || before.ask || withdrawn {
        to_available(
            cx,
            contact,
            subscription_presence(PresenceType::Unsubscribe, user, contact),
        );
    }
    if before.subscription.has_from() || contact_before.subscription.has_to() {
        to_available(
            cx,
            contact,
            subscription_presence(PresenceType::Unsubscribed, user, contact),
        );
        send_unavailable(cx, user, contact);
    }
    if before.subscription.has_to() {
        send_unavailable(cx, contact, user);
    }
    Ok(true)
}
