//! What a bound session needs of its connection, whatever carries it: the `Link` it reads
//! elements from and writes stanzas to, the elements a client sends, and the stream errors
//! that end a stream. Below the session and the links alike, so that neither imports the
//! other.

use std::future::Future;
use std::io;

use minidom::Element;
use tokio_xmpp::xmlstream::{FallibleStreamElement, StreamElementError};
use xmpp_parsers::stream_error::{DefinedCondition, StreamError};
use xso::{AsXml, FromXml};

/// A stream error to send before closing.
#[derive(Debug, Clone)]
pub struct Fatal {
    pub condition: DefinedCondition,
    pub text: String,
    pub french: Option<&'static str>,
}

impl Fatal {
    pub fn new(condition: DefinedCondition, text: impl Into<String>) -> Self {
        Self {
            condition,
            text: text.into(),
            french: None,
        }
    }

    pub fn with_french(mut self, text: &'static str) -> Self {
        self.french = Some(text);
        self
    }

    pub fn to_stream_error(&self) -> StreamError {
        let mut texts = std::collections::BTreeMap::new();
        texts.insert("en".into(), self.text.clone());
        if let Some(french) = self.french {
            texts.insert("fr".into(), french.to_owned());
        }
        StreamError {
            condition: self.condition.clone(),
            texts,
            application_specific: Vec::new(),
        }
    }
}

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
