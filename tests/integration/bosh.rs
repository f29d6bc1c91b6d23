//! XMPP over BOSH (XEP-0124, XEP-0206) on the HTTP listener: logins, chat and presence with a
//! TCP client, retransmissions, requests out of order, the rid window, expiry, and bad input.

use std::time::Duration;

use base64::Engine;

use crate::common::{TestServer, WAIT, Xmpp, http};
use crate::sso;

const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

/// POSTs a body and returns the answer's status and body.
async fn post(server: &TestServer, body: &str) -> (u16, String) {
    http(server.http, "POST", "/http-bind", None, Some(body)).await
}

/// A BOSH client that sends one request at a time, as text.
struct Bosh {
    sid: String,
    rid: u64,
    /// Answers' contents not yet looked at.
    kept: String,
}

impl Bosh {
    /// Creates a session; returns it and the creation answer.
    async fn create(server: &TestServer) -> (Self, String) {
        let rid = 1000;
        let (status, answer) = post(
            server,
            &format!(
                "<body xmlns='{HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh' content='text/xml; charset=utf-8' \
                 hold='1' rid='{rid}' to='localhost' ver='1.6' wait='2' xml:lang='en' xmpp:version='1.0'/>"
            ),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let sid = attribute(&answer, "sid").unwrap_or_else(|| panic!("no sid: {answer}"));
        (
            Self {
                sid,
                rid,
                kept: String::new(),
            },
            answer,
        )
    }

    fn body(&mut self, attributes: &str, inner: &str) -> String {
        self.rid += 1;
        format!(
            "<body xmlns='{HTTPBIND}' rid='{}' sid='{}'{attributes}>{inner}</body>",
            self.rid, self.sid
        )
    }

    /// Sends stanzas in the next request; returns the answer.
    async fn send(&mut self, server: &TestServer, inner: &str) -> String {
        let body = self.body("", inner);
        let (status, answer) = post(server, &body).await;
        assert_eq!(status, 200, "{answer}");
        self.kept.push_str(&answer);
        answer
    }

    /// Polls until what came contains every one of `needles`; returns what came.
    async fn expect_all(&mut self, server: &TestServer, needles: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if needles.iter().all(|n| self.kept.contains(n)) {
                return std::mem::take(&mut self.kept);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing with {needles:?}; got {}",
                self.kept
            );
            self.send(server, "").await;
        }
    }

    async fn plain(server: &TestServer, user: &str, password: &str) -> (Self, String) {
        let (mut bosh, features) = Self::create(server).await;
        assert!(features.contains(">PLAIN<"), "{features}");
        let data =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let answer = bosh
            .send(
                server,
                &format!(
                    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{data}</auth>"
                ),
            )
            .await;
        bosh.kept.clear();
        (bosh, answer)
    }

    async fn restart_and_bind(&mut self, server: &TestServer) {
        let restart = self.body(
            " xmlns:xmpp='urn:xmpp:xbosh' xmpp:restart='true' to='localhost'",
            "",
        );
        let (_, features) = post(server, &restart).await;
        assert!(
            features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
            "{features}"
        );
        let bound = self
            .send(
                server,
                "<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bosh</resource></bind></iq>",
            )
            .await;
        assert!(
            bound.contains("<jid>") || self.kept.contains("<jid>"),
            "{bound}"
        );
        self.expect_all(server, &["id='bind'", "type='result'"])
            .await;
    }

    async fn login(server: &TestServer, user: &str, password: &str) -> Self {
        let (mut bosh, answer) = Self::plain(server, user, password).await;
        assert!(answer.contains("<success"), "{answer}");
        bosh.restart_and_bind(server).await;
        bosh
    }
}

fn attribute(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!(" {name}='"))? + name.len() + 3;
    Some(xml[start..start + xml[start..].find('\'')?].to_owned())
}

async fn server() -> TestServer {
    let server = TestServer::start_with(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        c.im.chat_requires_acceptance = false;
        c.http.bosh_settings.max_wait_secs = 2;
    })
    .await;
    for user in ["alice", "bob"] {
        server.add_user(user, "pw").await;
    }
    server
}

#[tokio::test]
async fn bosh_login_chats_and_shares_presence_with_a_tcp_client() {
    let server = server().await;
    let (_, creation) = Bosh::create(&server).await;
    for parameter in [
        "sid='",
        "wait='2'",
        "hold='1'",
        "requests='2'",
        "inactivity='",
        "ver='1.11'",
        "xmpp:version='1.0'",
        "ack='1000'",
    ] {
        assert!(creation.contains(parameter), "{parameter}: {creation}");
    }
    assert!(creation.contains("<stream:features"), "{creation}");

    let mut alice = Bosh::login(&server, "alice", "pw").await;
    let mut bob = Xmpp::login(&server, "bob", "pw").await;
    bob.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    bob.send("<presence xmlns='jabber:client'><show>dnd</show></presence>")
        .await;
    bob.expect_all(&["<presence", "from='bob@localhost/"]).await;

    alice
        .send(&server, "<iq xmlns='jabber:client' type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq><presence xmlns='jabber:client'/>")
        .await;
    alice
        .expect_all(&server, &["id='r1'", "from='alice@localhost/bosh'"])
        .await;
    alice
        .send(
            &server,
            "<presence xmlns='jabber:client' to='bob@localhost' type='subscribe'/>",
        )
        .await;
    bob.expect_all(&["type='subscribe'", "alice@localhost"])
        .await;
    bob.send("<presence xmlns='jabber:client' to='alice@localhost' type='subscribed'/>")
        .await;
    alice
        .expect_all(&server, &["type='subscribed'", "<show>dnd</show>"])
        .await;
    bob.expect_all(&["<presence", "from='alice@localhost/bosh'"])
        .await;

    alice
        .send(&server, "<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>Par BOSH</body></message>")
        .await;
    bob.expect("Par BOSH").await;
    bob.send("<message xmlns='jabber:client' to='alice@localhost/bosh' type='chat'><body>Bien reçu</body></message>").await;
    let got = alice.expect_all(&server, &["Bien reçu"]).await;
    assert!(got.contains("<message xmlns='jabber:client'"), "{got}");

    // The client ends the session, its last presence included: Bob sees Alice go.
    let end = alice.body(
        " type='terminate'",
        "<presence xmlns='jabber:client' type='unavailable'/>",
    );
    let (_, answer) = post(&server, &end).await;
    assert!(answer.contains("type='terminate'"), "{answer}");
    bob.expect_all(&["type='unavailable'", "alice@localhost/bosh"])
        .await;
    let after = alice.body("", "");
    let (_, answer) = post(&server, &after).await;
    assert!(answer.contains("item-not-found"), "{answer}");
    bob.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn bosh_scram_and_token_logins() {
    let server = TestServer::start_with(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        c.http.bosh_settings.max_wait_secs = 2;
        sso::configure(c);
    })
    .await;
    sso::school(&server).await;
    server.add_user("alice", "pw").await;
    // SCRAM-SHA-256 and SCRAM-SHA-1.
    for sha1 in [false, true] {
        use sasl::client::Mechanism;
        use sasl::client::mechanisms::Scram;
        use sasl::common::ChannelBinding;
        use sasl::common::scram::{Sha1, Sha256};
        let b64 = base64::engine::general_purpose::STANDARD;
        let (mut bosh, features) = Bosh::create(&server).await;
        let (name, mut scram): (&str, Box<dyn Mechanism + Send>) = if sha1 {
            let scram = Scram::<Sha1>::new("alice", "pw", ChannelBinding::None).unwrap();
            ("SCRAM-SHA-1", Box::new(scram))
        } else {
            let scram = Scram::<Sha256>::new("alice", "pw", ChannelBinding::None).unwrap();
            ("SCRAM-SHA-256", Box::new(scram))
        };
        assert!(features.contains(&format!(">{name}<")), "{features}");
        let initial = b64.encode(scram.initial());
        let challenge = bosh
            .send(&server, &format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{name}'>{initial}</auth>"))
            .await;
        let data = b64.decode(text_of(&challenge, "challenge")).unwrap();
        let response = b64.encode(scram.response(&data).unwrap());
        let success = bosh
            .send(
                &server,
                &format!(
                    "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{response}</response>"
                ),
            )
            .await;
        let data = b64.decode(text_of(&success, "success")).unwrap();
        scram.success(&data).expect("the server knows the password");
        bosh.kept.clear();
        bosh.restart_and_bind(&server).await;
    }
    // An ENT token, and a wrong one.
    let good = sso::token("eleve1", 300, sso::ISSUER, sso::AUDIENCE, sso::SECRET);
    let (mut bosh, answer) = Bosh::plain(&server, "eleve1", &good).await;
    assert!(answer.contains("<success"), "{answer}");
    bosh.restart_and_bind(&server).await;
    let expired = sso::token("eleve1", -300, sso::ISSUER, sso::AUDIENCE, sso::SECRET);
    let (_, answer) = Bosh::plain(&server, "eleve1", &expired).await;
    assert!(
        answer.contains("not-authorized") && answer.contains("expired"),
        "{answer}"
    );
    server.stop().await;
}

fn text_of<'a>(xml: &'a str, element: &str) -> &'a str {
    let start = xml.find(&format!("<{element}")).expect("element");
    let start = start + xml[start..].find('>').unwrap() + 1;
    &xml[start..start + xml[start..].find('<').unwrap()]
}

#[tokio::test]
async fn bosh_retransmission_and_requests_out_of_order() {
    let server = server().await;
    let mut bob = Xmpp::login(&server, "bob", "pw").await;
    bob.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    bob.send("<presence xmlns='jabber:client'/>").await;
    bob.expect_all(&["<presence", "from='bob@localhost/"]).await;
    let mut alice = Bosh::login(&server, "alice", "pw").await;

    // The same rid again gets the same answer, and the request is processed once.
    let ping = alice.body(
        "",
        "<iq xmlns='jabber:client' type='get' id='once'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    let (_, first) = post(&server, &ping).await;
    assert!(first.contains("id='once'"), "{first}");
    let (_, again) = post(&server, &ping).await;
    assert_eq!(first, again, "a retransmission gets the same answer");

    // Two requests sent out of order: processed in rid order.
    let one = alice.body("", "<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>premier</body></message>");
    let two = alice.body("", "<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>second</body></message>");
    let addr = server.http;
    let later =
        tokio::spawn(async move { http(addr, "POST", "/http-bind", None, Some(&two)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = post(&server, &one).await;
    assert_eq!(status, 200);
    let (status, _) = later.await.unwrap();
    assert_eq!(status, 200);
    let first = bob.expect("<body>").await;
    assert!(first.contains("premier"), "{first}");
    bob.expect("second").await;

    // A rid far outside the window ends the session.
    alice.rid += 50;
    let far = alice.body("", "");
    let (_, answer) = post(&server, &far).await;
    assert!(
        answer.contains("type='terminate'") && answer.contains("item-not-found"),
        "{answer}"
    );
    assert!(answer.contains("outside the window"), "{answer}");
    let next = alice.body("", "");
    let (_, answer) = post(&server, &next).await;
    assert!(answer.contains("item-not-found"), "{answer}");
    bob.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn bosh_session_expires_after_inactivity() {
    let server = TestServer::start_with(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        c.http.bosh_settings.max_wait_secs = 1;
        c.http.bosh_settings.inactivity_secs = 2;
    })
    .await;
    server.add_user("alice", "pw").await;
    let mut watcher = Xmpp::login(&server, "alice", "pw").await;
    watcher.send("<presence xmlns='jabber:client'/>").await;
    let mut alice = Bosh::login(&server, "alice", "pw").await;
    alice
        .send(&server, "<presence xmlns='jabber:client'/>")
        .await;
    watcher
        .expect_all(&["<presence", "from='alice@localhost/bosh'"])
        .await;
    // No request for longer than the inactivity: the session ends, its resource goes
    // unavailable, and its sid is unknown.
    tokio::time::sleep(Duration::from_secs(4)).await;
    watcher
        .expect_all(&["type='unavailable'", "from='alice@localhost/bosh'"])
        .await;
    let (_, answer) = post(&server, &alice.body("", "")).await;
    assert!(answer.contains("item-not-found"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn bosh_bad_input_gets_terminal_conditions() {
    let server = server().await;
    let mut bob = Xmpp::login(&server, "bob", "pw").await;
    for (what, body, condition) in [
        ("not XML", "hello".to_owned(), "bad-request"),
        (
            "not a body",
            "<message xmlns='jabber:client'/>".to_owned(),
            "bad-request",
        ),
        (
            "no rid",
            format!("<body xmlns='{HTTPBIND}' to='localhost'/>"),
            "bad-request",
        ),
        (
            "a wrong sid",
            format!("<body xmlns='{HTTPBIND}' rid='5' sid='nope'/>"),
            "item-not-found",
        ),
        (
            "another host",
            format!("<body xmlns='{HTTPBIND}' rid='5' to='example.org' wait='2' hold='1'/>"),
            "host-unknown",
        ),
        (
            "a deep body",
            format!(
                "<body xmlns='{HTTPBIND}' rid='5'>{}{}</body>",
                "<a>".repeat(100),
                "</a>".repeat(100)
            ),
            "policy-violation",
        ),
    ] {
        let (status, answer) = post(&server, &body).await;
        assert_eq!(status, 200, "{what}: {answer}");
        assert!(
            answer.contains("type='terminate'") && answer.contains(condition),
            "{what}: {answer}"
        );
        assert!(answer.contains("<text"), "{what}: says why: {answer}");
    }
    let huge = format!(
        "<body xmlns='{HTTPBIND}' rid='5'>{}</body>",
        "x".repeat(400 * 1024)
    );
    let (status, answer) = post(&server, &huge).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("policy-violation"), "{answer}");
    // The others are unaffected.
    let pong = bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;
    assert!(pong.contains("type='result'"), "{pong}");
    bob.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn bosh_cors_preflight_follows_the_allow_list() {
    let server = TestServer::start_with(|c| {
        c.http.allowed_origins = vec!["https://ent.example.fr".into()];
    })
    .await;
    let preflight = |origin: &'static str| async move {
        let mut tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(
            format!(
                "OPTIONS /http-bind HTTP/1.1\r\nHost: chat.example.fr\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        answer.to_ascii_lowercase()
    };
    let allowed = preflight("https://ent.example.fr").await;
    assert!(
        allowed.contains("access-control-allow-origin: https://ent.example.fr"),
        "{allowed}"
    );
    assert!(
        allowed.contains("access-control-allow-methods"),
        "{allowed}"
    );
    let refused = preflight("https://evil.example").await;
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );
    server.stop().await;
}
