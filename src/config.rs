//! Server configuration: a TOML file whose every key has a sane default, so that an empty file
//! (or no file at all) serves `localhost` on 5222/5223 with SQLite under `./data/`.
//!
//! Every option is documented in `deploy/causette.example.toml` and in the README.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Where and what, on one line: `file, line 3, column 1: unknown field …`.
    #[error("invalid configuration in {path}{at}: {message}")]
    Parse {
        path: PathBuf,
        at: String,
        message: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The XMPP domain served: users are `name@domain`.
    pub domain: String,
    /// Where the embedded database and the generated certificate live.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub listen: ListenConfig,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub im: ImConfig,
    pub rooms: RoomsConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` or `postgres://user:pass@host/db`. Empty means
    /// `sqlite://<data_dir>/causette.db`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Client-to-server listeners that offer STARTTLS (RFC 6120 §5).
    pub c2s: Vec<SocketAddr>,
    /// Client-to-server listeners where TLS starts at once (XEP-0368).
    pub c2s_direct_tls: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain. With `key` unset too, a self-signed certificate is generated
    /// under `data_dir` on first start.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Lets clients connecting from a loopback address skip STARTTLS (and use PLAIN without
    /// TLS). Meant for tests and benchmarks; never applies to other addresses.
    pub allow_plaintext_on_loopback: bool,
    /// How often (seconds) the certificate and key files are checked for a change (a
    /// renewal), to load the new pair without a restart; 0: only on SIGHUP.
    pub reload_check_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            allow_plaintext_on_loopback: false,
            reload_check_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest stanza accepted, in bytes (RFC 6120 §13.12: at least 10,000).
    pub max_stanza_size: usize,
    /// Deepest nesting of elements in a stanza, the stanza element included.
    pub max_element_depth: usize,
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Stanzas queued for one session before it counts as a slow reader and is closed.
    pub session_queue: usize,
    /// The same in bytes (estimated from the stanzas' text and markup).
    pub session_queue_bytes: usize,
    /// Resources one account may have bound at once; a further bind gets
    /// `<resource-constraint/>`.
    pub max_resources_per_account: usize,
    /// Bytes per second a client may send once its budget of `inbound_burst_bytes` is spent;
    /// past it the server reads more slowly (it does not close the stream).
    pub max_inbound_bytes_per_sec: u32,
    pub inbound_burst_bytes: u32,
    /// Seconds one stanza may take to arrive in full, from its first byte.
    pub stanza_timeout_secs: u64,
    /// Seconds a client has to finish TLS, SASL and binding.
    pub negotiation_timeout_secs: u64,
    /// Seconds a client has to send its stream header and finish TLS (direct or STARTTLS).
    pub tls_timeout_secs: u64,
    /// Connections still logging in (before a resource is bound), in total.
    pub max_unauthenticated: usize,
    /// The same from one address; from an address in `auth.nat_networks`, the NAT figure.
    pub max_unauthenticated_per_ip: usize,
    pub max_unauthenticated_per_nat_ip: usize,
    /// Seconds of silence from a bound client before the server pings it (XEP-0199).
    pub ping_after_secs: u64,
    /// Seconds the client then has to send anything before the stream is closed.
    pub ping_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// PBKDF2 iterations used when a password is set (SCRAM, RFC 5802/7677).
    pub scram_iterations: u32,
    /// Failed logins on one account from one address before each further attempt from there
    /// must wait (1 s, then doubling up to `max_delay_secs`). Nobody is ever locked out.
    pub max_failures_per_account: u32,
    /// Failed logins from one address, whatever the accounts, before the same delays apply to
    /// accounts that never logged in from there.
    pub max_failures_per_ip: u32,
    /// The same for addresses in `nat_networks` (a school's pupils behind one address).
    pub max_failures_per_nat_ip: u32,
    /// Networks (CIDR) whose addresses are shared by many users.
    pub nat_networks: Vec<ipnet::IpNet>,
    /// Failures are forgotten this long after the last one.
    pub failure_window_secs: u64,
    /// The longest a throttled attempt waits.
    pub max_delay_secs: u64,
    /// SASL steps run at once on the blocking pool (PLAIN hashes the password: CPU-heavy).
    /// 0 means the number of CPU cores.
    pub workers: usize,
    /// ENT single sign-on: a token the ENT signs, presented as the SASL PLAIN password.
    pub token: crate::auth::token::TokenConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// HTTP listeners: the admin API and console, WebSocket (`/xmpp-websocket`), BOSH
    /// (`/http-bind`) and host-meta. Loopback by default: put a TLS reverse proxy in front to
    /// expose them, or set `tls`.
    pub listen: Vec<SocketAddr>,
    /// Serve HTTPS on these listeners with the server's certificate (`[tls]`), for ENTs that
    /// do not terminate TLS at a reverse proxy.
    pub tls: bool,
    /// XMPP over WebSocket (RFC 7395) at `/xmpp-websocket`.
    pub websocket: bool,
    /// XMPP over BOSH (XEP-0124, XEP-0206) at `/http-bind`.
    pub bosh: bool,
    /// Origins (`https://ent.example.fr`) whose pages may use the web endpoints: checked on
    /// WebSocket upgrades and answered to CORS requests. Empty: pages of the server's own
    /// origin only. Clients that send no `Origin` (desktop clients, tools) are not concerned.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies (CIDR) whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed:
    /// the client's address then comes from the header, and `https` there counts as TLS.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The public base URL of these endpoints (`https://chat.ent.example.fr`), advertised by
    /// host-meta (XEP-0156). Empty: taken from each request's `Host` and scheme.
    pub public_url: String,
    /// Seconds a client has to send a whole request (headers, then body, each), so that a
    /// request trickled in cannot hold a connection.
    pub request_timeout_secs: u64,
    /// Seconds a connection stays open with no request in progress (before the first, or
    /// kept alive between two).
    pub idle_timeout_secs: u64,
    /// HTTP connections open at once, in total (a WebSocket counts until it is upgraded,
    /// then among `limits.max_connections`).
    pub max_connections: usize,
    /// HTTP connections open at once from one address (one from a `auth.nat_networks`
    /// address counts as `max_connections_per_nat_ip`). At the limit, the oldest connection
    /// from that address with no request in progress is closed for the newcomer.
    pub max_connections_per_ip: usize,
    pub max_connections_per_nat_ip: usize,
    /// Largest HTTP request body (BOSH), in bytes; at least `limits.max_stanza_size`.
    pub max_body_bytes: usize,
    /// Sends WebSocket clients elsewhere (`wss://…`): each `<open/>` is answered with
    /// `<close see-other-uri='…'/>` (RFC 7395 §3.6.1), e.g. while the endpoint moves. Empty: off.
    pub websocket_see_other_uri: String,
    /// `/metrics` (OpenMetrics text, for Prometheus).
    pub metrics: bool,
    /// Addresses (CIDR) that may read `/metrics` without a token; others need the admin
    /// token as a bearer token. Behind a trusted proxy, the forwarded address counts.
    pub metrics_allowed: Vec<ipnet::IpNet>,
    pub bosh_settings: BoshConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5280))],
            tls: false,
            websocket: true,
            bosh: true,
            allowed_origins: Vec::new(),
            trusted_proxies: vec![
                "127.0.0.1/32".parse().expect("static"),
                "::1/128".parse().expect("static"),
            ],
            public_url: String::new(),
            request_timeout_secs: 30,
            idle_timeout_secs: 30,
            max_connections: 40_000,
            max_connections_per_ip: 64,
            max_connections_per_nat_ip: 5_000,
            max_body_bytes: 300 * 1024,
            websocket_see_other_uri: String::new(),
            metrics: true,
            metrics_allowed: vec![
                "127.0.0.0/8".parse().expect("static"),
                "::1/128".parse().expect("static"),
            ],
            bosh_settings: BoshConfig::default(),
        }
    }
}

/// BOSH sessions (XEP-0124): what the server grants, whatever the client asks.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoshConfig {
    /// Longest a request is held waiting for something to send (`wait`).
    pub max_wait_secs: u64,
    /// Requests the server holds at once (`hold`).
    pub max_hold: u32,
    /// Longest a session lives without a request in flight (`inactivity`).
    pub inactivity_secs: u64,
    /// Requests in flight at once, and the window of rids accepted ahead of the last one
    /// answered (`requests`).
    pub max_requests: u32,
    /// BOSH sessions in total; past it new ones get `service-unavailable`.
    pub max_sessions: usize,
}

impl Default for BoshConfig {
    fn default() -> Self {
        Self {
            max_wait_secs: 60,
            max_hold: 1,
            inactivity_secs: 60,
            max_requests: 2,
            max_sessions: 20_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token of the admin API. Empty: one is generated on first start and kept in
    /// `<data_dir>/admin.token`.
    pub token: String,
    /// Load the demo ENT directory (two schools, password `demo` for its users) when the
    /// directory is empty: on by default so that a first run shows the rules at work; turn it
    /// off in production.
    pub demo_directory: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token: String::new(),
            demo_directory: true,
        }
    }
}

/// Contacts, presence and messages: the ENT behaviour on top of RFC 6121, on by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImConfig {
    /// Accepting a request also subscribes the acceptor to the requester: both end `both`.
    pub mutual_acceptance: bool,
    /// A refused request stays visible on the requester's roster item until removed or
    /// asked again.
    pub persist_refusal: bool,
    /// Removing a contact removes the user from the contact's roster too.
    pub symmetric_removal: bool,
    /// 1:1 chat and normal messages need a subscription between the two users.
    pub chat_requires_acceptance: bool,
    /// Where contacts of a deleted category go.
    pub fallback_category: String,
    pub max_roster_items: usize,
    /// Longest category (roster group) name, in characters.
    pub max_category_name: usize,
    pub max_categories_per_contact: usize,
    /// Messages kept for an offline user (XEP-0160) before further ones are refused.
    pub max_offline_messages: u32,
    /// Categories (roster groups, empty or not) one user may have.
    pub max_categories: usize,
    /// Contact requests waiting for one user's answer.
    pub max_pending_requests: u32,
    /// Changes one account may ask for in a minute (roster and categories, contact requests,
    /// the directory toggle, messages kept for offline contacts), with as many at once.
    pub max_changes_per_minute: u32,
}

impl Default for ImConfig {
    fn default() -> Self {
        Self {
            mutual_acceptance: true,
            persist_refusal: true,
            symmetric_removal: true,
            chat_requires_acceptance: true,
            fallback_category: "Autres contacts".into(),
            max_roster_items: 1000,
            max_category_name: 100,
            max_categories_per_contact: 20,
            max_offline_messages: 500,
            max_categories: 100,
            max_pending_requests: 200,
            max_changes_per_minute: 120,
        }
    }
}

/// Conversations: multi-user rooms (XEP-0045) at their own domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    pub enabled: bool,
    /// The conference service's domain. Empty means `conference.<domain>`.
    pub domain: String,
    /// Seconds a new room may stay locked, never configured, before it is destroyed.
    pub locked_timeout_secs: u64,
    /// Rooms one user may own (created and not destroyed).
    pub max_rooms_per_user: u32,
    /// Occupants (users, whatever their resources) one room admits; also the highest
    /// `muc#roomconfig_maxusers` an owner may set.
    pub max_occupants: usize,
    /// Affiliations (members, admins, owners, banned users) one room keeps.
    pub max_members: usize,
    /// Messages of history a room keeps (in memory and in the store) and sends on join.
    pub max_history: usize,
    /// Bytes of history a room keeps (in memory and in the store), whatever the count: the
    /// oldest go first.
    pub max_history_bytes: usize,
    /// Rooms one user may have read from the store per minute (a stanza to a room nobody is
    /// in loads it): past it, `resource-constraint` until the budget refills.
    pub max_loads_per_minute: u32,
    /// Mediated invitations one user may send per minute (each carries the inviter's text to
    /// someone who may not be a contact): past it, `resource-constraint`.
    pub max_invitations_per_minute: u32,
    /// Longest nickname, room name, description and subject, in characters.
    pub max_nick_chars: usize,
    pub max_name_chars: usize,
    pub max_description_chars: usize,
    pub max_subject_chars: usize,
    /// Largest room vCard (XEP-0054: the room's logo), in bytes of XML.
    pub max_vcard_bytes: usize,
    /// A user of the ENT directory appears under their display name ("NOM Prénom") whatever
    /// nickname the client asks for (status 210), so that nobody passes for somebody else.
    pub directory_nicks: bool,
    /// Only owners remove occupants (the manual: only the creator). Off: moderators may, as
    /// XEP-0045 has it.
    pub only_owners_kick: bool,
    /// Removing a member from a members-only room also ends the membership (the manual's
    /// "Retirer de la conversation": back only with a new invitation). Off: a kick changes only
    /// the role, as XEP-0045 §8.2 says.
    pub kick_revokes_membership: bool,
    /// What a new room is before its owner changes it.
    pub defaults: RoomDefaults,
}

/// A new room's configuration (the `muc#roomconfig` fields' defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomDefaults {
    pub members_only: bool,
    pub public: bool,
    pub persistent: bool,
    pub moderated: bool,
    /// Occupants may invite (`muc#roomconfig_allowinvites`).
    pub allow_invites: bool,
    /// Occupants may change the subject.
    pub change_subject: bool,
    /// Occupants see each other's real JIDs (`whois` = anyone).
    pub real_jids_visible: bool,
    /// Who may send private messages to occupants: anyone, participants, moderators, none.
    pub allow_private_messages: String,
    /// Messages of history sent on join (at most `rooms.max_history`).
    pub history_length: usize,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            domain: String::new(),
            locked_timeout_secs: 600,
            max_rooms_per_user: 100,
            max_occupants: 200,
            max_members: 1000,
            max_history: 50,
            max_history_bytes: 256 * 1024,
            max_loads_per_minute: 600,
            max_invitations_per_minute: 60,
            max_nick_chars: 64,
            max_name_chars: 100,
            max_description_chars: 500,
            max_subject_chars: 500,
            max_vcard_bytes: 96 * 1024,
            directory_nicks: true,
            only_owners_kick: true,
            kick_revokes_membership: true,
            defaults: RoomDefaults::default(),
        }
    }
}

impl Default for RoomDefaults {
    fn default() -> Self {
        Self {
            members_only: true,
            public: false,
            persistent: true,
            moderated: false,
            allow_invites: true,
            change_subject: true,
            real_jids_visible: true,
            allow_private_messages: "anyone".into(),
            history_length: 20,
        }
    }
}

impl RoomsConfig {
    /// The conference service's domain.
    pub fn service_domain(&self, domain: &str) -> String {
        if self.domain.is_empty() {
            format!("conference.{domain}")
        } else {
            self.domain.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `causette=debug,sqlx=warn`. `RUST_LOG` wins if set.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            domain: "localhost".into(),
            data_dir: PathBuf::from("data"),
            database: DatabaseConfig::default(),
            listen: ListenConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            im: ImConfig::default(),
            rooms: RoomsConfig::default(),
            http: HttpConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 8,
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            c2s: vec![SocketAddr::from(([0, 0, 0, 0], 5222))],
            c2s_direct_tls: vec![SocketAddr::from(([0, 0, 0, 0], 5223))],
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_stanza_size: 256 * 1024,
            max_element_depth: 48,
            max_connections: 50_000,
            session_queue: 256,
            session_queue_bytes: 1024 * 1024,
            max_resources_per_account: 10,
            max_inbound_bytes_per_sec: 64 * 1024,
            inbound_burst_bytes: 1024 * 1024,
            stanza_timeout_secs: 60,
            negotiation_timeout_secs: 60,
            tls_timeout_secs: 10,
            max_unauthenticated: 5_000,
            max_unauthenticated_per_ip: 20,
            max_unauthenticated_per_nat_ip: 500,
            ping_after_secs: 120,
            ping_timeout_secs: 60,
        }
    }
}

impl AuthConfig {
    pub fn throttle_limits(&self) -> crate::auth::throttle::Limits {
        crate::auth::throttle::Limits {
            per_account_and_address: self.max_failures_per_account,
            per_address: self.max_failures_per_ip,
            per_nat_address: self.max_failures_per_nat_ip,
            nat_networks: self.nat_networks.clone(),
            window: Duration::from_secs(self.failure_window_secs),
            max_delay: Duration::from_secs(self.max_delay_secs.max(1)),
        }
    }
}

impl LimitsConfig {
    pub fn router(&self) -> crate::router::RouterLimits {
        crate::router::RouterLimits {
            max_queued_bytes: self.session_queue_bytes,
            max_resources: self.max_resources_per_account,
        }
    }

    pub fn xml(&self) -> crate::transport::XmlLimits {
        crate::transport::XmlLimits {
            max_stanza_size: self.max_stanza_size,
            max_depth: self.max_element_depth,
            rate: crate::transport::Rate {
                bytes_per_sec: self.max_inbound_bytes_per_sec,
                burst: self.inbound_burst_bytes,
            },
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            scram_iterations: 4096,
            max_failures_per_account: 5,
            max_failures_per_ip: 20,
            max_failures_per_nat_ip: 200,
            nat_networks: Vec::new(),
            failure_window_secs: 300,
            max_delay_secs: 60,
            workers: 0,
            token: Default::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads a TOML file. A missing file is an error: callers decide whether to fall back to
    /// the defaults.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|err| {
            let at = err.span().map_or_else(String::new, |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!(", line {line}, column {column}")
            });
            Error::Parse {
                path: path.to_owned(),
                at,
                message: err.message().trim().replace('\n', " "),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), Error> {
        if jid::BareJid::new(&self.domain).is_err() || self.domain.contains(['@', '/']) {
            return Err(Error::Invalid(format!(
                "domain {:?} is not a valid XMPP domain",
                self.domain
            )));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(Error::Invalid(
                "tls.cert and tls.key must be set together".into(),
            ));
        }
        let web_url = |url: &str| url.starts_with("https://") || url.starts_with("http://");
        if let Some(origin) = self.http.allowed_origins.iter().find(|o| !web_url(o)) {
            return Err(Error::Invalid(format!(
                "http.allowed_origins: {origin:?} is not an origin (https://host[:port])"
            )));
        }
        if !self.http.public_url.is_empty() && !web_url(&self.http.public_url) {
            return Err(Error::Invalid(
                "http.public_url must start with https:// or http://".into(),
            ));
        }
        if self.http.max_body_bytes < self.limits.max_stanza_size {
            return Err(Error::Invalid(
                "http.max_body_bytes must be at least limits.max_stanza_size".into(),
            ));
        }
        let bosh = &self.http.bosh_settings;
        if bosh.max_requests < 2 || bosh.max_hold < 1 || bosh.max_hold >= bosh.max_requests {
            return Err(Error::Invalid(
                "http.bosh_settings: max_hold must be at least 1 and below max_requests".into(),
            ));
        }
        if !(1..=300).contains(&bosh.max_wait_secs) || !(1..=3600).contains(&bosh.inactivity_secs) {
            return Err(Error::Invalid(
                "http.bosh_settings: max_wait_secs must be 1 to 300 and inactivity_secs 1 to 3600"
                    .into(),
            ));
        }
        if self.limits.max_stanza_size < 10_000 {
            return Err(Error::Invalid(
                "limits.max_stanza_size must be at least 10000 (RFC 6120 §13.12)".into(),
            ));
        }
        if !(8..=256).contains(&self.limits.max_element_depth) {
            return Err(Error::Invalid(
                "limits.max_element_depth must be between 8 and 256".into(),
            ));
        }
        let limits = &self.limits;
        if limits.session_queue == 0
            || limits.max_connections == 0
            || limits.max_resources_per_account == 0
            || limits.max_inbound_bytes_per_sec == 0
            || limits.stanza_timeout_secs == 0
        {
            return Err(Error::Invalid(
                "limits.session_queue, max_connections, max_resources_per_account, \
                 max_inbound_bytes_per_sec and stanza_timeout_secs must be positive"
                    .into(),
            ));
        }
        if limits.session_queue_bytes < limits.max_stanza_size
            || (limits.inbound_burst_bytes as usize) < limits.max_stanza_size
        {
            return Err(Error::Invalid(
                "limits.session_queue_bytes and limits.inbound_burst_bytes must be at least \
                 limits.max_stanza_size"
                    .into(),
            ));
        }
        let fallback = self.im.fallback_category.trim();
        if fallback.is_empty() || fallback.chars().count() > self.im.max_category_name {
            return Err(Error::Invalid(
                "im.fallback_category must be a non-empty category name".into(),
            ));
        }
        let rooms = &self.rooms;
        let service = rooms.service_domain(&self.domain);
        if jid::BareJid::new(&service).is_err()
            || service.contains(['@', '/'])
            || service == self.domain
        {
            return Err(Error::Invalid(format!(
                "rooms.domain {service:?} must be a valid XMPP domain other than the server's"
            )));
        }
        if rooms.max_occupants < 2
            || rooms.max_nick_chars == 0
            || rooms.max_name_chars == 0
            || rooms.locked_timeout_secs == 0
            || rooms.defaults.history_length > rooms.max_history
            || !["anyone", "participants", "moderators", "none"]
                .contains(&rooms.defaults.allow_private_messages.as_str())
        {
            return Err(Error::Invalid(
                "rooms: max_occupants must be at least 2, max_nick_chars, max_name_chars and \
                 locked_timeout_secs positive, defaults.history_length at most max_history, and \
                 defaults.allow_private_messages one of anyone, participants, moderators, none"
                    .into(),
            ));
        }
        if self.auth.scram_iterations < 4096 {
            return Err(Error::Invalid(
                "auth.scram_iterations must be at least 4096 (RFC 7677)".into(),
            ));
        }
        Ok(())
    }

    /// The database URL, with the embedded default filled in.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("causette.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    pub fn negotiation_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.negotiation_timeout_secs)
    }

    pub fn tls_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.tls_timeout_secs.max(1))
    }

    pub fn admission(&self) -> crate::transport::admission::AdmissionLimits {
        crate::transport::admission::AdmissionLimits {
            max_unauthenticated: self.limits.max_unauthenticated,
            max_unauthenticated_per_ip: self.limits.max_unauthenticated_per_ip,
            max_unauthenticated_per_nat_ip: self.limits.max_unauthenticated_per_nat_ip,
            nat_networks: self.auth.nat_networks.clone(),
        }
    }

    pub fn auth_workers(&self) -> usize {
        if self.auth.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            self.auth.workers
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config: Config = toml::from_str("").unwrap();
        config.validate().unwrap();
        assert_eq!(config.domain, "localhost");
        assert_eq!(config.listen.c2s[0].port(), 5222);
        assert_eq!(config.listen.c2s_direct_tls[0].port(), 5223);
        assert!(
            config
                .database_url()
                .starts_with("sqlite://data/causette.db")
        );
        assert!(!config.tls.allow_plaintext_on_loopback);
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../deploy/causette.example.toml");
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("domian = 'x'").is_err());
        let config: Config = toml::from_str("domain = 'a@b'").unwrap();
        assert!(config.validate().is_err());
        let config: Config = toml::from_str("[limits]\nmax_stanza_size = 10").unwrap();
        assert!(config.validate().is_err());
        for web in [
            "[http]\nallowed_origins = ['ent.example.fr']",
            "[http]\npublic_url = 'chat.example.fr'",
            "[http.bosh_settings]\nmax_hold = 2\nmax_requests = 2",
            "[http]\nmax_body_bytes = 1000",
        ] {
            let config: Config = toml::from_str(web).unwrap();
            assert!(config.validate().is_err(), "{web}");
        }
    }
}
