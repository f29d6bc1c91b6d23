//! Instant messaging for local users: where each stanza from a bound session goes (RFC 6120
//! §8, RFC 6121 §8 delivery rules), and the session's own presence.

use jid::{BareJid, FullJid, Jid};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::Shared;
use crate::router::{BareDelivery, SessionControl};
use crate::services;

/// The session a stanza comes from.
pub struct Sender<'a> {
    pub jid: &'a FullJid,
    pub control: &'a SessionControl,
}

/// Routes a stanza whose `from` has been stamped with the sender's full JID.
pub async fn route(shared: &Shared, sender: &Sender<'_>, stanza: Stanza) {
    let to = match &stanza {
        Stanza::Message(m) => m.to.clone(),
        Stanza::Presence(p) => p.to.clone(),
        Stanza::Iq(iq) => iq.to().cloned(),
    };
    let Some(to) = to else {
        // RFC 6120 §8.1.1.1: no `to` means the sender's own account.
        return to_own_account(shared, sender, stanza).await;
    };
    if to.domain() != shared.domain.domain() {
        // No server-to-server federation: an ENT's users are all local.
        let text = "this server does not federate with other domains";
        return bounce(
            shared,
            sender,
            &stanza,
            ErrorType::Cancel,
            DefinedCondition::RemoteServerNotFound,
            text,
        );
    }
    match (to.node().is_some(), to.try_as_full()) {
        (false, _) => to_server(shared, sender, stanza),
        (true, Ok(full)) => {
            let full = full.clone();
            to_full(shared, sender, &full, stanza).await
        }
        (true, Err(bare)) => {
            let bare = bare.clone();
            to_bare(shared, sender, &bare, stanza).await
        }
    }
}

/// Stanzas addressed to the server itself (or one of its resources).
fn to_server(shared: &Shared, sender: &Sender<'_>, stanza: Stanza) {
    match stanza {
        Stanza::Iq(iq) => {
            let answer = match &iq {
                Iq::Get { payload, .. } => services::server_iq(true, payload),
                Iq::Set { payload, .. } => services::server_iq(false, payload),
                // Results and errors to the server: answers to its pings.
                Iq::Result { .. } | Iq::Error { .. } => return,
            };
            reply_iq(shared, sender, &iq, answer);
        }
        Stanza::Message(ref m) if matches!(m.type_, MessageType::Chat | MessageType::Normal) => {
            bounce(
                shared,
                sender,
                &stanza,
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
                "the server does not take messages",
            );
        }
        // Presence to the server and other messages are dropped (RFC 6120 §10.3).
        _ => {}
    }
}

/// Stanzas with no `to`: the sender's own account.
async fn to_own_account(shared: &Shared, sender: &Sender<'_>, stanza: Stanza) {
    match stanza {
        Stanza::Presence(presence) => own_presence(shared, sender, presence),
        Stanza::Iq(iq) => {
            let answer = match &iq {
                // The RFC 3921 session may come without `to`.
                Iq::Set { payload, .. } if payload.is("session", crate::ns::SESSION) => Ok(None),
                Iq::Get { payload, .. } => services::account_iq(true, payload),
                Iq::Set { payload, .. } => services::account_iq(false, payload),
                Iq::Result { .. } | Iq::Error { .. } => return,
            };
            reply_iq(shared, sender, &iq, answer);
        }
        Stanza::Message(_) => {
            let own = sender.jid.to_bare();
            to_bare(shared, sender, &own, stanza).await
        }
    }
}

/// RFC 6121 §4.2, §4.5: presence broadcast by the client. Broadcast to contacts comes with
/// the roster; here it reaches the user's own available resources, the sender included
/// (RFC 6121 §4.2.2).
fn own_presence(shared: &Shared, sender: &Sender<'_>, presence: Presence) {
    let available = match presence.type_ {
        PresenceType::None => true,
        PresenceType::Unavailable => false,
        // Subscription requests need an addressee; errors to nobody are dropped.
        _ => return,
    };
    let priority = presence.priority.0;
    if available {
        sender.control.set_presence(true, priority);
    }
    let own = sender.jid.to_bare();
    let _ = shared.router.deliver_to_bare(
        &own,
        Box::new(Stanza::Presence(presence)),
        BareDelivery::AllAvailable,
    );
    if !available {
        sender.control.set_presence(false, 0);
    }
}

/// Called when a session ends: its resource goes unavailable for the others (RFC 6121 §4.5.2).
pub fn session_ended(shared: &Shared, jid: &FullJid, control: &SessionControl) {
    if !control.is_available() {
        return;
    }
    control.set_presence(false, 0);
    let mut presence = Presence::new(PresenceType::Unavailable);
    presence.from = Some(Jid::from(jid.clone()));
    let own = jid.to_bare();
    let _ = shared.router.deliver_to_bare(
        &own,
        Box::new(Stanza::Presence(presence)),
        BareDelivery::AllAvailable,
    );
}

/// RFC 6121 §8.5.3: a full JID.
async fn to_full(shared: &Shared, sender: &Sender<'_>, to: &FullJid, stanza: Stanza) {
    let stanza = match shared.router.deliver_to_full(to, Box::new(stanza)) {
        Ok(()) => return,
        Err(back) => *back,
    };
    match &stanza {
        // §8.5.3.2.1: treated as addressed to the bare JID, but for groupchat and errors.
        Stanza::Message(m) => match m.type_ {
            MessageType::Groupchat => bounce(
                shared,
                sender,
                &stanza,
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
                "the recipient is not online",
            ),
            MessageType::Error => {}
            _ => to_bare(shared, sender, &to.to_bare(), stanza).await,
        },
        // §8.5.3.2.3: presence to an unavailable resource is dropped (subscription
        // requests are handled by the roster, which treats them as addressed to the bare JID).
        Stanza::Presence(_) => {}
        Stanza::Iq(Iq::Get { .. } | Iq::Set { .. }) => bounce(
            shared,
            sender,
            &stanza,
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "the recipient is not online",
        ),
        Stanza::Iq(_) => {}
    }
}

/// RFC 6121 §8.5.2: a bare JID of this server.
async fn to_bare(shared: &Shared, sender: &Sender<'_>, to: &BareJid, stanza: Stanza) {
    match stanza {
        Stanza::Message(ref m) => {
            let mode = match m.type_ {
                MessageType::Chat | MessageType::Normal => BareDelivery::HighestPriority,
                MessageType::Headline => BareDelivery::AllNonNegative,
                MessageType::Groupchat => {
                    return bounce(
                        shared,
                        sender,
                        &stanza,
                        ErrorType::Cancel,
                        DefinedCondition::ServiceUnavailable,
                        "groupchat messages go to rooms",
                    );
                }
                MessageType::Error => return,
            };
            let headline = mode == BareDelivery::AllNonNegative;
            if let Err(back) = shared.router.deliver_to_bare(to, Box::new(stanza), mode) {
                // §8.5.2.2.1: no available resource. Offline storage comes with the roster;
                // until then the sender learns at once that nothing was delivered.
                if !headline {
                    bounce(
                        shared,
                        sender,
                        &back,
                        ErrorType::Cancel,
                        DefinedCondition::ServiceUnavailable,
                        "the recipient is not online",
                    );
                }
            }
        }
        Stanza::Presence(presence) => {
            // Directed presence and subscription stanzas reach the available resources.
            // Probes are answered by the roster, which knows who may see whom.
            if presence.type_ != PresenceType::Probe {
                let _ = shared.router.deliver_to_bare(
                    to,
                    Box::new(Stanza::Presence(presence)),
                    BareDelivery::AllAvailable,
                );
            }
        }
        Stanza::Iq(iq) => {
            let is_get = match &iq {
                Iq::Get { .. } => true,
                Iq::Set { .. } => false,
                Iq::Result { .. } | Iq::Error { .. } => return,
            };
            let exists = match to.node() {
                Some(node) if *to == sender.jid.to_bare() => {
                    let _ = node;
                    true
                }
                Some(node) => shared
                    .store
                    .user_exists(node.as_str())
                    .await
                    .unwrap_or(false),
                None => false,
            };
            let answer = match &iq {
                Iq::Get { payload, .. } | Iq::Set { payload, .. } if exists => {
                    services::account_iq(is_get, payload)
                }
                _ => Err((DefinedCondition::ServiceUnavailable, "no such user")),
            };
            reply_iq(shared, sender, &iq, answer);
        }
    }
}

fn reply_iq(shared: &Shared, sender: &Sender<'_>, iq: &Iq, answer: services::Answer) {
    let reply = match answer {
        Ok(payload) => Iq::Result {
            from: iq.to().cloned(),
            to: iq.from().cloned(),
            id: iq.id().to_owned(),
            payload,
        },
        Err((condition, text)) => Iq::Error {
            from: iq.to().cloned(),
            to: iq.from().cloned(),
            id: iq.id().to_owned(),
            error: StanzaError::new(error_type_of(&condition), condition, "en", text),
            payload: None,
        },
    };
    let _ = shared
        .router
        .deliver_to_full(sender.jid, Box::new(Stanza::Iq(reply)));
}

fn error_type_of(condition: &DefinedCondition) -> ErrorType {
    match condition {
        DefinedCondition::BadRequest
        | DefinedCondition::JidMalformed
        | DefinedCondition::NotAcceptable => ErrorType::Modify,
        DefinedCondition::Forbidden | DefinedCondition::NotAuthorized => ErrorType::Auth,
        DefinedCondition::ResourceConstraint => ErrorType::Wait,
        _ => ErrorType::Cancel,
    }
}

/// Sends the sender an error for its stanza, unless it was itself an error.
fn bounce(
    shared: &Shared,
    sender: &Sender<'_>,
    stanza: &Stanza,
    type_: ErrorType,
    condition: DefinedCondition,
    text: &str,
) {
    let error = StanzaError::new(type_, condition, "en", text);
    if let Some(reply) = error_reply(stanza, error) {
        let _ = shared.router.deliver_to_full(sender.jid, Box::new(reply));
    }
}

/// The error reply to a stanza (RFC 6120 §8.3.1), or `None` for an error, which is never
/// answered with an error.
pub fn error_reply(stanza: &Stanza, error: StanzaError) -> Option<Stanza> {
    match stanza {
        Stanza::Message(m) => {
            if m.type_ == MessageType::Error {
                return None;
            }
            let mut reply = Message::new_with_type(MessageType::Error, m.from.clone());
            reply.from = m.to.clone();
            reply.id = m.id.clone();
            reply.payloads.push(error.into());
            Some(Stanza::Message(reply))
        }
        Stanza::Presence(p) => {
            if p.type_ == PresenceType::Error {
                return None;
            }
            let mut reply = Presence::new(PresenceType::Error);
            reply.from = p.to.clone();
            reply.to = p.from.clone();
            reply.id = p.id.clone();
            reply.payloads.push(error.into());
            Some(Stanza::Presence(reply))
        }
        Stanza::Iq(iq) => match iq {
            Iq::Error { .. } | Iq::Result { .. } => None,
            _ => Some(Stanza::Iq(Iq::Error {
                from: iq.to().cloned(),
                to: iq.from().cloned(),
                id: iq.id().to_owned(),
                error,
                payload: None,
            })),
        },
    }
}
