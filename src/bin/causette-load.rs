//! Load generator for XMPP servers (Causette, ejabberd, Prosody…), for capacity planning and
//! side-by-side benchmarks (bench/README.md).
//!
//! Scenarios:
//! - `login`: N users log in (plaintext + PLAIN, or STARTTLS + the best SASL offered) at a
//!   given concurrency, send presence, and stay connected idle for a while: login rate, and
//!   the server's memory per connection read from /proc.
//! - `chat`: P pairs exchange 1:1 messages at stepped target rates; each body carries its send
//!   time, so latency percentiles and losses are measured per step, with the server's CPU time
//!   per delivered message.
//!
//! - `rooms`: R rooms of K occupants each (XEP-0045, joined and configured as instant rooms);
//!   occupants send groupchat messages at stepped target rates, each delivered to the K
//!   occupants: deliveries per second, latency percentiles and losses per step.
//!
//! With `--websocket PATH`, the login scenario connects over XMPP over WebSocket (RFC 7395)
//! at ws://SERVER/PATH instead of TCP; with `--bosh PATH`, over BOSH at http://SERVER/PATH,
//! each idle client then holding one request open.
//!
//! Prints one JSON line per run (login) or per step (chat, rooms). Only ever point it at servers on
//! this machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use clap::{Parser, ValueEnum};
use futures::{SinkExt, StreamExt};
use rsasl::prelude::{Mechname, SASLClient, SASLConfig, State};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
enum Scenario {
    Login,
    Chat,
    Rooms,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "XMPP load generator (loopback only)")]
struct Args {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Server address; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: SocketAddr,
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Label of the server in the output.
    #[arg(long, default_value = "server")]
    label: String,
    /// PID of the server, to read its memory and CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Negotiate STARTTLS, trusting this PEM certificate (else plaintext).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Users are PREFIX0, PREFIX1…
    #[arg(long, default_value = "load")]
    prefix: String,
    #[arg(long, default_value = "load-password")]
    password: String,
    /// Register the users first with in-band registration (XEP-0077).
    #[arg(long)]
    register: bool,
    /// Users logged in by the login scenario.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Seconds the login scenario stays connected before reading memory.
    #[arg(long, default_value_t = 5)]
    hold_secs: u64,
    /// Pairs of the chat scenario.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Target rates of the chat scenario, messages per second, comma-separated.
    #[arg(long, default_value = "1000", value_delimiter = ',')]
    rates: Vec<u64>,
    /// Seconds per rate step.
    #[arg(long, default_value_t = 10)]
    step_secs: u64,
    /// Seconds to wait for messages still in flight after each step.
    #[arg(long, default_value_t = 3)]
    grace_secs: u64,
    /// Preferred SASL mechanism when offered (else the best offered, -PLUS excluded).
    #[arg(long)]
    mechanism: Option<String>,
    /// Rooms of the rooms scenario.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Occupants per room in the rooms scenario.
    #[arg(long, default_value_t = 50)]
    occupants: usize,
    /// The multi-user chat service's domain (default: conference.DOMAIN).
    #[arg(long)]
    muc_domain: Option<String>,
    /// Log in over WebSocket (RFC 7395) at this path of --server (login scenario only).
    #[arg(long)]
    websocket: Option<String>,
    /// Log in over BOSH (XEP-0124/0206) at this path of --server, then leave one request
    /// held, as an idle BOSH client does (login scenario only).
    #[arg(long)]
    bosh: Option<String>,
}

impl Args {
    /// Users the scenario logs in.
    fn user_count(&self) -> usize {
        match self.scenario {
            Scenario::Login => self.users,
            Scenario::Chat => self.pairs * 2,
            Scenario::Rooms => self.rooms * self.occupants,
        }
    }

    fn muc_domain(&self) -> String {
        self.muc_domain
            .clone()
            .unwrap_or_else(|| format!("conference.{}", self.domain))
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Error = String;

/// A connection's writing half, the JID its messages go to, and their type.
struct Sender {
    writer: WriteHalf<Pin<Box<dyn Io>>>,
    to: String,
    kind: &'static str,
}

struct Client {
    io: Pin<Box<dyn Io>>,
    /// Set over WebSocket: then `io` is unused, and each message is one element.
    ws: Option<Box<WebSocketStream<TcpStream>>>,
    buffer: String,
    jid: String,
    mechanism: String,
}

const IO_TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    async fn send(&mut self, text: &str) -> Result<(), Error> {
        if let Some(ws) = self.ws.as_mut() {
            return ws
                .send(WsMessage::Text(text.into()))
                .await
                .map_err(|e| format!("write: {e}"));
        }
        self.io
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// The next bytes from the server: what the socket gives, or one WebSocket message.
    async fn read_more(&mut self) -> Result<usize, Error> {
        if let Some(ws) = self.ws.as_mut() {
            loop {
                match ws.next().await {
                    None => return Ok(0),
                    Some(Err(e)) => return Err(format!("read: {e}")),
                    Some(Ok(WsMessage::Text(text))) => {
                        self.buffer.push_str(&text);
                        return Ok(text.len());
                    }
                    Some(Ok(WsMessage::Close(_))) => return Ok(0),
                    Some(Ok(_)) => continue,
                }
            }
        }
        let mut chunk = [0u8; 4096];
        let read = self
            .io
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        self.buffer
            .push_str(&String::from_utf8_lossy(&chunk[..read]));
        Ok(read)
    }

    /// Reads until one of the needles arrives; returns what was read up to it.
    async fn until(&mut self, needles: &[&str]) -> Result<String, Error> {
        loop {
            if let Some((at, len)) = needles
                .iter()
                .filter_map(|n| self.buffer.find(n).map(|at| (at, n.len())))
                .min()
            {
                return Ok(self.buffer.drain(..at + len).collect());
            }
            let read = match tokio::time::timeout(IO_TIMEOUT, self.read_more()).await {
                Ok(read) => read?,
                Err(_) => {
                    let seen: String = self.buffer.chars().take(300).collect();
                    return Err(format!("timed out waiting for {needles:?} after {seen:?}"));
                }
            };
            if read == 0 {
                return Err(format!(
                    "closed while waiting for {needles:?}: {}",
                    self.buffer
                ));
            }
        }
    }
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

fn tls_config(ca: &PathBuf) -> Result<Arc<ClientConfig>, Error> {
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn mechanisms(features: &str) -> Vec<String> {
    features
        .split("<mechanism>")
        .skip(1)
        .filter_map(|s| s.split("</mechanism>").next())
        .map(str::to_owned)
        .collect()
}

/// The RFC 7395 stream opening, which stands for the stream header.
fn ws_open(domain: &str) -> String {
    format!("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{domain}' version='1.0'/>")
}

/// A stream over WebSocket, opened: the client and the features.
async fn open_websocket(args: &Args, path: &str) -> Result<(Client, String), Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = TcpStream::connect(args.server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut request = format!("ws://{}{path}", args.server)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "xmpp".parse().map_err(|_| "header")?,
    );
    let (ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .map_err(|e| format!("WebSocket upgrade: {e}"))?;
    let mut client = Client {
        io: Box::pin(tokio::io::join(tokio::io::empty(), tokio::io::sink())),
        ws: Some(Box::new(ws)),
        buffer: String::new(),
        jid: String::new(),
        mechanism: String::new(),
    };
    client.send(&ws_open(&args.domain)).await?;
    let features = client.until(&["</stream:features>"]).await?;
    Ok((client, features))
}

async fn open(args: &Args, tls: Option<&Arc<ClientConfig>>) -> Result<(Client, String), Error> {
    if let Some(path) = &args.websocket {
        return open_websocket(args, path).await;
    }
    let tcp = TcpStream::connect(args.server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut client = Client {
        io: Box::pin(tcp),
        ws: None,
        buffer: String::new(),
        jid: String::new(),
        mechanism: String::new(),
    };
    client.send(&header(&args.domain)).await?;
    let mut features = client.until(&["</stream:features>"]).await?;
    if let Some(config) = tls {
        client
            .send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await?;
        client.until(&["<proceed"]).await?;
        client.until(&[">"]).await?;
        let tcp = client.io;
        let name = ServerName::try_from(args.domain.clone()).map_err(|e| e.to_string())?;
        let stream = TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        client = Client {
            io: Box::pin(stream),
            ws: None,
            buffer: String::new(),
            jid: String::new(),
            mechanism: String::new(),
        };
        client.send(&header(&args.domain)).await?;
        features = client.until(&["</stream:features>"]).await?;
    }
    Ok((client, features))
}

async fn register(args: &Args, tls: Option<&Arc<ClientConfig>>, user: &str) -> Result<(), Error> {
    let (mut client, _) = open(args, tls).await?;
    client
        .send(&format!(
            "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username>\
             <password>{}</password></query></iq>",
            args.password
        ))
        .await?;
    let answer = client.until(&["</iq>", "/>"]).await?;
    let answer = if answer.contains("<iq") && !answer.contains("</iq>") && !answer.ends_with("/>") {
        client.until(&["</iq>"]).await?
    } else {
        answer
    };
    // An existing account is fine: benchmarks are rerun.
    let refused = answer.contains("type='error'") || answer.contains("type=\"error\"");
    if refused && !answer.contains("conflict") {
        return Err(format!("registration refused: {answer}"));
    }
    let _ = client.send("</stream:stream>").await;
    Ok(())
}

fn pick_mechanism(args: &Args, offered: &[String]) -> Vec<String> {
    let usable: Vec<String> = offered
        .iter()
        .filter(|m| !m.ends_with("-PLUS"))
        .cloned()
        .collect();
    match &args.mechanism {
        Some(wanted) if usable.contains(wanted) => vec![wanted.clone()],
        _ => usable,
    }
}

async fn login(args: &Args, tls: Option<&Arc<ClientConfig>>, user: &str) -> Result<Client, Error> {
    if let Some(path) = &args.bosh {
        return login_bosh(args, path, user).await;
    }
    let (mut client, features) = open(args, tls).await?;
    let offered = pick_mechanism(args, &mechanisms(&features));
    let names: Vec<&Mechname> = offered
        .iter()
        .filter_map(|m| Mechname::parse(m.as_bytes()).ok())
        .collect();
    let config = SASLConfig::with_credentials(None, user.to_owned(), args.password.clone())
        .map_err(|e| e.to_string())?;
    let mut session = SASLClient::new(config)
        .start_suggested(names.iter())
        .map_err(|e| format!("no usable SASL mechanism in {offered:?}: {e}"))?;
    let mechanism = session.get_mechname().as_str().to_owned();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut state = session.step(None, &mut out).map_err(|e| e.to_string())?;
    client
        .send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
            if out.is_empty() {
                "=".to_owned()
            } else {
                b64.encode(&out)
            }
        ))
        .await?;
    loop {
        let got = client
            .until(&[
                "</challenge>",
                "</success>",
                "<success/>",
                "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
                "</failure>",
            ])
            .await?;
        if got.contains("<failure") {
            return Err(format!("authentication failed: {got}"));
        }
        let data = got
            .rsplit('>')
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap_or_default();
        let data = b64.decode(data.trim()).unwrap_or_default();
        if got.contains("<success") {
            if state.is_running() && !data.is_empty() {
                let mut out = Vec::new();
                state = session
                    .step(Some(&data), &mut out)
                    .map_err(|e| e.to_string())?;
            }
            let _ = state;
            break;
        }
        let mut out = Vec::new();
        state = session
            .step(Some(&data), &mut out)
            .map_err(|e| e.to_string())?;
        client
            .send(&format!(
                "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                b64.encode(&out)
            ))
            .await?;
        if matches!(state, State::Finished(_)) && out.is_empty() {
            continue;
        }
    }
    if client.ws.is_some() {
        client.send(&ws_open(&args.domain)).await?;
    } else {
        client.send(&header(&args.domain)).await?;
    }
    client.until(&["</stream:features>"]).await?;
    // Namespaced in full: over WebSocket each element stands alone (RFC 7395 §3.3.3).
    client
        .send("<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>load</resource></bind></iq>")
        .await?;
    let bound = client.until(&["</iq>"]).await?;
    let jid = bound
        .split("<jid>")
        .nth(1)
        .and_then(|s| s.split("</jid>").next())
        .ok_or_else(|| format!("bind failed: {bound}"))?
        .to_owned();
    // Old servers want the RFC 3921 session; harmless elsewhere.
    client
        .send("<iq xmlns='jabber:client' type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await?;
    client.send("<presence xmlns='jabber:client'/>").await?;
    client.jid = jid;
    client.mechanism = mechanism;
    Ok(client)
}

/// One BOSH client: requests on one keep-alive HTTP connection.
struct Bosh {
    tcp: TcpStream,
    path: String,
    sid: String,
    rid: u64,
}

impl Bosh {
    /// Sends a body without waiting for the answer.
    async fn post(&mut self, body: &str) -> Result<(), Error> {
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml; charset=utf-8\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.path,
            body.len()
        );
        self.tcp
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads one HTTP answer; returns its body.
    async fn answer(&mut self) -> Result<String, Error> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let read = tokio::time::timeout(IO_TIMEOUT, self.tcp.read(&mut byte))
                .await
                .map_err(|_| "timed out waiting for an HTTP answer".to_owned())?
                .map_err(|e| format!("read: {e}"))?;
            if read == 0 {
                return Err("HTTP connection closed".into());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no content-length in {head}"))?;
        let mut body = vec![0u8; length];
        self.tcp
            .read_exact(&mut body)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Sends `inner` in the next request and waits until an answer holds one of `needles`,
    /// polling with empty requests meanwhile.
    async fn exchange(&mut self, inner: &str, needles: &[&str]) -> Result<String, Error> {
        let mut inner = inner.to_owned();
        for _ in 0..10 {
            self.rid += 1;
            let body = format!(
                "<body xmlns='http://jabber.org/protocol/httpbind' rid='{}' sid='{}'>{inner}</body>",
                self.rid, self.sid
            );
            self.post(&body).await?;
            let answer = self.answer().await?;
            if answer.contains("type='terminate'") || answer.contains("type=\"terminate\"") {
                return Err(format!("session terminated: {answer}"));
            }
            if needles.iter().any(|n| answer.contains(n)) {
                return Ok(answer);
            }
            inner.clear();
        }
        Err(format!("no answer with {needles:?}"))
    }
}

/// A login over BOSH: session creation, PLAIN, restart, binding, presence, then one empty
/// request left held, as an idle BOSH client keeps one.
async fn login_bosh(args: &Args, path: &str, user: &str) -> Result<Client, Error> {
    let tcp = TcpStream::connect(args.server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut bosh = Bosh {
        tcp,
        path: path.to_owned(),
        sid: String::new(),
        rid: 1000,
    };
    bosh.post(&format!(
        "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' \
         content='text/xml; charset=utf-8' hold='1' rid='{}' to='{}' ver='1.6' wait='60' \
         xmpp:version='1.0'/>",
        bosh.rid, args.domain
    ))
    .await?;
    let mut created = bosh.answer().await?;
    bosh.sid = created
        .split("sid=")
        .nth(1)
        .and_then(|s| s.get(1..))
        .and_then(|s| s.split(['\'', '"']).next())
        .ok_or_else(|| format!("no sid in {created}"))?
        .to_owned();
    if !created.contains("mechanism") {
        created = bosh.exchange("", &["mechanism"]).await?;
    }
    let _ = created;
    let b64 = base64::engine::general_purpose::STANDARD;
    let auth = b64.encode(format!("\0{user}\0{}", args.password));
    let answer = bosh
        .exchange(
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
            ),
            &["<success", "<failure"],
        )
        .await?;
    if answer.contains("<failure") {
        return Err(format!("authentication failed: {answer}"));
    }
    bosh.rid += 1;
    let restart = format!(
        "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' rid='{}' \
         sid='{}' to='{}' xmpp:restart='true'/>",
        bosh.rid, bosh.sid, args.domain
    );
    bosh.post(&restart).await?;
    let features = bosh.answer().await?;
    if !features.contains("bind") {
        bosh.exchange("", &["bind"]).await?;
    }
    let bound = bosh
        .exchange(
            "<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>load</resource></bind></iq>",
            &["</jid>"],
        )
        .await?;
    let jid = bound
        .split("<jid>")
        .nth(1)
        .and_then(|s| s.split("</jid>").next())
        .unwrap_or_default()
        .to_owned();
    bosh.exchange(
        "<iq xmlns='jabber:client' type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq><presence xmlns='jabber:client'/>",
        &["id='sess'", "id=\"sess\""],
    )
    .await?;
    // The held request of an idle client.
    bosh.rid += 1;
    let idle = format!(
        "<body xmlns='http://jabber.org/protocol/httpbind' rid='{}' sid='{}'/>",
        bosh.rid, bosh.sid
    );
    bosh.post(&idle).await?;
    Ok(Client {
        io: Box::pin(bosh.tcp),
        ws: None,
        buffer: String::new(),
        jid,
        mechanism: "PLAIN".into(),
    })
}

/// The server's resident memory (KiB) and CPU time (seconds), from /proc.
fn server_stats(pid: Option<u32>) -> (Option<u64>, Option<f64>) {
    let Some(pid) = pid else { return (None, None) };
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        });
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.rsplit(')').next()?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        });
    (rss, cpu)
}

fn check_loopback(args: &Args) -> Result<(), Error> {
    if !args.server.ip().is_loopback() {
        return Err("refusing to load a server that is not on this machine (loopback only)".into());
    }
    Ok(())
}

async fn login_all(
    args: &Args,
    tls: Option<Arc<ClientConfig>>,
    users: std::ops::Range<usize>,
) -> (Vec<Client>, usize, Vec<String>) {
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in users {
        let args = args.clone();
        let tls = tls.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            let user = format!("{}{i}", args.prefix);
            Some((i, login(&args, tls.as_ref(), &user).await))
        });
    }
    let mut clients = Vec::new();
    let mut errors = 0;
    let mut samples = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Some((i, Ok(client)))) => clients.push((i, client)),
            Ok(Some((_, Err(e)))) => {
                errors += 1;
                if samples.len() < 3 {
                    samples.push(e);
                }
            }
            _ => errors += 1,
        }
    }
    clients.sort_by_key(|(i, _)| *i);
    (
        clients.into_iter().map(|(_, c)| c).collect(),
        errors,
        samples,
    )
}

async fn register_all(args: &Args, tls: Option<Arc<ClientConfig>>, count: usize) -> usize {
    let permits = Arc::new(Semaphore::new(args.concurrency.clamp(1, 50)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let args = args.clone();
        let tls = tls.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            register(&args, tls.as_ref(), &format!("{}{i}", args.prefix))
                .await
                .err()
        });
    }
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(e)) = done {
            if errors == 0 {
                eprintln!("registration error: {e}");
            }
            errors += 1;
        }
    }
    errors
}

async fn scenario_login(args: &Args, tls: Option<Arc<ClientConfig>>) -> serde_json::Value {
    let (rss_before, cpu_before) = server_stats(args.server_pid);
    let started = Instant::now();
    let (clients, errors, samples) = login_all(args, tls.clone(), 0..args.users).await;
    let seconds = started.elapsed().as_secs_f64();
    let (_, cpu_after_login) = server_stats(args.server_pid);
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let (rss_after, _) = server_stats(args.server_pid);
    let per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if !clients.is_empty() => {
            Some((after.saturating_sub(before)) as f64 / clients.len() as f64)
        }
        _ => None,
    };
    let mechanism = clients.first().map(|c| c.mechanism.clone());
    let result = json!({
        "scenario": "login",
        "server": args.label,
        "transport": if args.websocket.is_some() {
            "websocket"
        } else if args.bosh.is_some() {
            "bosh"
        } else {
            "tcp"
        },
        "tls": tls.is_some(),
        "mechanism": mechanism,
        "users": args.users,
        "concurrency": args.concurrency,
        "logged_in": clients.len(),
        "errors": errors,
        "error_samples": samples,
        "seconds": seconds,
        "logins_per_s": clients.len() as f64 / seconds,
        "server_rss_before_kb": rss_before,
        "server_rss_after_kb": rss_after,
        "kb_per_connection": per_connection,
        "server_cpu_login_s": cpu_after_login.zip(cpu_before).map(|(a, b)| a - b),
    });
    drop(clients);
    result
}

/// What receivers record for one step.
#[derive(Default)]
struct StepStats {
    latencies_us: Vec<u64>,
}

async fn receive(
    mut reader: ReadHalf<Pin<Box<dyn Io>>>,
    mut buffer: String,
    clock: Instant,
    stats: Arc<Mutex<HashMap<u64, StepStats>>>,
    errors: Arc<AtomicU64>,
) {
    let mut chunk = vec![0u8; 16384];
    loop {
        while let Some(start) = buffer.find("<body>t:") {
            let Some(end) = buffer[start..].find("</body>") else {
                break;
            };
            let body = &buffer[start + 8..start + end];
            let mut parts = body.split(':');
            let sent: Option<u64> = parts.next().and_then(|v| v.parse().ok());
            let step: Option<u64> = parts.next().and_then(|v| v.parse().ok());
            if let (Some(sent), Some(step)) = (sent, step) {
                let now = clock.elapsed().as_micros() as u64;
                if let Ok(mut stats) = stats.lock() {
                    stats
                        .entry(step)
                        .or_default()
                        .latencies_us
                        .push(now.saturating_sub(sent));
                }
            }
            buffer.drain(..start + end + 7);
        }
        if buffer.contains("type='error'") || buffer.contains("type=\"error\"") {
            errors.fetch_add(1, Ordering::Relaxed);
            buffer.clear();
        }
        // Keep the buffer small: what precedes a partial body is not needed.
        if buffer.len() > 65536 {
            let keep = buffer.rfind("<body>").unwrap_or(buffer.len());
            buffer.drain(..keep);
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.push_str(&String::from_utf8_lossy(&chunk[..n])),
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn scenario_chat(args: &Args, tls: Option<Arc<ClientConfig>>) -> Vec<serde_json::Value> {
    let (clients, login_errors, samples) = login_all(args, tls, 0..args.pairs * 2).await;
    if clients.len() < args.pairs * 2 {
        return vec![json!({
            "scenario": "chat", "server": args.label, "error": "login failed",
            "logged_in": clients.len(), "errors": login_errors, "error_samples": samples,
        })];
    }
    let mut jids: Vec<String> = clients.iter().map(|c| c.jid.clone()).collect();
    let mut run = Run::new();
    for (index, client) in clients.into_iter().enumerate() {
        // Even clients send to the next one; every client receives.
        let to = (index % 2 == 0).then(|| std::mem::take(&mut jids[index + 1]));
        run.add(client, to.map(|to| (to, "chat")));
    }
    run.steps(args, "chat", 1, json!({ "pairs": args.pairs }))
        .await
}

/// Joins a room (XEP-0045 §7.2) and waits for the room's presence for this occupant (status
/// 110); the first occupant also configures it (§10.1.3), open to all (Causette's rooms are
/// members-only by default), which also unlocks it.
async fn join_room(client: &mut Client, room: &str, nick: &str, create: bool) -> Result<(), Error> {
    client
        .send(&format!(
            "<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>\
             <history maxstanzas='0'/></x></presence>"
        ))
        .await?;
    let got = client
        .until(&[
            "code='110'",
            "code=\"110\"",
            "type='error'",
            "type=\"error\"",
        ])
        .await?;
    if got.contains("type='error'") || got.contains("type=\"error\"") {
        return Err(format!("join {room} refused: {got}"));
    }
    if create {
        client
            .send(&format!(
                "<iq type='set' id='create' to='{room}'>\
                 <query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
                 <field var='muc#roomconfig_membersonly'><value>0</value></field>\
                 </x></query></iq>"
            ))
            .await?;
        let got = client.until(&["id='create'", "id=\"create\""]).await?;
        let tail = client.until(&[">"]).await?;
        if got.contains("type='error'") || tail.contains("error") {
            return Err(format!("configuring {room} failed: {got}{tail}"));
        }
    }
    Ok(())
}

async fn scenario_rooms(args: &Args, tls: Option<Arc<ClientConfig>>) -> Vec<serde_json::Value> {
    let total = args.rooms * args.occupants;
    let (clients, login_errors, samples) = login_all(args, tls, 0..total).await;
    let failed = |what: &str, done: usize, errors: usize, samples: Vec<String>| {
        vec![json!({
            "scenario": "rooms", "server": args.label, "error": what,
            "done": done, "errors": errors, "error_samples": samples,
        })]
    };
    if clients.len() < total || args.occupants == 0 {
        return failed("login failed", clients.len(), login_errors, samples);
    }
    // Join room by room, the creator first, then the other occupants at once.
    let (rss_before_join, _) = server_stats(args.server_pid);
    let muc = args.muc_domain();
    let joined_started = Instant::now();
    let mut rooms = tokio::task::JoinSet::new();
    let permits = Arc::new(Semaphore::new(args.concurrency.clamp(1, 20)));
    let mut clients = clients.into_iter();
    for room_index in 0..args.rooms {
        let occupants: Vec<Client> = clients.by_ref().take(args.occupants).collect();
        let room = format!("load-room{room_index}@{muc}");
        let permits = permits.clone();
        rooms.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut occupants = occupants.into_iter().enumerate();
            let (_, mut creator) = occupants.next().ok_or("empty room")?;
            join_room(&mut creator, &room, "o0", true).await?;
            let mut joins = tokio::task::JoinSet::new();
            for (index, mut client) in occupants {
                let room = room.clone();
                joins.spawn(async move {
                    join_room(&mut client, &room, &format!("o{index}"), false)
                        .await
                        .map(|()| client)
                });
            }
            let mut joined = vec![creator];
            while let Some(done) = joins.join_next().await {
                joined.push(done.map_err(|e| e.to_string())??);
            }
            Ok::<_, Error>((room, joined))
        });
    }
    let mut run = Run::new();
    let mut join_errors = 0;
    let mut join_samples = Vec::new();
    while let Some(done) = rooms.join_next().await {
        match done.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((room, occupants)) => {
                for client in occupants {
                    run.add(client, Some((room.clone(), "groupchat")));
                }
            }
            Err(e) => {
                join_errors += 1;
                if join_samples.len() < 3 {
                    join_samples.push(e);
                }
            }
        }
    }
    if join_errors > 0 {
        return failed(
            "joining rooms failed",
            run.senders.len(),
            join_errors,
            join_samples,
        );
    }
    let join_seconds = joined_started.elapsed().as_secs_f64();
    // What an idle occupant costs the server beyond its connection, once the joins settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_joined, _) = server_stats(args.server_pid);
    let kb_per_occupant = match (rss_before_join, rss_joined) {
        (Some(before), Some(after)) => Some((after as f64 - before as f64) / total as f64),
        _ => None,
    };
    // Occupants of one room are adjacent: interleave them, so that consecutive messages go
    // to different rooms.
    let occupants = args.occupants;
    let rooms_count = args.rooms;
    let order: Vec<usize> = (0..occupants)
        .flat_map(|o| (0..rooms_count).map(move |r| r * occupants + o))
        .collect();
    run.reorder(&order);
    run.steps(
        args,
        "rooms",
        occupants as u64,
        json!({
            "rooms": args.rooms,
            "occupants": args.occupants,
            "join_seconds": join_seconds,
            "server_rss_before_join_kb": rss_before_join,
            "server_rss_joined_kb": rss_joined,
            "kb_per_idle_occupant": kb_per_occupant,
        }),
    )
    .await
}

/// Connected clients split into receiving tasks and writing halves, and the stepped send loop
/// shared by the message scenarios.
struct Run {
    clock: Instant,
    stats: Arc<Mutex<HashMap<u64, StepStats>>>,
    errors: Arc<AtomicU64>,
    senders: Vec<Sender>,
}

impl Run {
    fn new() -> Self {
        Self {
            clock: Instant::now(),
            stats: Arc::default(),
            errors: Arc::new(AtomicU64::new(0)),
            senders: Vec::new(),
        }
    }

    /// Starts receiving for `client`, and keeps its writing half if it sends.
    fn add(&mut self, client: Client, sends: Option<(String, &'static str)>) {
        let (reader, writer) = tokio::io::split(client.io);
        if let Some((to, kind)) = sends {
            self.senders.push(Sender { writer, to, kind });
        }
        tokio::spawn(receive(
            reader,
            client.buffer,
            self.clock,
            self.stats.clone(),
            self.errors.clone(),
        ));
    }

    fn reorder(&mut self, order: &[usize]) {
        let mut slots: Vec<Option<Sender>> = self.senders.drain(..).map(Some).collect();
        self.senders = order
            .iter()
            .filter_map(|&i| slots.get_mut(i)?.take())
            .collect();
    }

    /// Sends at each target rate for a step, round robin over the senders, and reports what
    /// arrived: each message is expected `fanout` times.
    async fn steps(
        mut self,
        args: &Args,
        scenario: &str,
        fanout: u64,
        extra: serde_json::Value,
    ) -> Vec<serde_json::Value> {
        // Let presences and session answers settle before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut results = Vec::new();
        for (step, rate) in args.rates.iter().copied().enumerate() {
            let step = step as u64;
            let (_, cpu_before) = server_stats(args.server_pid);
            let errors_before = self.errors.load(Ordering::Relaxed);
            let started = Instant::now();
            let duration = Duration::from_secs(args.step_secs);
            let mut sent: u64 = 0;
            let mut next = 0usize;
            let mut write_errors = 0u64;
            let mut ticker = tokio::time::interval(Duration::from_millis(5));
            while started.elapsed() < duration {
                ticker.tick().await;
                let due = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
                while sent < due {
                    let count = self.senders.len();
                    let sender = &mut self.senders[next % count];
                    next += 1;
                    let at = self.clock.elapsed().as_micros();
                    let stanza = format!(
                        "<message to='{}' type='{}' id='m{sent}'><body>t:{at}:{step}</body></message>",
                        sender.to, sender.kind
                    );
                    if sender.writer.write_all(stanza.as_bytes()).await.is_err() {
                        write_errors += 1;
                    }
                    sent += 1;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(args.grace_secs)).await;
            let (rss, cpu_after) = server_stats(args.server_pid);
            let mut latencies = self
                .stats
                .lock()
                .map(|mut s| s.remove(&step).unwrap_or_default().latencies_us)
                .unwrap_or_default();
            latencies.sort_unstable();
            let delivered = latencies.len() as u64;
            let expected = sent * fanout;
            let cpu = cpu_after.zip(cpu_before).map(|(a, b)| a - b);
            let mut line = json!({
                "scenario": scenario,
                "server": args.label,
                "rate_target": rate,
                "seconds": elapsed,
                "sent": sent,
                "expected": expected,
                "delivered": delivered,
                "lost": expected.saturating_sub(delivered),
                "rate_sent": sent as f64 / elapsed,
                "rate_delivered": delivered as f64 / elapsed,
                "p50_ms": percentile(&latencies, 0.50),
                "p90_ms": percentile(&latencies, 0.90),
                "p99_ms": percentile(&latencies, 0.99),
                "max_ms": latencies.last().map(|v| *v as f64 / 1000.0).unwrap_or(0.0),
                "errors": self.errors.load(Ordering::Relaxed) - errors_before + write_errors,
                "server_cpu_s": cpu,
                "server_cpu_us_per_msg": cpu.filter(|_| delivered > 0).map(|c| c * 1e6 / delivered as f64),
                "server_rss_kb": rss,
            });
            if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
                line.extend(extra.clone());
            }
            results.push(line);
        }
        results
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = check_loopback(&args) {
        eprintln!("{e}");
        std::process::exit(2);
    }
    if (args.websocket.is_some() || args.bosh.is_some()) && args.scenario != Scenario::Login {
        eprintln!("--websocket and --bosh are for the login scenario");
        std::process::exit(2);
    }
    let tls = match &args.tls_ca {
        Some(ca) => match tls_config(ca) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        },
        None => None,
    };
    if args.register {
        let errors = register_all(&args, tls.clone(), args.user_count()).await;
        if errors > 0 {
            eprintln!("{errors} registrations failed");
        }
    }
    let lines = match args.scenario {
        Scenario::Login => vec![scenario_login(&args, tls).await],
        Scenario::Chat => scenario_chat(&args, tls).await,
        Scenario::Rooms => scenario_rooms(&args, tls).await,
    };
    for line in lines {
        println!("{line}");
    }
}
