//! Causette, an XMPP chat server for French school portals (ENT).
//!
//! `Server::start` runs everything from a [`Config`]; it reads no environment variable and no
//! signal, so tests start it on port 0 the same way `main` does.

pub mod accounts;
pub mod admin;
pub mod auth;
mod budget;
pub mod check;
pub mod config;
pub mod directory;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod storage;

mod im;
mod link;
mod listener;
mod metrics;
mod muc;
mod ns;
pub mod policy;
mod reply;
mod router;
mod routing;
mod server_iq;
mod session;
mod stream;
mod transport;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jid::BareJid;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
use storage::DynStore;
use transport::ListenerKind;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    Tls(#[from] transport::tls::Error),
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error("{0}")]
    Listen(#[from] std::io::Error),
    #[error("cannot load the demo directory: {0}")]
    Demo(String),
}

/// What every connection task shares.
pub(crate) struct Shared {
    config: Config,
    /// The served domain, as a JID (normalised).
    domain: BareJid,
    store: DynStore,
    router: router::Router,
    rosters: im::roster::Rosters,
    policy: Arc<policy::Policy>,
    /// The conference service, when rooms are enabled (also registered with the router).
    rooms: Option<Arc<muc::Rooms>>,
    /// Bearer token of the admin API.
    admin_token: String,
    auth: auth::Authenticator,
    tls: TlsAcceptor,
    /// The certificate `tls` serves, reloaded on SIGHUP and when its files change.
    certificates: Arc<transport::tls::Certificates>,
    /// What each account may change per minute.
    writes: budget::WriteBudget,
    /// Page origins refused by the web endpoints, to log each once a minute.
    refused_origins: web::cors::RefusedOrigins,
    connection_slots: Arc<Semaphore>,
    admission: Arc<transport::admission::Admission>,
    /// The BOSH sessions alive.
    bosh: stream::bosh::Registry,
    metrics: Arc<metrics::Metrics>,
    /// Every listener is up (`/readyz`).
    ready: std::sync::atomic::AtomicBool,
    /// The store's mark of being served, removed at shutdown.
    serving: std::sync::Mutex<Option<storage::ServingMark>>,
    /// What happens at each point of a session's life, above the session.
    lifecycle: Arc<dyn session::Lifecycle>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Shared {
    /// Opens the store (migrating it), loads or generates the certificate and the admin token,
    /// and loads the directory: everything but the listeners.
    async fn new(config: Config) -> Result<Shared, StartError> {
        config.validate()?;
        let domain = BareJid::new(&config.domain)
            .map_err(|_| config::Error::Invalid(format!("invalid domain {:?}", config.domain)))?;
        // The store first: a server that cannot open it writes nothing (no certificate).
        let metrics = Arc::new(metrics::Metrics::new());
        let store = metrics::timed_store(
            storage::open(&config.database_url(), config.database.max_connections).await?,
            metrics.clone(),
        );
        let certificates = transport::tls::Certificates::load(&transport::tls::Certificate {
            cert: config.tls.cert.as_deref(),
            key: config.tls.key.as_deref(),
            domain: &config.domain,
            data_dir: &config.data_dir,
        })?;
        let tls = TlsAcceptor::from(transport::tls::server_config(certificates.clone())?);
        // A second server on the store is refused, and the commands that would change it
        // behind this one's back find the mark.
        let serving = storage::mark_serving(&config.database_url()).await?;
        let policy = Arc::new(
            policy::Policy::load(&store)
                .await?
                .requiring_acceptance(config.im.chat_requires_acceptance)
                .observed_by(Arc::new(metrics.denials.clone())),
        );
        let admin_token = admin_token(&config)?;
        let throttle = auth::throttle::Throttle::new(config.auth.throttle_limits());
        let auth = auth::Authenticator::new(
            store.clone(),
            domain.domain().as_str(),
            throttle,
            config.auth_workers(),
            auth::token::TokenVerifier::from_config(&config.auth.token)
                .map_err(config::Error::Invalid)?,
        );
        let router = router::Router::new(config.limits.router());
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let rooms = if config.rooms.enabled {
            let (rooms, history) = muc::Rooms::new(
                &config.domain,
                config.rooms.clone(),
                store.clone(),
                policy.clone(),
                config.im.max_offline_messages,
            )
            .map_err(|_| config::Error::Invalid("invalid rooms.domain".into()))?;
            router.register_component(rooms.domain().clone(), rooms.clone());
            tasks.spawn(history.run(shutdown.clone()));
            Some(rooms)
        } else {
            None
        };
        Ok(Shared {
            writes: budget::WriteBudget::new(config.im.max_changes_per_minute),
            refused_origins: web::cors::RefusedOrigins::default(),
            connection_slots: Arc::new(Semaphore::new(config.limits.max_connections)),
            admission: Arc::new(transport::admission::Admission::new(config.admission())),
            domain,
            store,
            router,
            rosters: im::roster::Rosters::default(),
            policy,
            rooms,
            admin_token,
            auth,
            tls,
            certificates,
            bosh: stream::bosh::Registry::default(),
            metrics,
            ready: std::sync::atomic::AtomicBool::new(false),
            serving: std::sync::Mutex::new(Some(serving)),
            lifecycle: Arc::new(routing::Sessions),
            tasks,
            shutdown,
            config,
        })
    }
}

impl Shared {
    /// What instant messaging works with.
    fn im(&self) -> im::Context<'_> {
        im::Context {
            domain: &self.domain,
            config: &self.config.im,
            store: &self.store,
            router: &self.router,
            rosters: &self.rosters,
            policy: &self.policy,
            writes: &self.writes,
        }
    }
}

/// The shared state of a server without listeners, on a temporary SQLite store, for the unit
/// tests of the layers under the server.
#[cfg(test)]
pub(crate) async fn test_shared(
    adjust: impl FnOnce(&mut Config),
) -> (tempfile::TempDir, Arc<Shared>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.admin.demo_directory = false;
    // Fast enough for unit tests; the hashes are still real SCRAM.
    config.auth.scram_iterations = 4096;
    adjust(&mut config);
    let shared = Shared::new(config).await.expect("shared state");
    (dir, Arc::new(shared))
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    c2s_addrs: Vec<SocketAddr>,
    direct_tls_addrs: Vec<SocketAddr>,
    http_addrs: Vec<SocketAddr>,
}

/// How long shutdown waits for sessions to say goodbye before closing the store anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Server {
    /// Opens the store (migrating it), loads or generates the certificate, binds every
    /// listener, and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        // Everything is loaded before any port is bound: a client is never accepted before the
        // server can serve it.
        let shared = Arc::new(Shared::new(config).await?);
        let config = &shared.config;
        let c2s = transport::bind_all(&config.listen.c2s).await?;
        let direct = transport::bind_all(&config.listen.c2s_direct_tls).await?;
        let http = transport::bind_all(&config.http.listen).await?;
        let http_addrs = addrs_of(&http)?;
        let c2s_addrs = addrs_of(&c2s)?;
        let direct_tls_addrs = addrs_of(&direct)?;
        if shared.config.admin.demo_directory && shared.policy.snapshot().structures.is_empty() {
            load_demo_directory(&shared).await?;
        }
        for listener in http {
            let app = web::router(shared.clone());
            shared
                .tasks
                .spawn(web::serve(listener, app, shared.clone()));
        }
        for (listeners, kind) in [
            (c2s, ListenerKind::StartTls),
            (direct, ListenerKind::DirectTls),
        ] {
            for listener in listeners {
                shared.tasks.spawn(listener::serve(
                    listener,
                    kind,
                    shared.clone(),
                    shared.shutdown.clone(),
                ));
            }
        }
        shared.tasks.spawn(purge_throttle(shared.clone()));
        if shared.config.tls.reload_check_secs > 0 {
            shared.tasks.spawn(watch_certificate(shared.clone()));
        }
        if shared.rooms.is_some() {
            shared.tasks.spawn(sweep_rooms(shared.clone()));
        }
        shared
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        warn_if_expiring(&shared.certificates);
        tracing::info!(
            domain = %shared.config.domain,
            c2s = ?c2s_addrs,
            c2s_direct_tls = ?direct_tls_addrs,
            http = ?http_addrs,
            "serving"
        );
        Ok(Server {
            shared,
            c2s_addrs,
            direct_tls_addrs,
            http_addrs,
        })
    }

    /// Addresses of the STARTTLS listeners, as bound (port 0 resolved).
    pub fn c2s_addrs(&self) -> &[SocketAddr] {
        &self.c2s_addrs
    }

    /// Addresses of the direct-TLS listeners, as bound.
    pub fn direct_tls_addrs(&self) -> &[SocketAddr] {
        &self.direct_tls_addrs
    }

    /// Addresses of the HTTP listeners (admin API and console), as bound.
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http_addrs
    }

    /// The admin API's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.shared.admin_token
    }

    /// Applies directory changes as the admin API does (used by `causette directory import`).
    pub async fn apply_directory(
        &self,
        actor: &str,
        changes: &[directory::DirectoryChange],
    ) -> Result<(), policy::ApplyError> {
        admin::apply(&self.shared, actor, changes, &[]).await
    }

    pub fn store(&self) -> DynStore {
        self.shared.store.clone()
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Loads the certificate and key again (SIGHUP): new connections get the new pair,
    /// connections up keep theirs. A pair that does not load changes nothing.
    pub async fn reload_certificate(&self) -> Result<(), transport::tls::Error> {
        reload_certificate(&self.shared).await
    }

    /// Sessions bound right now.
    pub fn online_sessions(&self) -> usize {
        self.shared.router.online_count()
    }

    /// Stops accepting, sends `<system-shutdown/>` to every session, waits for them (a few
    /// seconds at most), then closes the store.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        // Negotiating streams and listeners watch the token; bound sessions are told through
        // their own close request, so that their loop takes no shared lock per stanza.
        self.shared.shutdown.cancel();
        self.shared.router.close_all(router::CloseReason {
            french: None,
            condition: xmpp_parsers::stream_error::DefinedCondition::SystemShutdown,
            text: link::SHUTTING_DOWN,
        });
        self.shared.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        self.shared.store.close().await;
        let serving = self
            .shared
            .serving
            .lock()
            .ok()
            .and_then(|mut mark| mark.take());
        if let Some(mark) = serving {
            mark.release().await;
        }
        tracing::info!("stopped");
    }
}

fn addrs_of(listeners: &[tokio::net::TcpListener]) -> std::io::Result<Vec<SocketAddr>> {
    listeners.iter().map(|l| l.local_addr()).collect()
}

/// The configured admin token, or the one kept under `data_dir`, generated on first start.
fn admin_token(config: &Config) -> Result<String, StartError> {
    if !config.admin.token.is_empty() {
        return Ok(config.admin.token.clone());
    }
    let path = config.data_dir.join("admin.token");
    if let Ok(token) = std::fs::read_to_string(&path)
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    use rand::Rng;
    let token = hex::encode(rand::thread_rng().r#gen::<[u8; 24]>());
    std::fs::create_dir_all(&config.data_dir)?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(token.as_bytes())?;
    }
    tracing::warn!(path = %path.display(), "generated the admin API token");
    Ok(token)
}

async fn load_demo_directory(shared: &Shared) -> Result<(), StartError> {
    admin::apply(shared, "demo", &admin::demo::changes(), &[])
        .await
        .map_err(|e| StartError::Demo(e.to_string()))?;
    for (username, ..) in admin::demo::USERS {
        accounts::set_password(
            &shared.store,
            username,
            admin::demo::PASSWORD.into(),
            shared.config.auth.scram_iterations,
        )
        .await
        .map_err(|e| StartError::Demo(e.to_string()))?;
    }
    tracing::warn!(
        "loaded the demo ENT directory (password `demo`); set admin.demo_directory = false in production"
    );
    Ok(())
}

/// Destroys the rooms left locked too long.
async fn sweep_rooms(shared: Arc<Shared>) {
    let Some(rooms) = shared.rooms.clone() else {
        return;
    };
    let mut ticker = tokio::time::interval(rooms.sweep_period());
    loop {
        tokio::select! {
            _ = ticker.tick() => rooms.sweep(&shared.router).await,
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

async fn reload_certificate(shared: &Shared) -> Result<(), transport::tls::Error> {
    let certificates = shared.certificates.clone();
    let reloaded = tokio::task::spawn_blocking(move || certificates.reload())
        .await
        .unwrap_or_else(|join| Err(transport::tls::Error::Reload(join.to_string())));
    let cert = shared.certificates.cert_path().display();
    match &reloaded {
        Ok(()) => {
            tracing::info!(
                cert = %cert,
                not_after = %transport::tls::date_of(shared.certificates.not_after().unwrap_or(0)),
                "certificate reloaded"
            );
            warn_if_expiring(&shared.certificates);
        }
        Err(err) => {
            tracing::error!(error = %err, "certificate not reloaded; still serving the previous one")
        }
    }
    reloaded
}

/// Says so in the log when the certificate served expires within two weeks, or has.
fn warn_if_expiring(certificates: &transport::tls::Certificates) {
    let Some(not_after) = certificates.not_after() else {
        return;
    };
    let days_left = transport::tls::days_left(not_after);
    if days_left < transport::tls::EXPIRY_WARNING_DAYS {
        tracing::warn!(
            cert = %certificates.cert_path().display(),
            days_left,
            "the certificate expires soon or has expired: renew it"
        );
    }
}

/// Reloads the certificate when its files change (a renewal by certbot or acme.sh).
async fn watch_certificate(shared: Arc<Shared>) {
    let mut ticker =
        tokio::time::interval(Duration::from_secs(shared.config.tls.reload_check_secs));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let certificates = shared.certificates.clone();
        let changed = tokio::task::spawn_blocking(move || certificates.changed_on_disk())
            .await
            .unwrap_or(false);
        // A renewal writes two files: a pair caught half-written fails to load and is tried
        // again at the next tick, the files' times having been left unrecorded.
        if changed {
            let _ = reload_certificate(&shared).await;
        }
    }
}

async fn purge_throttle(shared: Arc<Shared>) {
    let period = shared.auth.throttle().window().max(Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                shared.auth.throttle().purge();
                shared.writes.purge();
                shared.auth.purge_tokens();
                if let Some(rooms) = &shared.rooms {
                    rooms.purge_budgets();
                }
            }
            _ = shared.shutdown.cancelled() => return,
        }
    }
}
