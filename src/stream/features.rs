//! Stream features (RFC 6120 §4.3.2), written as our own element.
//!
//! tokio-xmpp's `send_features` only takes xmpp-parsers' `StreamFeatures`, which always writes
//! a `<mechanisms/>` child (empty after authentication) and sorts mechanisms alphabetically,
//! which would advertise PLAIN as the preferred one (RFC 6120 §6.3.3 reads order as
//! preference). So the typed features are written with the connection muted, which yields the
//! XML stream in the same state, and then our element is sent through the stream's own writer.

use std::io;
use std::sync::atomic::Ordering;

use futures::SinkExt;
use minidom::Element;
use tokio_xmpp::xmlstream::{PendingFeaturesSend, XmlStream};
use xmpp_parsers::stream_features::StreamFeatures;

use super::ClientElement;
use super::tap::Tap;
use crate::auth::CHANNEL_BINDING_TYPE;
use crate::ns;

pub async fn send<'a>(
    pending: PendingFeaturesSend<&'a mut Tap>,
    mute: &std::sync::atomic::AtomicBool,
    features: &Element,
) -> io::Result<XmlStream<&'a mut Tap, ClientElement>> {
    mute.store(true, Ordering::Relaxed);
    // send_features flushes before returning, so every muted byte is the placeholder's.
    let placeholder = pending.send_features(&StreamFeatures::default()).await;
    mute.store(false, Ordering::Relaxed);
    let mut xml = placeholder?;
    xml.send(features).await?;
    Ok(xml)
}

fn element(name: &str, namespace: &str) -> minidom::ElementBuilder {
    Element::builder(name, namespace)
}

/// Before TLS, when the client must negotiate it (RFC 6120 §5.3.1).
pub fn starttls(required: bool) -> Element {
    let mut starttls = element("starttls", ns::TLS);
    if required {
        starttls = starttls.append(element("required", ns::TLS).build());
    }
    starttls.build()
}

pub fn mechanisms(names: &[&str], channel_binding: bool) -> Vec<Element> {
    let mut list = vec![
        element("mechanisms", ns::SASL)
            .append_all(
                names
                    .iter()
                    .map(|n| element("mechanism", ns::SASL).append(*n).build()),
            )
            .build(),
    ];
    if channel_binding {
        // XEP-0440: which channel-binding types the -PLUS mechanisms accept.
        list.push(
            element("sasl-channel-binding", ns::SASL_CB)
                .append(
                    element("channel-binding", ns::SASL_CB)
                        .attr(ns::name("type"), CHANNEL_BINDING_TYPE)
                        .build(),
                )
                .build(),
        );
    }
    list
}

/// After authentication: resource binding, the RFC 3921 session kept for old clients, and the
/// roster features of RFC 6121 (versioning, pre-approval).
pub fn bind() -> Vec<Element> {
    vec![
        element("bind", ns::BIND).build(),
        element("ver", ns::ROSTER_VERSIONING).build(),
        element("sub", ns::PRE_APPROVAL).build(),
        element("session", ns::SESSION)
            .append(element("optional", ns::SESSION).build())
            .build(),
    ]
}

pub fn wrap(children: impl IntoIterator<Item = Element>) -> Element {
    element("features", ns::STREAM).append_all(children).build()
}
