//! Fault tests: the real `causette` binary, killed with SIGKILL and started again on the same
//! store while clients are sending and while offline messages are being delivered. Whatever
//! the server acknowledged must be there afterwards; what it had not may be lost.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::{Raw, WAIT};

/// A `causette serve` process of this test's own, on a port of its own.
struct Process {
    child: tokio::process::Child,
    config: PathBuf,
    c2s: std::net::SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn write_config(dir: &Path) -> (PathBuf, std::net::SocketAddr) {
    let c2s: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join("causette.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[listen]
c2s = ["{c2s}"]
c2s_direct_tls = []
[http]
listen = []
[tls]
allow_plaintext_on_loopback = true
[admin]
demo_directory = false
[im]
chat_requires_acceptance = false
max_changes_per_minute = 100000
[limits]
max_inbound_bytes_per_sec = 100000000
inbound_burst_bytes = 100000000
[log]
level = "warn"
"#,
            data = dir.join("data").display()
        ),
    )
    .unwrap();
    (config, c2s)
}

async fn causette(config: &Path, args: &[&str], stdin: Option<&str>) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_causette"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("causette runs");
    if let Some(text) = stdin {
        let mut input = child.stdin.take().unwrap();
        input.write_all(text.as_bytes()).await.unwrap();
    }
    let status = tokio::time::timeout(WAIT * 3, child.wait())
        .await
        .expect("in time")
        .unwrap();
    assert!(status.success(), "causette {args:?}");
}

impl Process {
    async fn start(config: &Path, c2s: std::net::SocketAddr) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_causette"))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("causette serve runs");
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        while tokio::net::TcpStream::connect(c2s).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the server listens");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            config: config.to_owned(),
            c2s,
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing but what the store already has.
    async fn kill(mut self) -> (PathBuf, std::net::SocketAddr) {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("reaped");
        (self.config.clone(), self.c2s)
    }
}

async fn setup() -> (tempfile::TempDir, PathBuf, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let (config, c2s) = write_config(dir.path());
    for user in ["alice", "bob"] {
        causette(&config, &["user", "add", user], Some("pw\n")).await;
    }
    (dir, config, c2s)
}

/// Alice sends `count` messages to Bob, then a ping: its answer means the server handled (so
/// stored) every message before it.
async fn acknowledged_batch(alice: &mut Raw, from: usize, count: usize) {
    let mut batch = String::new();
    for n in from..from + count {
        batch.push_str(&format!(
            "<message to='bob@localhost' type='chat' id='m{n}'><body>msg-{n}.</body></message>"
        ));
    }
    batch.push_str(&format!(
        "<iq type='get' id='ack{from}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    alice.send(&batch).await;
    alice.expect(&format!("id='ack{from}'")).await;
}

/// Bob logs in and reads, answering the server's pings (so acknowledging what he got), until
/// every message in `expected` has arrived.
async fn bob_collects(c2s: std::net::SocketAddr, expected: std::ops::Range<usize>) {
    let mut bob = Raw::connect(c2s).await.login("bob", "pw", "pc").await;
    bob.send("<presence/>").await;
    let mut seen = std::collections::BTreeSet::<usize>::new();
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while !expected.clone().all(|n| seen.contains(&n)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {:?}",
            expected
                .clone()
                .filter(|n| !seen.contains(n))
                .collect::<Vec<_>>()
        );
        let text = bob.expect("</").await;
        for body in text.split("msg-").skip(1) {
            if let Some(n) = body.split('.').next().and_then(|n| n.parse().ok()) {
                seen.insert(n);
            }
        }
        if let Some(id) = text
            .split("id='offline-")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
        {
            bob.send(&format!(
                "<iq type='result' to='localhost' id='offline-{id}'/>"
            ))
            .await;
        }
    }
}

#[tokio::test]
async fn acknowledged_offline_messages_survive_a_kill_while_clients_send() {
    let (_dir, config, c2s) = setup().await;
    let server = Process::start(&config, c2s).await;
    let mut alice = Raw::connect(c2s).await.login("alice", "pw", "phone").await;
    acknowledged_batch(&mut alice, 0, 150).await;
    // More is on its way, unacknowledged, when the server is killed.
    let mut more = String::new();
    for n in 150..1150 {
        more.push_str(&format!(
            "<message to='bob@localhost' type='chat'><body>msg-{n}.</body></message>"
        ));
    }
    alice.send_hostile(&more).await;
    let (config, c2s) = server.kill().await;
    let _server = Process::start(&config, c2s).await;
    // Every acknowledged message is there.
    bob_collects(c2s, 0..150).await;
}

#[tokio::test]
async fn offline_messages_survive_a_kill_during_their_delivery() {
    let (_dir, config, c2s) = setup().await;
    let server = Process::start(&config, c2s).await;
    let mut alice = Raw::connect(c2s).await.login("alice", "pw", "phone").await;
    acknowledged_batch(&mut alice, 0, 300).await;
    drop(alice);
    // Bob's client gets the first batch and is reading when the server dies.
    let mut bob = Raw::connect(c2s).await.login("bob", "pw", "pc").await;
    bob.send("<presence/>").await;
    bob.expect("msg-10.").await;
    let (config, c2s) = server.kill().await;
    drop(bob);
    let _server = Process::start(&config, c2s).await;
    bob_collects(c2s, 0..300).await;
}

#[tokio::test]
async fn a_client_dropping_mid_delivery_loses_nothing_across_restarts() {
    let (_dir, config, c2s) = setup().await;
    let server = Process::start(&config, c2s).await;
    let mut alice = Raw::connect(c2s).await.login("alice", "pw", "phone").await;
    acknowledged_batch(&mut alice, 0, 200).await;
    drop(alice);
    // Bob acknowledges the first batch, then drops in the middle of the second.
    let mut bob = Raw::connect(c2s).await.login("bob", "pw", "pc").await;
    bob.send("<presence/>").await;
    let first = bob.expect("<ping").await;
    let id = first
        .rsplit("id='offline-")
        .next()
        .and_then(|rest| rest.split('\'').next())
        .unwrap()
        .to_owned();
    bob.send(&format!(
        "<iq type='result' to='localhost' id='offline-{id}'/>"
    ))
    .await;
    bob.expect("msg-70.").await;
    drop(bob);
    // A SIGKILL afterwards takes nothing either.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (config, c2s) = server.kill().await;
    let _server = Process::start(&config, c2s).await;
    bob_collects(c2s, 64..200).await;
}

/// Reflected groupchat messages are the room's acknowledgement (XEP-0045 has no other): a room
/// change answered after them is never in the store without them, whenever the kill comes.
#[tokio::test]
async fn a_room_change_is_never_durable_before_the_messages_reflected_earlier() {
    let (dir, config, c2s) = setup().await;
    let url = format!(
        "sqlite://{}?mode=rw",
        dir.path().join("data/causette.db").display()
    );
    for round in 0..4 {
        let server = Process::start(&config, c2s).await;
        let mut alice = Raw::connect(c2s).await.login("alice", "pw", "phone").await;
        let room = format!("salle{round}@conference.localhost");
        alice.send(&format!("<presence to='{room}/alice'/>")).await;
        alice.expect("code='201'").await;
        alice
            .send(&format!(
                "<iq type='set' to='{room}' id='create'>\
                 <query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'/></query></iq>"
            ))
            .await;
        alice.expect("id='create'").await;
        let mut batch = String::new();
        for n in 0..40 {
            batch.push_str(&format!(
                "<message to='{room}' type='groupchat'><body>msg-{n}.</body></message>"
            ));
        }
        alice.send(&batch).await;
        alice.expect("msg-39.").await;
        alice
            .send(&format!(
                "<iq type='set' to='{room}' id='rename'>\
                 <query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'>\
                 <field var='muc#roomconfig_roomname'><value>Salle renommée</value></field>\
                 </x></query></iq>"
            ))
            .await;
        let answer = alice.expect("id='rename'").await;
        assert!(answer.contains("type='result'"), "{answer}");
        server.kill().await;

        let store = causette::storage::open(&url, 1).await.expect("the store");
        let stored = store
            .load_room(&format!("salle{round}"))
            .await
            .unwrap()
            .expect("the room");
        assert!(
            stored.config.contains("Salle renommée"),
            "{}",
            stored.config
        );
        let everything = causette::storage::HistoryBound {
            messages: 1000,
            bytes: u64::MAX,
        };
        let history = store
            .load_room_history(&format!("salle{round}"), everything)
            .await
            .unwrap();
        assert_eq!(
            history.len(),
            40,
            "round {round}: the change without its messages"
        );
        store.close().await;
    }
}
