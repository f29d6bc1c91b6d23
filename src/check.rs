//! `causette check`: what a start would meet, found before starting — the certificate and key,
//! the data directory, the database, the single sign-on key, the listening addresses — and
//! settings that work but are wrong for production, each said in one line.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use crate::config::Config;
use crate::{auth, storage, transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// What the check found, one line per finding.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<(Level, String)>,
}

impl Report {
    fn ok(&mut self, text: impl Into<String>) {
        self.findings.push((Level::Ok, text.into()));
    }

    fn warn(&mut self, text: impl Into<String>) {
        self.findings.push((Level::Warning, text.into()));
    }

    fn error(&mut self, text: impl Into<String>) {
        self.findings.push((Level::Error, text.into()));
    }

    /// Whether a start would fail (or a part of the server would not work).
    pub fn failed(&self) -> bool {
        self.findings
            .iter()
            .any(|(level, _)| *level == Level::Error)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (level, text) in &self.findings {
            let tag = match level {
                Level::Ok => "ok     ",
                Level::Warning => "warning",
                Level::Error => "error  ",
            };
            writeln!(f, "{tag} {text}")?;
        }
        Ok(())
    }
}

/// Checks a configuration that parsed and validated (`Config::validate`); changes nothing.
pub async fn run(config: &Config) -> Report {
    let mut report = Report::default();
    report.ok(format!("configuration valid, domain {}", config.domain));
    check_data_dir(config, &mut report);
    check_certificate(config, &mut report);
    check_database(config, &mut report).await;
    match auth::token::TokenVerifier::from_config(&config.auth.token) {
        Ok(Some(_)) => report.ok("auth.token: the ENT's token key loads"),
        Ok(None) => {}
        Err(err) => report.error(err),
    }
    check_listeners(config, &mut report).await;
    check_production(config, &mut report);
    report
}

/// Whether the server can write where it keeps its files; only a probe file is written, and
/// removed, in a folder that exists.
fn check_data_dir(config: &Config, report: &mut Report) {
    let dir = &config.data_dir;
    if !dir.exists() {
        // The nearest existing folder is where the first start will create it.
        let parent = dir
            .ancestors()
            .skip(1)
            .find(|a| !a.as_os_str().is_empty() && a.exists())
            .unwrap_or(Path::new("."));
        let writable =
            std::fs::metadata(parent).is_ok_and(|m| m.is_dir() && !m.permissions().readonly());
        if writable {
            report.ok(format!(
                "data_dir {} does not exist yet: the first start creates it",
                dir.display()
            ));
        } else {
            report.error(format!(
                "data_dir {} does not exist and cannot be created in {}",
                dir.display(),
                parent.display()
            ));
        }
        return;
    }
    let probe = dir.join(".causette-check");
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            report.ok(format!("data_dir {} is writable", dir.display()));
        }
        Err(err) => report.error(format!("data_dir {}: not writable: {err}", dir.display())),
    }
}

fn check_certificate(config: &Config, report: &mut Report) {
    let (cert, key, configured) = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), true),
        _ => {
            let (cert, key) = transport::tls::self_signed_paths(&config.domain, &config.data_dir);
            if !cert.exists() || !key.exists() {
                report.warn(format!(
                    "no tls.cert and tls.key: a self-signed certificate will be generated in {}; \
                     clients will not trust it (set them for production)",
                    display_parent(&cert)
                ));
                return;
            }
            (cert, key, false)
        }
    };
    let checked = match transport::tls::check_pair(&cert, &key, &config.domain) {
        Ok(checked) => checked,
        Err(err) => return report.error(err.to_string()),
    };
    match (checked.names_domain, configured) {
        (true, true) => report.ok(format!(
            "certificate {} and its key load, and it names {}",
            cert.display(),
            config.domain
        )),
        (true, false) => report.warn(format!(
            "the self-signed certificate {} is in use: clients will not trust it (set tls.cert \
             and tls.key for production)",
            cert.display()
        )),
        (false, _) => report.error(format!(
            "certificate {} does not name the domain {}: clients will refuse it",
            cert.display(),
            config.domain
        )),
    }
    if let Some(not_after) = checked.not_after {
        let now = chrono::Utc::now().timestamp();
        let date = chrono::DateTime::from_timestamp(not_after, 0).map_or_else(
            || not_after.to_string(),
            |d| d.format("%Y-%m-%d").to_string(),
        );
        let days = transport::tls::days_left(not_after);
        if not_after <= now {
            report.error(format!(
                "certificate {} expired on {date}: clients refuse it",
                cert.display()
            ));
        } else if days < transport::tls::EXPIRY_WARNING_DAYS {
            report.warn(format!(
                "certificate {} expires on {date}, in {days} days: renew it",
                cert.display()
            ));
        } else {
            report.ok(format!(
                "certificate {} expires on {date}, in {days} days",
                cert.display()
            ));
        }
    }
}

fn display_parent(path: &Path) -> String {
    path.parent().unwrap_or(path).display().to_string()
}

async fn check_database(config: &Config, report: &mut Report) {
    let url = config.database_url();
    let what = if url.starts_with("sqlite:") {
        "the SQLite store"
    } else {
        "the PostgreSQL database"
    };
    match storage::probe(&url).await {
        Ok(None) => report.ok(format!(
            "{what} does not exist yet: the first start creates it"
        )),
        Ok(Some(state)) if state.applied >= state.known => report.ok(format!(
            "{what} answers; its schema is up to date ({} migrations)",
            state.applied
        )),
        Ok(Some(state)) => report.warn(format!(
            "{what} answers; {} of {} migrations applied: `causette migrate` or the next start \
             applies the rest",
            state.applied, state.known
        )),
        Err(err) => return report.error(err.to_string()),
    }
    if let Ok(true) = storage::is_served(&url).await {
        report.ok(format!("a Causette server is running on {what} now"));
    }
}

async fn check_listeners(config: &Config, report: &mut Report) {
    let all = [
        ("listen.c2s", &config.listen.c2s),
        ("listen.c2s_direct_tls", &config.listen.c2s_direct_tls),
        ("http.listen", &config.http.listen),
    ];
    let mut free = Vec::new();
    for (key, addrs) in all {
        for addr in addrs {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(_) => free.push(addr.to_string()),
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => report.warn(format!(
                    "{key}: {addr} is in use (by a running server?): a start would fail"
                )),
                Err(err) => report.error(format!("{key}: cannot listen on {addr}: {err}")),
            }
        }
    }
    if !free.is_empty() {
        report.ok(format!("free to listen on {}", free.join(", ")));
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn check_production(config: &Config, report: &mut Report) {
    let local = config.domain == "localhost";
    if config.admin.demo_directory && !local {
        report.warn(
            "admin.demo_directory is on: an empty directory gets demo users whose password is \
             `demo` (set it to false)",
        );
    }
    if config.tls.allow_plaintext_on_loopback {
        report.warn("tls.allow_plaintext_on_loopback is on: for tests and benchmarks only");
    }
    if !config.http.tls && config.http.listen.iter().any(|a| !is_loopback(a)) {
        report.warn(
            "http.listen has a public address without http.tls: passwords and tokens would \
             cross the network in clear (put a TLS proxy in front or set http.tls)",
        );
    }
}
