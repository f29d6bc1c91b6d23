//! TLS server configuration: the configured certificate, or a self-signed one generated on
//! first start and kept under `data_dir/tls/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// ALPN protocol of direct TLS (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

pub fn server_config(certificate: &Certificate<'_>) -> Result<Arc<ServerConfig>, Error> {
    let (cert_path, key_path) = match (certificate.cert, certificate.key) {
        (Some(cert), Some(key)) => (cert.to_owned(), key.to_owned()),
        _ => ensure_self_signed(certificate.domain, certificate.data_dir)?,
    };
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
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
    let cert_path = dir.join(format!("{domain}.crt"));
    let key_path = dir.join(format!("{domain}.key"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    let names = vec![domain.to_owned(), format!("*.{domain}")];
    let certified = rcgen::generate_simple_self_signed(names)?;
    write_file(&cert_path, certified.cert.pem().as_bytes(), 0o644)?;
    write_file(
        &key_path,
        certified.key_pair.serialize_pem().as_bytes(),
        0o600,
    )?;
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
