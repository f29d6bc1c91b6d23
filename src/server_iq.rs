//! IQs the server answers itself: on its own JID (XEP-0030 disco, XEP-0092 version, XEP-0199
//! ping, XEP-0202 time, the RFC 3921 session, the directory search and categories) through a
//! table by payload, and on behalf of an account's bare JID.

use futures::future::BoxFuture;
use jid::BareJid;
use minidom::Element;
use xmpp_parsers::disco::{
    DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult, Identity,
};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::ping::Ping;
use xmpp_parsers::stanza_error::DefinedCondition;
use xmpp_parsers::time::TimeResult;
use xmpp_parsers::version::VersionResult;

use crate::im;
use crate::im::Context;
use crate::ns;
use crate::reply::{Answer, reply_iq};
use crate::router::Sender;

/// What answers one kind of IQ to the server: `(context, sender, is_get, payload)`.
type Handler =
    for<'a> fn(&'a Context<'a>, &'a Sender<'a>, bool, &'a Element) -> BoxFuture<'a, Answer>;

/// The server's IQs by payload (element name, namespace). A new service adds a line here and
/// its feature to `SERVER_FEATURES`.
const HANDLERS: &[(&str, &str, Handler)] = &[
    ("query", ns::DISCO_INFO, |_, _, is_get, payload| {
        Box::pin(async move {
            get_only(is_get, || {
                disco_info(payload, "server", "im", SERVER_FEATURES)
            })
        })
    }),
    ("query", ns::DISCO_ITEMS, |cx, _, is_get, payload| {
        Box::pin(async move { get_only(is_get, || server_items(cx, payload)) })
    }),
    ("query", ns::VERSION, |_, _, is_get, _| {
        Box::pin(async move { get_only(is_get, version) })
    }),
    ("time", ns::TIME, |_, _, is_get, _| {
        Box::pin(async move { get_only(is_get, time) })
    }),
    ("ping", ns::PING, |_, _, is_get, _| {
        Box::pin(async move { get_only(is_get, || Ok(None)) })
    }),
    // RFC 6121 Appendix E: a no-op kept for clients that still send it.
    ("session", ns::SESSION, |_, _, is_get, _| {
        Box::pin(async move {
            if is_get {
                Err(UNSUPPORTED.into())
            } else {
                Ok(None)
            }
        })
    }),
    ("query", im::search::NS, |cx, sender, is_get, payload| {
        Box::pin(im::search::handle_iq(cx, sender, is_get, payload))
    }),
    (
        "query",
        im::categories::NS,
        |cx, sender, is_get, payload| {
            Box::pin(async move {
                if !is_get
                    && !cx
                        .writes
                        .try_spend(im::roster::local(&sender.jid.to_bare()))
                {
                    return Err(im::TOO_MANY_CHANGES.into());
                }
                im::categories::handle_iq(cx, sender, is_get, payload).await
            })
        },
    ),
];

/// The IQs a user sends to its own bare JID, by payload.
const OWN_ACCOUNT: &[(&str, &str, Handler)] = &[
    ("query", ns::ROSTER, |cx, sender, is_get, payload| {
        Box::pin(im::roster_iq::handle_iq(cx, sender, is_get, payload))
    }),
    (
        "query",
        im::categories::NS,
        |cx, sender, is_get, payload| {
            Box::pin(im::categories::handle_iq(cx, sender, is_get, payload))
        },
    ),
    (
        "query",
        im::search::DIRECTORY_NS,
        |cx, sender, is_get, payload| {
            Box::pin(im::search::directory_iq(cx, sender, is_get, payload))
        },
    ),
    // RFC 6121 Appendix E.
    ("session", ns::SESSION, |_, _, _, _| {
        Box::pin(async { Ok(None) })
    }),
];

/// RFC 6121 §8.5.2.1.3: an IQ to a bare JID is answered by the server on the account's behalf.
pub async fn on_account(cx: &Context<'_>, sender: &Sender<'_>, to: &BareJid, iq: Iq) {
    let (is_get, payload) = match &iq {
        Iq::Get { payload, .. } => (true, payload),
        Iq::Set { payload, .. } => (false, payload),
        Iq::Result { .. } | Iq::Error { .. } => return,
    };
    let own = *to == sender.jid.to_bare();
    // The session IQ changes nothing; every other set on one's own account may write.
    let writes = own && !is_get && !payload.is("session", crate::ns::SESSION);
    let answer = if !own {
        // Another account: the gate let through only a contact who sees its presence.
        account_iq(is_get, payload)
    } else if writes && !cx.writes.try_spend(im::roster::local(to)) {
        Err(im::TOO_MANY_CHANGES.into())
    } else {
        match OWN_ACCOUNT
            .iter()
            .find(|(name, namespace, _)| payload.is(*name, *namespace))
        {
            Some((_, _, handler)) => handler(cx, sender, is_get, payload).await,
            None => account_iq(is_get, payload),
        }
    };
    reply_iq(sender, &iq, answer);
}

/// A get or set addressed to the server's JID (RFC 6120 §8.4: unknown payloads get
/// `service-unavailable`).
pub async fn handle(
    cx: &Context<'_>,
    sender: &Sender<'_>,
    is_get: bool,
    payload: &Element,
) -> Answer {
    match HANDLERS
        .iter()
        .find(|(name, namespace, _)| payload.is(*name, *namespace))
    {
        Some((_, _, handler)) => handler(cx, sender, is_get, payload).await,
        None => Err(UNSUPPORTED.into()),
    }
}

fn get_only(is_get: bool, answer: impl FnOnce() -> Answer) -> Answer {
    if is_get {
        answer()
    } else {
        Err(UNSUPPORTED.into())
    }
}

fn version() -> Answer {
    Ok(Some(
        VersionResult {
            name: "Causette".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The operating system is left out: it helps attackers more than users.
            os: None,
        }
        .into(),
    ))
}

fn time() -> Answer {
    let utc = chrono::Utc::now();
    let tz_offset = chrono::FixedOffset::east_opt(0).expect("zero offset is valid");
    Ok(Some(TimeResult { tz_offset, utc }.into()))
}

/// The server's disco#items: its components (rooms, uploads).
fn server_items(cx: &Context<'_>, payload: &Element) -> Answer {
    let query = DiscoItemsQuery::try_from(payload.clone())
        .map_err(|_| (DefinedCondition::BadRequest, "malformed disco#items query"))?;
    if query.node.is_some() {
        return Err(NO_SUCH_NODE.into());
    }
    let items = cx
        .router
        .components()
        .into_iter()
        .map(|(domain, name)| xmpp_parsers::disco::Item {
            jid: jid::Jid::from(jid::BareJid::from_parts(None, &domain)),
            node: None,
            name: Some(name),
        })
        .collect();
    Ok(Some(
        DiscoItemsResult {
            node: None,
            items,
            rsm: None,
        }
        .into(),
    ))
}

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

const UNSUPPORTED: (DefinedCondition, &str) = (
    DefinedCondition::ServiceUnavailable,
    "this request is not supported here",
);
const NO_SUCH_NODE: (DefinedCondition, &str) =
    (DefinedCondition::ItemNotFound, "no such disco node");

/// A get or set addressed to an existing account's bare JID, answered by the server on its
/// behalf (RFC 6121 §8.5.2.1.3).
fn account_iq(is_get: bool, payload: &Element) -> Answer {
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
