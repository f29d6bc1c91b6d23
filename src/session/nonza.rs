//! Top-level elements that are not stanzas, after binding: stream management (XEP-0198) and
//! client state indication (XEP-0352) reach their handler here, by namespace, instead of a
//! stream error. Anything else is `unsupported-stanza-type` (RFC 6120 §4.9.3.22).

use minidom::Element;
use xmpp_parsers::stream_error::DefinedCondition;

use super::Bound;
use crate::link::Fatal;

const SM: &str = "urn:xmpp:sm:3";
const CSI: &str = "urn:xmpp:csi:0";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// What answers the elements of one namespace: the elements to send back, or the error that
/// ends the stream.
type Handler = fn(&mut Bound, &Element) -> Result<Vec<Element>, Fatal>;

/// By namespace. Stream management, when it comes, replaces the line of `SM`.
const HANDLERS: &[(&str, Handler)] = &[(SM, stream_management), (CSI, client_state)];

pub fn dispatch(bound: &mut Bound, element: &Element) -> Result<Vec<Element>, Fatal> {
    match HANDLERS.iter().find(|(ns, _)| element.ns() == *ns) {
        Some((_, handler)) => handler(bound, element),
        None => Err(unsupported(element)),
    }
}

fn unsupported(element: &Element) -> Fatal {
    Fatal::new(
        DefinedCondition::UnsupportedStanzaType,
        format!("unsupported element {{{}}}{}", element.ns(), element.name()),
    )
}

/// XEP-0198 is not offered yet: `<enable/>` is refused with `<failed/>` (§4), and acks of a
/// stream where it was never enabled are an error.
fn stream_management(_: &mut Bound, element: &Element) -> Result<Vec<Element>, Fatal> {
    match element.name() {
        "enable" => Ok(vec![
            Element::builder("failed", SM)
                .append(Element::builder("feature-not-implemented", STANZAS).build())
                .build(),
        ]),
        "r" | "a" => Err(Fatal::new(
            DefinedCondition::UnsupportedStanzaType,
            "stream management is not enabled on this stream",
        )),
        _ => Err(unsupported(element)),
    }
}

/// XEP-0352 is not offered yet: a client that says whether its user is looking at it anyway
/// keeps its session (no answer is due either way), and the hint changes nothing.
fn client_state(_: &mut Bound, element: &Element) -> Result<Vec<Element>, Fatal> {
    match element.name() {
        "active" | "inactive" => Ok(Vec::new()),
        _ => Err(unsupported(element)),
    }
}
