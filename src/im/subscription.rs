//! Presence subscriptions (RFC 6121 §3) between local users, with the ENT behaviour on top
//! (each a server option, on by default): mutual acceptance, persisted refusal, symmetric
//! removal.
//!
//! Both ends are local, so each request is processed at once on the user's side (outbound)
//! and on the contact's side (inbound), under each user's roster lock in turn.

use jid::BareJid;
use xmpp_parsers::presence::Type as PresenceType;

use crate::im::Context;
use crate::im::presence::{
    send_current_presence, send_unavailable, subscription_presence, to_available, with_nick,
};
use crate::im::roster::{Change, Error, Update, local};
use crate::im::transitions::{Rules, Transition};
use crate::storage::{RosterItem, SubscriptionRequest};

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

/// Runs one transition (`im::transitions`) on `owner`'s item for `other`, under `owner`'s
/// roster lock; a new item is named as the directory names `other`.
async fn step(
    cx: &Context<'_>,
    owner: &BareJid,
    other: &BareJid,
    transition: Transition,
) -> Result<Change, Error> {
    let rules = Rules {
        persist_refusal: cx.config.persist_refusal,
        symmetric_removal: cx.config.symmetric_removal,
    };
    cx.rosters
        .update(cx, owner, &other.to_string(), |current| {
            transition.apply(current, || new_item(cx, other), rules)
        })
        .await
}

/// Whether an item, as a change left it, satisfies `holds`.
fn is(item: &Option<RosterItem>, holds: fn(&RosterItem) -> bool) -> bool {
    item.as_ref().is_some_and(holds)
}

fn has_to(item: &RosterItem) -> bool {
    item.subscription.has_to()
}

fn has_from(item: &RosterItem) -> bool {
    item.subscription.has_from()
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
    let change = step(cx, user, contact, Transition::Ask).await?;
    if is(&change.after, has_to) {
        // Already subscribed: the contact's server answers on its behalf (RFC 6121 §3.1.3).
        to_available(
            cx,
            user,
            subscription_presence(PresenceType::Subscribed, contact, user),
        );
        return Ok(());
    }
    // The contact's side.
    let contact_item = cx.rosters.item(cx, contact, &user.to_string()).await?;
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
        cx.rosters
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
    step(cx, user, contact, Transition::AskNobody).await?;
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
            step(cx, contact, user, Transition::PreApprove).await?;
        }
        return Ok(());
    }
    accept(cx, contact, user).await
}

/// `contact` lets `user` see its presence; with mutual acceptance, the reverse holds too.
async fn accept(cx: &Context<'_>, contact: &BareJid, user: &BareJid) -> Result<(), Error> {
    let change = step(cx, contact, user, Transition::Grant).await?;
    subscribed_arrives(cx, user, contact).await?;
    if cx.config.mutual_acceptance && !is(&change.after, has_to) {
        // The user asked first, so its consent to being seen by the contact is implied.
        step(cx, user, contact, Transition::MutualFrom).await?;
        step(cx, contact, user, Transition::MutualTo).await?;
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
    let change = step(cx, user, contact, Transition::Approved).await?;
    let newly = change.before.as_ref().is_some_and(|i| !has_to(i)) && is(&change.after, has_to);
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
    let change = step(cx, user, contact, Transition::Unsubscribe).await?;
    let withdrawn = cx
        .store
        .delete_subscription_request(local(contact), &user.to_string())
        .await?;
    let contact_change = step(cx, contact, user, Transition::Unsubscribed).await?;
    if withdrawn || is(&contact_change.before, has_from) {
        to_available(
            cx,
            contact,
            subscription_presence(PresenceType::Unsubscribe, user, contact),
        );
    }
    if is(&change.before, has_to) {
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
    let contact_change = step(cx, contact, user, Transition::Cancel).await?;
    let user_change = step(cx, user, contact, Transition::Cancelled).await?;
    let user_affected = is(&user_change.before, |i| i.ask || i.subscription.has_to());
    if user_affected || had_request {
        to_available(
            cx,
            user,
            subscription_presence(PresenceType::Unsubscribed, contact, user),
        );
    }
    if is(&contact_change.before, has_from) {
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
    let change = step(cx, user, contact, Transition::Remove).await?;
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
    let contact_change = step(cx, contact, user, Transition::RemovedBy).await?;
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
