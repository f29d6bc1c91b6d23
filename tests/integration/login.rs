//! A real client library (tokio-xmpp) logs in over STARTTLS with SCRAM and chats.

use tokio_xmpp::Stanza;
use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

use crate::common::{TestServer, next_stanza, xmpp_client};

/// The next presence of a type, skipping other presences (subscription notices, broadcasts).
async fn next_presence(client: &mut tokio_xmpp::Client, type_: PresenceType) -> Presence {
    loop {
        if let Stanza::Presence(p) = next_stanza(client).await
            && p.type_ == type_
        {
            return p;
        }
    }
}

/// The next message or IQ, skipping presence.
async fn next_non_presence(client: &mut tokio_xmpp::Client) -> Stanza {
    loop {
        match next_stanza(client).await {
            Stanza::Presence(_) => continue,
            other => return other,
        }
    }
}

/// Two users log in with tokio-xmpp and exchange messages, to a full and to a bare JID.
pub async fn login_and_chat(server: &TestServer, alice: &str, bob: &str, channel_binding: bool) {
    server.add_user(alice, "alice's secret").await;
    server.add_user(bob, "bob's secret").await;
    let (mut a, a_jid) = xmpp_client(
        server,
        &format!("{alice}@localhost"),
        "alice's secret",
        channel_binding,
    )
    .await;
    let (mut b, b_jid) = xmpp_client(
        server,
        &format!("{bob}@localhost"),
        "bob's secret",
        channel_binding,
    )
    .await;
    assert_eq!(a_jid.node().unwrap().as_str(), alice);

    // Both become available; each sees its own presence back (RFC 6121 §4.2.2).
    for (client, jid) in [(&mut a, &a_jid), (&mut b, &b_jid)] {
        client
            .send_stanza(Presence::available().into())
            .await
            .unwrap();
        match next_stanza(client).await {
            Stanza::Presence(p) => assert_eq!(p.from.as_ref(), Some(jid)),
            other => panic!("expected own presence back, got {other:?}"),
        }
    }

    // Alice adds Bob; Bob accepts: with mutual acceptance both see each other.
    let bob_bare = Jid::from(b_jid.to_bare());
    let alice_bare = Jid::from(a_jid.to_bare());
    a.send_stanza(Presence::subscribe().with_to(bob_bare.clone()).into())
        .await
        .unwrap();
    let request = next_presence(&mut b, PresenceType::Subscribe).await;
    assert_eq!(request.from.as_ref(), Some(&alice_bare));
    b.send_stanza(Presence::subscribed().with_to(alice_bare.clone()).into())
        .await
        .unwrap();
    let approved = next_presence(&mut a, PresenceType::Subscribed).await;
    assert_eq!(approved.from.as_ref(), Some(&bob_bare));
    let seen = next_presence(&mut a, PresenceType::None).await;
    assert_eq!(
        seen.from.as_ref(),
        Some(&b_jid),
        "Alice sees Bob's presence"
    );
    let seen = next_presence(&mut b, PresenceType::None).await;
    assert_eq!(
        seen.from.as_ref(),
        Some(&a_jid),
        "Bob sees Alice's presence"
    );

    let to_full = Message::chat(Some(b_jid.clone())).with_body(Lang::new(), "bonjour Bob".into());
    a.send_stanza(to_full.into()).await.unwrap();
    let to_bare =
        Message::chat(Some(Jid::from(b_jid.to_bare()))).with_body(Lang::new(), "tu es là ?".into());
    a.send_stanza(to_bare.into()).await.unwrap();

    for expected in ["bonjour Bob", "tu es là ?"] {
        match next_non_presence(&mut b).await {
            Stanza::Message(m) => {
                assert_eq!(m.type_, MessageType::Chat);
                assert_eq!(
                    m.from.as_ref(),
                    Some(&a_jid),
                    "from is stamped with the full JID"
                );
                assert_eq!(m.bodies.get("").map(String::as_str), Some(expected));
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    // And back.
    let reply = Message::chat(Some(a_jid.clone())).with_body(Lang::new(), "oui".into());
    b.send_stanza(reply.into()).await.unwrap();
    match next_non_presence(&mut a).await {
        Stanza::Message(m) => assert_eq!(m.from.as_ref(), Some(&b_jid)),
        other => panic!("expected a message, got {other:?}"),
    }
    a.send_end().await.unwrap();
    b.send_end().await.unwrap();
}

#[tokio::test]
async fn scram_sha256_over_starttls_and_chat_on_sqlite() {
    let server = TestServer::start().await;
    login_and_chat(&server, "alice", "bob", false).await;
    server.stop().await;
}

#[tokio::test]
async fn scram_sha256_plus_with_tls_exporter() {
    let server = TestServer::start().await;
    login_and_chat(&server, "carol", "dave", true).await;
    server.stop().await;
}
