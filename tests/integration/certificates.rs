//! Certificate renewals: the pair is loaded again on demand (SIGHUP) or when its files change,
//! new connections get the new one, sessions up keep going, and a pair that does not load
//! changes nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::common::{TestServer, Xmpp};

/// A new self-signed pair for localhost: (certificate PEM, key PEM).
fn new_pair() -> (String, String) {
    pair_named("localhost")
}

/// A new self-signed pair for `name`.
pub fn pair_named(name: &str) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (certified.cert.pem(), certified.key_pair.serialize_pem())
}

/// A pair for localhost that expires at midnight UTC on the given day.
pub fn pair_until(year: i32, month: u8, day: u8) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(year, month, day);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    // As a renewal tool does: each file replaced whole.
    for (name, contents) in [("localhost.crt", cert), ("localhost.key", key)] {
        let temporary = dir.join(format!("{name}.new"));
        std::fs::write(&temporary, contents).unwrap();
        std::fs::rename(&temporary, dir.join(name)).unwrap();
    }
}

/// The certificate a direct-TLS handshake shows, with a client trusting only `trusted`.
async fn served_certificate(
    server: &TestServer,
    trusted: Arc<ClientConfig>,
) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(server.direct_tls)
        .await
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(trusted).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let (_, connection) = tls.get_ref();
    Ok(connection.peer_certificates().unwrap()[0].to_vec())
}

fn der_of(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_reload_serves_the_new_pair_to_new_connections_only() {
    let server = TestServer::start_with(|c| c.tls.reload_check_secs = 0).await;
    let tls_dir = server.server().config().data_dir.join("tls");
    let old_trust = server.tls_client_config();
    let mut lea = {
        server.add_user("lea", "secret").await;
        Xmpp::login(&server, "lea", "secret").await
    };

    let renewed = pair_until(2031, 3, 1);
    write_pair(&tls_dir, &renewed);
    // Nothing changes before the reload (the watch is off here).
    assert!(served_certificate(&server, old_trust.clone()).await.is_ok());
    server
        .server()
        .reload_certificate()
        .await
        .expect("reloaded");
    let new_trust = server.tls_client_config();
    assert_eq!(
        served_certificate(&server, new_trust.clone())
            .await
            .unwrap(),
        der_of(&renewed.0)
    );
    let refused = served_certificate(&server, old_trust).await.unwrap_err();
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    // The session that was up goes on.
    let pong = lea.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;
    assert!(pong.contains("type='result'"), "{pong}");
    // Monitoring sees the new expiry (2031-03-01T00:00:00Z).
    let (status, metrics) = crate::common::http(server.http, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("causette_certificate_not_after_timestamp_seconds 1930089600\n"),
        "{metrics}"
    );

    // A key that is not the certificate's: refused with the files named, nothing changes.
    let other = new_pair();
    std::fs::write(tls_dir.join("localhost.key"), &other.1).unwrap();
    let error = server
        .server()
        .reload_certificate()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("does not match the certificate") && error.contains("localhost.key"),
        "{error}"
    );
    // A file that is no certificate at all.
    std::fs::write(tls_dir.join("localhost.crt"), "not a certificate").unwrap();
    let error = server
        .server()
        .reload_certificate()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("holds no PEM certificate"), "{error}");
    assert_eq!(
        served_certificate(&server, new_trust).await.unwrap(),
        der_of(&renewed.0)
    );
    lea.logout().await;
    server.stop().await;
}

#[tokio::test]
async fn a_renewal_on_disk_is_picked_up_by_the_watch() {
    let server = TestServer::start_with(|c| c.tls.reload_check_secs = 1).await;
    let tls_dir = server.server().config().data_dir.join("tls");
    // File times have a coarse grain on some file systems: be sure the renewal is later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let renewed = new_pair();
    write_pair(&tls_dir, &renewed);
    let trust = server.tls_client_config();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(der) = served_certificate(&server, trust.clone()).await {
            assert_eq!(der, der_of(&renewed.0));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not served within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_pair_that_does_not_match_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = new_pair();
    let (_, key) = new_pair();
    std::fs::write(dir.path().join("a.crt"), cert).unwrap();
    std::fs::write(dir.path().join("b.key"), key).unwrap();
    let mut config = causette::Config {
        data_dir: dir.path().to_path_buf(),
        ..causette::Config::default()
    };
    config.tls.cert = Some(dir.path().join("a.crt"));
    config.tls.key = Some(dir.path().join("b.key"));
    config.listen.c2s = vec!["127.0.0.1:0".parse().unwrap()];
    config.listen.c2s_direct_tls = Vec::new();
    config.http.listen = Vec::new();
    let error = causette::Server::start(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("b.key does not match the certificate in") && error.contains("a.crt"),
        "{error}"
    );
}
