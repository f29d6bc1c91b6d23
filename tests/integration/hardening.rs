//! What an attacker found, kept fixed: each test sends what the attack sent and checks that
//! the server refuses it with a standard error and keeps serving everyone else.

use crate::common::{HEADER, Raw, TestServer, Xmpp};

const STREAMS_NS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

fn plaintext(c: &mut causette::Config) {
    c.tls.allow_plaintext_on_loopback = true;
}

fn assert_stream_error(text: &str, condition: &str, says: &str) {
    assert!(
        text.contains(&format!("<{condition} xmlns='{STREAMS_NS}'")),
        "expected stream error {condition}, got {text:?}"
    );
    assert!(text.contains(says), "the error says {says:?}: {text:?}");
}

/// The server still serves: a new client logs in and gets an answer.
async fn still_serving(server: &TestServer, user: &str) {
    let mut client = Xmpp::login(server, user, "pw").await;
    let pong = client
        .send_iq_to_server("get", "<ping xmlns='urn:xmpp:ping'/>")
        .await;
    assert!(pong.contains("type='result'"), "{pong}");
    client.logout().await;
}

fn nested(levels: usize) -> String {
    let mut xml = String::with_capacity(levels * 7);
    for _ in 0..levels {
        xml.push_str("<a>");
    }
    xml
}

#[tokio::test]
async fn deep_nesting_is_refused_before_tls_over_direct_tls_and_after_login() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let bomb = nested(100_000);

    // Before TLS and login, on the STARTTLS port.
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    raw.send_hostile(&bomb).await;
    raw.until_closed().await;
    still_serving(&server, "bob").await;

    // Over direct TLS, before login.
    let mut raw = Raw::connect_tls(server.direct_tls, server.tls_client_config()).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    raw.send_hostile(&bomb).await;
    raw.until_closed().await;
    still_serving(&server, "bob").await;

    // Inside a stanza of a bound session.
    let mut raw = Raw::connect(server.c2s)
        .await
        .login("alice", "pw", "r")
        .await;
    raw.send_hostile(&format!(
        "<message to='bob@localhost'><body>hi</body>{bomb}"
    ))
    .await;
    raw.until_closed().await;
    still_serving(&server, "bob").await;
    server.stop().await;
}

#[tokio::test]
async fn nesting_past_the_limit_gets_policy_violation_and_within_it_passes() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.limits.max_element_depth = 16;
    })
    .await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    // Sixteen levels, the message included: accepted and answered.
    let mut raw = Raw::connect(server.c2s)
        .await
        .login("alice", "pw", "r")
        .await;
    let within = format!(
        "<iq type='get' id='deep' to='bob@localhost'><query xmlns='urn:example'>{}{}</query></iq>",
        nested(14),
        "</a>".repeat(14)
    );
    raw.send(&within).await;
    raw.expect("id='deep'").await;
    // One more level closes the stream, with the limit in the text.
    raw.send(&format!(
        "<iq type='get' id='deeper' to='bob@localhost'><query xmlns='urn:example'>{}",
        nested(15)
    ))
    .await;
    let text = raw.until_closed().await;
    assert_stream_error(&text, "policy-violation", "the limit is 16 levels");

    // Before login too, with the same error.
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    raw.send(&nested(17)).await;
    let text = raw.until_closed().await;
    assert_stream_error(&text, "policy-violation", "nested too deep");
    server.stop().await;
}

#[tokio::test]
async fn stanza_size_is_checked_to_the_byte() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.limits.max_stanza_size = 10_000;
    })
    .await;
    server.add_user("alice", "pw").await;
    let mut raw = Raw::connect(server.c2s)
        .await
        .login("alice", "pw", "r")
        .await;
    let stanza = |size: usize, id: &str| {
        let head = format!("<iq type='get' id='{id}' to='localhost'><query xmlns='urn:example'>");
        let tail = "</query></iq>";
        let padding = size - head.len() - tail.len();
        format!("{head}{}{tail}", "v".repeat(padding))
    };
    let exact = stanza(10_000, "exact");
    assert_eq!(exact.len(), 10_000);
    raw.send(&exact).await;
    raw.expect("id='exact'").await;
    let over = stanza(10_001, "over");
    raw.send(&over).await;
    let text = raw.until_closed().await;
    assert!(!text.contains("id='over'"), "{text}");
    assert_stream_error(&text, "policy-violation", "the limit is 10000 bytes");
    server.stop().await;
}
