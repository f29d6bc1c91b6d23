//! Raw-XML tests for stream edge cases (RFC 6120): each sends exactly the bytes a broken or
//! hostile client would, and checks the standard error comes back.

use crate::common::{HEADER, Raw, TestServer};

const STREAMS_NS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

fn plaintext(c: &mut causette::Config) {
    c.tls.allow_plaintext_on_loopback = true;
}

/// Plaintext, and messages between any users as fast as the test sends them: for RFC 6121
/// delivery rules alone.
fn open_chat(c: &mut causette::Config) {
    plaintext(c);
    c.im.chat_requires_acceptance = false;
    c.limits.max_inbound_bytes_per_sec = 100_000_000;
    c.limits.inbound_burst_bytes = 100_000_000;
}

async fn logged_in(server: &TestServer, user: &str, resource: &str) -> Raw {
    Raw::connect(server.c2s)
        .await
        .login(user, "pw", resource)
        .await
}

fn assert_stream_error(text: &str, condition: &str) {
    assert!(
        text.contains(&format!("<{condition} xmlns='{STREAMS_NS}'")),
        "expected stream error {condition}, got {text:?}"
    );
    assert!(text.contains("</stream:stream>"), "stream closed: {text:?}");
}

#[tokio::test]
async fn tls_is_required_by_default_and_plain_is_refused_before_it() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    let features = raw.expect("</stream:features>").await;
    assert!(
        features.contains("<required"),
        "STARTTLS is required: {features}"
    );
    assert!(
        !features.contains("<mechanism>"),
        "no SASL before TLS: {features}"
    );
    raw.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
    )
    .await;
    let failure = raw.expect("</failure>").await;
    assert!(failure.contains("<encryption-required"), "{failure}");

    // After STARTTLS, the mechanisms appear, SCRAM-SHA-256-PLUS first.
    let mut tls = Raw::starttls(server.c2s, server.tls_client_config()).await;
    tls.send(HEADER).await;
    let features = tls.expect("</stream:features>").await;
    let plus = features
        .find("SCRAM-SHA-256-PLUS")
        .expect("-PLUS offered over TLS 1.3");
    let plain = features
        .find("<mechanism>PLAIN")
        .expect("PLAIN offered over TLS");
    assert!(plus < plain, "preference order: {features}");
    assert!(
        features.contains("tls-exporter"),
        "XEP-0440 channel binding type: {features}"
    );
    server.stop().await;
}

#[tokio::test]
async fn plain_login_over_direct_tls() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    let mut raw = Raw::connect_tls(server.direct_tls, server.tls_client_config())
        .await
        .login("alice", "pw", "phone")
        .await;
    raw.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let reply = raw.expect("</iq>").await;
    assert!(reply.contains("type='result'"), "{reply}");
    server.stop().await;
}

#[tokio::test]
async fn unsupported_version() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send("<?xml version='1.0'?><stream:stream to='localhost' version='2.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").await;
    let text = raw.until_closed().await;
    assert!(
        text.contains("<stream:stream"),
        "server header first: {text}"
    );
    assert_stream_error(&text, "unsupported-version");
    server.stop().await;
}

#[tokio::test]
async fn wrong_stream_namespace() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send("<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='urn:not-streams'>").await;
    assert_stream_error(&raw.until_closed().await, "invalid-namespace");
    server.stop().await;
}

#[tokio::test]
async fn wrong_content_namespace() {
    let server = TestServer::start_with(plaintext).await;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send("<stream:stream to='localhost' version='1.0' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>").await;
    raw.expect("</stream:features>").await;
    raw.send("<message to='a@localhost'><body>x</body></message>")
        .await;
    assert_stream_error(&raw.until_closed().await, "invalid-namespace");
    server.stop().await;
}

#[tokio::test]
async fn unknown_host() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send("<stream:stream to='example.org' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").await;
    let text = raw.until_closed().await;
    assert!(text.contains("from='localhost'"), "{text}");
    assert_stream_error(&text, "host-unknown");
    server.stop().await;
}

#[tokio::test]
async fn not_well_formed_xml() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let mut raw = logged_in(&server, "alice", "r").await;
    raw.send("<message to='bob@localhost'><body>x</message>")
        .await;
    assert_stream_error(&raw.until_closed().await, "not-well-formed");
    server.stop().await;
}

#[tokio::test]
async fn garbage_before_the_header() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.c2s).await;
    // rxml reports stray text once the next markup starts.
    raw.send("HELLO\r\n<stream:stream>").await;
    assert_stream_error(&raw.until_closed().await, "not-well-formed");
    server.stop().await;
}

#[tokio::test]
async fn oversized_stanza_closes_the_stream() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.limits.max_stanza_size = 10_000;
    })
    .await;
    server.add_user("alice", "pw").await;
    let mut raw = logged_in(&server, "alice", "r").await;
    // Just under the limit passes.
    let small = "a".repeat(5_000);
    raw.send(&format!("<message to='localhost' type='headline'><body>{small}</body></message><iq type='get' id='ok' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")).await;
    raw.expect("id='ok'").await;
    let big = "a".repeat(40_000);
    raw.send(&format!(
        "<message to='bob@localhost'><body>{big}</body></message>"
    ))
    .await;
    let text = raw.until_closed().await;
    assert_stream_error(&text, "policy-violation");
    assert!(text.contains("10000"), "the text gives the limit: {text}");
    server.stop().await;
}

#[tokio::test]
async fn wrong_password_then_too_many_failures() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    // "\0alice\0nope"
    for _ in 0..2 {
        raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAG5vcGU=</auth>").await;
        let failure = raw.expect("</failure>").await;
        assert!(failure.contains("<not-authorized"), "{failure}");
        assert!(failure.contains("wrong username or password"), "{failure}");
    }
    raw.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAG5vcGU=</auth>",
    )
    .await;
    let text = raw.until_closed().await;
    assert!(text.contains("<not-authorized"), "{text}");
    assert_stream_error(&text, "policy-violation");
    server.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.auth.max_failures_per_account = 2;
    })
    .await;
    server.add_user("alice", "pw").await;
    for _ in 0..2 {
        let mut raw = Raw::connect(server.c2s).await;
        raw.send(HEADER).await;
        raw.expect("</stream:features>").await;
        raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAG5vcGU=</auth>").await;
        raw.expect("</failure>").await;
    }
    // Even the right password is refused while the account is throttled.
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    raw.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
    )
    .await;
    let failure = raw.expect("</failure>").await;
    assert!(failure.contains("<temporary-auth-failure"), "{failure}");
    assert!(failure.contains("try again later"), "{failure}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_mechanism_gets_invalid_mechanism() {
    let server = TestServer::start_with(plaintext).await;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>")
        .await;
    let failure = raw.expect("</failure>").await;
    assert!(failure.contains("<invalid-mechanism"), "{failure}");
    server.stop().await;
}

#[tokio::test]
async fn stanzas_before_authentication_are_refused() {
    let server = TestServer::start_with(plaintext).await;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    raw.send("<message to='bob@localhost'><body>hi</body></message>")
        .await;
    assert_stream_error(&raw.until_closed().await, "not-authorized");
    server.stop().await;
}

#[tokio::test]
async fn resource_conflict_replaces_the_old_session() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let mut first = logged_in(&server, "alice", "laptop").await;
    let mut second = logged_in(&server, "alice", "laptop").await;
    assert_stream_error(&first.until_closed().await, "conflict");
    second
        .send("<iq type='get' id='still' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    second.expect("id='still'").await;
    server.stop().await;
}

#[tokio::test]
async fn generated_resource_when_none_is_asked() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    raw.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
    )
    .await;
    raw.expect("<success").await;
    raw.send(HEADER).await;
    let features = raw.expect("</stream:features>").await;
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
        "{features}"
    );
    for roster_feature in [
        "urn:xmpp:features:rosterver",
        "urn:xmpp:features:pre-approval",
    ] {
        assert!(features.contains(roster_feature), "{features}");
    }
    raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    let bound = raw.expect("</iq>").await;
    assert!(bound.contains("<jid>alice@localhost/causette-"), "{bound}");
    // The legacy session IQ is answered (RFC 6121 Appendix E).
    raw.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await;
    let session = raw.expect("</iq>").await;
    assert!(
        session.contains("type='result'") && session.contains("id='s'"),
        "{session}"
    );
    server.stop().await;
}

#[tokio::test]
async fn server_iqs_and_unknown_iq() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let mut raw = logged_in(&server, "alice", "r").await;
    raw.send("<iq type='get' id='info' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let info = raw.expect("</iq>").await;
    for feature in [
        "urn:xmpp:ping",
        "jabber:iq:version",
        "urn:xmpp:time",
        "http://jabber.org/protocol/disco#items",
    ] {
        assert!(info.contains(feature), "{feature} in {info}");
    }
    assert!(info.contains("category='server'"), "{info}");
    raw.send("<iq type='get' id='ver' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let version = raw.expect("</iq>").await;
    assert!(version.contains("<name>Causette</name>"), "{version}");
    raw.send("<iq type='get' id='time' to='localhost'><time xmlns='urn:xmpp:time'/></iq>")
        .await;
    let time = raw.expect("</iq>").await;
    assert!(
        time.contains("<tzo>+00:00</tzo>") && time.contains("<utc>"),
        "{time}"
    );
    raw.send("<iq type='get' id='what' to='localhost'><query xmlns='urn:example:unknown'/></iq>")
        .await;
    let unknown = raw.expect("</iq>").await;
    assert!(
        unknown.contains("type='error'") && unknown.contains("<service-unavailable"),
        "{unknown}"
    );
    raw.send(
        "<iq type='get' id='acct'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let account = raw.expect("</iq>").await;
    assert!(account.contains("category='account'"), "{account}");
    raw.send("<iq type='get' id='nobody' to='nobody@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let nobody = raw.expect("</iq>").await;
    assert!(nobody.contains("<service-unavailable"), "{nobody}");
    server.stop().await;
}

#[tokio::test]
async fn delivery_rules_for_offline_and_unknown_recipients() {
    let server = TestServer::start_with(open_chat).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut raw = logged_in(&server, "alice", "r").await;
    raw.send("<message to='nobody@localhost/phone' type='chat' id='m1'><body>hi</body></message>")
        .await;
    let bounced = raw.expect("</message>").await;
    assert!(
        bounced.contains("id='m1'") && bounced.contains("<service-unavailable"),
        "{bounced}"
    );
    raw.send("<iq type='get' id='q1' to='bob@localhost/phone'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let iq = raw.expect("</iq>").await;
    assert!(
        iq.contains("id='q1'") && iq.contains("<service-unavailable"),
        "{iq}"
    );
    raw.send("<message to='someone@elsewhere.example' id='m2'><body>hi</body></message>")
        .await;
    let remote = raw.expect("</message>").await;
    assert!(remote.contains("<remote-server-not-found"), "{remote}");
    // Errors are never answered with errors; the ping after them is answered first.
    raw.send("<message to='bob@localhost' type='error' id='e1'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>").await;
    raw.send("<iq type='get' id='after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let next = raw.expect("</iq>").await;
    assert!(
        next.contains("id='after'") && !next.contains("e1"),
        "{next}"
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_address_gets_jid_malformed() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let mut raw = logged_in(&server, "alice", "r").await;
    raw.send("<message to='a@@b' id='bad'><body>x</body></message>")
        .await;
    let reply = raw.expect("</message>").await;
    assert!(
        reply.contains("<jid-malformed") && reply.contains("id='bad'"),
        "{reply}"
    );
    server.stop().await;
}

#[tokio::test]
async fn spoofed_from_is_a_stream_error() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let mut raw = logged_in(&server, "alice", "r").await;
    raw.send("<message from='bob@localhost/x' to='alice@localhost'><body>x</body></message>")
        .await;
    assert_stream_error(&raw.until_closed().await, "invalid-from");
    server.stop().await;
}

#[tokio::test]
async fn unknown_top_level_element() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let mut raw = logged_in(&server, "alice", "r").await;
    raw.send("<foo xmlns='urn:example'/>").await;
    assert_stream_error(&raw.until_closed().await, "unsupported-stanza-type");
    server.stop().await;
}

/// Stream management and client state indication are not offered yet: their elements reach
/// their handlers instead of ending the stream, and get the answers the XEPs give.
#[tokio::test]
async fn stream_management_and_client_state_elements_are_answered() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let mut raw = logged_in(&server, "alice", "r").await;
    raw.send("<inactive xmlns='urn:xmpp:csi:0'/><active xmlns='urn:xmpp:csi:0'/>")
        .await;
    raw.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let failed = raw.expect("</failed>").await;
    assert!(failed.contains("feature-not-implemented"), "{failed}");
    raw.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = raw.expect("</iq>").await;
    assert!(
        pong.contains("id='p1'") && pong.contains("type='result'"),
        "{pong}"
    );
    raw.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    assert_stream_error(&raw.until_closed().await, "unsupported-stanza-type");
    server.stop().await;
}

// The keepalive and stanza timers are tested with a paused clock, in src/stream/tcp/tests.rs.

#[tokio::test]
async fn clean_close_is_answered() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let mut raw = logged_in(&server, "alice", "r").await;
    raw.send("</stream:stream>").await;
    let text = raw.until_closed().await;
    assert!(
        text.contains("</stream:stream>") && !text.contains("stream:error"),
        "{text}"
    );
    server.stop().await;
}

/// Bound sessions learn of the shutdown through the router (`close_all`), not by watching a
/// shared token: every session of every account, idle or not, must still get the error.
#[tokio::test]
async fn shutdown_sends_system_shutdown() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut alice = logged_in(&server, "alice", "r").await;
    let mut alice2 = logged_in(&server, "alice", "r2").await;
    let mut bob = logged_in(&server, "bob", "r").await;
    bob.send("<presence/>").await;
    bob.expect("</presence>").await;
    assert_eq!(server.server().online_sessions(), 3);
    let stopping = tokio::spawn(server.stop());
    for raw in [&mut alice, &mut alice2, &mut bob] {
        let text = raw.until_closed().await;
        assert_stream_error(&text, "system-shutdown");
        assert!(text.contains("the server is shutting down"), "{text}");
    }
    stopping.await.unwrap();
}

#[tokio::test]
async fn messages_between_raw_sessions_and_presence_to_own_resources() {
    let server = TestServer::start_with(open_chat).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut alice = logged_in(&server, "alice", "desk").await;
    let mut bob = logged_in(&server, "bob", "phone").await;
    let mut bob2 = logged_in(&server, "bob", "tablet").await;
    bob.send("<presence><show>away</show><priority>5</priority></presence>")
        .await;
    bob.expect("</presence>").await;
    bob2.send("<presence><priority>1</priority></presence>")
        .await;
    // Initial presence reaches the user's other available resources (RFC 6121 §4.2.2).
    let seen = bob.expect("</presence>").await;
    assert!(seen.contains("from='bob@localhost/tablet'"), "{seen}");
    bob2.expect("</presence>").await;
    // A chat message to the bare JID goes to the highest priority resource only.
    alice
        .send("<message to='bob@localhost' type='chat' id='c1'><body>salut</body></message>")
        .await;
    let got = bob.expect("</message>").await;
    assert!(
        got.contains("from='alice@localhost/desk'") && got.contains("salut"),
        "{got}"
    );
    bob2.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let next = bob2.expect("</iq>").await;
    assert!(
        !next.contains("salut"),
        "lower priority resource got nothing: {next}"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_also_ends_streams_still_negotiating() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    let mut silent = Raw::connect(server.c2s).await;
    let stopping = tokio::spawn(server.stop());
    assert_stream_error(&raw.until_closed().await, "system-shutdown");
    // A connection that never sent its header gets a whole stream carrying the error.
    let text = silent.until_closed().await;
    assert!(text.contains("<stream:stream"), "{text}");
    assert!(text.contains("system-shutdown"), "{text}");
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_session_that_does_not_read_is_closed_not_buffered() {
    // Open chat: headlines between strangers go through instead of bouncing.
    let server = TestServer::start_with(|c| {
        open_chat(c);
        c.limits.session_queue = 8;
    })
    .await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    // Bob never reads from here on.
    let _bob = logged_in(&server, "bob", "stuck").await;
    let mut alice = logged_in(&server, "alice", "r").await;
    assert_eq!(server.server().online_sessions(), 2);
    // Headlines: once Bob is gone they are dropped, so Alice gets no bounces to read.
    let body = "x".repeat(8_000);
    let deadline = tokio::time::Instant::now() + crate::common::WAIT;
    while server.server().online_sessions() == 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow session never closed"
        );
        let mut batch = String::new();
        for _ in 0..50 {
            batch.push_str(&format!(
                "<message to='bob@localhost/stuck' type='headline'><body>{body}</body></message>"
            ));
        }
        alice.send(&batch).await;
    }
    // Alice is unaffected.
    alice
        .send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    alice.expect("id='alive'").await;
    assert_eq!(server.server().online_sessions(), 1);
    server.stop().await;
}

#[tokio::test]
async fn authorization_identity_must_be_the_account_itself() {
    use base64::Engine;
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    let as_bob = b64("bob@localhost\0alice\0pw");
    raw.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{as_bob}</auth>"
    ))
    .await;
    let failure = raw.expect("</failure>").await;
    assert!(failure.contains("<not-authorized"), "{failure}");
    let as_self = b64("alice@localhost\0alice\0pw");
    raw.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{as_self}</auth>"
    ))
    .await;
    raw.expect("<success").await;
    server.stop().await;
}

/// The read buffer holds only unparsed bytes and is freed whenever the socket runs dry: a
/// stanza larger than one read, several stanzas in one read, and a stanza dribbled in pieces
/// with pauses between them must all arrive whole and in order.
#[tokio::test]
async fn stanzas_split_across_reads_or_packed_into_one_arrive_whole() {
    let server = TestServer::start_with(open_chat).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let alice = logged_in(&server, "alice", "desk").await;
    let bob = logged_in(&server, "bob", "phone").await;
    split_and_packed_stanzas(alice, bob).await;
    server.stop().await;
}

/// The same through TLS, where records and reads do not line up with stanzas either.
#[tokio::test]
async fn stanzas_split_or_packed_arrive_whole_over_starttls() {
    let server = TestServer::start_with(|c| c.im.chat_requires_acceptance = false).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let alice = Raw::starttls(server.c2s, server.tls_client_config())
        .await
        .login("alice", "pw", "desk")
        .await;
    let bob = Raw::starttls(server.c2s, server.tls_client_config())
        .await
        .login("bob", "pw", "phone")
        .await;
    split_and_packed_stanzas(alice, bob).await;
    server.stop().await;
}

async fn split_and_packed_stanzas(mut alice: Raw, mut bob: Raw) {
    bob.send("<presence/>").await;
    bob.expect("</presence>").await;

    // Larger than the 8 KiB read chunk, so it spans several reads.
    let big: String = (0..40_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    alice
        .send(&format!(
            "<message to='bob@localhost' type='chat' id='big'><body>{big}</body></message>"
        ))
        .await;
    let got = bob.expect("</message>").await;
    assert!(
        got.contains(&format!("<body>{big}</body>")),
        "big body arrived whole"
    );

    // Three stanzas in one write.
    alice
        .send(
            "<message to='bob@localhost' type='chat' id='p1'><body>un</body></message>\
             <message to='bob@localhost' type='chat' id='p2'><body>deux</body></message>\
             <message to='bob@localhost' type='chat' id='p3'><body>trois</body></message>",
        )
        .await;
    for body in ["un", "deux", "trois"] {
        let got = bob.expect("</message>").await;
        assert!(
            got.contains(&format!("<body>{body}</body>")),
            "{body}: {got}"
        );
    }

    // One stanza in small pieces, the socket idle between them.
    let stanza =
        "<message to='bob@localhost' type='chat' id='d1'><body>goutte a goutte</body></message>";
    for piece in stanza.as_bytes().chunks(7) {
        alice
            .send(std::str::from_utf8(piece).unwrap_or_default())
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let got = bob.expect("</message>").await;
    assert!(got.contains("goutte a goutte"), "{got}");
}

/// The session's own stream takes over from negotiation's right after the bind request: what
/// the client pipelined behind it, the prefixes and `xml:lang` of its header, and its stream
/// footer under another prefix must all come through.
#[tokio::test]
async fn session_stream_keeps_the_header_declarations_and_pipelined_stanzas() {
    let server = TestServer::start_with(open_chat).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut bob = logged_in(&server, "bob", "phone").await;
    bob.send("<presence/>").await;
    bob.expect("</presence>").await;

    let header = "<?xml version='1.0'?><s:stream xmlns:s='http://etherx.jabber.org/streams' \
                  xmlns='jabber:client' xmlns:ent='urn:example:ent' xml:lang='fr' \
                  to='localhost' version='1.0'>";
    let mut alice = Raw::connect(server.c2s).await;
    alice.authenticate(header, "alice", "pw").await;
    // The new header, the bind request and two stanzas in one write.
    alice
        .send(&format!(
            "{header}<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>desk</resource></bind></iq>\
             <message to='bob@localhost' type='chat' id='m1'><body>salut</body>\
             <ent:note>classe de 4e B</ent:note></message> \
             <iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    alice.expect("id='bind'").await;
    alice.expect("id='ping1'").await;
    let got = bob.expect("</message>").await;
    assert!(got.contains("from='alice@localhost/desk'"), "{got}");
    assert!(
        got.contains("<note xmlns='urn:example:ent'>classe de 4e B</note>"),
        "payload under the header's prefix: {got}"
    );
    assert!(
        got.contains("<body xml:lang='fr'>salut</body>"),
        "language of the header: {got}"
    );
    // Encoders are shared between stanzas: the next one declares its namespaces afresh.
    alice
        .send(
            "<message to='bob@localhost' type='chat' id='m2'><body>encore</body>\
             <ent:note>classe de 4e C</ent:note></message>",
        )
        .await;
    let got = bob.expect("</message>").await;
    assert!(
        got.contains("<note xmlns='urn:example:ent'>classe de 4e C</note>"),
        "{got}"
    );

    // A whitespace keepalive, then the footer under the client's own prefix: a clean close.
    alice.send("\n \n").await;
    alice.send("</s:stream>").await;
    let end = alice.until_closed().await;
    assert!(end.ends_with("</stream:stream>"), "clean close: {end:?}");
    assert!(!end.contains("stream:error"), "{end}");
    server.stop().await;
}

/// The session's parser is primed with the client's last header, kept up to 4 KiB: a longer
/// one is refused with a stream error, before any resource can be bound.
#[tokio::test]
async fn oversized_stream_header_after_authentication_is_refused() {
    let server = TestServer::start_with(open_chat).await;
    server.add_user("alice", "pw").await;
    let mut alice = Raw::connect(server.c2s).await;
    alice.authenticate(HEADER, "alice", "pw").await;
    let padding = "x".repeat(5000);
    alice
        .send(&format!(
            "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns:pad='urn:example:{padding}'>"
        ))
        .await;
    let end = alice.until_closed().await;
    assert_stream_error(&end, "policy-violation");
    assert!(!end.contains("<jid>"), "nothing bound: {end}");
    server.stop().await;
}
