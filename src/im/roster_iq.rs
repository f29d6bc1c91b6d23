//! The `jabber:iq:roster` IQ (RFC 6121 §2): a user's own session reads its roster and
//! sets or removes one item. Removal ends the subscriptions too (`im::subscription`).

use minidom::Element;
use xmpp_parsers::roster::{Roster, Subscription as XmppSubscription};
use xmpp_parsers::stanza_error::DefinedCondition;

use crate::im::Context;
use crate::im::roster::{Update, item_element, local, query, validate_groups};
use crate::reply::Answer;
use crate::router::Sender;
use crate::storage::RosterItem;

type Reply = Answer;

fn refuse(condition: DefinedCondition, text: &'static str) -> Reply {
    Err((condition, text).into())
}

/// `jabber:iq:roster` get and set from the user's own session.
pub async fn handle_iq(
    cx: &Context<'_>,
    sender: &Sender<'_>,
    is_get: bool,
    payload: &Element,
) -> Reply {
    let user = sender.jid.to_bare();
    let Ok(request) = Roster::try_from(payload.clone()) else {
        return refuse(DefinedCondition::BadRequest, "malformed roster query");
    };
    if is_get {
        sender.control.set_roster_requested();
        let snapshot = match cx.rosters.snapshot(cx, &user).await {
            Ok(s) => s,
            Err(_) => return refuse(DefinedCondition::InternalServerError, "roster unavailable"),
        };
        // XEP-0237: a client holding the current version gets an empty result, then pushes.
        if request.ver.as_deref() == Some(snapshot.version.to_string().as_str()) {
            return Ok(None);
        }
        let items = snapshot.items.iter().filter_map(|i| item_element(i, false));
        return Ok(Some(query(snapshot.version, items)));
    }
    // RFC 6121 §2.3.3: a roster set carries exactly one item.
    let [item] = request.items.as_slice() else {
        return refuse(
            DefinedCondition::BadRequest,
            "a roster set must contain exactly one item",
        );
    };
    let contact = item.jid.clone();
    if contact == user {
        return refuse(
            DefinedCondition::NotAllowed,
            "you cannot add yourself as a contact",
        );
    }
    if item.subscription == XmppSubscription::Remove {
        // The policy always allows it, whatever the rules say now.
        if let crate::policy::Decision::Deny(reason) = cx.policy.decide(
            local(&user),
            local(&contact),
            crate::policy::Action::EndContact,
            crate::policy::Relation::default(),
        ) {
            return Err(reason.into());
        }
        return match crate::im::subscription::remove_contact(cx, &user, &contact).await {
            Ok(true) => Ok(None),
            Ok(false) => refuse(
                DefinedCondition::ItemNotFound,
                "no such contact in your roster",
            ),
            Err(_) => refuse(DefinedCondition::InternalServerError, "roster unavailable"),
        };
    }
    let listed = cx
        .rosters
        .cached_check(&user, &contact.to_string(), |i| i.is_some())
        .unwrap_or(false);
    let relation = crate::policy::Relation {
        listed,
        ..Default::default()
    };
    if let crate::policy::Decision::Deny(reason) = cx.policy.decide(
        local(&user),
        local(&contact),
        crate::policy::Action::EditContact,
        relation,
    ) {
        return Err(reason.into());
    }
    let groups = match validate_groups(cx.config, item.groups.iter().map(|g| g.0.as_str())) {
        Ok(groups) => groups,
        Err(reply) => return Err(reply.into()),
    };
    // A contact set without a name is named as the ENT's directory names them; a name the
    // user gives is theirs.
    let name = item
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .or_else(|| cx.policy.display_name(local(&contact)));
    if name.as_ref().is_some_and(|n| n.chars().count() > 1023) {
        return refuse(
            DefinedCondition::NotAcceptable,
            "contact name too long (1023 characters at most)",
        );
    }
    let max_categories = cx.config.max_categories;
    if let Some(existing) = cx.rosters.categories(&user) {
        let new = groups.iter().filter(|g| !existing.contains(*g)).count();
        if new > 0 && existing.len() + new > max_categories {
            return refuse(
                DefinedCondition::NotAllowed,
                "too many categories: delete one first",
            );
        }
    }
    // Roster size is checked before the change, from the memory copy.
    let full = cx
        .rosters
        .cached(&user)
        .and_then(|r| {
            r.read().ok().map(|r| {
                !r.items.contains_key(&contact.to_string())
                    && r.items.len() >= cx.config.max_roster_items
            })
        })
        .unwrap_or(false);
    if full {
        return refuse(
            DefinedCondition::NotAllowed,
            "roster full: remove a contact first",
        );
    }
    let contact_text = contact.to_string();
    let result = cx
        .rosters
        .update(cx, &user, &contact_text, |current| {
            let mut next = current.unwrap_or_else(|| RosterItem {
                contact: contact_text.clone(),
                ..RosterItem::default()
            });
            next.name = name;
            next.groups = groups;
            Update::Save(next)
        })
        .await;
    match result {
        Ok(_) => Ok(None),
        Err(_) => refuse(DefinedCondition::InternalServerError, "roster unavailable"),
    }
}
