//! Sockets: TCP listeners, the TLS layer, the read buffer, and the guard that enforces the
//! stanza size and nesting limits below the XML parser (rxml has no limit of its own).

pub mod admission;
pub(crate) mod guard;
mod shaper;
pub mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How a listener starts its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain TCP; the stream offers STARTTLS.
    StartTls,
    /// TLS from the first byte (XEP-0368).
    DirectTls,
}

pub enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// One end of an in-memory pipe, for the stream tests (paused time needs no socket).
    #[cfg(test)]
    Memory(tokio::io::DuplexStream),
}

pub use guard::LimitExceeded;
use guard::XmlGuard;
pub use shaper::Rate;
pub use shaper::Shaper;

/// The limits a connection enforces on what it reads.
#[derive(Debug, Clone, Copy)]
pub struct XmlLimits {
    pub max_stanza_size: usize,
    pub max_depth: usize,
    pub rate: Rate,
}

/// Bytes read from the socket in one go, at most. Reads land in a buffer on the stack first.
const READ_CHUNK: usize = 8192;

/// A client socket, buffered for the XML parser, whose bytes pass the XML guard before the
/// parser sees them.
///
/// The buffer holds only bytes read and not yet parsed, and is freed as soon as the socket has
/// nothing more to give: an idle connection keeps no read buffer at all (a fixed 4 KiB buffer
/// per connection was an eighth of the memory of an idle session).
pub struct Conn {
    socket: Socket,
    unparsed: Vec<u8>,
    /// How much of `unparsed` the parser has consumed.
    consumed: usize,
    guard: XmlGuard,
    shaper: Shaper,
    /// Set while the client must wait before more is read (`Shaper`).
    slowed: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A limit the client went past: returned by the next read, once the bytes before the
    /// offending one have been handed to the parser.
    exceeded: Option<LimitExceeded>,
    /// Set by `restart_stream`, applied to the guard at the next read from the socket.
    restarted: bool,
}

impl Conn {
    pub fn new(socket: Socket, limits: XmlLimits) -> Self {
        Self {
            socket,
            unparsed: Vec::new(),
            consumed: 0,
            guard: XmlGuard::new(limits.max_depth, limits.max_stanza_size),
            shaper: Shaper::new(limits.rate),
            slowed: None,
            exceeded: None,
            restarted: false,
        }
    }

    /// The client is about to open a new XML document on this connection (RFC 6120 §4.3.3):
    /// the guard starts over with what is read next.
    pub fn restart_stream(&mut self) {
        self.restarted = true;
    }

    /// Bytes read and not yet consumed by the parser.
    pub fn buffered(&self) -> &[u8] {
        &self.unparsed[self.consumed..]
    }

    /// The socket, for the TLS handshake of STARTTLS. Bytes the client sent after its
    /// `<starttls/>` and before the handshake are dropped on purpose: plaintext must not be
    /// read as if it came through TLS (the STARTTLS command-injection attack).
    pub fn into_socket(self) -> Socket {
        self.socket
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.socket, Socket::Tls(_))
    }

    /// RFC 9266 `tls-exporter` channel-binding data; TLS 1.3 only, where it is well defined.
    pub fn tls_exporter(&self) -> Option<Box<[u8]>> {
        let Socket::Tls(tls) = &self.socket else {
            return None;
        };
        let (_, connection) = tls.get_ref();
        if connection.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return None;
        }
        connection
            .export_keying_material([0u8; 32], crate::auth::TLS_EXPORTER_LABEL, None)
            .ok()
            .map(|k| Box::from(&k[..]))
    }
}

impl Conn {
    fn poll_read_socket(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(exceeded) = self.exceeded {
            return Poll::Ready(Err(io::Error::other(exceeded)));
        }
        if std::mem::take(&mut self.restarted) {
            self.guard.stream_restarted();
        }
        if let Some(sleep) = self.slowed.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            self.slowed = None;
        }
        let now = tokio::time::Instant::now();
        if let Some(wait) = self.shaper.wait(now) {
            let mut sleep = Box::pin(tokio::time::sleep_until(now + wait));
            if sleep.as_mut().poll(cx).is_pending() {
                self.slowed = Some(sleep);
                return Poll::Pending;
            }
        }
        let before = buf.filled().len();
        ready!(match &mut self.socket {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(test)]
            Socket::Memory(s) => Pin::new(s).poll_read(cx, buf),
        })?;
        self.shaper.spend(buf.filled().len() - before);
        if let Err((within, exceeded)) = self.guard.scan(&buf.filled()[before..]) {
            // The bytes before the offending one go to the parser (stanzas complete before it
            // are handled); the next read reports the violation.
            if within == 0 {
                return Poll::Ready(Err(io::Error::other(exceeded)));
            }
            buf.set_filled(before + within);
            self.exceeded = Some(exceeded);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.consumed == this.unparsed.len() {
            return this.poll_read_socket(cx, buf);
        }
        let available = &this.unparsed[this.consumed..];
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        this.consumed += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncBufRead for Conn {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.consumed == this.unparsed.len() {
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut chunk = ReadBuf::uninit(&mut chunk);
            match this.poll_read_socket(cx, &mut chunk) {
                Poll::Pending => {
                    // Nothing more to read for now: the connection may stay idle for hours.
                    this.unparsed = Vec::new();
                    this.consumed = 0;
                    return Poll::Pending;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(())) => {
                    this.unparsed.clear();
                    this.unparsed.extend_from_slice(chunk.filled());
                    this.consumed = 0;
                }
            }
        }
        Poll::Ready(Ok(&this.unparsed[this.consumed..]))
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        let this = self.get_mut();
        this.consumed = (this.consumed + amount).min(this.unparsed.len());
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().socket {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, data),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
            #[cfg(test)]
            Socket::Memory(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(test)]
            Socket::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(test)]
            Socket::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Binds every address, so that a busy port fails the start instead of a later accept.
pub(crate) async fn bind_all(addrs: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listeners.push(listener);
    }
    Ok(listeners)
}
