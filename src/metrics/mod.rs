//! What the server counts for its operator, served as OpenMetrics text on `/metrics`
//! (`web::health`). Every handle is resolved once, here: the paths that count (accepting,
//! reading and writing stanzas, the policy) touch one atomic each, never a label map.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry, Unit};
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

const ACTIONS: [(Action, &str); 7] = [
    (Action::AddContact, "add_contact"),
    (Action::EditContact, "edit_contact"),
    (Action::Message, "message"),
    (Action::Request, "request"),
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
        // The actions never refused (ending a contact, probes) or not observed (searching,
        // a status shown without its text) have no counter.
        let Some(a) = ACTIONS.iter().position(|(x, _)| *x == action) else {
            return;
        };
        let Some(r) = REASONS.iter().position(|(x, _)| *x == reason) else {
            return;
        };
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
        let r = &mut registry;
        let start = registry_add_seconds(
            r,
            "start_time",
            "When the server started, in seconds since the Unix epoch",
            Gauge::<i64>::default(),
        );
        start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        let connections = registry_add(
            r,
            "connections",
            "Client connections open, by transport (a BOSH session counts as one)",
            Family::<Labels, Gauge>::default(),
        );
        let accepted = registry_add(
            r,
            "connections_accepted",
            "Client connections accepted, by transport",
            Family::<Labels, Counter>::default(),
        );
        let stanzas_in = registry_add(
            r,
            "stanzas_in",
            "Stanzas received from clients, by kind",
            Family::<Labels, Counter>::default(),
        );
        let stanzas_out = registry_add(
            r,
            "stanzas_out",
            "Stanzas written to clients, by kind",
            Family::<Labels, Counter>::default(),
        );
        let denials = registry_add(
            r,
            "policy_denials",
            "Actions the ENT's policy refused, by action and reason",
            Family::<PairLabels, Counter>::default(),
        );
        Self {
            connections: Transport::ALL
                .map(|t| connections.get_or_create_owned(&[("transport", t.label())])),
            accepted: Transport::ALL
                .map(|t| accepted.get_or_create_owned(&[("transport", t.label())])),
            refused: registry_add(
                r,
                "connections_refused",
                "Client connections refused at the door, by limit",
                Family::default(),
            ),
            negotiating: registry_add(
                r,
                "connections_negotiating",
                "Connections not bound yet (TLS, SASL, binding)",
                Gauge::default(),
            ),
            bound: registry_add(
                r,
                "sessions_bound",
                "Resources bound (online sessions), every transport",
                Gauge::default(),
            ),
            bosh_sessions: registry_add(
                r,
                "bosh_sessions",
                "BOSH sessions alive",
                Gauge::default(),
            ),
            rooms: registry_add(
                r,
                "rooms",
                "Conversations in memory (with occupants or recently used)",
                Gauge::default(),
            ),
            certificate_not_after: registry_add_seconds(
                r,
                "certificate_not_after_timestamp",
                "When the TLS certificate served now expires, in seconds since the Unix epoch",
                Gauge::default(),
            ),
            logins: registry_add(
                r,
                "logins",
                "Successful authentications",
                Counter::default(),
            ),
            login_failures: registry_add(
                r,
                "login_failures",
                "Failed authentications, by SASL condition (not-authorized, temporary-auth-failure when throttled, account-disabled…)",
                Family::default(),
            ),
            stanzas_in: PerKind::new(&stanzas_in),
            stanzas_out: PerKind::new(&stanzas_out),
            denials: Denials::new(&denials),
            slow_reader_closes: registry_add(
                r,
                "slow_reader_closes",
                "Sessions closed because their client did not read what was sent to it",
                Counter::default(),
            ),
            offline_stored: registry_add(
                r,
                "offline_messages_stored",
                "Messages kept for offline users",
                Counter::default(),
            ),
            offline_delivered: registry_add(
                r,
                "offline_messages_delivered",
                "Offline messages delivered and acknowledged",
                Counter::default(),
            ),
            store_latency: registry_add_seconds(
                r,
                "store_query",
                "Time the store took to answer, by operation",
                Family::new_with_constructor(
                    (|| Histogram::new(exponential_buckets(0.000_1, 4.0, 9))) as fn() -> Histogram,
                ),
            ),
            admin_changes: registry_add(
                r,
                "admin_changes",
                "Changes made through the admin API, console or command line",
                Counter::default(),
            ),
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

/// Registers `metric` and gives it back, to be kept and updated.
fn registry_add<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// The same for a metric in seconds (the name gets `_seconds`).
fn registry_add_seconds<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register_with_unit(name, help, Unit::Seconds, metric.clone());
    metric
}

/// A connection counted as open while it lives.
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
