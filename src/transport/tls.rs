//! TLS server configuration: the configured certificate, or a self-signed one generated on
//! first start and kept under `data_dir/tls/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::Socket;

/// Where the certificate comes from: the configured files, or one generated for `domain` and
/// kept under `data_dir/tls/`.
pub struct Certificate<'a> {
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub domain: &'a str,
    pub data_dir: &'a Path,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the private key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: the private key is not usable: {source}")]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the reload did not finish: {0}")]
    Reload(String),
}

/// ALPN protocol of direct TLS (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// The server's certificate and key, replaceable while serving (a renewal): each handshake
/// takes the pair current when it starts, and connections already up keep theirs.
#[derive(Debug)]
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The files' modification times when last loaded, for `changed_on_disk`.
    loaded: std::sync::Mutex<Stamps>,
}

type Stamps = (Option<SystemTime>, Option<SystemTime>);

impl Certificates {
    /// Loads the configured pair, or the generated one (made on first start).
    pub fn load(certificate: &Certificate<'_>) -> Result<Arc<Self>, Error> {
        let (cert_path, key_path) = match (certificate.cert, certificate.key) {
            (Some(cert), Some(key)) => (cert.to_owned(), key.to_owned()),
            _ => ensure_self_signed(certificate.domain, certificate.data_dir)?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = stamps(&cert_path, &key_path);
        let pair = read_pair(&cert_path, &key_path, &provider)?;
        Ok(Arc::new(Self {
            cert_path,
            key_path,
            provider,
            current: ArcSwap::from_pointee(pair),
            loaded: std::sync::Mutex::new(stamps),
        }))
    }

    /// Reads the files again and serves the new pair from the next handshake on; a pair that
    /// does not load (a missing file, a key that is not the certificate's) changes nothing.
    /// Reads files: call it off the async workers.
    pub fn reload(&self) -> Result<(), Error> {
        let stamps = stamps(&self.cert_path, &self.key_path);
        let pair = read_pair(&self.cert_path, &self.key_path, &self.provider)?;
        self.current.store(Arc::new(pair));
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = stamps;
        }
        Ok(())
    }

    /// Whether either file changed since it was loaded. Reads file metadata: call it off the
    /// async workers.
    pub fn changed_on_disk(&self) -> bool {
        let now = stamps(&self.cert_path, &self.key_path);
        self.loaded.lock().is_ok_and(|loaded| *loaded != now)
    }

    /// The certificate file, for messages.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// When the certificate served now expires, in Unix seconds, if it says.
    pub fn not_after(&self) -> Option<i64> {
        not_after(&self.current.load())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A Unix time as an RFC 3339 date, for the log.
pub fn date_of(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(
        || unix.to_string(),
        |at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// When the end-entity certificate of a pair expires (Unix seconds).
fn not_after(pair: &CertifiedKey) -> Option<i64> {
    let der = pair.cert.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

fn stamps(cert: &Path, key: &Path) -> Stamps {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    CertifiedKey::from_der(certs, key, provider).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => Error::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        },
        other => Error::Key {
            path: key_path.to_owned(),
            source: other,
        },
    })
}

/// A certificate that expires sooner than this is worth a warning, in the log and from
/// `causette check` (Let's Encrypt renews at 30).
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// Whole days from now to `not_after` (Unix seconds); negative once past.
pub fn days_left(not_after: i64) -> i64 {
    (not_after - chrono::Utc::now().timestamp()).div_euclid(86_400)
}

/// What `causette check` learns of a pair.
pub struct CheckedPair {
    /// The certificate is valid for the domain.
    pub names_domain: bool,
    /// When it expires (Unix seconds), if it says.
    pub not_after: Option<i64>,
}

/// Loads a certificate and key as the server would, without serving them (`causette check`):
/// the error a start would meet, or whether the certificate names `domain` and when it
/// expires.
pub fn check_pair(cert: &Path, key: &Path, domain: &str) -> Result<CheckedPair, Error> {
    let provider = rustls::crypto::ring::default_provider();
    let pair = read_pair(cert, key, &provider)?;
    let not_after = not_after(&pair);
    let names_domain = match (
        rustls::pki_types::ServerName::try_from(domain.to_owned()),
        pair.cert.first(),
    ) {
        (Ok(name), Some(end_entity)) => {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, &name).is_ok()
        }
        _ => false,
    };
    Ok(CheckedPair {
        names_domain,
        not_after,
    })
}

/// The paths of the self-signed pair generated for `domain` under `data_dir`.
pub fn self_signed_paths(domain: &str, data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (
        dir.join(format!("{domain}.crt")),
        dir.join(format!("{domain}.key")),
    )
}

/// The XMPP listeners' TLS configuration (ALPN `xmpp-client` for direct TLS), serving the
/// current pair of `certificates`.
pub fn server_config(certificates: Arc<Certificates>) -> Result<Arc<ServerConfig>, Error> {
    let provider = certificates.provider.clone();
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    server.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
    Ok(Arc::new(server))
}

/// The same certificate for HTTPS (the web links and the admin API): ALPN `http/1.1`, the
/// protocol WebSocket upgrades and BOSH use.
pub fn for_http(xmpp: &ServerConfig) -> Arc<ServerConfig> {
    let mut http = xmpp.clone();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(http)
}

/// Paths of the generated certificate for `domain`, created if missing.
fn ensure_self_signed(domain: &str, data_dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let dir = data_dir.join("tls");
    let (cert_path, key_path) = self_signed_paths(domain, data_dir);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    let names = vec![domain.to_owned(), format!("*.{domain}")];
    let mut params = rcgen::CertificateParams::new(names)?;
    // Named for the domain (not the library's default name), valid from yesterday (clocks
    // differ) for ten years.
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, domain);
    name.push(rcgen::DnType::OrganizationName, "Causette (self-signed)");
    params.distinguished_name = name;
    let ymd = |date: chrono::NaiveDate| {
        use chrono::Datelike;
        rcgen::date_time_ymd(date.year(), date.month() as u8, date.day() as u8)
    };
    let today = chrono::Utc::now().date_naive();
    params.not_before = ymd(today - chrono::Days::new(1));
    params.not_after = ymd(today + chrono::Days::new(3650));
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    tracing::warn!(
        cert = %cert_path.display(),
        "generated a self-signed certificate; configure tls.cert and tls.key for production"
    );
    Ok((cert_path, key_path))
}

/// The server side of a TLS handshake on `tcp`: for direct TLS from the first byte, or after
/// `<proceed/>` (STARTTLS). Callers bound the time it may take.
pub async fn handshake(acceptor: &TlsAcceptor, tcp: TcpStream) -> std::io::Result<Socket> {
    Ok(Socket::Tls(Box::new(acceptor.accept(tcp).await?)))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let wrap = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(wrap)?;
    file.write_all(contents).map_err(wrap)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let data = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let data = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| Error::NoKey {
            path: path.to_owned(),
        })
}
