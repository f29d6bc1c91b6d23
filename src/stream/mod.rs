//! XMPP streams (RFC 6120): what a link is, stream negotiation as a state machine
//! (`negotiation`), the elements a client sends (`elements`), and the TCP link (`tcp`,
//! `tcp_link`). Web links plug in beside `tcp`: see docs/architecture.md.

pub(crate) mod elements;
mod errors;
mod features;
pub(crate) mod negotiation;
mod tap;
pub(crate) mod tcp;
mod tcp_link;

use std::future::Future;
use std::io;

use minidom::Element;
use tokio_xmpp::xmlstream::{FallibleStreamElement, StreamElementError};
use xmpp_parsers::stream_error::DefinedCondition;
use xso::{AsXml, FromXml};

pub use errors::{Fatal, raw_error_text, refusal_error};

/// A bound session's connection to its client, whatever carries it: the session reads the
/// client's elements from it and writes stanzas to it, and owns it for its whole life.
///
/// A trait rather than an enum: each link lives in its own module (TCP here, WebSocket and
/// BOSH beside it) and the session is compiled for each, so that the TCP path pays no
/// dispatch and an idle TCP session keeps no room for another link's state.
pub trait Link: Send + 'static {
    /// The next element from the client, or why there is none. Cancel-safe: what was read
    /// of an element stays in the link.
    fn next_element(&mut self) -> impl Future<Output = Incoming> + Send + '_;

    /// Queues `element` for the next flush; a link may write some out before.
    fn feed(
        &mut self,
        element: &(impl AsXml + Sync),
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Writes out what was fed.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// Closes the stream, with a stream error (RFC 6120 §4.9.1.1) or cleanly (answering the
    /// client's close or ending ours). Bounded in time: a peer that reads nothing cannot hold
    /// the session.
    fn close(&mut self, error: Option<&Fatal>) -> impl Future<Output = ()> + Send;

    fn send(
        &mut self,
        element: &(impl AsXml + Sync),
    ) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            self.feed(element).await?;
            self.flush().await
        }
    }
}

pub const SHUTTING_DOWN: &str = "the server is shutting down";

pub fn shutting_down() -> Fatal {
    Fatal::new(DefinedCondition::SystemShutdown, SHUTTING_DOWN)
}

/// What the client may send at the top level of its stream. Unknown elements are kept so that
/// they get the precise stream error (RFC 6120 §4.9.3).
#[derive(FromXml, Debug)]
#[xml()]
#[allow(
    clippy::large_enum_variant,
    reason = "moved once per stanza; boxing would allocate per stanza"
)]
pub enum ClientElement {
    #[xml(transparent)]
    Known(FallibleStreamElement),
    #[xml(transparent)]
    Unknown(Element),
}

/// The next element, or the reason to stop.
pub enum Incoming {
    /// Boxed: a session keeps room for this value in its idle state (it is alive while the
    /// stanza is handled), and an element is 400 bytes.
    Element(Box<ClientElement>),
    /// The client closed its stream, or the connection is gone.
    Closed,
    Fatal(Fatal),
    /// No data for the read timeout: the caller may ping.
    Idle,
}

/// Stream error for an element the stream does not accept where it stands.
pub fn unexpected(element: &ClientElement) -> Fatal {
    let wrong_namespace = || {
        Fatal::new(
            DefinedCondition::InvalidNamespace,
            "stanzas must be in the jabber:client namespace",
        )
    };
    match element {
        ClientElement::Unknown(el) if matches!(el.name(), "message" | "presence" | "iq") => {
            wrong_namespace()
        }
        ClientElement::Known(FallibleStreamElement::Err(StreamElementError::InvalidStanza {
            ns,
            ..
        })) if ns.as_str() != xmpp_parsers::ns::JABBER_CLIENT => wrong_namespace(),
        ClientElement::Unknown(el) => Fatal::new(
            DefinedCondition::UnsupportedStanzaType,
            format!("unsupported element {{{}}}{}", el.ns(), el.name()),
        ),
        _ => Fatal::new(
            DefinedCondition::UnsupportedStanzaType,
            "this element is not allowed at this point of the stream",
        ),
    }
}

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
