//! Where each stanza from a bound session goes (RFC 6120 §8, RFC 6121 §8), by its address:
//! the sender's own account, the server itself, another local user (through the policy gate,
//! in `im`), a registered component (rooms, uploads), and nothing else: there is no
//! federation, so other domains are bounced.

use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::MessageType;
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::Shared;
use crate::im;
use crate::reply::{Answer, error_reply, stanza_error};
use crate::router::Sender;
use crate::server_iq;

/// Routes a stanza whose `from` has been stamped with the sender's full JID.
pub async fn route(shared: &Shared, sender: &Sender<'_>, stanza: Stanza) {
    let to = match &stanza {
        Stanza::Message(m) => m.to.clone(),
        Stanza::Presence(p) => p.to.clone(),
        Stanza::Iq(iq) => iq.to().cloned(),
    };
    let Some(to) = to else {
        // RFC 6120 §8.1.1.1: no `to` means the sender's own account.
        return im::to_own_account(shared, sender, stanza).await;
    };
    if to.domain() == shared.domain.domain() {
        return match to.node() {
            None => to_server(shared, sender, stanza).await,
            Some(_) => im::to_user(shared, sender, &to, stanza).await,
        };
    }
    if let Some(component) = shared.router.component(to.domain().as_str()) {
        return component.handle(&shared.router, stanza).await;
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

/// Stanzas addressed to the server itself (or one of its resources).
async fn to_server(shared: &Shared, sender: &Sender<'_>, stanza: Stanza) {
    match stanza {
        Stanza::Iq(iq) => {
            let answer = match &iq {
                Iq::Get { payload, .. } => server_iq::handle(shared, sender, true, payload).await,
                Iq::Set { payload, .. } => server_iq::handle(shared, sender, false, payload).await,
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

/// Sends the sender the answer to its IQ.
pub fn reply_iq(sender: &Sender<'_>, iq: &Iq, answer: Answer) {
    let reply = match answer {
        Ok(payload) => Iq::Result {
            from: iq.to().cloned(),
            to: iq.from().cloned(),
            id: iq.id().to_owned(),
            payload,
        },
        Err(failure) => Iq::Error {
            from: iq.to().cloned(),
            to: iq.from().cloned(),
            id: iq.id().to_owned(),
            error: stanza_error(failure),
            payload: None,
        },
    };
    sender.reply(Stanza::Iq(reply));
}

/// Sends the sender an error for its stanza, unless it was itself an error.
pub fn bounce(
    sender: &Sender<'_>,
    stanza: &Stanza,
    type_: ErrorType,
    condition: DefinedCondition,
    text: &str,
) {
    let error = StanzaError::new(type_, condition, "en", text);
    if let Some(reply) = error_reply(stanza, error) {
        sender.reply(reply);
    }
}

#[cfg(test)]
mod tests;
