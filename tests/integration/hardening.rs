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

/// One PLAIN attempt on a fresh stream from `from`: the server's answer.
async fn plain_attempt(server: &TestServer, from: &str, user: &str, password: &str) -> String {
    let raw = Raw::connect_from(server.c2s, from.parse().unwrap()).await;
    crate::common::plain_attempt(raw, user, password).await
}

fn throttled_logins(c: &mut causette::Config) {
    plaintext(c);
    c.auth.max_failures_per_account = 2;
    c.auth.max_failures_per_ip = 3;
    c.auth.max_delay_secs = 30;
    c.auth.nat_networks = vec!["127.0.9.0/24".parse().unwrap()];
    c.auth.max_failures_per_nat_ip = 6;
}

#[tokio::test]
async fn guessing_from_one_address_locks_nobody_out_and_tells_nothing() {
    let server = TestServer::start_with(throttled_logins).await;
    server.add_user("lea", "right").await;
    let attacker = "127.0.0.2";
    for _ in 0..2 {
        let answer = plain_attempt(&server, attacker, "lea", "guess").await;
        assert!(answer.contains("<not-authorized"), "{answer}");
    }
    // From there, the right password and a wrong one now get the very same answer.
    let right = plain_attempt(&server, attacker, "lea", "right").await;
    let wrong = plain_attempt(&server, attacker, "lea", "other").await;
    assert!(right.contains("<temporary-auth-failure"), "{right}");
    assert_eq!(right, wrong);
    // So does SCRAM, before any proof: the first message is answered with the same failure.
    {
        use base64::Engine;
        let mut raw = Raw::connect_from(server.c2s, attacker.parse().unwrap()).await;
        raw.send(HEADER).await;
        raw.expect("</stream:features>").await;
        let first = base64::engine::general_purpose::STANDARD.encode("n,,n=lea,r=abcdefgh");
        raw.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{first}</auth>")).await;
        let answer = raw.expect("</failure>").await;
        assert!(!answer.contains("<challenge"), "{answer}");
        assert!(answer.contains("<temporary-auth-failure"), "{answer}");
    }
    // Léa herself, from her own address, logs in at once.
    let own = plain_attempt(&server, "127.0.0.3", "lea", "right").await;
    assert!(own.contains("<success"), "{own}");
    server.stop().await;
}

#[tokio::test]
async fn spraying_names_from_a_school_address_slows_strangers_not_its_pupils() {
    let server = TestServer::start_with(throttled_logins).await;
    server.add_user("lea", "right").await;
    server.add_user("hugo", "right").await;
    let school = "127.0.0.4";
    // Léa logged in from the school before.
    assert!(
        plain_attempt(&server, school, "lea", "right")
            .await
            .contains("<success")
    );
    for name in ["ghost1", "ghost2", "ghost3"] {
        let answer = plain_attempt(&server, school, name, "x").await;
        assert!(answer.contains("<not-authorized"), "{answer}");
    }
    // Past the address's budget: an account never seen there waits; Léa does not.
    let hugo = plain_attempt(&server, school, "hugo", "right").await;
    assert!(hugo.contains("<temporary-auth-failure"), "{hugo}");
    let lea = plain_attempt(&server, school, "lea", "right").await;
    assert!(lea.contains("<success"), "{lea}");
    // A network declared as NAT has the larger budget.
    let nat = "127.0.9.1";
    for name in ["ghost1", "ghost2", "ghost3", "ghost4", "ghost5"] {
        assert!(
            plain_attempt(&server, nat, name, "x")
                .await
                .contains("<not-authorized")
        );
    }
    let hugo = plain_attempt(&server, nat, "hugo", "right").await;
    assert!(hugo.contains("<success"), "{hugo}");
    server.stop().await;
}

/// Messages between any users, as fast as the test sends them.
fn open_chat(c: &mut causette::Config) {
    plaintext(c);
    c.im.chat_requires_acceptance = false;
    c.limits.max_inbound_bytes_per_sec = 100_000_000;
    c.limits.inbound_burst_bytes = 100_000_000;
    c.im.max_changes_per_minute = 100_000;
}

/// Alice leaves `count` messages of `size` bytes of text for Bob, who is offline.
async fn leave_messages(server: &TestServer, count: usize, size: usize) {
    let mut alice = Xmpp::login(server, "alice", "pw").await;
    let padding = "x".repeat(size);
    for n in 0..count {
        alice
            .send(&format!(
                "<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>m{n}:{padding}</body></message>"
            ))
            .await;
    }
    alice.expect_none("type='error'").await;
    alice.logout().await;
}

/// Bob logs in, says he is available, and reads every message left for him.
async fn collect_messages(server: &TestServer, count: usize) {
    let mut bob = Xmpp::login(server, "bob", "pw").await;
    bob.send("<presence xmlns='jabber:client'/>").await;
    for n in 0..count {
        bob.expect(&format!("<body>m{n}:")).await;
    }
    bob.logout().await;
    // All acknowledged: nothing is delivered twice.
    let mut bob = Xmpp::login(server, "bob", "pw").await;
    bob.send("<presence xmlns='jabber:client'/>").await;
    bob.expect_none("<body>m").await;
    bob.logout().await;
}

#[tokio::test]
async fn offline_messages_survive_a_client_that_drops_before_reading_them() {
    let server = TestServer::start_with(open_chat).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    leave_messages(&server, 300, 20).await;
    // Bob's client says it is available, then drops the connection without reading.
    let mut bob = Raw::connect(server.c2s)
        .await
        .login("bob", "pw", "dropping")
        .await;
    bob.send("<presence/>").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(bob);
    collect_messages(&server, 300).await;
    server.stop().await;
}

#[tokio::test]
async fn a_slow_reader_loses_no_large_offline_message() {
    let server = TestServer::start_with(open_chat).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    leave_messages(&server, 40, 200_000).await;
    // Bob's client reads the first batch, then goes away before acknowledging it.
    let mut bob = Raw::connect(server.c2s)
        .await
        .login("bob", "pw", "slow")
        .await;
    bob.send("<presence/>").await;
    let first = bob.expect("id='offline-").await;
    assert!(first.contains("<body>m0:"));
    // A batch is bounded in bytes, not only in messages.
    assert!(!first.contains("<body>m3:"));
    drop(bob);
    collect_messages(&server, 40).await;
    server.stop().await;
}

#[tokio::test]
async fn sessions_that_do_not_read_are_closed_by_bytes_queued_not_only_stanzas() {
    let server = TestServer::start_with(|c| {
        open_chat(c);
        c.limits.session_queue_bytes = 300_000;
    })
    .await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    // Two of Bob's sessions never read; each has room for 256 stanzas.
    let mut stuck = Vec::new();
    for resource in ["a", "b"] {
        let mut bob = Raw::connect(server.c2s)
            .await
            .login("bob", "pw", resource)
            .await;
        bob.send("<presence/>").await;
        stuck.push(bob);
    }
    let mut alice = Xmpp::login(&server, "alice", "pw").await;
    let body = "x".repeat(100_000);
    for _ in 0..100 {
        alice
            .send(&format!("<message xmlns='jabber:client' to='bob@localhost' type='headline'><body>{body}</body></message>"))
            .await;
    }
    // A hundred headlines of 100 kB, fewer stanzas than a queue holds, are more bytes than it
    // (and the sockets' buffers) may hold: both sessions are closed.
    let deadline = tokio::time::Instant::now() + crate::common::WAIT;
    while server.server().online_sessions() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "slow sessions kept");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pong = alice
        .send_iq_to_server("get", "<ping xmlns='urn:xmpp:ping'/>")
        .await;
    assert!(pong.contains("type='result'"), "{pong}");
    server.stop().await;
}

#[tokio::test]
async fn resources_per_account_are_bounded() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.limits.max_resources_per_account = 2;
    })
    .await;
    server.add_user("alice", "pw").await;
    let _first = Raw::connect(server.c2s)
        .await
        .login("alice", "pw", "one")
        .await;
    let _second = Raw::connect(server.c2s)
        .await
        .login("alice", "pw", "two")
        .await;
    // A third is refused with resource-constraint, and may try again once one leaves.
    let mut third = Raw::connect(server.c2s).await;
    third.authenticate(HEADER, "alice", "pw").await;
    third.send(HEADER).await;
    third.expect("</stream:features>").await;
    let bind = "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>three</resource></bind></iq>";
    third.send(bind).await;
    let refused = third.expect("</iq>").await;
    assert!(
        refused.contains("type='error'") && refused.contains("<resource-constraint"),
        "{refused}"
    );
    assert_eq!(server.server().online_sessions(), 2);
    // Replacing a bound resource is not a new one.
    let again = Raw::connect(server.c2s)
        .await
        .login("alice", "pw", "one")
        .await;
    assert_eq!(server.server().online_sessions(), 2);
    drop(again);
    let deadline = tokio::time::Instant::now() + crate::common::WAIT;
    loop {
        third.send(bind).await;
        let answer = third.expect("</iq>").await;
        if answer.contains("type='result'") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_sending_past_its_rate_is_read_more_slowly() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.limits.max_stanza_size = 10_000;
        c.limits.max_inbound_bytes_per_sec = 100_000;
        c.limits.inbound_burst_bytes = 20_000;
    })
    .await;
    server.add_user("alice", "pw").await;
    let mut raw = Raw::connect(server.c2s)
        .await
        .login("alice", "pw", "r")
        .await;
    let ping = |n: usize| {
        format!("<iq type='get' id='p{n}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    };
    let one = ping(0).len();
    let count = 220_000 / one;
    let started = std::time::Instant::now();
    let mut batch = String::new();
    for n in 0..count {
        batch.push_str(&ping(n));
    }
    raw.send_hostile(&batch).await;
    raw.expect(&format!("id='p{}'", count - 1)).await;
    // 220 kB at 100 kB/s after a 20 kB burst: two seconds at least.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_logging_in_from_one_address_are_bounded_and_refused_cleanly() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.limits.max_unauthenticated_per_ip = 5;
    })
    .await;
    server.add_user("alice", "pw").await;
    let attacker: std::net::IpAddr = "127.0.0.7".parse().unwrap();
    // Five that have sent their header (so cannot be replaced) and sit in negotiation.
    let mut talking = Vec::new();
    for _ in 0..5 {
        let mut raw = Raw::connect_from(server.c2s, attacker).await;
        raw.send(HEADER).await;
        raw.expect("</stream:features>").await;
        talking.push(raw);
    }
    let mut probe = Raw::connect_from(server.c2s, attacker).await;
    let refused = probe.until_closed().await;
    assert_stream_error(
        &refused,
        "policy-violation",
        "too many connections from your address",
    );
    // Everyone else is served, at once.
    still_serving(&server, "alice").await;
    let mut raw = Raw::connect_from(server.c2s, "127.0.0.8".parse().unwrap()).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    // A connection that leaves frees its place.
    talking.pop();
    let deadline = tokio::time::Instant::now() + crate::common::WAIT;
    loop {
        let mut again = Raw::connect_from(server.c2s, attacker).await;
        again.send(HEADER).await;
        let answer = again.expect(">").await;
        if !answer.contains("stream:error") && !answer.contains("policy-violation") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// A school's pupils share one address: 300 silent connections from it (more than the
/// address may have logging in) do not keep a pupil out. Each newcomer takes the place of
/// the oldest connection that has not sent anything yet, which is closed.
#[tokio::test]
async fn silent_connections_from_a_school_address_do_not_keep_a_pupil_out() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    let school: std::net::IpAddr = "127.0.0.9".parse().unwrap();
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(Raw::connect_from(server.c2s, school).await);
    }
    let started = std::time::Instant::now();
    let mut pupil = Raw::connect_from(server.c2s, school)
        .await
        .login("alice", "pw", "pc")
        .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    pupil
        .send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    pupil.expect("id='p'").await;
    // The oldest silent ones were closed to make room.
    let closed = silent[0].until_closed().await;
    assert!(!closed.contains("<stream:features"), "{closed}");
    server.stop().await;
}

#[tokio::test]
async fn a_full_server_refuses_at_once_instead_of_hanging() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.limits.max_connections = 3;
    })
    .await;
    let mut held = Vec::new();
    for n in 0..3 {
        let mut raw = Raw::connect_from(server.c2s, format!("127.0.1.{n}").parse().unwrap()).await;
        raw.send(HEADER).await;
        raw.expect("</stream:features>").await;
        held.push(raw);
    }
    let mut late = Raw::connect(server.c2s).await;
    let refused = late.until_closed().await;
    assert_stream_error(&refused, "resource-constraint", "too many connections");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_does_not_start_tls_is_closed_early() {
    let server = TestServer::start_with(|c| c.limits.tls_timeout_secs = 1).await;
    let started = std::time::Instant::now();
    let mut silent = Raw::connect(server.c2s).await;
    let text = silent.until_closed().await;
    assert_stream_error(&text, "connection-timeout", "took too long");
    // The header alone does not buy more time.
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    let text = raw.until_closed().await;
    assert_stream_error(&text, "connection-timeout", "took too long");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    // Direct TLS: the handshake must come within the same time.
    let tcp = tokio::net::TcpStream::connect(server.direct_tls)
        .await
        .unwrap();
    let mut tcp = tcp;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut byte),
    )
    .await
    .expect("closed within the TLS time");
    assert!(matches!(read, Ok(0) | Err(_)));
    server.stop().await;
}

#[tokio::test]
async fn contact_requests_do_not_get_around_the_roster_limit_nor_categories_theirs() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.im.chat_requires_acceptance = false;
        c.im.max_roster_items = 3;
        c.im.max_categories = 4;
        c.im.max_pending_requests = 2;
    })
    .await;
    for user in ["alice", "b1", "b2", "b3", "b4", "b5", "c1", "c2", "c3"] {
        server.add_user(user, "pw").await;
    }
    let mut alice = Xmpp::login(&server, "alice", "pw").await;
    alice.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    alice.send("<presence xmlns='jabber:client'/>").await;
    let mut refused = 0;
    for (n, contact) in ["b1", "b2", "b3", "b4", "b5"].iter().enumerate() {
        alice
            .send(&format!("<presence xmlns='jabber:client' to='{contact}@localhost' type='subscribe' id='s{n}'/>"))
            .await;
        let answer = alice.expect_all(&[&format!("{contact}@localhost")]).await;
        if answer.contains("type='error'") {
            assert!(answer.contains("<resource-constraint"), "{answer}");
            refused += 1;
        }
    }
    assert_eq!(refused, 2);
    let roster = alice.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    assert_eq!(roster.matches("<item ").count(), 3, "{roster}");

    // Requests waiting for one person are bounded too, and a refused one leaves nothing.
    for requester in ["c1", "c2", "c3"] {
        let mut c = Xmpp::login(&server, requester, "pw").await;
        c.send("<presence xmlns='jabber:client' to='b5@localhost' type='subscribe' id='r'/>")
            .await;
        let answer = c.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
        if requester == "c3" {
            assert!(!answer.contains("b5@localhost"), "{answer}");
            let error = c.expect("id='r'").await;
            assert!(error.contains("<resource-constraint"), "{error}");
        } else {
            assert!(answer.contains("b5@localhost"), "{answer}");
        }
        c.logout().await;
    }

    // Categories: four at most, empty or not.
    for n in 0..4 {
        let answer = alice
            .iq(
                "set",
                &format!(
                    "<query xmlns='urn:causette:categories:0'><create name='cat{n}'/></query>"
                ),
            )
            .await;
        assert!(answer.contains("type='result'"), "{answer}");
    }
    let answer = alice
        .iq(
            "set",
            "<query xmlns='urn:causette:categories:0'><create name='one too many'/></query>",
        )
        .await;
    assert!(
        answer.contains("<not-allowed") && answer.contains("too many categories"),
        "{answer}"
    );
    let answer = alice
        .iq("set", "<query xmlns='jabber:iq:roster'><item jid='b1@localhost'><group>new one</group></item></query>")
        .await;
    assert!(answer.contains("too many categories"), "{answer}");
    alice.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn a_pupil_cannot_flood_writes_and_a_no_op_toggle_writes_nothing() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.im.max_changes_per_minute = 5;
        c.admin.demo_directory = true;
    })
    .await;
    let token = server.server().admin_token().to_owned();
    let audit = || async {
        let (status, body) = crate::common::http(
            server.http,
            "GET",
            "/admin/api/v1/audit?limit=1000",
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body.matches("\"actor\"").count()
    };
    let before = audit().await;
    let mut lea = Xmpp::login(&server, "lea.martin", "demo").await;
    let mut answers = Vec::new();
    for n in 0..8 {
        let hidden = if n % 2 == 0 { "false" } else { "true" };
        answers.push(
            lea.iq(
                "set",
                &format!("<query xmlns='urn:causette:directory:0' hidden='{hidden}'/>"),
            )
            .await,
        );
    }
    // The first toggle changes nothing (she was visible), the next four do, then the budget
    // is spent: a clear error, and nothing written.
    assert!(
        answers[..5].iter().all(|a| a.contains("type='result'")),
        "{answers:?}"
    );
    assert!(
        answers[5..]
            .iter()
            .all(|a| a.contains("<resource-constraint") && a.contains("wait a minute")),
        "{answers:?}"
    );
    assert_eq!(audit().await - before, 4);
    lea.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn errors_say_what_is_wrong() {
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    // Malformed base64 in <auth> and in <response>: incorrect-encoding, not invalid-mechanism.
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>not*base64!</auth>")
        .await;
    let failure = raw.expect("</failure>").await;
    assert!(failure.contains("<incorrect-encoding"), "{failure}");
    raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'/>")
        .await;
    raw.expect("</challenge>").await;
    raw.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>@@@</response>")
        .await;
    let failure = raw.expect("</failure>").await;
    assert!(failure.contains("<incorrect-encoding"), "{failure}");
    // An unknown mechanism is still invalid-mechanism.
    raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-UNKNOWN'>AA==</auth>")
        .await;
    let failure = raw.expect("</failure>").await;
    assert!(failure.contains("<invalid-mechanism"), "{failure}");

    // An emoji resource is refused for what it is, not as invalid UTF-8.
    let mut raw = Raw::connect(server.c2s).await;
    raw.authenticate(HEADER, "alice", "pw").await;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    raw.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone 📱</resource></bind></iq>").await;
    let refused = raw.expect("</iq>").await;
    assert!(refused.contains("<bad-request"), "{refused}");
    assert!(
        !refused.contains("UTF-8") && refused.contains("emoji"),
        "{refused}"
    );
    // An accented one is fine.
    raw.send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>téléphone</resource></bind></iq>").await;
    let bound = raw.expect("</iq>").await;
    assert!(
        bound.contains("type='result'") && bound.contains("téléphone"),
        "{bound}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failed_admin_request_changes_nothing() {
    let server = TestServer::start_with(plaintext).await;
    let token = server.server().admin_token().to_owned();
    let http = |method, path: String, body: Option<&'static str>| {
        let token = token.clone();
        let addr = server.http;
        async move { crate::common::http(addr, method, &path, Some(&token), body).await }
    };
    let (status, _) = http(
        "PUT",
        "/admin/api/v1/structures/0750001A".into(),
        Some(r#"{"name":"Collège"}"#),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = http(
        "PUT",
        "/admin/api/v1/users/zoe".into(),
        Some(
            r#"{"display_name":"Zoé","profile":"student","structures":["0750001A"],"password":""}"#,
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http("GET", "/admin/api/v1/users/zoe".into(), None).await;
    assert_eq!(status, 404, "the user was not created: {body}");
    let users = causette::accounts::list(&server.server().store())
        .await
        .unwrap();
    assert!(!users.contains(&"zoe".to_owned()), "{users:?}");
    server.stop().await;
}

#[tokio::test]
async fn first_logins_are_not_lost_to_concurrent_directory_changes() {
    let server = TestServer::start_with(|c| {
        plaintext(c);
        c.limits.max_unauthenticated_per_ip = 100;
    })
    .await;
    let token = server.server().admin_token().to_owned();
    let addr = server.http;
    let call = move |method: &'static str, path: String, body: String| {
        let token = token.clone();
        async move { crate::common::http(addr, method, &path, Some(&token), Some(&body)).await }
    };
    let (status, _) = call(
        "PUT",
        "/admin/api/v1/structures/0750001A".into(),
        r#"{"name":"Collège"}"#.into(),
    )
    .await;
    assert_eq!(status, 204);
    let users: Vec<String> = (0..40).map(|n| format!("pupil{n}")).collect();
    for user in &users {
        let (status, body) = call(
            "PUT",
            format!("/admin/api/v1/users/{user}"),
            r#"{"display_name":"P","profile":"student","structures":["0750001A"],"password":"pw"}"#
                .into(),
        )
        .await;
        assert_eq!(status, 204, "{body}");
    }
    // The ENT renames the school over and over while everyone logs in for the first time.
    let changes = tokio::spawn({
        let call = call.clone();
        async move {
            for n in 0..150 {
                let (status, _) = call(
                    "PUT",
                    "/admin/api/v1/structures/0750001A".into(),
                    format!(r#"{{"name":"Collège {n}"}}"#),
                )
                .await;
                assert_eq!(status, 204);
            }
        }
    });
    let mut logins = tokio::task::JoinSet::new();
    for user in users.clone() {
        let c2s = server.c2s;
        logins.spawn(async move { Raw::connect(c2s).await.login(&user, "pw", "r").await });
    }
    let mut sessions = Vec::new();
    while let Some(session) = logins.join_next().await {
        sessions.push(session.unwrap());
    }
    changes.await.unwrap();
    for user in &users {
        let (status, body) =
            call("GET", format!("/admin/api/v1/users/{user}"), String::new()).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            !body.contains("\"first_login\":null"),
            "{user} lost its first login: {body}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn the_admin_api_takes_the_bearer_scheme_in_any_case() {
    let server = TestServer::start().await;
    let token = server.server().admin_token().to_owned();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, body) = crate::common::http_authorized(
            server.http,
            "GET",
            "/admin/api/v1/structures",
            Some(&format!("{scheme} {token}")),
            None,
        )
        .await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    for wrong in [
        format!("Basic {token}"),
        "bearer nope".to_owned(),
        token.clone(),
    ] {
        let (status, _) = crate::common::http_authorized(
            server.http,
            "GET",
            "/admin/api/v1/structures",
            Some(&wrong),
            None,
        )
        .await;
        assert_eq!(status, 401, "{wrong}");
    }
    server.stop().await;
}

/// Every import op does what its admin call does, with the call's own fields: each step is
/// made through the API on one server and as an import line on another, and the two
/// directories are compared after each.
#[tokio::test]
async fn every_import_op_takes_its_admin_calls_fields() {
    use causette::admin::import::{IMPORT_OPS, import_op};
    use serde_json::{Value, json};
    let by_api = TestServer::start_with(plaintext).await;
    let by_import = TestServer::start_with(plaintext).await;
    let steps: Vec<(&str, Value, Value)> = vec![
        (
            "put_structure",
            json!({"id": "S"}),
            json!({"name": "Collège"}),
        ),
        (
            "put_structure",
            json!({"id": "T"}),
            json!({"name": "Lycée"}),
        ),
        (
            "put_user",
            json!({"username": "u"}),
            json!({"display_name": "U", "profile": "student", "structures": ["S"], "password": "pw-u"}),
        ),
        (
            "put_user",
            json!({"username": "v"}),
            json!({"display_name": "V", "profile": "student", "structures": ["S"]}),
        ),
        (
            "put_user",
            json!({"username": "p"}),
            json!({"display_name": "P", "profile": "parent", "structures": ["S"]}),
        ),
        (
            "put_class",
            json!({"id": "C"}),
            json!({"structure": "S", "name": "6e A", "members": ["u"]}),
        ),
        (
            "put_group",
            json!({"id": "G"}),
            json!({"name": "Club", "members": ["u"]}),
        ),
        (
            "add_class_member",
            json!({"id": "C", "username": "v"}),
            json!({}),
        ),
        (
            "remove_class_member",
            json!({"id": "C", "username": "u"}),
            json!({}),
        ),
        (
            "add_group_member",
            json!({"id": "G", "username": "v"}),
            json!({}),
        ),
        (
            "remove_group_member",
            json!({"id": "G", "username": "u"}),
            json!({}),
        ),
        (
            "link_parent",
            json!({"username": "p", "child": "u"}),
            json!({}),
        ),
        (
            "unlink_parent",
            json!({"username": "p", "child": "u"}),
            json!({}),
        ),
        (
            "link_parent",
            json!({"username": "p", "child": "v"}),
            json!({}),
        ),
        (
            "set_profile_access",
            json!({"id": "S", "profile": "parent"}),
            json!({"enabled": false}),
        ),
        (
            "set_rule",
            json!({"id": "S", "from": "student", "to": "teacher"}),
            json!({"scope": "any"}),
        ),
        ("delete_group", json!({"id": "G"}), json!({})),
        ("delete_class", json!({"id": "C"}), json!({})),
        ("delete_user", json!({"username": "v"}), json!({})),
        ("delete_structure", json!({"id": "T"}), json!({})),
    ];
    let dump = |server: &TestServer| {
        let token = server.server().admin_token().to_owned();
        let addr = server.http;
        async move {
            let mut all = Vec::new();
            for path in [
                "/structures",
                "/structures/S",
                "/structures/T",
                "/users/u",
                "/users/v",
                "/users/p",
                "/classes/C",
                "/groups/G",
            ] {
                let got = crate::common::http(
                    addr,
                    "GET",
                    &format!("/admin/api/v1{path}"),
                    Some(&token),
                    None,
                )
                .await;
                all.push((path, got));
            }
            all
        }
    };
    let mut exercised = std::collections::BTreeSet::new();
    for (name, params, body) in steps {
        let op = import_op(name).expect("a known op");
        exercised.insert(name);
        let mut path = op.path.to_owned();
        let mut line = serde_json::Map::new();
        line.insert("op".into(), json!(name));
        for field in op.path_fields() {
            let value = params[field].as_str().expect("path parameter");
            path = path.replace(&format!("{{{field}}}"), value);
            line.insert(field.into(), json!(value));
        }
        for (field, value) in body.as_object().unwrap() {
            assert!(op.body.contains(&field.as_str()), "{name} takes no {field}");
            line.insert(field.clone(), value.clone());
        }
        let body_text = body.to_string();
        let (status, answer) = crate::common::http(
            by_api.http,
            op.method,
            &format!("/admin/api/v1{path}"),
            Some(by_api.server().admin_token()),
            (op.method == "PUT").then_some(body_text.as_str()),
        )
        .await;
        assert!(
            status == 204 || status == 200,
            "{name} by the API: {status} {answer}"
        );
        let (status, answer) = crate::common::http(
            by_import.http,
            "POST",
            "/admin/api/v1/import",
            Some(by_import.server().admin_token()),
            Some(&Value::Object(line).to_string()),
        )
        .await;
        assert_eq!(status, 200, "{name} imported: {answer}");
        assert_eq!(dump(&by_api).await, dump(&by_import).await, "after {name}");
    }
    let every: std::collections::BTreeSet<&str> = IMPORT_OPS.iter().map(|o| o.op).collect();
    assert_eq!(exercised, every);
    // The password given with put_user works alike.
    for server in [&by_api, &by_import] {
        Raw::connect(server.c2s).await.login("u", "pw-u", "r").await;
    }
    by_api.stop().await;
    by_import.stop().await;
}

/// Found by the `sasl` fuzz target: rsasl panicked on a one-byte SCRAM attribute.
#[tokio::test]
async fn a_malformed_scram_message_gets_malformed_request() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let server = TestServer::start_with(plaintext).await;
    server.add_user("alice", "pw").await;
    for (first, last) in [("n,,n=alice,r=abcdefgh", "c"), ("n,a,n=alice,r=abc", "")] {
        let mut raw = Raw::connect(server.c2s).await;
        raw.send(HEADER).await;
        raw.expect("</stream:features>").await;
        raw.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            b64(first)
        ))
        .await;
        let answer = if last.is_empty() {
            raw.expect("</failure>").await
        } else {
            raw.expect("</challenge>").await;
            raw.send(&format!(
                "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                b64(last)
            ))
            .await;
            raw.expect("</failure>").await
        };
        assert!(answer.contains("<malformed-request"), "{answer}");
    }
    still_serving(&server, "alice").await;
    server.stop().await;
}

/// HTTP connections are bounded in time as a whole: a connection that sends nothing, one
/// kept alive after a request, and a body trickled in are all closed (a body too slow gets
/// 408 first), instead of held for as long as their sender likes.
#[tokio::test]
async fn http_connections_are_bounded_in_time_headers_body_and_idleness() {
    let server = TestServer::start_with(|c| {
        c.http.request_timeout_secs = 1;
        c.http.idle_timeout_secs = 1;
    })
    .await;
    let bound = std::time::Duration::from_secs(4);
    // Nothing at all.
    let started = std::time::Instant::now();
    let mut silent = Raw::connect(server.http).await;
    silent.until_closed().await;
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    // A request answered, then nothing on a kept-alive connection.
    let mut kept = Raw::connect(server.http).await;
    kept.send("GET /.well-known/host-meta HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    kept.expect("</XRD>").await;
    let started = std::time::Instant::now();
    kept.until_closed().await;
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    // A BOSH body trickled in: a byte every 200 ms of a declared 1000.
    let mut trickle = Raw::connect(server.http).await;
    trickle
        .send(
            "POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\n\
             Content-Length: 1000\r\n\r\n<",
        )
        .await;
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(2500) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if !trickle.try_send(" ").await {
            break;
        }
    }
    let answer = trickle.until_closed().await;
    assert!(answer.contains("408") || answer.is_empty(), "{answer}");
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    server.stop().await;
}

/// HTTP connections per address: at the limit, the oldest idle one makes room for the
/// newcomer (a school's address is not locked out by one pupil's idle connections); in total,
/// past `http.max_connections`, new ones are refused.
#[tokio::test]
async fn http_connections_per_address_make_room_and_are_bounded_in_total() {
    let server = TestServer::start_with(|c| {
        c.http.max_connections_per_ip = 3;
        c.http.max_connections = 6;
        // Loopback is a trusted proxy by default, and proxies are not limited per address.
        c.http.trusted_proxies = Vec::new();
    })
    .await;
    let school: std::net::IpAddr = "127.0.0.11".parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(Raw::connect_from(server.http, school).await);
    }
    let mut pupil = Raw::connect_from(server.http, school).await;
    pupil
        .send("GET /.well-known/host-meta HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let answer = pupil.expect("</XRD>").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    idle[0].until_closed().await;
    // In total: six open (three from each of two addresses), the seventh is refused.
    let other: std::net::IpAddr = "127.0.0.12".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect_from(server.http, other).await;
        raw.send("GET /.well-known/host-meta HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        raw.expect("</XRD>").await;
        held.push(raw);
    }
    let mut seventh = Raw::connect_from(server.http, "127.0.0.13".parse().unwrap()).await;
    let refused = seventh.until_closed().await;
    assert!(refused.is_empty(), "{refused}");
    server.stop().await;
}
