//! Test helpers: the real server on ephemeral ports, a raw XML client for edge cases, and a
//! tokio-xmpp client that trusts the server's generated certificate.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use causette::{Config, Server};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::xmlstream::{
    PendingFeaturesRecv, ReadError, StreamHeader, Timeouts, XmppStreamElement, initiate_stream,
};

/// Bounds every wait, so that a broken server fails a test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub c2s: SocketAddr,
    pub direct_tls: SocketAddr,
    pub http: SocketAddr,
}

impl TestServer {
    /// Defaults of the shipped configuration, on loopback port 0 with a temporary SQLite store.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.listen.c2s = vec!["127.0.0.1:0".parse().unwrap()];
        config.listen.c2s_direct_tls = vec!["127.0.0.1:0".parse().unwrap()];
        config.http.listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.admin.demo_directory = false;
        adjust(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let c2s = server.c2s_addrs()[0];
        let direct_tls = server.direct_tls_addrs()[0];
        let http = server.http_addrs()[0];
        Self {
            server: Some(server),
            dir,
            c2s,
            direct_tls,
            http,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub async fn add_user(&self, name: &str, password: &str) {
        let iterations = self.server().config().auth.scram_iterations;
        causette::accounts::add(&self.server().store(), name, password.into(), iterations)
            .await
            .expect("user created");
    }

    /// A TLS client configuration trusting the certificate the server generated.
    pub fn tls_client_config(&self) -> Arc<ClientConfig> {
        let pem = std::fs::read(self.dir.path().join("tls/localhost.crt")).expect("certificate");
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A client that writes XML text and reads the server's bytes as text.
pub struct Raw {
    io: Pin<Box<dyn Io>>,
    buffer: String,
}

pub const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
     xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Self {
            io: Box::pin(tcp),
            buffer: String::new(),
        }
    }

    /// Connects from another loopback address (127.0.0.0/8 is all loopback), as a client
    /// elsewhere would.
    pub async fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(local, 0)).expect("bind");
        let tcp = socket.connect(addr).await.expect("connect");
        Self {
            io: Box::pin(tcp),
            buffer: String::new(),
        }
    }

    /// Connects to a direct-TLS port.
    pub async fn connect_tls(addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        Self {
            io: Box::pin(tls),
            buffer: String::new(),
        }
    }

    /// Keeps what the server sent, with attribute quotes normalised to `'` so that tests
    /// need not care which quote a serialiser picked.
    fn push(&mut self, bytes: &[u8]) {
        self.buffer
            .push_str(&String::from_utf8_lossy(bytes).replace('"', "'"));
    }

    pub async fn send(&mut self, xml: &str) {
        self.io.write_all(xml.as_bytes()).await.expect("write");
    }

    /// Sends, and says whether the connection took it (false once the server closed it).
    pub async fn try_send(&mut self, text: &str) -> bool {
        self.io.write_all(text.as_bytes()).await.is_ok()
    }

    /// Sends what a hostile client would, without minding that the server may close the
    /// connection before it has read it all.
    pub async fn send_hostile(&mut self, xml: &str) {
        let _ = tokio::time::timeout(WAIT, self.io.write_all(xml.as_bytes())).await;
    }

    /// Reads until `needle` has arrived; returns everything read up to and including it.
    pub async fn expect(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(at) = self.buffer.find(needle) {
                let end = at + needle.len();
                let head: String = self.buffer.drain(..end).collect();
                return head;
            }
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await;
            match read {
                Ok(Ok(0)) => panic!(
                    "connection closed while waiting for {needle:?}; got {:?}",
                    self.buffer
                ),
                Ok(Ok(n)) => self.push(&chunk[..n]),
                Ok(Err(e)) => panic!(
                    "read error {e} while waiting for {needle:?}; got {:?}",
                    self.buffer
                ),
                Err(_) => panic!("timed out waiting for {needle:?}; got {:?}", self.buffer),
            }
        }
    }

    /// Reads until the server closes the connection; returns all that was read.
    pub async fn until_closed(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return std::mem::take(&mut self.buffer),
                Ok(Ok(n)) => self.push(&chunk[..n]),
                Err(_) => panic!("server did not close; got {:?}", self.buffer),
            }
        }
    }

    /// STARTTLS on a fresh connection: header, features, `<starttls/>`, `<proceed/>`, handshake.
    pub async fn starttls(addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        let mut raw = Self::connect(addr).await;
        raw.send(HEADER).await;
        raw.expect("</stream:features>").await;
        raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        // Our server writes explicit end tags: the whole element has then been read.
        raw.expect("</proceed>").await;
        let tcp = raw.io;
        let name = ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        Self {
            io: Box::pin(tls),
            buffer: String::new(),
        }
    }

    /// Opens a stream with `header` and authenticates with PLAIN, up to `<success/>`.
    pub async fn authenticate(&mut self, header: &str, user: &str, password: &str) {
        use base64::Engine;
        self.send(header).await;
        self.expect("</stream:features>").await;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        ))
        .await;
        self.expect("<success").await;
    }

    /// Authenticates with PLAIN and binds `resource` on an already secured (or allowed) stream.
    pub async fn login(mut self, user: &str, password: &str, resource: &str) -> Self {
        self.authenticate(HEADER, user, password).await;
        self.send(HEADER).await;
        self.expect("</stream:features>").await;
        self.send(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ))
        .await;
        self.expect("</iq>").await;
        self
    }
}

/// One PLAIN attempt on a fresh stream: the server's `<success/>` or whole `<failure/>`.
pub async fn plain_attempt(mut raw: Raw, user: &str, password: &str) -> String {
    use base64::Engine;
    raw.send(HEADER).await;
    raw.expect("</stream:features>").await;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    raw.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
    ))
    .await;
    let answer = raw.expect(">").await;
    if answer.contains("<success") {
        return answer;
    }
    answer + &raw.expect("</failure>").await
}

/// tokio-xmpp's client, connected over STARTTLS to the test server and trusting its
/// certificate; with `channel_binding`, SCRAM runs as -PLUS with tls-exporter.
#[derive(Clone)]
pub struct TestConnector {
    pub addr: SocketAddr,
    pub tls: Arc<ClientConfig>,
    pub channel_binding: bool,
}

impl std::fmt::Debug for TestConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestConnector")
            .field("addr", &self.addr)
            .finish()
    }
}

fn header(jid: &Jid) -> StreamHeader<'static> {
    StreamHeader {
        to: Some(jid.domain().as_str().to_owned().into()),
        from: None,
        id: None,
    }
}

impl ServerConnector for TestConnector {
    type Stream = BufStream<tokio_rustls::client::TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<
        (
            PendingFeaturesRecv<Self::Stream>,
            sasl::common::ChannelBinding,
        ),
        tokio_xmpp::Error,
    > {
        let tcp = TcpStream::connect(self.addr).await?;
        let stream = initiate_stream(BufStream::new(tcp), ns, header(jid), timeouts).await?;
        let (features, mut stream) = stream
            .recv_features::<tokio_xmpp::xmlstream::FallibleStreamElement>()
            .await?;
        assert!(features.can_starttls(), "server offers STARTTLS");
        let request = XmppStreamElement::Starttls(tokio_xmpp::parsers::starttls::Nonza::Request(
            tokio_xmpp::parsers::starttls::Request,
        ));
        stream.send(&request).await?;
        loop {
            match stream.next().await {
                Some(Ok(element)) => {
                    if let Ok(XmppStreamElement::Starttls(
                        tokio_xmpp::parsers::starttls::Nonza::Proceed(_),
                    )) = element.into_read_error()
                    {
                        break;
                    }
                }
                Some(Err(ReadError::SoftTimeout)) => continue,
                _ => return Err(tokio_xmpp::Error::Disconnected),
            }
        }
        let tcp = stream.into_inner().into_inner();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;
        let binding = if self.channel_binding {
            let (_, connection) = tls.get_ref();
            let data = connection
                .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                .expect("TLS 1.3 exporter");
            sasl::common::ChannelBinding::TlsExporter(data)
        } else {
            sasl::common::ChannelBinding::None
        };
        let stream = initiate_stream(BufStream::new(tls), ns, header(jid), timeouts).await?;
        Ok((stream, binding))
    }
}

/// A logged-in tokio-xmpp client and its bound JID.
pub async fn xmpp_client(
    server: &TestServer,
    jid: &str,
    password: &str,
    channel_binding: bool,
) -> (tokio_xmpp::Client, Jid) {
    let connector = TestConnector {
        addr: server.c2s,
        tls: server.tls_client_config(),
        channel_binding,
    };
    let jid = Jid::new(jid).unwrap();
    let mut client =
        tokio_xmpp::Client::new_with_connector(jid, password, connector, Timeouts::tight());
    loop {
        let event = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("client goes online in time")
            .expect("client event");
        match event {
            tokio_xmpp::Event::Online { bound_jid, .. } => return (client, bound_jid),
            tokio_xmpp::Event::Disconnected(e) => panic!("client disconnected: {e:?}"),
            tokio_xmpp::Event::Stanza(_) => {}
        }
    }
}

/// The next stanza a tokio-xmpp client receives.
pub async fn next_stanza(client: &mut tokio_xmpp::Client) -> tokio_xmpp::Stanza {
    loop {
        let event = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("stanza in time")
            .expect("client event");
        match event {
            tokio_xmpp::Event::Stanza(stanza) => return stanza,
            tokio_xmpp::Event::Disconnected(e) => panic!("client disconnected: {e:?}"),
            tokio_xmpp::Event::Online { .. } => {}
        }
    }
}

/// A tokio-xmpp client (STARTTLS, SCRAM) driven with XML text: sends stanzas written as XML
/// and waits for stanzas whose XML contains a given text, keeping the others for later.
pub struct Xmpp {
    client: tokio_xmpp::Client,
    pub jid: Jid,
    pending: std::collections::VecDeque<String>,
    pings: u32,
}

impl Xmpp {
    pub async fn login(server: &TestServer, user: &str, password: &str) -> Self {
        let (client, jid) =
            xmpp_client(server, &format!("{user}@localhost"), password, false).await;
        Self {
            client,
            jid,
            pending: Default::default(),
            pings: 0,
        }
    }

    pub async fn send(&mut self, xml: &str) {
        let element: tokio_xmpp::minidom::Element = xml.parse().expect("test XML parses");
        let stanza = tokio_xmpp::Stanza::try_from(element).expect("a stanza");
        self.client.send_stanza(stanza).await.expect("send");
    }

    /// The next stanza as XML text, or `None` when nothing came in time.
    async fn receive(&mut self) -> Option<String> {
        loop {
            let event = tokio::time::timeout(WAIT, self.client.next())
                .await
                .ok()??;
            match event {
                tokio_xmpp::Event::Stanza(stanza) => {
                    let element = tokio_xmpp::minidom::Element::from(stanza);
                    // Like any client (XEP-0199): the server's pings are answered, which is
                    // also how it learns that offline messages arrived.
                    if element.name() == "iq"
                        && element.attr("type") == Some("get")
                        && element.attr("from") == Some("localhost")
                        && element.has_child("ping", "urn:xmpp:ping")
                    {
                        let id = element.attr("id").unwrap_or_default().to_owned();
                        self.send(&format!(
                            "<iq xmlns='jabber:client' type='result' to='localhost' id='{id}'/>"
                        ))
                        .await;
                        continue;
                    }
                    return Some(String::from(&element).replace('"', "'"));
                }
                tokio_xmpp::Event::Disconnected(e) => panic!("{}: disconnected: {e:?}", self.jid),
                tokio_xmpp::Event::Online { .. } => {}
            }
        }
    }

    /// The next stanza whose XML contains every one of `needles`.
    pub async fn expect_all(&mut self, needles: &[&str]) -> String {
        self.expect_where(needles, |s| needles.iter().all(|n| s.contains(n)))
            .await
    }

    /// The next stanza that `matches` accepts; `needles` say what it is, for the failure.
    pub async fn expect_where(
        &mut self,
        needles: &[&str],
        matches: impl Fn(&String) -> bool,
    ) -> String {
        if let Some(at) = self.pending.iter().position(&matches) {
            return self.pending.remove(at).unwrap();
        }
        loop {
            let stanza = self.receive().await.unwrap_or_else(|| {
                panic!(
                    "{}: nothing with {needles:?}; kept {:?}",
                    self.jid, self.pending
                )
            });
            if matches(&stanza) {
                return stanza;
            }
            self.pending.push_back(stanza);
        }
    }

    pub async fn expect(&mut self, needle: &str) -> String {
        self.expect_all(&[needle]).await
    }

    /// Sends an IQ and returns its answer.
    pub async fn iq(&mut self, type_: &str, payload: &str) -> String {
        self.pings += 1;
        let id = format!("q{}", self.pings);
        self.send(&format!(
            "<iq xmlns='jabber:client' type='{type_}' id='{id}'>{payload}</iq>"
        ))
        .await;
        self.expect(&format!("id='{id}'")).await
    }

    /// Sends an IQ to the server's JID and returns its answer.
    pub async fn send_iq_to_server(&mut self, type_: &str, payload: &str) -> String {
        self.pings += 1;
        let id = format!("s{}", self.pings);
        self.send(&format!(
            "<iq xmlns='jabber:client' to='localhost' type='{type_}' id='{id}'>{payload}</iq>"
        ))
        .await;
        self.expect(&format!("id='{id}'")).await
    }

    /// Asserts that nothing containing `needle` arrived before a round trip to the server.
    pub async fn expect_none(&mut self, needle: &str) {
        let answer = self.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;
        assert!(answer.contains("type='result'"), "{answer}");
        if let Some(found) = self.pending.iter().find(|s| s.contains(needle)) {
            panic!("{}: unexpected {found}", self.jid);
        }
    }

    /// Forgets what arrived so far.
    pub async fn drain(&mut self) {
        let _ = self.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;
        self.pending.clear();
    }

    /// Closes the stream once everything the server sent so far has been read (and its pings
    /// answered), as a client does that leaves when the user quits, not in mid-delivery.
    pub async fn logout(mut self) {
        let _ = self.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;
        self.client.send_end().await.expect("clean close");
    }
}

/// A minimal HTTP/1.1 exchange with the admin API: status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let authorization = token.map(|token| format!("Bearer {token}"));
    http_authorized(addr, method, path, authorization.as_deref(), body).await
}

/// The same with the `Authorization` header's value as given.
pub async fn http_authorized(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(authorization) = authorization {
        request.push_str(&format!("Authorization: {authorization}\r\n"));
    }
    let body = body.unwrap_or("");
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Fails a test whose prerequisite is missing (`missing` says what). Such tests are marked
/// `#[ignore = "needs …"]`, so that a plain `cargo test` counts them as ignored; run with
/// `--include-ignored` (as `bash .ci/run` does), they must find what they need.
pub fn require(missing: Option<&str>) {
    if let Some(missing) = missing {
        panic!("{missing}; `bash .ci/run` installs it");
    }
}
