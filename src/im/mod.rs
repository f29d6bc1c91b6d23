//! Instant messaging for local users: where each stanza from a bound session goes (RFC 6120
//! §8, RFC 6121 §8 delivery rules), rosters, subscriptions, presence and offline messages.

pub mod categories;
pub mod offline;
pub mod presence;
pub mod roster;
pub mod roster_iq;
pub mod search;
pub mod subscription;
pub mod transitions;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::config::ImConfig;
use crate::policy::{Action, Decision, Policy, Relation};
use crate::reply::{Failure, bounce, error_reply, error_type_of, stanza_error};
use crate::router::{MessageDelivery, Router, Sender};
use crate::storage::{DynStore, RosterItem, Subscription};

/// What instant messaging works with: the parts of the server it uses, and nothing else (no
/// TLS, no admin token, no listener).
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The served domain, as a JID.
    pub domain: &'a BareJid,
    pub config: &'a ImConfig,
    pub store: &'a DynStore,
    pub router: &'a Router,
    pub rosters: &'a roster::Rosters,
    pub policy: &'a Policy,
    /// What each account may change per minute.
    pub writes: &'a crate::budget::WriteBudget,
}

/// A stanza the gate let through, as the gate let it through. Only `admit` makes one, and the
/// handlers that deliver to another user take nothing else: what is delivered is what was
/// judged, so that a stanza let through for one reason cannot be delivered for another.
pub struct Admitted<T>(T);

impl<T> Admitted<T> {
    /// The stanza itself, for what the server answers on an account's behalf (IQs to a bare
    /// JID): delivery to a user takes the `Admitted` whole.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Admitted<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What `admit` let through, by kind.
pub enum Admission {
    Message(Admitted<Message>),
    Presence(Admitted<Presence>),
    Iq(Admitted<Iq>),
}

/// Whether a stanza from a user may go to `to`, a user of this server (or the sender's own
/// account): through the policy gate when `to` is another account. A refused stanza gets its
/// error here; a stanza let through only as an answer may come out reduced (`Gate::Reduce`).
pub async fn admit(
    cx: &Context<'_>,
    sender: &Sender<'_>,
    to: &Jid,
    stanza: Stanza,
) -> Option<Admission> {
    let bare = to.to_bare();
    let own = sender.jid.to_bare();
    let stanza = if bare == own {
        stanza
    } else {
        match gate(cx, sender, &own, to, &bare, &stanza).await {
            Gate::Pass => stanza,
            Gate::Reduce => reduced(stanza),
            Gate::Drop => return None,
            Gate::Refuse(failure) => {
                refuse(sender, &stanza, failure);
                return None;
            }
        }
    };
    Some(match stanza {
        Stanza::Message(message) => Admission::Message(Admitted(message)),
        Stanza::Presence(presence) => Admission::Presence(Admitted(presence)),
        Stanza::Iq(iq) => Admission::Iq(Admitted(iq)),
    })
}

/// An error or IQ answer that answers nothing the recipient is known to have sent, between
/// users who may write to each other but have not accepted each other: its condition alone,
/// with none of the sender's text or payloads, so that it carries nothing the sender wrote.
fn reduced(stanza: Stanza) -> Stanza {
    /// An error's condition and type, without its texts, extension or addresses.
    fn condition_only(error: &StanzaError) -> StanzaError {
        let condition = match &error.defined_condition {
            DefinedCondition::Gone { .. } => DefinedCondition::Gone { new_address: None },
            DefinedCondition::Redirect { .. } => DefinedCondition::Redirect { new_address: None },
            other => other.clone(),
        };
        StanzaError {
            type_: error.type_.clone(),
            by: None,
            defined_condition: condition,
            texts: Default::default(),
            other: None,
        }
    }
    fn error_of(payloads: &[Element]) -> Option<StanzaError> {
        payloads
            .iter()
            .find(|p| p.is("error", crate::ns::JABBER_CLIENT))
            .and_then(|e| StanzaError::try_from(e.clone()).ok())
            .map(|e| condition_only(&e))
    }
    match stanza {
        Stanza::Message(mut message) => {
            let error = error_of(&message.payloads);
            message.bodies.clear();
            message.subjects.clear();
            message.thread = None;
            message.payloads = error.into_iter().map(Element::from).collect();
            Stanza::Message(message)
        }
        Stanza::Presence(mut presence) => {
            let error = error_of(&presence.payloads);
            presence.statuses.clear();
            presence.show = None;
            presence.payloads = error.into_iter().map(Element::from).collect();
            Stanza::Presence(presence)
        }
        Stanza::Iq(Iq::Result { from, to, id, .. }) => Stanza::Iq(Iq::Result {
            from,
            to,
            id,
            payload: None,
        }),
        Stanza::Iq(Iq::Error {
            from,
            to,
            id,
            error,
            ..
        }) => Stanza::Iq(Iq::Error {
            from,
            to,
            id,
            error: condition_only(&error),
            payload: None,
        }),
        // Requests are never reduced: they pass or not.
        other => other,
    }
}

/// Presence to a user of this server (or to the sender's own account), admitted.
pub async fn user_presence(
    cx: &Context<'_>,
    sender: &Sender<'_>,
    to: &Jid,
    contact: &BareJid,
    Admitted(presence): Admitted<Presence>,
) {
    let user = sender.jid.to_bare();
    let subscription = matches!(
        presence.type_,
        PresenceType::Subscribe
            | PresenceType::Subscribed
            | PresenceType::Unsubscribe
            | PresenceType::Unsubscribed
    );
    if !subscription {
        match presence.type_ {
            PresenceType::Probe => presence::probe(cx, sender, contact).await,
            PresenceType::Error => {
                // Errors go where they are addressed, untouched.
                let _ = cx
                    .router
                    .deliver_to(to, Box::new(Stanza::Presence(presence)));
            }
            _ => presence::directed(cx, sender, to, presence),
        }
        return;
    }
    // Subscription requests are about bare JIDs (RFC 6121 §3.1.1).
    if *contact == user {
        let stanza = Stanza::Presence(presence);
        return bounce(
            sender,
            &stanza,
            ErrorType::Modify,
            DefinedCondition::BadRequest,
            "you cannot subscribe to yourself",
        );
    }
    let exists = exists(cx, contact).await;
    if !exists && presence.type_ != PresenceType::Subscribe {
        return;
    }
    if !cx.writes.try_spend(roster::local(&user)) {
        let stanza = Stanza::Presence(presence);
        let (condition, text) = TOO_MANY_CHANGES;
        return bounce(sender, &stanza, ErrorType::Wait, condition, text);
    }
    if !exists {
        // A request to nobody looks like one to somebody who has not answered yet: the
        // requester's item waits, and nothing tells whether the account exists.
        let done = subscription::ask_nobody(cx, &user, contact).await;
        if let Err(err) = done {
            let stanza = Stanza::Presence(presence);
            return match err {
                crate::storage::Error::LimitReached => bounce(
                    sender,
                    &stanza,
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                    "a contact list or the requests waiting for an answer are full: remove or answer one first",
                ),
                err => {
                    tracing::warn!(error = %err, "subscription change failed");
                    bounce(
                        sender,
                        &stanza,
                        ErrorType::Wait,
                        DefinedCondition::InternalServerError,
                        "the change could not be saved; try again",
                    )
                }
            };
        }
        return;
    }
    let status = presence.statuses.values().next().cloned();
    let done = match presence.type_ {
        PresenceType::Subscribe => subscription::subscribe(cx, &user, contact, status).await,
        PresenceType::Subscribed => subscription::approve(cx, &user, contact).await,
        PresenceType::Unsubscribe => subscription::unsubscribe(cx, &user, contact).await,
        _ => subscription::unsubscribed(cx, &user, contact).await,
    };
    if let Err(crate::storage::Error::LimitReached) = done {
        let stanza = Stanza::Presence(presence);
        return bounce(
            sender,
            &stanza,
            ErrorType::Wait,
            DefinedCondition::ResourceConstraint,
            "a contact list or the requests waiting for an answer are full: remove or answer one first",
        );
    }
    if let Err(err) = done {
        tracing::warn!(error = %err, "subscription change failed");
        let stanza = Stanza::Presence(presence);
        bounce(
            sender,
            &stanza,
            ErrorType::Wait,
            DefinedCondition::InternalServerError,
            "the change could not be saved; try again",
        );
    }
}

/// Whether `recipient`'s roster item for `sender` satisfies `holds`. Read from memory when
/// the recipient is online, else from the store.
async fn relation(
    cx: &Context<'_>,
    recipient: &BareJid,
    sender: &BareJid,
    holds: fn(Subscription) -> bool,
) -> bool {
    let check = |item: Option<&RosterItem>| item.is_some_and(|i| holds(i.subscription));
    let contact = sender.to_string();
    if let Some(answer) = cx.rosters.cached_check(recipient, &contact, check) {
        return answer;
    }
    let stored = cx
        .store
        .roster_item(roster::local(recipient), &contact)
        .await
        .ok()
        .flatten();
    check(stored.as_ref())
}

/// `recipient` accepted `sender` as a contact: an established subscription either way.
fn accepted(subscription: Subscription) -> bool {
    subscription != Subscription::None
}

/// `recipient` shares its presence with `sender`, who may so know which resources are online.
fn shares_presence(subscription: Subscription) -> bool {
    subscription.has_from()
}

/// What the gate lets through.
enum Gate {
    Pass,
    /// Passed as an answer, reduced to its error condition (`reduced`).
    Reduce,
    /// Refused with an error to the sender.
    Refuse(Failure),
    /// Dropped silently: an error is never answered with an error.
    Drop,
}

/// The one place where a stanza from a user meets the rules on its way to another user of
/// this server, whatever its kind, before any handler sees it (docs/policy.md, "Where it
/// applies").
///
/// - Everything the sender writes, in any stanza, follows the communication rules: messages
///   of every type, directed presence (which carries a status text), IQs, subscription
///   requests and approvals (as adding a contact).
/// - A `groupchat` message comes only from a room: from a user to a user it is refused
///   (RFC 6121 §8.5.2.1.1, §8.5.3.2.1), to a full JID as to a bare one.
/// - Errors and IQ answers pass whole when they answer a request the other side sent, or when
///   the sender could write to the other anyway; between users the rules allow but who have
///   not accepted each other, they pass reduced to their condition; otherwise they are
///   dropped.
/// - Ending a relationship (`unsubscribe`, `unsubscribed`: `Action::EndContact`) and probes
///   (`Action::Probe`) follow the policy, which always allows them: the server writes what the
///   other side gets, so nothing of the sender's goes through.
/// - IQ requests follow the policy's `Action::Request` (in the ENT mode, the recipient must
///   share its presence with the asker); one refused to an asker who does not see the
///   recipient's presence gets the same answer as for an absent account or resource, so that
///   an IQ tells nobody whether an account exists or a resource is online.
async fn gate(
    cx: &Context<'_>,
    sender: &Sender<'_>,
    own: &BareJid,
    to: &Jid,
    recipient: &BareJid,
    stanza: &Stanza,
) -> Gate {
    let decide = |action, relation| {
        cx.policy.decide(
            roster::local(own),
            roster::local(recipient),
            action,
            relation,
        )
    };
    // Whether the recipient accepted the sender, read only when the policy asks for it.
    let accepted = || async {
        !cx.policy.requires_acceptance() || relation(cx, recipient, own, accepted).await
    };
    // What the sender writes to the other.
    let writing = || async {
        let relation = Relation {
            accepted: accepted().await,
            ..Relation::default()
        };
        match decide(Action::Message, relation) {
            Decision::Allow => Gate::Pass,
            Decision::Deny(reason) => Gate::Refuse(Failure::Denied(reason)),
        }
    };
    // Errors answer something: they need no accepted request, only the rules; what they
    // carry of the sender's is the sender's writing.
    let answering = || async {
        let as_answer = Relation {
            accepted: true,
            ..Relation::default()
        };
        match decide(Action::Message, as_answer) {
            Decision::Deny(_) => Gate::Drop,
            Decision::Allow if accepted().await => Gate::Pass,
            Decision::Allow => Gate::Reduce,
        }
    };
    match stanza {
        Stanza::Message(m) => match m.type_ {
            MessageType::Error => answering().await,
            MessageType::Groupchat => Gate::Refuse(Failure::Plain(
                DefinedCondition::ServiceUnavailable,
                GROUPCHAT,
            )),
            MessageType::Chat | MessageType::Normal | MessageType::Headline => writing().await,
        },
        Stanza::Presence(p) => match p.type_ {
            PresenceType::Subscribe | PresenceType::Subscribed => {
                match decide(Action::AddContact, Relation::default()) {
                    Decision::Allow => Gate::Pass,
                    Decision::Deny(reason) => Gate::Refuse(Failure::Denied(reason)),
                }
            }
            PresenceType::Unsubscribe | PresenceType::Unsubscribed | PresenceType::Probe => {
                let action = if p.type_ == PresenceType::Probe {
                    Action::Probe
                } else {
                    Action::EndContact
                };
                match decide(action, Relation::default()) {
                    Decision::Allow => Gate::Pass,
                    Decision::Deny(reason) => Gate::Refuse(Failure::Denied(reason)),
                }
            }
            PresenceType::Error => answering().await,
            PresenceType::None | PresenceType::Unavailable => writing().await,
        },
        Stanza::Iq(Iq::Get { .. } | Iq::Set { .. }) => {
            let shares_presence = relation(cx, recipient, own, shares_presence).await;
            let relation = Relation {
                shares_presence,
                // Sharing presence with the sender is having accepted it.
                accepted: shares_presence,
                ..Relation::default()
            };
            match decide(Action::Request, relation) {
                Decision::Allow => Gate::Pass,
                Decision::Deny(_) if !shares_presence => Gate::Refuse(Failure::Plain(
                    DefinedCondition::ServiceUnavailable,
                    if to.try_as_full().is_ok() {
                        NOT_ONLINE
                    } else {
                        NO_SUCH_USER
                    },
                )),
                Decision::Deny(reason) => Gate::Refuse(Failure::Denied(reason)),
            }
        }
        Stanza::Iq(iq) => {
            if sender.control.answered(to, iq.id()) {
                return Gate::Pass;
            }
            answering().await
        }
    }
}

/// The answer to a `groupchat` message from a user to a user.
const GROUPCHAT: &str = "groupchat messages go to rooms, not to users";

/// The answer to a change past the account's budget (`crate::budget::WriteBudget`).
pub const TOO_MANY_CHANGES: (DefinedCondition, &str) = (
    DefinedCondition::ResourceConstraint,
    "too many changes in a short time: wait a minute and try again",
);

/// The answer to an IQ for an account that does not exist or does not share its presence
/// with the asker (RFC 6121 §8.5.1: both alike).
const NO_SUCH_USER: &str = "no such user, or not one of your contacts";
/// The answer to an IQ for a resource that is not online or whose account does not share its
/// presence with the asker.
const NOT_ONLINE: &str = "the recipient is not online, or not one of your contacts";

/// Sends the sender the error the gate chose for its stanza.
fn refuse(sender: &Sender<'_>, stanza: &Stanza, failure: Failure) {
    if let Some(reply) = error_reply(stanza, stanza_error(failure)) {
        sender.reply(reply);
    }
}

/// A message to a user of this server, admitted: RFC 6121 §8.5.2 (bare JID) and §8.5.3
/// (full JID), then offline storage.
pub async fn user_message(
    cx: &Context<'_>,
    sender: &Sender<'_>,
    to: &Jid,
    recipient: &BareJid,
    Admitted(message): Admitted<Message>,
) {
    let message = match cx.router.deliver_message(to, message) {
        MessageDelivery::Delivered | MessageDelivery::Dropped => return,
        MessageDelivery::Refused(message, text) => {
            let stanza = Stanza::Message(message);
            return bounce(
                sender,
                &stanza,
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
                text,
            );
        }
        MessageDelivery::Undelivered(message) => message,
    };
    if !exists(cx, recipient).await {
        let stanza = Stanza::Message(message);
        return bounce(
            sender,
            &stanza,
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "no such user",
        );
    }
    if !offline::worth_keeping(&message) {
        return;
    }
    let own = sender.jid.to_bare();
    if !cx.writes.try_spend(roster::local(&own)) {
        let stanza = Stanza::Message(message);
        let (condition, text) = TOO_MANY_CHANGES;
        return bounce(sender, &stanza, ErrorType::Wait, condition, text);
    }
    let (condition, text) = match offline::store(cx, roster::local(recipient), &message).await {
        offline::Stored::Kept => return,
        offline::Stored::Full => (
            DefinedCondition::ResourceConstraint,
            "the recipient's offline storage is full",
        ),
        offline::Stored::Failed => (
            DefinedCondition::InternalServerError,
            "the message could not be stored for the offline recipient",
        ),
    };
    let stanza = Stanza::Message(message);
    bounce(sender, &stanza, error_type_of(&condition), condition, text);
}

/// RFC 6121 §8.5.3.1: an IQ to a full JID goes to that resource, or gets an error.
pub fn iq_to_full(cx: &Context<'_>, sender: &Sender<'_>, to: &FullJid, Admitted(iq): Admitted<Iq>) {
    let Err(back) = cx
        .router
        .deliver_iq_to_full(sender.jid, to, Box::new(Stanza::Iq(iq)))
    else {
        return;
    };
    if let Stanza::Iq(iq @ (Iq::Get { .. } | Iq::Set { .. })) = *back {
        let stanza = Stanza::Iq(iq);
        bounce(
            sender,
            &stanza,
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            NOT_ONLINE,
        );
    }
}

async fn exists(cx: &Context<'_>, user: &BareJid) -> bool {
    match user.node() {
        Some(node) => cx.store.user_exists(node.as_str()).await.unwrap_or(false),
        None => false,
    }
}
