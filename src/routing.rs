//! Where each stanza from a bound session goes (RFC 6120 §8, RFC 6121 §8), by its address:
//! the sender's own account, the server itself, another local user (through the policy gate,
//! in `im`), a registered component (rooms, uploads), and nothing else: there is no
//! federation, so other domains are bounced.

use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::presence::Type as PresenceType;
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use jid::{BareJid, FullJid, Jid};

use crate::Shared;
use crate::im::{self, Admission, Context};
use crate::reply::{bounce, error_reply, reply_iq};
use crate::router::{Sender, SessionControl};
use crate::server_iq;
use crate::session::{Backlog, Departure, Lifecycle};

/// What a session does, seen from above it: its stanzas are routed here, and instant
/// messaging takes its part at each point of its life.
pub struct Sessions;

#[async_trait::async_trait]
impl Lifecycle for Sessions {
    async fn binding(&self, shared: &Shared, jid: &FullJid) -> Result<(), crate::storage::Error> {
        shared.rosters.attach(&shared.im(), &jid.to_bare()).await
    }

    async fn unbound(&self, shared: &Shared, jid: &FullJid) {
        shared.rosters.detach(&jid.to_bare()).await;
    }

    async fn stanza(&self, shared: &Shared, sender: &Sender<'_>, stanza: Stanza) {
        // RFC 6121 §4.5.2: going unavailable ends the directed presence of room occupancy.
        let leaving = matches!(
            &stanza,
            Stanza::Presence(p) if p.to.is_none() && p.type_ == PresenceType::Unavailable
        );
        route(&shared.im(), sender, stanza).await;
        if leaving {
            shared.router.session_ended(sender.jid).await;
        }
    }

    async fn backlog(&self, shared: &Shared, jid: &FullJid, after: i64) -> Option<Backlog> {
        let batch = im::offline::next_batch(&shared.im(), username(jid), after).await?;
        Some(Backlog {
            stanzas: batch.messages.into_iter().map(Stanza::Message).collect(),
            last_id: batch.last_id,
        })
    }

    async fn acknowledged(&self, shared: &Shared, jid: &FullJid, last_id: i64) {
        im::offline::acknowledge(&shared.im(), username(jid), last_id).await;
    }

    /// Stream resumption (XEP-0198) is not offered yet: every session ends with its link.
    fn detached(&self, _: &Shared, _: &FullJid, _: Departure) {}

    async fn ended(&self, shared: &Shared, jid: &FullJid, control: &SessionControl) {
        im::presence::session_ended(&shared.im(), jid, control);
        shared.router.session_ended(jid).await;
        shared.rosters.detach(&jid.to_bare()).await;
    }
}

fn username(jid: &FullJid) -> &str {
    jid.node().map_or("", |n| n.as_str())
}

/// Routes a stanza whose `from` has been stamped with the sender's full JID.
pub async fn route(cx: &Context<'_>, sender: &Sender<'_>, stanza: Stanza) {
    let to = match &stanza {
        Stanza::Message(m) => m.to.clone(),
        Stanza::Presence(p) => p.to.clone(),
        Stanza::Iq(iq) => iq.to().cloned(),
    };
    let Some(to) = to else {
        return to_own_account(cx, sender, stanza).await;
    };
    if to.domain() == cx.domain.domain() {
        return match to.node() {
            None => to_server(cx, sender, stanza).await,
            Some(_) => to_user(cx, sender, &to, stanza).await,
        };
    }
    if let Some(component) = cx.router.component(to.domain().as_str()) {
        return component.handle(cx.router, stanza).await;
    }
    // No server-to-server federation: an ENT's users are all local.
    bounce(
        sender,
        &stanza,
        ErrorType::Cancel,
        DefinedCondition::RemoteServerNotFound,
        "this server does not federate with other domains",
    );
}

/// RFC 6120 §8.1.1.1: no `to` means the sender's own account.
async fn to_own_account(cx: &Context<'_>, sender: &Sender<'_>, stanza: Stanza) {
    let own = sender.jid.to_bare();
    match stanza {
        Stanza::Presence(presence) => im::presence::broadcast(cx, sender, presence).await,
        Stanza::Iq(iq) => server_iq::on_account(cx, sender, &own, iq).await,
        message @ Stanza::Message(_) => {
            let to = Jid::from(own.clone());
            if let Some(Admission::Message(message)) = im::admit(cx, sender, &to, message).await {
                im::user_message(cx, sender, &to, &own, message).await
            }
        }
    }
}

/// A stanza to a user of this server: through the policy gate, then to its handler, which
/// delivers what the gate admitted. IQs to a bare JID are answered by the server on the
/// account's behalf (RFC 6121 §8.5.2.1.3).
async fn to_user(cx: &Context<'_>, sender: &Sender<'_>, to: &Jid, stanza: Stanza) {
    let Some(admission) = im::admit(cx, sender, to, stanza).await else {
        return;
    };
    let bare = to.to_bare();
    match admission {
        Admission::Presence(presence) => im::user_presence(cx, sender, to, &bare, presence).await,
        Admission::Message(message) => {
            if let Some(room) = direct_invitation(&message)
                && let Some(service) = cx.router.component(room.domain().as_str())
                && let Err(error) = service
                    .direct_invitation(cx.router, sender.jid, &bare, &room)
                    .await
            {
                // Refused by the room: not delivered, so that the invitee is not sent to a
                // door that stays closed.
                if let Some(reply) = error_reply(&Stanza::Message(message.into_inner()), *error) {
                    sender.reply(reply);
                }
                return;
            }
            im::user_message(cx, sender, to, &bare, message).await
        }
        Admission::Iq(iq) => match to.try_as_full() {
            Ok(full) => im::iq_to_full(cx, sender, full, iq),
            Err(_) => server_iq::on_account(cx, sender, &bare, iq.into_inner()).await,
        },
    }
}

/// The room a direct invitation (XEP-0249) names, if the message is one.
fn direct_invitation(message: &Message) -> Option<BareJid> {
    let x = message
        .payloads
        .iter()
        .find(|p| p.is("x", crate::ns::CONFERENCE))?;
    BareJid::new(x.attr("jid")?).ok()
}

/// Stanzas addressed to the server itself (or one of its resources).
async fn to_server(cx: &Context<'_>, sender: &Sender<'_>, stanza: Stanza) {
    match stanza {
        Stanza::Iq(iq) => {
            let answer = match &iq {
                Iq::Get { payload, .. } => server_iq::handle(cx, sender, true, payload).await,
                Iq::Set { payload, .. } => server_iq::handle(cx, sender, false, payload).await,
                // Results and errors to the server: answers to its pings.
                Iq::Result { .. } | Iq::Error { .. } => return,
            };
            reply_iq(sender, &iq, answer);
        }
        Stanza::Message(ref m) if matches!(m.type_, MessageType::Chat | MessageType::Normal) => {
            bounce(
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

#[cfg(test)]
mod tests;
