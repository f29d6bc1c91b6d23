//! Stream errors (RFC 6120 §4.9): which condition a failure maps to, and how it is sent.

use std::io;
use std::time::Duration;

use minidom::Element;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use xmpp_parsers::stream_error::DefinedCondition;

use crate::link::Fatal;

use crate::transport::LimitExceeded;

/// Bounds every write of a closing sequence: a peer that reads nothing must not hold the task.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The stream error for a limit the client went past.
pub fn limit_exceeded(exceeded: LimitExceeded) -> Fatal {
    let text = match exceeded {
        LimitExceeded::StanzaSize(limit) => format!("stanza too large: the limit is {limit} bytes"),
        LimitExceeded::Depth(limit) => {
            format!("elements nested too deep: the limit is {limit} levels")
        }
    };
    Fatal::new(DefinedCondition::PolicyViolation, text)
}

/// What a read failure means for the stream: `None` when the peer is simply gone.
pub fn classify_read_error(err: &io::Error) -> Option<Fatal> {
    if let Some(inner) = err.get_ref() {
        if let Some(exceeded) = inner.downcast_ref::<LimitExceeded>() {
            return Some(limit_exceeded(*exceeded));
        }
        if inner.downcast_ref::<rxml::Error>().is_some() {
            return Some(Fatal::new(
                DefinedCondition::NotWellFormed,
                inner.to_string(),
            ));
        }
    }
    match err.kind() {
        io::ErrorKind::TimedOut => Some(Fatal::new(
            DefinedCondition::ConnectionTimeout,
            "no data received for too long",
        )),
        io::ErrorKind::InvalidData => {
            Some(Fatal::new(DefinedCondition::NotWellFormed, err.to_string()))
        }
        _ => None,
    }
}

/// What a failure to read the stream header means. tokio-xmpp reports header problems as
/// plain `io::Error`s whose message is the only detail, so the mapping reads the message.
pub fn classify_header_error(err: &io::Error) -> Option<Fatal> {
    let message = err.to_string();
    if message.contains("version") {
        return Some(Fatal::new(
            DefinedCondition::UnsupportedVersion,
            "this server speaks XMPP version 1.0 (RFC 6120) only",
        ));
    }
    if message.contains("unknown stream header") {
        return Some(Fatal::new(
            DefinedCondition::InvalidNamespace,
            "the stream element must be {http://etherx.jabber.org/streams}stream",
        ));
    }
    if message.contains("unexpected stream header attribute") {
        return Some(Fatal::new(DefinedCondition::BadFormat, message));
    }
    if message.contains("unexpected content before stream header") {
        return Some(Fatal::new(
            DefinedCondition::NotWellFormed,
            "data before the stream header",
        ));
    }
    classify_read_error(err)
}

/// A complete stream, opening header included, that carries only an error.
pub fn raw_error_text(domain: &str, stream_id: &str, fatal: &Fatal) -> String {
    let error = Element::from(fatal.to_stream_error());
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' from='{domain}' id='{stream_id}' \
         version='1.0'>{}</stream:stream>",
        String::from(&error)
    )
}

/// The stream error for a connection refused at the door.
pub fn refusal_error(refusal: crate::transport::admission::Refusal) -> Fatal {
    use crate::transport::admission::Refusal;
    match refusal {
        Refusal::Busy => Fatal::new(
            DefinedCondition::ResourceConstraint,
            "the server has too many connections; try again later",
        ),
        Refusal::TooManyFromAddress => Fatal::new(
            DefinedCondition::PolicyViolation,
            "too many connections from your address are still logging in; try again later",
        ),
    }
}

/// Sends a complete stream, opening header included, that carries only an error: for failures
/// found before the server could send its own header (RFC 6120 §4.9.1.3).
pub async fn send_raw_error<W: AsyncWrite + Unpin>(
    io: &mut W,
    domain: &str,
    stream_id: &str,
    fatal: &Fatal,
) {
    let text = raw_error_text(domain, stream_id, fatal);
    let write = async {
        io.write_all(text.as_bytes()).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, write).await;
}
