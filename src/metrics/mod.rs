//! What the server counts for its operator, served as OpenMetrics text on `/metrics`
//! (`web::health`). Every handle is resolved once, here: the paths that count (accepting,
//! reading and writing stanzas, the policy) touch one atomic each, never a label map.

use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use xmpp_parsers::stanza::Stanza;

use crate::policy::{Action, Reason};

mod store;
pub(crate) use store::timed_store;

type Labels = [(&'static str, &'static str); 1];
type PairLabels = [(&'static str, &'static str); 2];

/// How a client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    WebSocket,
    Bosh,
}

impl Transport {
    const ALL: [Transport; 3] = [Transport::Tcp, Transport::WebSocket, Transport::Bosh];

    fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "websocket",
            Transport::Bosh => "bosh",
        }
    }
}

/// One handle per stanza kind.
pub(crate) struct PerKind {
    message: Counter,
    presence: Counter,
    iq: Counter,
}

impl PerKind {
    fn new(family: &Family<Labels, Counter>) -> Self {
        let of = |kind| family.get_or_create_owned(&[("kind", kind)]);
        Self {
            message: of("message"),
            presence: of("presence"),
            iq: of("iq"),
        }
    }

    pub fn count(&self, stanza: &Stanza) {
        match stanza {
            Stanza::Message(_) => self.message.inc(),
            Stanza::Presence(_) => self.presence.inc(),
            Stanza::Iq(_) => self.iq.inc(),
        };
    }

    /// Counts a stanza encoded once for many sessions, by the first letter of its name.
    pub fn count_encoded(&self, xml: &[u8]) {
        match xml.get(1) {
            Some(b'm') => self.message.inc(),
            Some(b'p') => self.presence.inc(),
            _ => self.iq.inc(),
        };
    }
}

/// Refusals of the policy, by what was asked and why it was refused.
#[derive(Clone)]
pub(crate) struct Denials {
    by_cause: std::sync::Arc<[Counter]>,
}

const ACTIONS: [(Action, &str); 6] = [
    (Action::AddContact, "add_contact"),
    (Action::EditContact, "edit_contact"),
    (Action::Message, "message"),
    (Action::PrivateMessage, "private_message"),
    (Action::Invite, "invite"),
    (Action::Join, "join"),
];
const REASONS: [(Reason, &str); 4] = [
    (Reason::ActorProfileDisabled, "actor_profile_disabled"),
    (Reason::TargetProfileDisabled, "target_profile_disabled"),
    (Reason::Rules, "rules"),
    (Reason::NotAccepted, "not_accepted"),
];

impl Denials {
    fn new(family: &Family<PairLabels, Counter>) -> Self {
        let by_cause = ACTIONS
            .iter()
            .flat_map(|(_, action)| {
                REASONS.iter().map(move |(_, reason)| {
                    family.get_or_create_owned(&[("action", action), ("reason", reason)])
                })
            })
            .collect();
        Self { by_cause }
    }
}

impl crate::policy::DenialObserver for Denials {
    fn denied(&self, action: Action, reason: Reason) {
        let a = ACTIONS.iter().position(|(x, _)| *x == action).unwrap_or(0);
        let r = REASONS.iter().position(|(x, _)| *x == reason).unwrap_or(0);
        if let Some(counter) = self.by_cause.get(a * REASONS.len() + r) {
            counter.inc();
        }
    }
}

/// Every metric of a server.
pub(crate) struct Metrics {
    registry: Registry,
    connections: [Gauge; 3],
    accepted: [Counter; 3],
    refused: Family<Labels, Counter>,
    /// Set when scraped, from the state that already counts them.
    pub negotiating: Gauge,
    pub bound: Gauge,
    pub bosh_sessions: Gauge,
    pub rooms: Gauge,
    pub certificate_not_after: Gauge,
    pub logins: Counter,
    login_failures: Family<Labels, Counter>,
    pub stanzas_in: PerKind,
    pub stanzas_out: PerKind,
    pub denials: Denials,
    pub slow_reader_closes: Counter,
    pub offline_stored: Counter,
    pub offline_delivered: Counter,
    store_latency: Family<Labels, Histogram>,
    pub admin_changes: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("causette");
        registry.register(
            "build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let start = Gauge::<i64>::default();
        start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        registry.register_with_unit(
            "start_time",
            "When the server started, in seconds since the Unix epoch",
            Unit::Seconds,
            start,
        );
        let connections_family = Family::<Labels, Gauge>::default();
        registry.register(
            "connections",
            "Client connections open, by transport (a BOSH session counts as one)",
            connections_family.clone(),
        );
        let accepted_family = Family::<Labels, Counter>::default();
        registry.register(
            "connections_accepted",
            "Client connections accepted, by transport",
            accepted_family.clone(),
        );
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "connections_refused",
            "Client connections refused at the door, by limit",
            refused.clone(),
        );
        let negotiating = Gauge::default();
        registry.register(
            "connections_negotiating",
            "Connections not bound yet (TLS, SASL, binding)",
            negotiating.clone(),
        );
        let bound = Gauge::default();
        registry.register(
            "sessions_bound",
            "Resources bound (online sessions), every transport",
            bound.clone(),
        );
        let bosh_sessions = Gauge::default();
        registry.register(
            "bosh_sessions",
            "BOSH sessions alive",
            bosh_sessions.clone(),
        );
        let rooms = Gauge::default();
        registry.register(
            "rooms",
            "Conversations in memory (with occupants or recently used)",
            rooms.clone(),
        );
        let certificate_not_after = Gauge::default();
        registry.register_with_unit(
            "certificate_not_after_timestamp",
            "When the TLS certificate served now expires, in seconds since the Unix epoch",
            Unit::Seconds,
            certificate_not_after.clone(),
        );
        let logins = Counter::default();
        registry.register("logins", "Successful authentications", logins.clone());
        let login_failures = Family::<Labels, Counter>::default();
        registry.register(
            "login_failures",
            "Failed authentications, by SASL condition (not-authorized, temporary-auth-failure when throttled, account-disabled…)",
            login_failures.clone(),
        );
        let stanzas_in_family = Family::<Labels, Counter>::default();
        registry.register(
            "stanzas_in",
            "Stanzas received from clients, by kind",
            stanzas_in_family.clone(),
        );
        let stanzas_out_family = Family::<Labels, Counter>::default();
        registry.register(
            "stanzas_out",
            "Stanzas written to clients, by kind",
            stanzas_out_family.clone(),
        );
        let denials_family = Family::<PairLabels, Counter>::default();
        registry.register(
            "policy_denials",
            "Actions the ENT's policy refused, by action and reason",
            denials_family.clone(),
        );
        let slow_reader_closes = Counter::default();
        registry.register(
            "slow_reader_closes",
            "Sessions closed because their client did not read what was sent to it",
            slow_reader_closes.clone(),
        );
        let offline_stored = Counter::default();
        registry.register(
            "offline_messages_stored",
            "Messages kept for offline users",
            offline_stored.clone(),
        );
        let offline_delivered = Counter::default();
        registry.register(
            "offline_messages_delivered",
            "Offline messages delivered and acknowledged",
            offline_delivered.clone(),
        );
        let store_latency = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_1, 4.0, 9))) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "store_query",
            "Time the store took to answer, by operation",
            Unit::Seconds,
            store_latency.clone(),
        );
        let admin_changes = Counter::default();
        registry.register(
            "admin_changes",
            "Changes made through the admin API, console or command line",
            admin_changes.clone(),
        );
        Self {
            connections: Transport::ALL
                .map(|t| connections_family.get_or_create_owned(&[("transport", t.label())])),
            accepted: Transport::ALL
                .map(|t| accepted_family.get_or_create_owned(&[("transport", t.label())])),
            refused,
            negotiating,
            bound,
            bosh_sessions,
            rooms,
            certificate_not_after,
            logins,
            login_failures,
            stanzas_in: PerKind::new(&stanzas_in_family),
            stanzas_out: PerKind::new(&stanzas_out_family),
            denials: Denials::new(&denials_family),
            slow_reader_closes,
            offline_stored,
            offline_delivered,
            store_latency,
            admin_changes,
            registry,
        }
    }

    /// Counts a connection accepted on `transport`, and as open until the handle is dropped.
    pub fn connection(&self, transport: Transport) -> OpenConnection {
        let index = transport as usize;
        self.accepted[index].inc();
        let gauge = self.connections[index].clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    /// Counts a connection refused at the door; `limit` names the limit it met.
    pub fn refused(&self, limit: &'static str) {
        self.refused.get_or_create(&[("limit", limit)]).inc();
    }

    /// Counts a failed authentication; `condition` is the SASL condition answered.
    pub fn login_failed(&self, condition: &'static str) {
        self.login_failures
            .get_or_create(&[("condition", condition)])
            .inc();
    }

    /// Records how long a store operation took.
    pub fn store_query(&self, operation: &'static str, took: Duration) {
        self.store_latency
            .get_or_create(&[("operation", operation)])
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// A connection counted as open while it lives.
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Times a future for `Metrics::store_query`.
pub(crate) async fn timed<T>(
    metrics: &Metrics,
    operation: &'static str,
    future: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    let output = future.await;
    metrics.store_query(operation, started.elapsed());
    output
}
