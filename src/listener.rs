//! The accept loop: one task per accepted connection, after the limits on connections.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::metrics::Transport;
use crate::transport::{ListenerKind, admission};

/// Accepts connections until shutdown, each in its own task. A connection past a limit
/// (`max_connections`, or negotiating connections in total or from its address) is refused at
/// once, with a stream error where the client can read one, instead of left hanging.
pub(crate) async fn serve(
    listener: TcpListener,
    kind: ListenerKind,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Typically EMFILE: back off instead of spinning on the error.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.connection_slots.clone().try_acquire_owned() else {
            shared.metrics.refused("max_connections");
            refuse(&tcp, kind, &shared, admission::Refusal::Busy);
            continue;
        };
        let logging_in = match shared.admission.admit(peer.ip()) {
            Ok(logging_in) => Box::new(logging_in),
            Err(refusal) => {
                shared.metrics.refused(refusal.limit());
                refuse(&tcp, kind, &shared, refusal);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let open = shared.metrics.connection(Transport::Tcp);
        let shared = shared.clone();
        let tracker = shared.tasks.clone();
        tracker.spawn(async move {
            crate::stream::tcp::run_connection(tcp, peer, kind, logging_in, shared).await;
            drop((permit, open));
        });
    }
}

/// Refuses a connection without a task: on the STARTTLS port, a whole stream carrying the
/// error, written if the socket takes it at once; on the direct-TLS port, closing it is all a
/// server can do before a handshake it will not spend time on.
fn refuse(tcp: &TcpStream, kind: ListenerKind, shared: &Shared, refusal: admission::Refusal) {
    tracing::debug!(?refusal, "connection refused");
    if kind == ListenerKind::StartTls {
        let fatal = crate::stream::refusal_error(refusal);
        let text = crate::stream::raw_error_text(&shared.config.domain, "refused", &fatal);
        let _ = tcp.try_write(text.as_bytes());
    }
}
