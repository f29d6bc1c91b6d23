//! The HTTP listeners: accepts connections (TLS when `http.tls` is set), bounds how many one
//! address keeps open, and serves each with hyper, upgrades (WebSocket) included.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use super::Connection;
use crate::Shared;

/// How long a client has to send a request's headers: a slow one holds a connection for
/// nothing.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Open HTTP connections by address.
struct PerAddress {
    open: DashMap<IpAddr, usize>,
    limit: usize,
    nat_limit: usize,
    nat_networks: Vec<ipnet::IpNet>,
    /// Reverse proxies carry every client: their connections are not bounded per address
    /// here (what they carry is, by the forwarded address, where it logs in).
    trusted: Vec<ipnet::IpNet>,
}

/// One counted connection; uncounted on drop.
struct Counted {
    addresses: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Option<Counted>> {
        if self.trusted.iter().any(|net| net.contains(&ip)) {
            return Some(None);
        }
        let limit = if self.nat_networks.iter().any(|net| net.contains(&ip)) {
            self.nat_limit
        } else {
            self.limit
        };
        let mut open = self.open.entry(ip).or_insert(0);
        if *open >= limit {
            return None;
        }
        *open += 1;
        Some(Some(Counted {
            addresses: self.clone(),
            ip,
        }))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.addresses.open.remove_if_mut(&self.ip, |_, open| {
            *open -= 1;
            *open == 0
        });
    }
}

/// Serves `app` on `listener` until shutdown.
pub(crate) async fn serve(listener: TcpListener, app: Router, shared: Arc<Shared>) {
    let http = &shared.config.http;
    let tls = http
        .tls
        .then(|| TlsAcceptor::from(crate::transport::tls::for_http(shared.tls.config())));
    let addresses = Arc::new(PerAddress {
        open: DashMap::new(),
        limit: http.max_connections_per_ip,
        nat_limit: http.max_connections_per_nat_ip,
        nat_networks: shared.config.auth.nat_networks.clone(),
        trusted: http.trusted_proxies.clone(),
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.shutdown.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors, most likely: wait for some to be freed.
                tracing::warn!(error = %err, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(counted) = addresses.admit(peer.ip()) else {
            tracing::debug!(%peer, "HTTP connection refused: too many from this address");
            shared.metrics.refused("http_connections_per_ip");
            continue;
        };
        let (app, tls, task_shared) = (app.clone(), tls.clone(), shared.clone());
        shared.tasks.spawn(async move {
            let _counted = counted;
            serve_connection(tcp, peer, tls, app, &task_shared).await;
        });
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    shared: &Shared,
) {
    let _ = tcp.set_nodelay(true);
    let connection = Connection {
        peer,
        tls: tls.is_some(),
    };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(connection);
        let mut app = app.clone();
        async move { Ok::<_, Infallible>(app.call(request).await.unwrap_or_else(|e| match e {})) }
    });
    let shutdown = shared.shutdown.clone();
    match tls {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(shared.config.tls_timeout(), acceptor.accept(tcp));
            let Ok(Ok(stream)) = handshake.await else {
                tracing::debug!(%peer, "HTTPS handshake failed");
                return;
            };
            serve_io(stream, service, shutdown).await;
        }
        None => serve_io(tcp, service, shutdown).await,
    }
}

/// Serves HTTP/1.1 on `io`, upgrades included; at shutdown, lets the request in
/// flight finish.
async fn serve_io<I, S>(io: I, service: S, shutdown: tokio_util::sync::CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    // HTTP/1.1 only: what WebSocket upgrades and BOSH use (TLS offers no other protocol in
    // ALPN), and no HTTP/2 without TLS whose slow headers no timer would watch.
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "HTTP connection ended");
            }
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
