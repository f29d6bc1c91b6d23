//! What negotiation needs of its connection beyond reading and writing, kept out of the
//! connection itself: it lives only while a stream is being negotiated, so a bound session
//! does not carry it.
//!
//! - **Mute**: tokio-xmpp's `send_features` writes xmpp-parsers' typed features, which are not
//!   ours (see `features`); they are written muted, so that the stream is left in the same
//!   state, and ours follow.
//! - **Capture**: after SASL success the client opens a new stream whose header primes the
//!   bound session's parser (see `tcp::Primed`); the bytes the parser consumes are copied,
//!   up to `MAX_CAPTURE`.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::Conn;

/// The most bytes a capture keeps: a longer stream header gets `policy-violation`.
pub const MAX_CAPTURE: usize = 4096;

/// A connection under negotiation.
pub struct Tap {
    conn: Conn,
    muted: Arc<AtomicBool>,
    /// Set by `restart_stream`: what the parser consumes is copied here. Cells, since they
    /// are set through the shared reference that tokio-xmpp's stream hands out.
    captured: Cell<Option<Vec<u8>>>,
    /// Set by `restart_stream`, passed on to the connection at its next read.
    restarted: Cell<bool>,
}

impl Tap {
    pub fn new(conn: Conn) -> Self {
        Self {
            conn,
            muted: Arc::new(AtomicBool::new(false)),
            captured: Cell::new(None),
            restarted: Cell::new(false),
        }
    }

    /// A switch that makes this connection swallow what is written to it.
    pub fn mute_switch(&self) -> Arc<AtomicBool> {
        self.muted.clone()
    }

    /// The client is about to open a new stream (after SASL success): the XML guard starts
    /// over, and what the parser consumes from now on is kept (`take_captured`).
    pub fn restart_stream(&self) {
        self.restarted.set(true);
        self.captured.set(Some(Vec::new()));
    }

    /// Stops copying and returns what was consumed since `restart_stream`.
    pub fn take_captured(&self) -> Option<Vec<u8>> {
        self.captured.take()
    }

    pub fn into_conn(self) -> Conn {
        self.conn
    }

    fn keep(&mut self, amount: usize) {
        if let Some(captured) = self.captured.get_mut() {
            let bytes = &self.conn.buffered()[..amount];
            let room = MAX_CAPTURE.saturating_sub(captured.len());
            captured.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }
}

impl AsyncRead for Tap {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let available = ready!(Pin::new(&mut *this).poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        this.keep(n);
        Pin::new(&mut this.conn).consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncBufRead for Tap {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.restarted.take() {
            this.conn.restart_stream();
        }
        Pin::new(&mut this.conn).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        let this = self.get_mut();
        let amount = amount.min(this.conn.buffered().len());
        this.keep(amount);
        Pin::new(&mut this.conn).consume(amount);
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.muted.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(data.len()));
        }
        Pin::new(&mut self.get_mut().conn).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }
}
