//! XMPP over WebSocket (RFC 7395) on the HTTP listener: logins with each SASL mechanism and
//! with an ENT sign-on token, chat and presence with a TCP client, and what hostile framing
//! gets.

use std::collections::VecDeque;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{Io, TestServer, WAIT, Xmpp};
use crate::sso;

const OPEN: &str =
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";

/// A WebSocket client that speaks XMPP as text.
pub struct Ws {
    socket: WebSocketStream<std::pin::Pin<Box<dyn Io>>>,
    pending: VecDeque<String>,
    pub jid: String,
    ids: u32,
}

impl Ws {
    pub async fn connect(server: &TestServer) -> Self {
        Self::connect_with(server, |_| {}).await
    }

    /// Connects, letting `adjust` change the upgrade request's headers.
    pub async fn connect_with(
        server: &TestServer,
        adjust: impl FnOnce(&mut axum::http::HeaderMap),
    ) -> Self {
        let tcp = TcpStream::connect(server.http).await.expect("connect");
        Self::upgrade(Box::pin(tcp), "ws", server, adjust).await
    }

    /// Connects to an HTTPS listener (`http.tls`).
    pub async fn connect_tls(server: &TestServer) -> Self {
        let tcp = TcpStream::connect(server.http).await.expect("connect");
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(server.tls_client_config())
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        Self::upgrade(Box::pin(tls), "wss", server, |_| {}).await
    }

    async fn upgrade(
        io: std::pin::Pin<Box<dyn Io>>,
        scheme: &str,
        server: &TestServer,
        adjust: impl FnOnce(&mut axum::http::HeaderMap),
    ) -> Self {
        let mut request = format!("{scheme}://{}/xmpp-websocket", server.http)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
        adjust(request.headers_mut());
        let (socket, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, io))
                .await
                .expect("upgrade in time")
                .expect("upgrade accepted");
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol").unwrap(),
            "xmpp"
        );
        Self {
            socket,
            pending: VecDeque::new(),
            jid: String::new(),
            ids: 0,
        }
    }

    pub async fn send(&mut self, xml: &str) {
        self.socket
            .send(Message::Text(xml.into()))
            .await
            .expect("send");
    }

    pub async fn send_message(&mut self, message: Message) {
        self.socket.send(message).await.expect("send");
    }

    /// The next text message, `None` once the connection is closed.
    async fn receive(&mut self) -> Option<String> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a message in time")?;
            match message.ok()? {
                Message::Text(text) => {
                    let text = text.to_string();
                    // Answer the server's XEP-0199 pings, as a client does.
                    if text.starts_with("<iq")
                        && text.contains("urn:xmpp:ping")
                        && text.contains("type='get'")
                    {
                        let id = text
                            .split("id='")
                            .nth(1)
                            .and_then(|s| s.split('\'').next())
                            .unwrap_or("");
                        let answer = format!(
                            "<iq xmlns='jabber:client' type='result' to='localhost' id='{id}'/>"
                        );
                        self.send(&answer).await;
                        continue;
                    }
                    return Some(text);
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    pub async fn expect(&mut self, needle: &str) -> String {
        self.expect_all(&[needle]).await
    }

    pub async fn expect_all(&mut self, needles: &[&str]) -> String {
        let matches = |s: &String| needles.iter().all(|n| s.contains(n));
        if let Some(at) = self.pending.iter().position(matches) {
            return self.pending.remove(at).unwrap();
        }
        loop {
            let text = self
                .receive()
                .await
                .unwrap_or_else(|| panic!("closed before {needles:?}; kept {:?}", self.pending));
            if matches(&text) {
                return text;
            }
            self.pending.push_back(text);
        }
    }

    /// Everything the server sends until it closes the connection.
    pub async fn until_closed(&mut self) -> String {
        let mut all = self.pending.drain(..).collect::<Vec<_>>().join("");
        while let Some(text) = self.receive().await {
            all.push_str(&text);
        }
        // Reading on sends our answer to the server's close frame.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.socket.next()).await {}
        all
    }

    pub async fn iq(&mut self, type_: &str, payload: &str) -> String {
        self.ids += 1;
        let id = format!("w{}", self.ids);
        self.send(&format!(
            "<iq xmlns='jabber:client' type='{type_}' id='{id}'>{payload}</iq>"
        ))
        .await;
        self.expect(&format!("id='{id}'")).await
    }

    /// Opens the stream and returns the features.
    pub async fn open(&mut self) -> String {
        self.send(OPEN).await;
        let open = self.expect("<open").await;
        assert!(
            open.contains("urn:ietf:params:xml:ns:xmpp-framing"),
            "{open}"
        );
        assert!(open.contains("version='1.0'"), "{open}");
        self.expect("features").await
    }

    /// SASL PLAIN with `password`; the server's answer (success or failure).
    pub async fn plain(&mut self, user: &str, password: &str) -> String {
        use base64::Engine;
        let features = self.open().await;
        assert!(features.contains(">PLAIN<"), "{features}");
        assert!(!features.contains("starttls"), "{features}");
        let data =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{data}</auth>"
        ))
        .await;
        self.expect("urn:ietf:params:xml:ns:xmpp-sasl").await
    }

    /// SCRAM-SHA-256 or SCRAM-SHA-1 (the `sasl` crate's client).
    pub async fn scram(&mut self, user: &str, password: &str, sha1: bool) {
        use base64::Engine;
        use sasl::client::Mechanism;
        use sasl::client::mechanisms::Scram;
        use sasl::common::scram::{Sha1, Sha256};
        let b64 = base64::engine::general_purpose::STANDARD;
        let features = self.open().await;
        let (name, mut mechanism): (&str, Box<dyn Mechanism + Send>) = if sha1 {
            let scram =
                Scram::<Sha1>::new(user, password, sasl::common::ChannelBinding::None).unwrap();
            ("SCRAM-SHA-1", Box::new(scram))
        } else {
            let scram =
                Scram::<Sha256>::new(user, password, sasl::common::ChannelBinding::None).unwrap();
            ("SCRAM-SHA-256", Box::new(scram))
        };
        assert!(features.contains(&format!(">{name}<")), "{features}");
        let initial = b64.encode(mechanism.initial());
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{name}'>{initial}</auth>"
        ))
        .await;
        let challenge = self.expect("<challenge").await;
        let data = b64.decode(inner_text(&challenge)).unwrap();
        let response = b64.encode(mechanism.response(&data).unwrap());
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{response}</response>"
        ))
        .await;
        let success = self.expect("<success").await;
        let data = b64.decode(inner_text(&success)).unwrap();
        mechanism
            .success(&data)
            .expect("the server proves it knows the password");
    }

    /// After SASL success: the new stream and the bound resource.
    pub async fn bind(&mut self, resource: &str) {
        let features = self.open().await;
        assert!(
            features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
            "{features}"
        );
        let bound = self
            .iq(
                "set",
                &format!("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind>"),
            )
            .await;
        assert!(bound.contains("type='result'"), "{bound}");
        self.jid = inner_text(&bound[bound.find("<jid").unwrap()..]).to_owned();
    }

    pub async fn login(server: &TestServer, user: &str, password: &str) -> Self {
        let mut ws = Self::connect(server).await;
        let answer = ws.plain(user, password).await;
        assert!(answer.contains("<success"), "{answer}");
        ws.bind("web").await;
        ws
    }

    pub async fn close(mut self) {
        self.send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
            .await;
        let rest = self.until_closed().await;
        // RFC 7395 §3.6: the server answers `<close/>` with its own, and no stream error.
        assert!(rest.contains("<close"), "{rest}");
        assert!(
            !rest.contains("stream:error") && !rest.contains("<error"),
            "{rest}"
        );
    }
}

/// The text of the first element in `xml` that has text.
fn inner_text(xml: &str) -> &str {
    let start = xml.find('>').map_or(0, |i| i + 1);
    let end = xml[start..].find('<').map_or(xml.len(), |i| start + i);
    &xml[start..end]
}

async fn server() -> TestServer {
    let server = TestServer::start_with(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        c.im.chat_requires_acceptance = false;
    })
    .await;
    for user in ["alice", "bob"] {
        server.add_user(user, "pw").await;
    }
    server
}

/// Alice on WebSocket, Bob on TCP: contact request, presence both ways, messages both ways,
/// the roster.
pub async fn chat_with_a_tcp_client(alice: &mut Ws, bob: &mut Xmpp) {
    let b = "bob@localhost";
    // Both available: the roster, then initial presence, which comes back to each.
    bob.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    bob.send("<presence xmlns='jabber:client'><show>away</show></presence>")
        .await;
    bob.expect_all(&["<presence", "from='bob@localhost/"]).await;
    alice.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    alice.send("<presence xmlns='jabber:client'/>").await;
    alice
        .expect_all(&["<presence", "from='alice@localhost/"])
        .await;
    alice
        .send(&format!(
            "<presence xmlns='jabber:client' to='{b}' type='subscribe'/>"
        ))
        .await;
    bob.expect_all(&["type='subscribe'", "alice@localhost"])
        .await;
    bob.send("<presence xmlns='jabber:client' to='alice@localhost' type='subscribed'/>")
        .await;
    alice.expect_all(&["type='subscribed'", b]).await;
    alice
        .expect_all(&["<presence", "from='bob@localhost/", "<show>away</show>"])
        .await;
    bob.expect_all(&["<presence", "from='alice@localhost/"])
        .await;
    let roster = alice.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    assert!(roster.contains(&format!("jid='{b}'")), "{roster}");
    assert!(roster.contains("subscription='both'"), "{roster}");

    alice
        .send(&format!(
            "<message xmlns='jabber:client' to='{b}' type='chat'><body>Bonjour depuis le navigateur</body></message>"
        ))
        .await;
    bob.expect("Bonjour depuis le navigateur").await;
    let to_alice = format!(
        "<message xmlns='jabber:client' to='{}' type='chat'><body>Bien reçu &amp; merci</body></message>",
        alice.jid
    );
    bob.send(&to_alice).await;
    let received = alice.expect("Bien reçu").await;
    assert!(
        received.starts_with("<message xmlns='jabber:client'"),
        "{received}"
    );
    assert!(received.contains("&amp; merci"), "{received}");
}

#[tokio::test]
async fn websocket_plain_login_chats_with_a_tcp_client() {
    let server = server().await;
    let mut alice = Ws::login(&server, "alice", "pw").await;
    assert!(
        alice.jid.starts_with("alice@localhost/web"),
        "{}",
        alice.jid
    );
    let mut bob = Xmpp::login(&server, "bob", "pw").await;
    chat_with_a_tcp_client(&mut alice, &mut bob).await;
    alice.close().await;
    bob.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn websocket_scram_logins() {
    let server = server().await;
    for sha1 in [false, true] {
        let mut ws = Ws::connect(&server).await;
        ws.scram("alice", "pw", sha1).await;
        ws.bind(if sha1 { "one" } else { "two" }).await;
        let pong = ws.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;
        assert!(pong.contains("type='result'"), "{pong}");
        ws.close().await;
    }
    // A wrong password is refused with the SASL failure, and the stream stays open.
    let mut ws = Ws::connect(&server).await;
    let refused = ws.plain("alice", "wrong").await;
    assert!(
        refused.contains("<failure") && refused.contains("not-authorized"),
        "{refused}"
    );
    server.stop().await;
}

#[tokio::test]
async fn websocket_sign_on_tokens() {
    let server = TestServer::start_with(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        c.auth.max_failures_per_account = 100;
        c.auth.max_failures_per_ip = 100;
        sso::configure(c);
    })
    .await;
    let admin = sso::school(&server).await;
    for (token, text) in [
        (
            sso::token("eleve1", -120, sso::ISSUER, sso::AUDIENCE, sso::SECRET),
            "expired",
        ),
        (
            sso::token(
                "eleve1",
                300,
                sso::ISSUER,
                sso::AUDIENCE,
                "another secret that is long enough!!",
            ),
            "not signed by this ENT",
        ),
        (
            sso::token(
                "eleve1",
                300,
                "https://autre-ent.example.fr",
                sso::AUDIENCE,
                sso::SECRET,
            ),
            "wrong iss",
        ),
        (
            sso::token("eleve1", 300, sso::ISSUER, "autre-service", sso::SECRET),
            "wrong aud",
        ),
        (
            sso::token("eleve2", 300, sso::ISSUER, sso::AUDIENCE, sso::SECRET),
            "another user",
        ),
    ] {
        let mut ws = Ws::connect(&server).await;
        let refused = ws.plain("eleve1", &token).await;
        assert!(
            refused.contains("not-authorized") && refused.contains(text),
            "{text}: {refused}"
        );
    }
    // A user the ENT signs for but who has no account here.
    let mut ws = Ws::connect(&server).await;
    let unknown = sso::token("inconnu", 300, sso::ISSUER, sso::AUDIENCE, sso::SECRET);
    let refused = ws.plain("inconnu", &unknown).await;
    assert!(refused.contains("does not know"), "{refused}");

    let mut ws = Ws::connect(&server).await;
    let good = sso::token("eleve1", 300, sso::ISSUER, sso::AUDIENCE, sso::SECRET);
    let success = ws.plain("eleve1", &good).await;
    assert!(success.contains("<success"), "{success}");
    ws.bind("ent").await;
    ws.close().await;

    // A profile whose chat access the ENT turned off: the token is good, the login is not.
    let (status, body) = crate::common::http(
        server.http,
        "PUT",
        "/admin/api/v1/structures/0750001A/profiles/student",
        Some(&admin),
        Some(r#"{"enabled":false}"#),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let mut ws = Ws::connect(&server).await;
    let good = sso::token("eleve1", 300, sso::ISSUER, sso::AUDIENCE, sso::SECRET);
    let refused = ws.plain("eleve1", &good).await;
    assert!(refused.contains("account-disabled"), "{refused}");
    server.stop().await;
}

#[tokio::test]
async fn websocket_refuses_what_is_not_rfc_7395() {
    let server = server().await;
    // No xmpp subprotocol: no upgrade.
    let request = format!("ws://{}/xmpp-websocket", server.http)
        .into_client_request()
        .unwrap();
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
    // A page from an origin that is not allowed: no upgrade.
    let request = {
        let mut request = format!("ws://{}/xmpp-websocket", server.http)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
        request
            .headers_mut()
            .insert("Origin", "https://evil.example".parse().unwrap());
        request
    };
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
    // The server's own host under another scheme is another origin (regression: the scheme
    // was ignored); under the request's own scheme it is the server's page.
    let with_origin = |origin: String| {
        let mut request = format!("ws://{}/xmpp-websocket", server.http)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    let other_scheme = with_origin(format!("https://{}", server.http));
    assert!(
        tokio_tungstenite::connect_async(other_scheme)
            .await
            .is_err()
    );
    let own = with_origin(format!("http://{}", server.http));
    assert!(tokio_tungstenite::connect_async(own).await.is_ok());

    let cases: [(&str, Message, &str); 6] = [
        (
            "a stanza before <open/>",
            Message::Text("<message xmlns='jabber:client'/>".into()),
            "invalid-namespace",
        ),
        (
            "two elements in a frame",
            Message::Text(format!("{OPEN}{OPEN}").into()),
            "not-well-formed",
        ),
        ("not XML", Message::Text("hello".into()), "not-well-formed"),
        (
            "a binary frame",
            Message::Binary(OPEN.as_bytes().to_vec().into()),
            "bad-format",
        ),
        (
            "half an element",
            Message::Text("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'>".into()),
            "not-well-formed",
        ),
        (
            "a deep element",
            Message::Text(format!("{}{}", "<a>".repeat(100), "</a>".repeat(100)).into()),
            "policy-violation",
        ),
    ];
    for (what, message, condition) in cases {
        let mut ws = Ws::connect(&server).await;
        ws.send_message(message).await;
        let all = ws.until_closed().await;
        assert!(all.contains(condition), "{what}: {all}");
        assert!(
            all.contains("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'"),
            "{what}: {all}"
        );
    }
    // After the stream is open too, and a bound session: nothing lost for the others.
    let mut bob = Xmpp::login(&server, "bob", "pw").await;
    let mut alice = Ws::login(&server, "alice", "pw").await;
    alice
        .send("<message xmlns='jabber:client'/><message xmlns='jabber:client'/>")
        .await;
    let all = alice.until_closed().await;
    assert!(all.contains("not-well-formed"), "{all}");
    let pong = bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;
    assert!(pong.contains("type='result'"), "{pong}");
    // An oversized message.
    let mut alice = Ws::login(&server, "alice", "pw").await;
    let big = format!(
        "<message xmlns='jabber:client' to='bob@localhost'><body>{}</body></message>",
        "x".repeat(300 * 1024)
    );
    alice.send(&big).await;
    let all = alice.until_closed().await;
    assert!(all.contains("policy-violation") || all.is_empty(), "{all}");
    bob.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn websocket_that_never_opens_is_closed_and_leaves_nothing() {
    let server = TestServer::start_with(|c| {
        c.limits.negotiation_timeout_secs = 1;
        c.limits.tls_timeout_secs = 1;
        c.limits.max_unauthenticated_per_ip = 2;
    })
    .await;
    // More silent sockets than the address may keep logging in: each is closed after the
    // negotiation timeout, and the slots come back.
    for _ in 0..2 {
        let mut silent = Ws::connect(&server).await;
        let all = silent.until_closed().await;
        assert!(all.contains("connection-timeout"), "{all}");
    }
    let mut a = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    let mut request = format!("ws://{}/xmpp-websocket", server.http)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
    let third = tokio_tungstenite::connect_async(request).await;
    assert!(
        third.is_err(),
        "a third connection logging in from one address is refused"
    );
    assert!(a.until_closed().await.contains("connection-timeout"));
    assert!(b.until_closed().await.contains("connection-timeout"));
    let mut again = Ws::connect(&server).await;
    let features = again.open().await;
    assert!(features.contains("mechanisms"), "{features}");
    server.stop().await;
}

#[tokio::test]
async fn host_meta_advertises_both_endpoints() {
    let server = TestServer::start().await;
    let (status, xrd) =
        crate::common::http(server.http, "GET", "/.well-known/host-meta", None, None).await;
    assert_eq!(status, 200, "{xrd}");
    assert!(xrd.contains("urn:xmpp:alt-connections:websocket"), "{xrd}");
    assert!(
        xrd.contains("href='ws://localhost/xmpp-websocket'"),
        "{xrd}"
    );
    assert!(xrd.contains("href='http://localhost/http-bind'"), "{xrd}");
    let (status, json) = crate::common::http(
        server.http,
        "GET",
        "/.well-known/host-meta.json",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["links"][0]["href"], "ws://localhost/xmpp-websocket");
    assert_eq!(json["links"][1]["rel"], "urn:xmpp:alt-connections:xbosh");
    server.stop().await;
}

#[tokio::test]
async fn a_signed_in_user_gets_an_app_password_for_desktop_clients() {
    // Over plain HTTP from anywhere but an allowed loopback: refused, the token unread.
    let plain = TestServer::start_with(sso::configure).await;
    sso::school(&plain).await;
    let token = sso::token("prof1", 300, sso::ISSUER, sso::AUDIENCE, sso::SECRET);
    let (status, body) = crate::common::http(
        plain.http,
        "POST",
        "/api/v1/app-password",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("HTTPS"), "{body}");
    plain.stop().await;

    let server = TestServer::start_with(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        sso::configure(c);
    })
    .await;
    let admin = sso::school(&server).await;
    let (status, body) = crate::common::http(
        server.http,
        "POST",
        "/api/v1/app-password",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["jid"], "prof1@localhost");
    let password = answer["password"].as_str().unwrap().to_owned();
    // A desktop client logs in with it (STARTTLS, SCRAM).
    let client = Xmpp::login(&server, "prof1", &password).await;
    client.logout().await;
    // No token, a bad one, the admin token, one of 100 KB, or the same token again (a
    // stolen token mints no second password): refused, and nothing changes.
    let huge = format!("eyJ{}.e30.x", "a".repeat(100_000));
    for authorization in [
        None,
        Some(admin.as_str()),
        Some("eyJhbGciOiJIUzI1NiJ9.e30.x"),
        Some(huge.as_str()),
        Some(token.as_str()),
    ] {
        let (status, body) = crate::common::http(
            server.http,
            "POST",
            "/api/v1/app-password",
            authorization,
            None,
        )
        .await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    let client = Xmpp::login(&server, "prof1", &password).await;
    client.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn websocket_clients_can_be_sent_elsewhere() {
    let server = TestServer::start_with(|c| {
        c.http.websocket_see_other_uri = "wss://chat2.ent.example.fr/xmpp-websocket".into();
    })
    .await;
    let mut ws = Ws::connect(&server).await;
    ws.send(OPEN).await;
    let all = ws.until_closed().await;
    assert!(
        all.contains("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing' see-other-uri='wss://chat2.ent.example.fr/xmpp-websocket'"),
        "{all}"
    );
    server.stop().await;
}

#[tokio::test]
async fn websocket_over_the_https_listener_signs_in_with_a_token() {
    // No plaintext allowance anywhere: PLAIN, and the token, are offered because of TLS.
    let server = TestServer::start_with(|c| {
        c.http.tls = true;
        sso::configure(c);
    })
    .await;
    server.add_user("eleve1", "pw").await;
    let mut ws = Ws::connect_tls(&server).await;
    let token = sso::token("eleve1", 300, sso::ISSUER, sso::AUDIENCE, sso::SECRET);
    let success = ws.plain("eleve1", &token).await;
    assert!(success.contains("<success"), "{success}");
    ws.bind("https").await;
    ws.close().await;
    // The same listener over plain HTTP: no answer but a failed handshake.
    let request = format!("ws://{}/xmpp-websocket", server.http)
        .into_client_request()
        .unwrap();
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn a_trusted_proxy_vouches_for_tls() {
    let server = TestServer::start().await;
    // Loopback without TLS and without the plaintext allowance: no PLAIN.
    let mut direct = Ws::connect(&server).await;
    let features = direct.open().await;
    assert!(!features.contains(">PLAIN<"), "{features}");
    // The same through the proxy (loopback is trusted by default) that ended TLS: PLAIN.
    let mut proxied = Ws::connect_with(&server, |headers| {
        headers.insert("X-Forwarded-Proto", "https".parse().unwrap());
        headers.insert("X-Forwarded-For", "203.0.113.7".parse().unwrap());
    })
    .await;
    let features = proxied.open().await;
    assert!(features.contains(">PLAIN<"), "{features}");
    server.stop().await;
}
