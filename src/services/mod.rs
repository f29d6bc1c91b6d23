//! IQs the server answers itself: on its own JID (XEP-0030 disco, XEP-0092 version, XEP-0199
//! ping, XEP-0202 time, the RFC 3921 session) and on behalf of an account's bare JID.

use minidom::Element;
use xmpp_parsers::disco::{
    DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult, Identity,
};
use xmpp_parsers::ping::Ping;
use xmpp_parsers::stanza_error::DefinedCondition;
use xmpp_parsers::time::{TimeQuery, TimeResult};
use xmpp_parsers::version::{VersionQuery, VersionResult};

use crate::ns;

/// Features the server JID advertises in disco#info.
pub const SERVER_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    "jabber:iq:search",
    "urn:causette:categories:0",
    ns::PING,
    ns::TIME,
    ns::VERSION,
];

/// Features an account's bare JID advertises in disco#info.
pub const ACCOUNT_FEATURES: &[&str] = &[ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING];

/// An IQ answer: the result payload (possibly none), or why not.
pub type Answer = Result<Option<Element>, Failure>;

/// Why an IQ fails: a condition with its text, or a policy denial (texts in English and
/// French).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Plain(DefinedCondition, &'static str),
    Denied(crate::policy::Reason),
}

impl From<(DefinedCondition, &'static str)> for Failure {
    fn from((condition, text): (DefinedCondition, &'static str)) -> Self {
        Failure::Plain(condition, text)
    }
}

impl From<crate::policy::Reason> for Failure {
    fn from(reason: crate::policy::Reason) -> Self {
        Failure::Denied(reason)
    }
}

const UNSUPPORTED: (DefinedCondition, &str) = (
    DefinedCondition::ServiceUnavailable,
    "this request is not supported here",
);
const NO_SUCH_NODE: (DefinedCondition, &str) =
    (DefinedCondition::ItemNotFound, "no such disco node");

/// A get or set addressed to the server's JID (RFC 6120 §8.4: unknown payloads get
/// `service-unavailable`).
pub fn server_iq(is_get: bool, payload: &Element) -> Answer {
    if !is_get {
        if payload.is("session", ns::SESSION) {
            // RFC 6121 Appendix E: a no-op kept for clients that still send it.
            return Ok(None);
        }
        return Err(UNSUPPORTED.into());
    }
    if payload.is("query", ns::DISCO_INFO) {
        return disco_info(payload, "server", "im", SERVER_FEATURES);
    }
    if payload.is("query", ns::DISCO_ITEMS) {
        return disco_items(payload);
    }
    if VersionQuery::try_from(payload.clone()).is_ok() {
        return Ok(Some(
            VersionResult {
                name: "Causette".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                // The operating system is left out: it helps attackers more than users.
                os: None,
            }
            .into(),
        ));
    }
    if TimeQuery::try_from(payload.clone()).is_ok() {
        let utc = chrono::Utc::now();
        let tz_offset = chrono::FixedOffset::east_opt(0).expect("zero offset is valid");
        return Ok(Some(TimeResult { tz_offset, utc }.into()));
    }
    if Ping::try_from(payload.clone()).is_ok() {
        return Ok(None);
    }
    Err(UNSUPPORTED.into())
}

/// A get or set addressed to an existing account's bare JID, answered by the server on its
/// behalf (RFC 6121 §8.5.2.1.3).
pub fn account_iq(is_get: bool, payload: &Element) -> Answer {
    if !is_get {
        return Err(UNSUPPORTED.into());
    }
    if payload.is("query", ns::DISCO_INFO) {
        return disco_info(payload, "account", "registered", ACCOUNT_FEATURES);
    }
    if payload.is("query", ns::DISCO_ITEMS) {
        return disco_items(payload);
    }
    if Ping::try_from(payload.clone()).is_ok() {
        return Ok(None);
    }
    Err(UNSUPPORTED.into())
}

fn disco_info(payload: &Element, category: &str, type_: &str, features: &[&str]) -> Answer {
    let query = DiscoInfoQuery::try_from(payload.clone())
        .map_err(|_| (DefinedCondition::BadRequest, "malformed disco#info query"))?;
    if query.node.is_some() {
        return Err(NO_SUCH_NODE.into());
    }
    Ok(Some(
        DiscoInfoResult {
            node: None,
            identities: vec![Identity::new(category, type_, "en", "Causette")],
            features: features.iter().map(|f| f.to_string()).collect(),
            extensions: Vec::new(),
        }
        .into(),
    ))
}

fn disco_items(payload: &Element) -> Answer {
    let query = DiscoItemsQuery::try_from(payload.clone())
        .map_err(|_| (DefinedCondition::BadRequest, "malformed disco#items query"))?;
    if query.node.is_some() {
        return Err(NO_SUCH_NODE.into());
    }
    Ok(Some(
        DiscoItemsResult {
            node: None,
            items: Vec::new(),
            rsm: None,
        }
        .into(),
    ))
}
