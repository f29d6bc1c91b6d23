//! The client's top-level elements from rxml's events, for every link: the parser is primed
//! with the client's stream header (its namespaces, prefixes and `xml:lang`), then each
//! element is built with xso as its events arrive.

use rxml::Parse;
use rxml::xml_lang::XmlLangStack;
use tokio::time::Instant;
use xmpp_parsers::stream_error::DefinedCondition;
use xso::{FromEventsBuilder, FromXml};

use super::tap::MAX_CAPTURE;
use super::{ClientElement, Fatal, Incoming};

type ElementBuilder = <Result<ClientElement, xso::error::Error> as FromXml>::Builder;

/// A parser that has read the client's stream header and waits for its first stanza.
pub struct Primed {
    parser: rxml::Parser,
    lang: XmlLangStack,
}

impl Primed {
    /// Parses `header`, the bytes of the client's last stream header as the connection read
    /// them (XML declaration included), up to the header's own start tag.
    pub fn from_header(header: &[u8]) -> Result<Self, Fatal> {
        let unusable = || {
            Fatal::new(
                DefinedCondition::PolicyViolation,
                format!("the stream header must be under {MAX_CAPTURE} bytes"),
            )
        };
        let mut parser = rxml::Parser::default();
        let mut lang = XmlLangStack::new();
        let mut rest = header;
        loop {
            match parser.parse(&mut rest, false) {
                Ok(Some(event @ rxml::Event::StartElement(..))) => {
                    lang.handle_event(&event);
                    return Ok(Self { parser, lang });
                }
                Ok(Some(_)) => continue,
                // The header was already accepted by the negotiation's parser: only a capture
                // cut short ends here.
                Ok(None) | Err(_) => return Err(unusable()),
            }
        }
    }
}

/// Turns the parser's events into the client's top-level elements.
pub struct Elements {
    lang: XmlLangStack,
    /// The stanza being read: boxed, since a connection waits between stanzas far longer than
    /// it reads them.
    pub(super) building: Option<Box<ElementBuilder>>,
    /// When the stanza being read began to arrive: one that trickles in must still end.
    pub(super) stanza_started: Option<Instant>,
}

impl Elements {
    /// The parser of the elements that follow `primed`'s stream header, and their reader.
    pub fn after(primed: Primed) -> (rxml::Parser, Self) {
        let elements = Self {
            lang: primed.lang,
            building: None,
            stanza_started: None,
        };
        (primed.parser, elements)
    }

    /// Takes one event; returns what the session must know once an element is complete (or
    /// the stream is over). `now` marks the start of a stanza, for its time limit.
    pub fn take_event(&mut self, event: rxml::Event, now: Instant) -> Option<Incoming> {
        self.lang.handle_event(&event);
        let context = xso::Context::empty().with_language(self.lang.current());
        let Some(builder) = self.building.as_mut() else {
            return match event {
                rxml::Event::StartElement(_, name, attributes) => {
                    match <Result<ClientElement, xso::error::Error>>::from_events(
                        name, attributes, &context,
                    ) {
                        Ok(builder) => {
                            self.building = Some(Box::new(builder));
                            self.stanza_started = Some(now);
                            None
                        }
                        Err(err) => Some(Incoming::Fatal(Fatal::new(
                            DefinedCondition::BadFormat,
                            err.to_string(),
                        ))),
                    }
                }
                rxml::Event::Text(_, text) if xso::is_xml_whitespace(text.as_bytes()) => None,
                rxml::Event::Text(..) => Some(Incoming::Fatal(Fatal::new(
                    DefinedCondition::BadFormat,
                    "text is not allowed between stanzas",
                ))),
                rxml::Event::EndElement(_) => Some(Incoming::Closed),
                rxml::Event::XmlDeclaration(..) => None,
            };
        };
        match builder.feed(event, &context) {
            Ok(None) => None,
            Ok(Some(built)) => {
                self.building = None;
                self.stanza_started = None;
                Some(match built {
                    Ok(element) => Incoming::Element(Box::new(element)),
                    Err(err) => {
                        Incoming::Fatal(Fatal::new(DefinedCondition::BadFormat, err.to_string()))
                    }
                })
            }
            Err(err) => {
                self.building = None;
                Some(Incoming::Fatal(Fatal::new(
                    DefinedCondition::BadFormat,
                    err.to_string(),
                )))
            }
        }
    }
}

/// Parses one element sent as a document of its own (a WebSocket message, RFC 7395 §3.3.3;
/// a child of a BOSH body): exactly one complete element, within the stanza limits.
pub fn parse_document(
    mut bytes: &[u8],
    limits: &crate::transport::XmlLimits,
) -> Result<ClientElement, Fatal> {
    use rxml::error::EndOrError;
    // The guard counts the stream element as the first level: a document's root is a stanza.
    let mut guard =
        crate::transport::guard::XmlGuard::new(limits.max_depth, limits.max_stanza_size);
    let _ = guard.scan(b"<stream>");
    if let Err((_, exceeded)) = guard.scan(bytes) {
        return Err(super::errors::limit_exceeded(exceeded));
    }
    let mut parser = rxml::Parser::default();
    let mut elements = Elements {
        lang: XmlLangStack::new(),
        building: None,
        stanza_started: None,
    };
    let mut found = None;
    let now = Instant::now();
    loop {
        match parser.parse(&mut bytes, true) {
            Ok(Some(event)) => match elements.take_event(event, now) {
                None => {}
                Some(Incoming::Element(element)) if found.is_none() => found = Some(*element),
                Some(Incoming::Fatal(fatal)) => return Err(fatal),
                Some(_) => return Err(one_element()),
            },
            Ok(None) => return found.ok_or_else(one_element),
            Err(EndOrError::NeedMoreData) => return Err(one_element()),
            Err(EndOrError::Error(err)) => {
                return Err(Fatal::new(DefinedCondition::NotWellFormed, err.to_string()));
            }
        }
    }
}

fn one_element() -> Fatal {
    Fatal::new(
        DefinedCondition::BadFormat,
        "each message must hold exactly one complete XML element (RFC 7395 §3.3.3)",
    )
}
