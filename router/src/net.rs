//! One stream type for plain TCP and TLS in either role, so the session loop
//! is written once. Dispatch is a `match`, not a trait object: the plain
//! case stays as cheap as a bare `TcpStream`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::rt;

/// A TCP connection: on a worker, on its own loop ([`rt::TcpStream`]);
/// on the control thread (health checks, the admin console), on tokio's.
pub enum Tcp {
    Loop(rt::TcpStream),
    Tokio(tokio::net::TcpStream),
}

impl Tcp {
    /// Connects to `host:port` on whichever runtime this thread runs,
    /// resolving the name again each time.
    pub async fn connect(host: &str, port: u16) -> io::Result<Tcp> {
        if rt::is_current() {
            rt::connect(host, port).await.map(Tcp::Loop)
        } else {
            tokio::net::TcpStream::connect((host, port)).await.map(Tcp::Tokio)
        }
    }

    /// Connects to one address on whichever runtime this thread runs.
    pub async fn connect_addr(addr: std::net::SocketAddr) -> io::Result<Tcp> {
        if rt::is_current() {
            rt::TcpStream::connect_addr(addr).await.map(Tcp::Loop)
        } else {
            tokio::net::TcpStream::connect(addr).await.map(Tcp::Tokio)
        }
    }

    /// Takes a connected std socket onto this thread's runtime.
    pub fn from_std(socket: std::net::TcpStream) -> io::Result<Tcp> {
        if rt::is_current() {
            rt::TcpStream::from_std(socket).map(Tcp::Loop)
        } else {
            socket.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(socket).map(Tcp::Tokio)
        }
    }

    /// Leaves the runtime, to be moved to another thread.
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        match self {
            Tcp::Loop(s) => s.into_std(),
            Tcp::Tokio(s) => s.into_std(),
        }
    }

    #[inline]
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Tcp::Loop(s) => s.try_write(data),
            Tcp::Tokio(s) => s.try_write(data),
        }
    }

    #[inline]
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Tcp::Loop(s) => s.poll_read_ready(cx),
            Tcp::Tokio(s) => s.poll_read_ready(cx),
        }
    }

    /// Whether the peer sent something not read yet, as far as the event
    /// loop knows (no system call).
    pub fn has_input(&self) -> bool {
        match self {
            Tcp::Loop(s) => s.has_input(),
            Tcp::Tokio(s) => s.try_io(tokio::io::Interest::READABLE, || Ok(())).is_ok(),
        }
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Tcp::Loop(s) => s.local_addr(),
            Tcp::Tokio(s) => s.local_addr(),
        }
    }

    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Tcp::Loop(s) => s.peer_addr(),
            Tcp::Tokio(s) => s.peer_addr(),
        }
    }
}

impl std::os::fd::AsFd for Tcp {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Tcp::Loop(s) => s.as_fd(),
            Tcp::Tokio(s) => s.as_fd(),
        }
    }
}

impl AsyncRead for Tcp {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tcp::Loop(s) => Pin::new(s).poll_read(cx, buf),
            Tcp::Tokio(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Tcp {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Tcp::Loop(s) => Pin::new(s).poll_write(cx, buf),
            Tcp::Tokio(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tcp::Loop(s) => Pin::new(s).poll_flush(cx),
            Tcp::Tokio(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tcp::Loop(s) => Pin::new(s).poll_shutdown(cx),
            Tcp::Tokio(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

pub enum Stream {
    Plain(Tcp),
    /// Client connection the router terminated TLS for.
    Accepted(Box<tokio_rustls::server::TlsStream<Tcp>>),
    /// Server connection the router opened TLS on.
    Connected(Box<tokio_rustls::client::TlsStream<Tcp>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    pub fn tcp(&self) -> &Tcp {
        match self {
            Stream::Plain(s) => s,
            Stream::Accepted(s) => s.get_ref().0,
            Stream::Connected(s) => s.get_ref().0,
        }
    }
}

impl Stream {
    /// Reads what the socket has into the spare capacity of `buf` (which
    /// must have some). The pump's read; for plain TCP on a worker's loop
    /// no system call is made until the loop has seen the socket readable,
    /// and a read that drains it forgets that (see `rt::io`).
    #[inline]
    pub fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut bytes::BytesMut) -> Poll<io::Result<usize>> {
        match self {
            Stream::Plain(Tcp::Loop(tcp)) => tcp.poll_recv_buf(cx, buf),
            _ => tokio_util::io::poll_read_buf(Pin::new(self), cx, buf),
        }
    }

    /// Writes what the socket takes of `data`; see [`Stream::poll_recv`].
    #[inline]
    pub fn poll_send(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Plain(Tcp::Loop(tcp)) => tcp.poll_send(cx, data),
            _ => Pin::new(self).poll_write(cx, data),
        }
    }
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
pub fn tune(stream: &impl std::os::fd::AsFd, keepalive: Option<Keepalive>) {
    let sock = socket2::SockRef::from(stream);
    let _ = sock.set_nodelay(true);
    if let Some(k) = keepalive {
        let ka = socket2::TcpKeepalive::new().with_time(k.idle).with_interval(k.interval).with_retries(k.count);
        let _ = sock.set_tcp_keepalive(&ka);
    }
}
