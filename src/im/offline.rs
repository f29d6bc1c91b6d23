//! Offline storage (XEP-0160): chat and normal messages to a user with no available resource
//! are kept, then delivered in order with a XEP-0203 delay stamp when the user comes online.

use std::str::FromStr;

use jid::Jid;
use minidom::Element;
use xmpp_parsers::date::DateTime;
use xmpp_parsers::delay::Delay;
use xmpp_parsers::message::Message;
use xmpp_parsers::stanza::Stanza;

use crate::Shared;
use crate::im::Sender;
use crate::storage;

pub enum Stored {
    Kept,
    Full,
    Failed,
}

/// Keeps a message for a local user.
pub async fn store(shared: &Shared, username: &str, message: &Message) -> Stored {
    let xml = String::from(&Element::from(message.clone()));
    match shared
        .store
        .push_offline(username, &xml, shared.config.im.max_offline_messages)
        .await
    {
        Ok(()) => Stored::Kept,
        Err(storage::Error::LimitReached) => Stored::Full,
        Err(err) => {
            tracing::warn!(error = %err, "cannot store an offline message");
            Stored::Failed
        }
    }
}

/// Delivers, oldest first, what was kept for the user, to the session that came online.
/// Written by the session itself rather than queued: there may be more than a queue holds.
pub async fn deliver(shared: &Shared, sender: &Sender<'_>) {
    let jid = sender.jid;
    let username = jid.node().map(|n| n.as_str()).unwrap_or_default();
    let messages = match shared.store.take_offline(username).await {
        Ok(m) => m,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read offline messages");
            return;
        }
    };
    for kept in messages {
        let Some(mut message) = Element::from_str(&kept.stanza)
            .ok()
            .and_then(|e| Message::try_from(e).ok())
        else {
            tracing::warn!("dropping an offline message that no longer parses");
            continue;
        };
        let stamp = chrono::DateTime::from_timestamp(kept.received_at, 0)
            .unwrap_or_default()
            .fixed_offset();
        message.payloads.push(
            Delay {
                from: Some(Jid::from(shared.domain.clone())),
                stamp: DateTime(stamp),
                data: Some("Offline storage".into()),
            }
            .into(),
        );
        sender.write_directly(Stanza::Message(message));
    }
}
