//! What the web links share: a stream framed element by element (RFC 7395's `<open/>` and
//! `<close/>`; BOSH bodies, whose session creation and restarts stand for `<open/>`), and the
//! negotiation driven over it with the TCP path's `Negotiator`.

use std::future::Future;
use std::io;

use xmpp_parsers::stream_error::DefinedCondition;
use xso::AsXml;

use super::negotiation::{Negotiator, Outgoing, Step, new_stream_id};
use super::{ClientElement, Fatal, Incoming, Link};
use crate::Shared;

/// The framing namespace of RFC 7395 (BOSH's restarts are handed over in it too).
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// A link whose stream opens with an element rather than a header.
pub(crate) trait FramedLink: Link {
    /// Our answer to the client's `<open/>`, before the features.
    fn open(
        &mut self,
        shared: &Shared,
        stream_id: &str,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

async fn send(link: &mut impl Link, element: &(impl AsXml + Sync)) -> io::Result<()> {
    link.feed(element).await?;
    link.flush().await
}

/// Negotiates the stream up to a bound resource; closes the link when it ends otherwise.
pub(crate) async fn negotiate<L: FramedLink>(
    link: &mut L,
    mut negotiator: Negotiator,
    shared: &Shared,
) -> Option<crate::session::Bound> {
    let mut awaiting_open = true;
    loop {
        let incoming = tokio::select! {
            incoming = tokio::time::timeout_at(negotiator.deadline(), link.next_element()) => {
                incoming.unwrap_or_else(|_| Incoming::Fatal(Fatal::new(
                    DefinedCondition::ConnectionTimeout,
                    "stream negotiation took too long",
                )))
            }
            _ = shared.shutdown.cancelled() => Incoming::Fatal(super::shutting_down()),
        };
        let element = match incoming {
            Incoming::Element(element) => *element,
            Incoming::Idle => continue,
            Incoming::Closed | Incoming::Lost => {
                link.close(None).await;
                return None;
            }
            Incoming::Fatal(fatal) => {
                if awaiting_open {
                    let _ = link.open(shared, &new_stream_id()).await;
                }
                link.close(Some(&fatal)).await;
                return None;
            }
        };
        if awaiting_open {
            let opened = match framing(&element) {
                Some(Framing::Open { to, version }) => {
                    if version.as_deref() != Some("1.0") {
                        Err(Fatal::new(
                            DefinedCondition::UnsupportedVersion,
                            "this server speaks XMPP version 1.0 (RFC 6120) only",
                        ))
                    } else {
                        negotiator.opened(shared, to.as_deref())
                    }
                }
                _ => Err(Fatal::new(
                    DefinedCondition::InvalidNamespace,
                    "open the stream first, with <open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/> (RFC 7395 §3.4)",
                )),
            };
            if link.open(shared, &new_stream_id()).await.is_err() {
                return None;
            }
            match opened {
                Ok(features) => {
                    if send(link, &features).await.is_err() {
                        return None;
                    }
                    awaiting_open = false;
                }
                Err(fatal) => {
                    link.close(Some(&fatal)).await;
                    return None;
                }
            }
            continue;
        }
        match framing(&element) {
            Some(Framing::Close) => {
                link.close(None).await;
                return None;
            }
            Some(Framing::Open { .. }) => {
                let fatal = Fatal::new(
                    DefinedCondition::BadFormat,
                    "the stream is already open: <open/> comes first, and again only after SASL success",
                );
                link.close(Some(&fatal)).await;
                return None;
            }
            None => {}
        }
        match negotiator.element(shared, element).await {
            Step::Reply(outgoing) => {
                if send_outgoing(link, &outgoing).await.is_err() {
                    return None;
                }
            }
            Step::StartTls => {
                // Never offered on this link (`Security::starttls` is off).
                let fatal = Fatal::new(
                    DefinedCondition::UnsupportedFeature,
                    "STARTTLS is not available over WebSocket: use wss:// (RFC 7395 §3.6)",
                );
                link.close(Some(&fatal)).await;
                return None;
            }
            Step::Authenticated(success) => {
                if send(link, &xmpp_parsers::sasl::Nonza::Success(success))
                    .await
                    .is_err()
                {
                    return None;
                }
                awaiting_open = true;
            }
            Step::Bound(bound) => {
                let (result, bound) = *bound;
                if send(link, &result).await.is_err() {
                    bound.abandon(shared).await;
                    return None;
                }
                return Some(bound);
            }
            Step::Close(before, fatal) => {
                if let Some(before) = before {
                    let _ = send_outgoing(link, &before).await;
                }
                link.close(Some(&fatal)).await;
                return None;
            }
        }
    }
}

async fn send_outgoing(link: &mut impl Link, outgoing: &Outgoing) -> io::Result<()> {
    match outgoing {
        Outgoing::Sasl(nonza) => send(link, nonza).await,
        Outgoing::Iq(iq) => send(link, &**iq).await,
    }
}

/// The framing elements of RFC 7395.
enum Framing {
    Open {
        to: Option<String>,
        version: Option<String>,
    },
    Close,
}

fn framing(element: &ClientElement) -> Option<Framing> {
    let ClientElement::Unknown(element) = element else {
        return None;
    };
    if element.ns() != FRAMING {
        return None;
    }
    match element.name() {
        "open" => Some(Framing::Open {
            to: element.attr("to").map(str::to_owned),
            version: element.attr("version").map(str::to_owned),
        }),
        "close" => Some(Framing::Close),
        _ => None,
    }
}
