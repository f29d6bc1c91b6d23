//! The `<body/>` of BOSH (XEP-0124 §4, XEP-0206): what a request carries, parsed with xso
//! (xmpp-parsers has no BOSH type), and the bodies the server answers with.

use xso::FromXml;

use crate::link::ClientElement;

pub const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
pub const XBOSH: &str = "urn:xmpp:xbosh";

/// A request's body: the binding's attributes and the stanzas it carries.
#[derive(FromXml, Debug)]
#[xml(namespace = HTTPBIND, name = "body", on_unknown_attribute = Discard)]
pub struct RequestBody {
    #[xml(attribute(default))]
    pub rid: Option<u64>,
    #[xml(attribute(default))]
    pub sid: Option<String>,
    #[xml(attribute(default))]
    pub to: Option<String>,
    #[xml(attribute(default))]
    pub wait: Option<u64>,
    #[xml(attribute(default))]
    pub hold: Option<u32>,
    #[xml(attribute(name = "type", default))]
    pub kind: Option<String>,
    #[xml(attribute(namespace = XBOSH, name = "restart", default))]
    pub restart: Option<String>,
    #[xml(child(n = ..))]
    pub payload: Vec<ClientElement>,
}

impl RequestBody {
    pub fn terminates(&self) -> bool {
        self.kind.as_deref() == Some("terminate")
    }

    pub fn restarts(&self) -> bool {
        matches!(self.restart.as_deref(), Some("true" | "1"))
    }
}

/// Escapes an attribute value written between single quotes.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    out
}

/// A response body with `attributes` (each with its leading space) around `payload`.
pub fn response(attributes: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + attributes.len() + 64);
    body.extend_from_slice(b"<body xmlns='");
    body.extend_from_slice(HTTPBIND.as_bytes());
    body.push(b'\'');
    body.extend_from_slice(attributes.as_bytes());
    if payload.is_empty() {
        body.extend_from_slice(b"/>");
    } else {
        body.push(b'>');
        body.extend_from_slice(payload);
        body.extend_from_slice(b"</body>");
    }
    body
}

/// A terminal binding condition (XEP-0124 §17), with what went wrong in words.
pub fn terminate(condition: &str, text: &str, payload: &[u8]) -> Vec<u8> {
    let mut inner = payload.to_vec();
    if !text.is_empty() {
        inner.extend_from_slice(
            format!(
                "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>{}</text>",
                escape(text)
            )
            .as_bytes(),
        );
    }
    let attributes = if condition.is_empty() {
        " type='terminate'".to_owned()
    } else {
        format!(" type='terminate' condition='{condition}'")
    };
    response(&attributes, &inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_with_stanzas() {
        let body: RequestBody = xso::from_bytes(
            b"<body xmlns='http://jabber.org/protocol/httpbind' rid='42' sid='abc' \
              xmlns:xmpp='urn:xmpp:xbosh' xmpp:restart='true' content='text/xml'>\
              <message xmlns='jabber:client' to='a@localhost'><body>hi</body></message> \
              <presence xmlns='jabber:client'/></body>",
        )
        .unwrap();
        assert_eq!(body.rid, Some(42));
        assert_eq!(body.sid.as_deref(), Some("abc"));
        assert!(body.restarts() && !body.terminates());
        assert_eq!(body.payload.len(), 2);
    }

    #[test]
    fn builds_responses() {
        assert_eq!(
            String::from_utf8(response(" sid='x'", b"")).unwrap(),
            "<body xmlns='http://jabber.org/protocol/httpbind' sid='x'/>"
        );
        let end = String::from_utf8(terminate("item-not-found", "no <such> session", b"")).unwrap();
        assert!(
            end.contains("condition='item-not-found'") && end.contains("no &lt;such&gt;"),
            "{end}"
        );
    }
}
