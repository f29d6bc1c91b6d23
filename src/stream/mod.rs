//! XMPP streams (RFC 6120): what a link is, stream negotiation as a state machine
//! (`negotiation`), the elements a client sends (`elements`), and the TCP link (`tcp`,
//! `tcp_link`). Web links plug in beside `tcp`: see docs/architecture.md.

pub(crate) mod bosh;
pub(crate) mod elements;
mod errors;
mod features;
mod framed;
pub(crate) mod negotiation;
mod tap;
pub(crate) mod tcp;
mod tcp_link;
pub(crate) mod websocket;

pub(crate) use crate::link::{ClientElement, Fatal, Incoming, Link, shutting_down, unexpected};
pub use errors::{raw_error_text, refusal_error};

/// Reads a client's negotiation from `bytes` as a connection would (without TLS or SASL
/// checks): every element goes through what negotiation computes of it.
#[cfg(feature = "fuzzing")]
pub async fn fuzz_negotiation(bytes: &[u8]) {
    use futures::StreamExt;
    use std::borrow::Cow;
    use tokio_xmpp::xmlstream::{ReadError, StreamHeader, Timeouts, accept_stream};
    let io = tokio::io::join(bytes, tokio::io::sink());
    let timeouts = Timeouts {
        read_timeout: std::time::Duration::from_secs(3600),
        response_timeout: std::time::Duration::from_secs(3600),
    };
    let accepted = match accept_stream(io, xmpp_parsers::ns::JABBER_CLIENT, timeouts).await {
        Ok(accepted) => accepted,
        Err(err) => {
            let _ = errors::classify_header_error(&err);
            return;
        }
    };
    let Ok(pending) = accepted
        .send_header(StreamHeader {
            from: Some(Cow::Borrowed("localhost")),
            to: None,
            id: Some(Cow::Borrowed("fuzz")),
        })
        .await
    else {
        return;
    };
    let Ok(mut xml) = pending
        .send_features::<ClientElement>(&xmpp_parsers::stream_features::StreamFeatures::default())
        .await
    else {
        return;
    };
    while let Some(read) = xml.next().await {
        let element = match read {
            Ok(element) => element,
            Err(ReadError::HardError(err)) => {
                let _ = errors::classify_read_error(&err);
                return;
            }
            Err(_) => return,
        };
        let _ = unexpected(&element);
        negotiation::fuzz_element(element);
    }
}
