//! The TCP link over an in-memory pipe: negotiation as a client sees it, then the session's
//! timers with the clock paused, so that minutes of silence take no time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// A client on the other end of the pipe, reading text.
struct Client {
    io: DuplexStream,
    read: String,
}

impl Client {
    async fn send(&mut self, text: &str) {
        self.io.write_all(text.as_bytes()).await.expect("written");
    }

    /// Reads until `pattern`; returns what came up to and with it.
    async fn expect(&mut self, pattern: &str) -> String {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(at) = self.read.find(pattern) {
                let rest = self.read.split_off(at + pattern.len());
                return std::mem::replace(&mut self.read, rest);
            }
            let n = self.io.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before {pattern:?}: {}", self.read);
            self.read
                .push_str(std::str::from_utf8(&buf[..n]).expect("UTF-8"));
        }
    }

    /// Everything until the server closes the connection.
    async fn until_closed(&mut self) -> String {
        let mut rest = std::mem::take(&mut self.read);
        let _ = self.io.read_to_string(&mut rest).await;
        rest
    }
}

/// A connection from loopback (plaintext allowed) served over a pipe.
async fn connect(shared: &Arc<Shared>) -> Client {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let logging_in = Box::new(shared.admission.admit(peer.ip()).expect("admitted"));
    let now = Instant::now();
    let deadlines = Deadlines {
        tls: now + shared.config.tls_timeout(),
        bound: now + shared.config.negotiation_timeout(),
    };
    tokio::spawn(serve_socket(
        Socket::Memory(server),
        peer,
        deadlines,
        logging_in,
        shared.clone(),
    ));
    Client {
        io: client,
        read: String::new(),
    }
}

async fn shared(adjust: impl FnOnce(&mut crate::Config)) -> (tempfile::TempDir, Arc<Shared>) {
    let (dir, shared) = crate::test_shared(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        adjust(c);
    })
    .await;
    crate::accounts::add(&shared.store, "alice", "pw".into(), 4096)
        .await
        .expect("account");
    (dir, shared)
}

/// Logs alice in with PLAIN and binds `desk`, in real time (the store is on threads of its
/// own, which a paused clock would race).
async fn logged_in(shared: &Arc<Shared>) -> Client {
    let mut client = connect(shared).await;
    client.send(HEADER).await;
    client.expect("</stream:features>").await;
    client
        .send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
        )
        .await;
    client.expect("<success").await;
    client.send(HEADER).await;
    client.expect("</stream:features>").await;
    client
        .send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>desk</resource></bind></iq>")
        .await;
    let bound = client.expect("</iq>").await;
    assert!(bound.contains("alice@localhost/desk"), "{bound}");
    client
}

fn assert_stream_error(text: &str, condition: &str) {
    assert!(
        text.contains(&format!(
            "<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'"
        )),
        "expected {condition}: {text}"
    );
    assert!(text.ends_with("</stream:stream>"), "not closed: {text}");
}

#[tokio::test]
async fn a_client_that_says_nothing_is_timed_out() {
    let (_dir, shared) = shared(|c| c.tls.allow_plaintext_on_loopback = false).await;
    tokio::time::pause();
    let mut client = connect(&shared).await;
    let started = Instant::now();
    let text = client.until_closed().await;
    assert_stream_error(&text, "connection-timeout");
    assert!(started.elapsed() >= shared.config.tls_timeout());
}

#[tokio::test]
async fn an_idle_client_is_pinged_then_timed_out() {
    let (_dir, shared) = shared(|_| {}).await;
    let mut client = logged_in(&shared).await;
    tokio::time::pause();
    let started = Instant::now();
    let ping = client.expect("</iq>").await;
    assert!(
        ping.contains("urn:xmpp:ping") && ping.contains("type='get'"),
        "{ping}"
    );
    let ping_after = Duration::from_secs(shared.config.limits.ping_after_secs);
    assert!(started.elapsed() >= ping_after);
    // No answer: the server gives up with a stream error.
    assert_stream_error(&client.until_closed().await, "connection-timeout");
    let timeout = Duration::from_secs(shared.config.limits.ping_timeout_secs);
    assert!(started.elapsed() >= ping_after + timeout);
}

/// Data of any kind (here whitespace keepalives) holds the ping off, and an answered ping
/// keeps the session: the server pings again after the next silence instead of closing.
#[tokio::test]
async fn an_active_or_answering_client_keeps_its_session() {
    let (_dir, shared) = shared(|_| {}).await;
    let ping_after = Duration::from_secs(shared.config.limits.ping_after_secs);
    let mut client = logged_in(&shared).await;
    tokio::time::pause();
    for _ in 0..8 {
        client.send(" ").await;
        tokio::time::advance(ping_after / 3).await;
    }
    client
        .send("<iq type='get' id='mine'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let before = client.expect("</iq>").await;
    assert!(before.contains("id='mine'"), "{before}");
    assert!(
        !before.contains("c2s-ping"),
        "pinged while active: {before}"
    );

    let first = client.expect("</iq>").await;
    assert!(first.contains("id='c2s-ping-1'"), "{first}");
    client
        .send("<iq type='result' id='c2s-ping-1' to='localhost'/>")
        .await;
    let second = client.expect("</iq>").await;
    assert!(second.contains("id='c2s-ping-2'"), "{second}");
    assert_stream_error(&client.until_closed().await, "connection-timeout");
}

#[tokio::test]
async fn a_stanza_that_trickles_in_is_cut_off() {
    let (_dir, shared) = shared(|c| {
        c.limits.ping_after_secs = 60;
        c.limits.stanza_timeout_secs = 120;
    })
    .await;
    let mut client = logged_in(&shared).await;
    tokio::time::pause();
    client.send("<message to='alice@localhost'><body>").await;
    let started = Instant::now();
    let trickle = async {
        // A byte every 10 s: the read timer never sees 60 s of silence.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            // The server stops reading at the limit: later bytes may find the pipe closed.
            let _ = client.io.write_all(b"x").await;
        }
        client.until_closed().await
    };
    let text = trickle.await;
    assert_stream_error(&text, "policy-violation");
    assert!(text.contains("took longer than 120 s"), "{text}");
    assert!(started.elapsed() >= Duration::from_secs(120));
}

/// The server's own lifecycle, with each departure recorded as the session reports it.
struct Departures {
    inner: Arc<dyn crate::session::Lifecycle>,
    seen: std::sync::Mutex<Vec<crate::session::Departure>>,
    told: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl crate::session::Lifecycle for Departures {
    async fn binding(
        &self,
        shared: &Shared,
        jid: &jid::FullJid,
    ) -> Result<(), crate::storage::Error> {
        self.inner.binding(shared, jid).await
    }
    async fn unbound(&self, shared: &Shared, jid: &jid::FullJid) {
        self.inner.unbound(shared, jid).await
    }
    async fn stanza(
        &self,
        shared: &Shared,
        sender: &crate::router::Sender<'_>,
        stanza: xmpp_parsers::stanza::Stanza,
    ) {
        self.inner.stanza(shared, sender, stanza).await
    }
    async fn backlog(
        &self,
        shared: &Shared,
        jid: &jid::FullJid,
        after: i64,
    ) -> Option<crate::session::Backlog> {
        self.inner.backlog(shared, jid, after).await
    }
    async fn acknowledged(&self, shared: &Shared, jid: &jid::FullJid, last_id: i64) {
        self.inner.acknowledged(shared, jid, last_id).await
    }
    fn detached(&self, shared: &Shared, jid: &jid::FullJid, departure: crate::session::Departure) {
        self.seen.lock().unwrap().push(departure);
        self.told.notify_one();
        self.inner.detached(shared, jid, departure)
    }
    async fn ended(
        &self,
        shared: &Shared,
        jid: &jid::FullJid,
        control: &crate::router::SessionControl,
    ) {
        self.inner.ended(shared, jid, control).await
    }
}

/// A server whose sessions' departures are recorded.
async fn recording() -> (tempfile::TempDir, Arc<Shared>, Arc<Departures>) {
    let (dir, mut shared) = shared(|_| {}).await;
    let server = Arc::get_mut(&mut shared).expect("nothing else holds the state yet");
    let departures = Arc::new(Departures {
        inner: server.lifecycle.clone(),
        seen: Default::default(),
        told: Default::default(),
    });
    server.lifecycle = departures.clone();
    (dir, shared, departures)
}

impl Departures {
    async fn next(&self) -> crate::session::Departure {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(first) = self.seen.lock().unwrap().first().copied() {
                    return first;
                }
                self.told.notified().await;
            }
        })
        .await
        .expect("the session reports its departure")
    }
}

#[tokio::test]
async fn a_closed_stream_ends_the_session_and_a_dropped_connection_is_a_lost_link() {
    let (_dir, shared, departures) = recording().await;
    let mut client = logged_in(&shared).await;
    client.send("</stream:stream>").await;
    let rest = client.until_closed().await;
    assert!(rest.ends_with("</stream:stream>"), "{rest}");
    assert_eq!(departures.next().await, crate::session::Departure::Ended);

    let (_dir, shared, departures) = recording().await;
    let client = logged_in(&shared).await;
    // The connection goes away in the middle of the stream, without its footer.
    drop(client);
    assert_eq!(departures.next().await, crate::session::Departure::Lost);
}

#[tokio::test]
async fn a_stream_error_ends_the_session() {
    let (_dir, shared, departures) = recording().await;
    let mut client = logged_in(&shared).await;
    client
        .send("<message><body>not in a namespace the stream knows")
        .await;
    client.send("</wrong>").await;
    let rest = client.until_closed().await;
    assert!(rest.contains("<stream:error>"), "{rest}");
    assert_eq!(departures.next().await, crate::session::Departure::Ended);
}
