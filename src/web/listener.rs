//! The HTTP listeners: accepts connections (TLS when `http.tls` is set), bounds how many one
//! address keeps open, and serves each with hyper, upgrades (WebSocket) included.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use dashmap::DashMap;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::Connection;
use crate::Shared;

/// How long a client has to send a request's headers, then its body (a slow one holds a
/// connection for nothing), and how long a connection stays open with no request in progress:
/// `http.request_timeout_secs`, `http.idle_timeout_secs`.
#[derive(Clone, Copy)]
struct Timeouts {
    request: Duration,
    idle: Duration,
}

/// Open HTTP connections, in total and by address.
struct Connections {
    total: AtomicUsize,
    max_total: usize,
    open: DashMap<IpAddr, Address>,
    limit: usize,
    nat_limit: usize,
    nat_networks: Vec<ipnet::IpNet>,
    /// Reverse proxies carry every client: their connections are not bounded per address
    /// here (what they carry is, by the forwarded address, where it logs in).
    trusted: Vec<ipnet::IpNet>,
}

/// The connections open from one address, oldest first.
#[derive(Default)]
struct Address {
    connections: VecDeque<Arc<Activity>>,
}

/// What one connection is doing, for the idle timeout and for eviction.
struct Activity {
    /// Requests being served: a connection with one is never idle nor evicted.
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened), since `started`.
    idle_since_ms: AtomicU64,
    started: Instant,
    /// Cancelled when a newcomer from the same address takes this connection's place.
    evicted: CancellationToken,
    /// Taken out of its address's count already: its drop must not count it again.
    released: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            started: Instant::now(),
            evicted: CancellationToken::new(),
            released: AtomicBool::new(false),
        }
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When the connection will have been idle for `idle`, if it stays idle.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.started + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire)) + idle
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// A request being served; its end (drop) restarts the idle clock.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since_ms.store(now, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One counted connection; uncounted on drop.
struct Counted {
    connections: Arc<Connections>,
    /// Its address, when it is counted per address (not a trusted proxy).
    ip: Option<IpAddr>,
    activity: Arc<Activity>,
}

impl Connections {
    /// Counts a new connection, or `None` when it is refused. At its address's limit, the
    /// oldest connection from it with no request in progress is evicted for it: one pupil's
    /// idle or half-sent connections cannot lock a school's address out.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Counted, &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("http_connections");
        }
        let activity = Arc::new(Activity::new());
        let mut counted = Counted {
            connections: self.clone(),
            ip: None,
            activity: activity.clone(),
        };
        if self.trusted.iter().any(|net| net.contains(&ip)) {
            return Ok(counted);
        }
        let limit = if self.nat_networks.iter().any(|net| net.contains(&ip)) {
            self.nat_limit
        } else {
            self.limit
        };
        let mut address = self.open.entry(ip).or_default();
        if address.connections.len() >= limit {
            let Some(at) = address.connections.iter().position(|a| a.idle()) else {
                // `counted` uncounts the total as it drops.
                return Err("http_connections_per_ip");
            };
            if let Some(oldest) = address.connections.remove(at) {
                // Its place, in its address and in the total, is the newcomer's now.
                oldest.released.store(true, Ordering::Release);
                oldest.evicted.cancel();
                self.total.fetch_sub(1, Ordering::AcqRel);
            }
        }
        address.connections.push_back(activity);
        counted.ip = Some(ip);
        Ok(counted)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.activity.released.load(Ordering::Acquire) {
            return;
        }
        self.connections.total.fetch_sub(1, Ordering::AcqRel);
        let Some(ip) = self.ip else {
            return;
        };
        self.connections.open.remove_if_mut(&ip, |_, address| {
            address
                .connections
                .retain(|a| !Arc::ptr_eq(a, &self.activity));
            address.connections.is_empty()
        });
    }
}

/// The request body error when the body did not arrive within `http.request_timeout_secs`.
#[derive(Debug)]
pub(crate) struct BodyTooSlow;

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body took too long to arrive")
    }
}

impl std::error::Error for BodyTooSlow {}

/// Whether reading a request body failed for its deadline.
pub(crate) fn is_too_slow(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<BodyTooSlow>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// A request body that must be complete by a deadline. The timer is made on the first read,
/// so that a request without a body costs none.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
        }
        Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(axum::BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until shutdown.
pub(crate) async fn serve(listener: TcpListener, app: Router, shared: Arc<Shared>) {
    let http = &shared.config.http;
    let tls = http
        .tls
        .then(|| TlsAcceptor::from(crate::transport::tls::for_http(shared.tls.config())));
    let timeouts = Timeouts {
        request: Duration::from_secs(http.request_timeout_secs.max(1)),
        idle: Duration::from_secs(http.idle_timeout_secs.max(1)),
    };
    let connections = Arc::new(Connections {
        total: AtomicUsize::new(0),
        max_total: http.max_connections,
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
        let counted = match connections.admit(peer.ip()) {
            Ok(counted) => counted,
            Err(limit) => {
                tracing::debug!(%peer, limit, "HTTP connection refused");
                shared.metrics.refused(limit);
                continue;
            }
        };
        let (app, tls, task_shared) = (app.clone(), tls.clone(), shared.clone());
        shared.tasks.spawn(async move {
            let activity = counted.activity.clone();
            serve_connection(tcp, peer, tls, app, activity, timeouts, &task_shared).await;
            drop(counted);
        });
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    shared: &Shared,
) {
    let _ = tcp.set_nodelay(true);
    let connection = Connection {
        peer,
        tls: tls.is_some(),
    };
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = requests.request_started();
        let mut request = request.map(|inner| DeadlineBody {
            inner,
            deadline: Instant::now() + timeouts.request,
            timer: None,
        });
        request.extensions_mut().insert(connection);
        let mut app = app.clone();
        async move {
            let response = app.call(request).await.unwrap_or_else(|e| match e {});
            drop(in_flight);
            Ok::<_, Infallible>(response)
        }
    });
    let watch = Watch {
        shutdown: shared.shutdown.clone(),
        activity,
        timeouts,
    };
    match tls {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(shared.config.tls_timeout(), acceptor.accept(tcp));
            let Ok(Ok(stream)) = handshake.await else {
                tracing::debug!(%peer, "HTTPS handshake failed");
                return;
            };
            serve_io(stream, service, watch).await;
        }
        None => serve_io(tcp, service, watch).await,
    }
}

/// What ends a connection besides its client: shutdown, idleness, eviction.
struct Watch {
    shutdown: tokio_util::sync::CancellationToken,
    activity: Arc<Activity>,
    timeouts: Timeouts,
}

impl Watch {
    /// Resolves once the connection has been idle for `http.idle_timeout_secs`.
    async fn idle(&self) {
        let idle = self.timeouts.idle;
        loop {
            tokio::time::sleep_until(self.activity.idle_deadline(idle).into()).await;
            if self.activity.idle() && Instant::now() >= self.activity.idle_deadline(idle) {
                return;
            }
            // A request is in progress, or one ended meanwhile: look again later.
            if !self.activity.idle() {
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on `io`, upgrades included; at shutdown, lets the request in
/// flight finish. Idle past `IDLE_TIMEOUT`, or evicted, the connection is closed.
async fn serve_io<I, S>(io: I, service: S, watch: Watch)
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
        .header_read_timeout(watch.timeouts.request);
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "HTTP connection ended");
            }
        }
        () = watch.idle() => {
            tracing::debug!("HTTP connection idle: closed");
        }
        () = watch.activity.evicted.cancelled() => {
            tracing::debug!("HTTP connection closed for a newcomer from the same address");
        }
        () = watch.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
