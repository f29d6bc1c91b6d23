//! Offline storage (XEP-0160): chat and normal messages to a user with no available resource
//! are kept, then delivered in order with a XEP-0203 delay stamp when the user comes online,
//! in bounded batches, each deleted only once the client has acknowledged it (see
//! `session::deliver_backlog`). Only what carries content is kept (`worth_keeping`).

use std::str::FromStr;

use jid::Jid;
use minidom::Element;
use xmpp_parsers::date::DateTime;
use xmpp_parsers::delay::Delay;
use xmpp_parsers::message::Message;

use crate::im::Context;
use crate::storage;

/// XEP-0334 message processing hints.
const HINTS: &str = "urn:xmpp:hints";

/// Whether a message to a user who is not online is worth keeping for them (XEP-0160): one
/// with a body or a subject, unless it says `<no-store/>`, or one that asks for it with
/// `<store/>`. A message with nothing to read (a chat state such as `<composing/>`, XEP-0085)
/// is dropped without an error: replayed at the next login, it would only fill the storage.
pub fn worth_keeping(message: &Message) -> bool {
    let hinted = |name: &str| message.payloads.iter().any(|p| p.is(name, HINTS));
    if hinted("no-store") {
        return false;
    }
    !message.bodies.is_empty() || !message.subjects.is_empty() || hinted("store")
}

pub enum Stored {
    Kept,
    Full,
    Failed,
}

/// Keeps a message for a local user.
pub async fn store(cx: &Context<'_>, username: &str, message: &Message) -> Stored {
    let xml = String::from(&Element::from(message.clone()));
    match cx
        .store
        .push_offline(username, &xml, cx.config.max_offline_messages)
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

/// Messages written to a session before it must acknowledge them, at most.
const BATCH_MESSAGES: u32 = 64;
/// Bytes of stored messages one batch loads, at most (the first message always comes): a
/// session holds no more than this of its backlog at once, however large the backlog.
const BATCH_BYTES: usize = 256 * 1024;

/// The next messages kept for a user, oldest first, stamped with their delay (XEP-0203).
pub struct Batch {
    pub messages: Vec<Message>,
    /// The id to acknowledge once the client has them.
    pub last_id: i64,
}

/// The messages kept for `username` after id `after`, or `None` when none is left. Nothing
/// is deleted until `acknowledge`: a client that goes away before it has them gets them at
/// its next login.
pub async fn next_batch(cx: &Context<'_>, username: &str, after: i64) -> Option<Batch> {
    let kept = match cx
        .store
        .offline_batch(username, after, BATCH_MESSAGES, BATCH_BYTES)
        .await
    {
        Ok(kept) => kept,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read offline messages");
            return None;
        }
    };
    let last_id = kept.last()?.id;
    let mut messages = Vec::with_capacity(kept.len());
    for kept in kept {
        let Some(mut message) = Element::from_str(&kept.stanza)
            .ok()
            .and_then(|e| Message::try_from(e).ok())
        else {
            tracing::warn!("skipping an offline message that no longer parses");
            continue;
        };
        let stamp = chrono::DateTime::from_timestamp(kept.received_at, 0)
            .unwrap_or_default()
            .fixed_offset();
        message.payloads.push(
            Delay {
                from: Some(Jid::from(cx.domain.clone())),
                stamp: DateTime(stamp),
                data: Some("Offline storage".into()),
            }
            .into(),
        );
        messages.push(message);
    }
    Some(Batch { messages, last_id })
}

/// The client has the messages up to `last_id`: they are deleted.
pub async fn acknowledge(cx: &Context<'_>, username: &str, last_id: i64) {
    if let Err(err) = cx.store.delete_offline_through(username, last_id).await {
        // Kept, so delivered again at the next login: a duplicate rather than a loss.
        tracing::warn!(error = %err, "cannot delete delivered offline messages");
    }
}
