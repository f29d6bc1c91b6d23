//! Entry points for the coverage-guided fuzz targets under `fuzz/` (feature `fuzzing`): each
//! takes arbitrary bytes and runs them through the code a client or the ENT reaches with
//! them, the same functions the server calls. None may panic, overflow its stack or hang.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::Duration;

use crate::auth::throttle::{Limits, Throttle};
use crate::auth::{Authenticator, Step, Transport};
use crate::stream::elements::{Elements, Primed};
use crate::transport::guard::XmlGuard;

/// The server's default limits on client XML.
const MAX_DEPTH: usize = 48;
const MAX_STANZA: usize = 256 * 1024;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// What the connection lets through to the parser: the bytes before the first one past a
/// limit. The input is scanned in chunks whose size its first byte picks, as reads would cut
/// it.
fn guarded(data: &[u8]) -> &[u8] {
    let Some((&chunk, data)) = data.split_first() else {
        return data;
    };
    let chunk = usize::from(chunk).max(1);
    let mut guard = XmlGuard::new(MAX_DEPTH, MAX_STANZA);
    let mut offset = 0;
    for piece in data.chunks(chunk) {
        if let Err((within, _)) = guard.scan(piece) {
            return &data[..offset + within];
        }
        offset += piece.len();
    }
    data
}

/// A client's bytes from its first stream header: negotiation (tokio-xmpp's stream and the
/// server's handling of what it yields).
pub fn negotiation_stream(data: &[u8]) {
    let data = guarded(data);
    runtime().block_on(crate::stream::fuzz_negotiation(data));
}

/// A bound client's bytes after its stream header: the session's own stream (rxml and the
/// element builders), then what the session computes of each stanza.
pub fn session_stream(data: &[u8]) {
    let data = guarded(data);
    let Ok(primed) = Primed::from_header(HEADER) else {
        return;
    };
    let (mut parser, mut elements) = Elements::after(primed);
    let mut rest = data;
    let now = tokio::time::Instant::now();
    loop {
        match rxml::Parse::parse(&mut parser, &mut rest, true) {
            Ok(Some(event)) => match elements.take_event(event, now) {
                Some(crate::stream::Incoming::Element(element)) => {
                    crate::session::fuzz_element(*element);
                }
                None => {}
                Some(_) => return,
            },
            Ok(None) | Err(_) => return,
        }
    }
}

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        runtime().block_on(async {
            let store = crate::storage::open("sqlite::memory:", 1)
                .await
                .expect("an in-memory store");
            crate::accounts::add(&store, "alice", "secret".into(), 4096)
                .await
                .expect("a user");
            // Budgets no input can spend: every input is checked, none is turned away.
            let throttle = Throttle::new(Limits {
                per_account_and_address: u32::MAX,
                per_address: u32::MAX,
                per_nat_address: u32::MAX,
                nat_networks: Vec::new(),
                window: Duration::from_secs(1),
                max_delay: Duration::from_secs(1),
            });
            Authenticator::new(store, "localhost", throttle, 1, None)
        })
    })
}

/// SASL messages: the first byte picks the mechanism (and whether TLS channel binding is
/// there), the next two where the first message ends; the rest is the second message.
pub fn sasl(data: &[u8]) {
    const MECHANISMS: [&str; 5] = [
        "PLAIN",
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256-PLUS",
    ];
    let [pick, a, b, rest @ ..] = data else {
        return;
    };
    let mechanism = MECHANISMS[usize::from(*pick) % MECHANISMS.len()];
    let transport = Transport {
        peer_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tls_exporter: (pick & 0x80 != 0).then(|| Box::from(&[7u8; 32][..])),
        secure: true,
    };
    let split = (usize::from(*a) << 8 | usize::from(*b)).min(rest.len());
    let (first, second) = rest.split_at(split);
    let auth = authenticator();
    runtime().block_on(async {
        let Ok(mut exchange) = auth.start(mechanism, &transport) else {
            return;
        };
        if let Step::Challenge(_) = auth.step(&mut exchange, first.to_vec()).await {
            let _ = auth.step(&mut exchange, second.to_vec()).await;
        }
    });
}

/// An IQ payload from a user: the categories extension, the search form, a roster item.
pub fn forms(data: &[u8]) {
    let data = guarded(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(element) = text.parse::<minidom::Element>() else {
        return;
    };
    let _ = crate::im::categories::CategoriesQuery::try_from(element.clone());
    crate::im::search::fuzz_form(&element);
    if let Ok(roster) = xmpp_parsers::roster::Roster::try_from(element) {
        for item in roster.items {
            crate::im::roster::fuzz_groups(item.groups.iter().map(|g| g.0.as_str()));
        }
    }
}

/// The admin API's JSON bodies and the JSON Lines import, each change then applied to a
/// directory in memory (validated as the server validates it).
pub fn admin_json(data: &[u8]) {
    crate::admin::fuzz_bodies(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(import) = crate::admin::import::parse_import(text) else {
        return;
    };
    let mut directory = crate::policy::directory::DirectoryState::default();
    for change in &import.changes {
        let _ = directory.apply(change);
    }
    let users: Vec<&String> = directory.users.keys().take(16).collect();
    for (username, target) in users.iter().zip(users.iter().rev()) {
        for action in [
            crate::policy::Action::Message,
            crate::policy::Action::AddContact,
            crate::policy::Action::Search,
        ] {
            let _ = crate::policy::decide(&directory, username, target, action, Default::default());
        }
    }
}

/// A web client's bytes: one WebSocket message (an element as a document of its own, then
/// what the session computes of it), and the same bytes as a BOSH request body and as
/// operations on a BOSH session.
pub fn web_message(data: &[u8]) {
    let limits = crate::transport::XmlLimits {
        max_stanza_size: MAX_STANZA,
        max_depth: MAX_DEPTH,
        rate: crate::transport::Rate {
            bytes_per_sec: 64 * 1024,
            burst: 1024 * 1024,
        },
    };
    if let Ok(element) = crate::stream::elements::parse_document(data, &limits) {
        let _ = crate::stream::unexpected(&element);
        crate::session::fuzz_element(element);
    }
    crate::stream::bosh::fuzz_request(data, &limits);
}
