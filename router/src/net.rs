//! One stream type for plain TCP and TLS in either role, so the session loop
//! is written once. Dispatch is a `match`, not a trait object: the plain
//! case stays as cheap as a bare `TcpStream`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum Stream {
    Plain(TcpStream),
    /// Client connection the router terminated TLS for.
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Server connection the router opened TLS on.
    Connected(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Accepted(s) => s.get_ref().0,
            Stream::Connected(s) => s.get_ref().0,
        }
    }
}

impl Stream {
    /// Reads what the socket has into the spare capacity of `buf` (which
    /// must have some). The pump's read: for plain TCP, the attempt comes
    /// first and readiness is only asked for after `WouldBlock`, so a read
    /// that finds data skips the waker registration and tokio's task budget
    /// (the pump keeps its own; see `session::PUMP_BUDGET`).
    #[inline]
    pub fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut bytes::BytesMut) -> Poll<io::Result<usize>> {
        let Stream::Plain(tcp) = self else {
            return tokio_util::io::poll_read_buf(Pin::new(self), cx, buf);
        };
        let room = buf.capacity() - buf.len();
        let n = std::task::ready!(attempt_then_wait(cx, || tcp.try_read_buf(buf), |cx| tcp.poll_read_ready(cx)))?;
        // Edge-triggered epoll: a read that did not fill the room drained
        // the socket, so the next one would only find EAGAIN. Forget the
        // readiness instead of paying a syscall to learn that (tokio's own
        // poll_read does so).
        if n > 0 && n < room {
            forget_readiness(tcp, tokio::io::Interest::READABLE);
        }
        Poll::Ready(Ok(n))
    }

    /// Writes what the socket takes of `data`; see [`Stream::poll_recv`].
    #[inline]
    pub fn poll_send(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let Stream::Plain(tcp) = self else {
            return Pin::new(self).poll_write(cx, data);
        };
        let n = std::task::ready!(attempt_then_wait(cx, || tcp.try_write(data), |cx| tcp.poll_write_ready(cx)))?;
        // A short write means the send buffer is full.
        if n > 0 && n < data.len() {
            forget_readiness(tcp, tokio::io::Interest::WRITABLE);
        }
        Poll::Ready(Ok(n))
    }
}

/// Runs `attempt` and, while it says `WouldBlock`, asks `ready` (which
/// registers the task's waker when the answer is Pending) before trying
/// again: the I/O first, the readiness bookkeeping only when it is needed.
#[inline]
fn attempt_then_wait<R>(
    cx: &mut Context<'_>,
    mut attempt: impl FnMut() -> io::Result<R>,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
) -> Poll<io::Result<R>> {
    loop {
        match attempt() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match ready(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            },
            done => return Poll::Ready(done),
        }
    }
}

/// Clears the readiness tokio recorded for `interest`, as a `WouldBlock`
/// from the socket would: until the next epoll event, `try_*` calls return
/// `WouldBlock` without a syscall and `poll_*_ready` registers the waker.
#[inline]
fn forget_readiness(tcp: &TcpStream, interest: tokio::io::Interest) {
    let _ = tcp.try_io(interest, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// TCP keepalive for a socket, so dead peers behind NAT are noticed.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

/// Low-latency settings every proxied socket gets.
pub fn tune(stream: &TcpStream, keepalive: Option<Keepalive>) {
    let _ = stream.set_nodelay(true);
    if let Some(k) = keepalive {
        let sock = socket2::SockRef::from(stream);
        let ka = socket2::TcpKeepalive::new().with_time(k.idle).with_interval(k.interval).with_retries(k.count);
        let _ = sock.set_tcp_keepalive(&ka);
    }
}
