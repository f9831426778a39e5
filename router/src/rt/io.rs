//! Sockets on the loop's reactor.
//!
//! Registration is edge-triggered for reading and writing at once. What the
//! loop learns from epoll is kept as two bits per socket; a read or write
//! that meets `WouldBlock` clears its bit, and only then does a task wait.
//! A read that did not fill the room it was given also clears it (the
//! socket was drained; the next read would only find EAGAIN), and a short
//! write clears the write bit: both save a system call per exchange, and
//! both are safe because any later arrival raises a new edge. The one
//! thing that raises no later edge is the end of the stream: once epoll
//! reports the peer closed (or an error), that is remembered for good, so
//! a short read followed by a pending EOF still reads the EOF.

use std::cell::Cell;
use std::io::{self, ErrorKind};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};

use mio::{Interest, Token};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{with_core, Core};

pub(super) const READ: u8 = 1;
pub(super) const WRITE: u8 = 2;
/// Sticky: the peer closed its side (or the socket failed). Never cleared.
const READ_CLOSED: u8 = 4;
const WRITE_CLOSED: u8 = 8;

/// The bits that make `bit` (READ or WRITE) ready: its own or its closed one.
#[inline]
fn ready_mask(bit: u8) -> u8 {
    bit | (bit << 2)
}

/// What the loop knows of one socket. Shared (in an `Rc`) by the loop's
/// slab, which the event dispatch finds it in, and the socket, which
/// reaches it by pointer; every field is a `Cell`.
pub(crate) struct IoSlot {
    ready: Cell<u8>,
    /// Kept across wake-ups: the task reading a socket usually reads it
    /// again, and a kept waker needs no clone. A stale one costs a
    /// spurious poll at most.
    reader: Cell<Option<Waker>>,
    /// Taken when it fires: every read event on a TCP socket also reports
    /// it writable, and a writer is rarely waiting.
    writer: Cell<Option<Waker>>,
}

/// Records an event and wakes whoever waits on it.
#[inline]
pub(super) fn dispatch(core: &Core, event: &mio::event::Event) {
    let io = core.io.borrow();
    let Some(slot) = io.get(event.token().0) else { return };
    let error = event.is_error();
    let read_closed = event.is_read_closed() || error;
    if event.is_readable() || read_closed {
        slot.ready.set(slot.ready.get() | if read_closed { READ | READ_CLOSED } else { READ });
        let reader = slot.reader.take();
        if let Some(w) = &reader {
            w.wake_by_ref();
        }
        slot.reader.set(reader);
    }
    let write_closed = event.is_write_closed() || error;
    if event.is_writable() || write_closed {
        slot.ready.set(slot.ready.get() | if write_closed { WRITE | WRITE_CLOSED } else { WRITE });
        if let Some(w) = slot.writer.take() {
            w.wake();
        }
    }
}

/// A socket's place in a loop: its slab key, its slot, and which loop (a
/// socket used on another thread gets an error, not another loop's slot).
struct Registration {
    token: usize,
    loop_id: usize,
    slot: SlotPtr,
}

/// The socket's own way to its slot, without the slab's `RefCell` and
/// lookup on every read and write (several per statement).
struct SlotPtr(*const IoSlot);

// SAFETY: the pointer is only followed on the thread of the loop that owns
// the slot (`Registration::slot` checks the loop id first); on any other
// thread a registration, shared or moved, is inert data.
unsafe impl Send for SlotPtr {}
unsafe impl Sync for SlotPtr {}

fn not_on_loop() -> io::Error {
    io::Error::other("socket used outside the event loop it belongs to")
}

impl Registration {
    fn new(source: &mut impl mio::event::Source, interest: Interest, ready: u8) -> io::Result<Registration> {
        with_core(|core| {
            let slot = Rc::new(IoSlot { ready: Cell::new(ready), reader: Cell::new(None), writer: Cell::new(None) });
            let ptr = SlotPtr(Rc::as_ptr(&slot));
            let token = core.io.borrow_mut().insert(slot);
            if let Err(e) = core.registry.register(source, Token(token), interest) {
                core.io.borrow_mut().remove(token);
                return Err(e);
            }
            Ok(Registration { token, loop_id: core.id, slot: ptr })
        })
        .unwrap_or_else(|| Err(not_on_loop()))
    }

    /// The slot, on the loop it belongs to.
    #[inline]
    fn slot(&self) -> Option<&IoSlot> {
        if with_core(|core| core.id) != Some(self.loop_id) {
            return None;
        }
        // SAFETY: this is the owning loop's thread, and the slot is alive:
        // its `Rc` leaves the loop's slab only through `release` or
        // `deregister` of this registration, or with the loop itself, after
        // which no loop with this id runs on any thread.
        Some(unsafe { &*self.slot.0 })
    }

    #[inline]
    fn is_ready(&self, bit: u8) -> bool {
        self.slot().is_some_and(|s| s.ready.get() & ready_mask(bit) != 0)
    }

    #[inline]
    fn clear(&self, bit: u8) {
        if let Some(s) = self.slot() {
            s.ready.set(s.ready.get() & !bit);
        }
    }

    /// Ready, or Pending with the task's waker stored for `bit`.
    #[inline]
    fn poll_ready(&self, cx: &mut Context<'_>, bit: u8) -> Poll<io::Result<()>> {
        match self.slot().map(|s| {
            if s.ready.get() & ready_mask(bit) != 0 {
                return true;
            }
            let waiter = if bit == READ { &s.reader } else { &s.writer };
            let kept = waiter.take().filter(|w| w.will_wake(cx.waker()));
            waiter.set(Some(kept.unwrap_or_else(|| cx.waker().clone())));
            false
        }) {
            Some(true) => Poll::Ready(Ok(())),
            Some(false) => Poll::Pending,
            None => Poll::Ready(Err(not_on_loop())),
        }
    }

    /// Leaves the loop: the source is deregistered (it stays open).
    fn deregister(&self, source: &mut impl mio::event::Source) {
        with_core(|core| {
            if core.id == self.loop_id {
                let _ = core.registry.deregister(source);
            }
        });
        self.release();
    }

    /// Forgets the slot of a source being closed. Closing the descriptor
    /// takes it out of the epoll set, so no system call is needed.
    fn release(&self) {
        with_core(|core| {
            if core.id == self.loop_id {
                core.io.borrow_mut().try_remove(self.token);
            }
        });
    }
}

/// A TCP connection on a worker's loop.
pub struct TcpStream {
    /// None only after `into_std`.
    io: Option<mio::net::TcpStream>,
    reg: Registration,
}

impl TcpStream {
    /// Takes a connected socket (an accepted client, or a server
    /// connection moved from another worker) onto this thread's loop.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        // Writable until a write says otherwise; readable only once epoll
        // says so (registration reports data already waiting).
        Self::register(mio::net::TcpStream::from_std(stream), WRITE)
    }

    fn register(mut io: mio::net::TcpStream, ready: u8) -> io::Result<TcpStream> {
        let reg = Registration::new(&mut io, Interest::READABLE | Interest::WRITABLE, ready)?;
        Ok(TcpStream { io: Some(io), reg })
    }

    #[inline]
    fn io(&self) -> &mio::net::TcpStream {
        // Only `into_std`, which consumes self, takes it.
        self.io.as_ref().expect("socket present")
    }

    /// Connects to one address.
    pub async fn connect_addr(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = Self::register(mio::net::TcpStream::connect(addr)?, 0)?;
        std::future::poll_fn(|cx| stream.reg.poll_ready(cx, WRITE)).await?;
        if let Some(e) = stream.io().take_error()? {
            return Err(e);
        }
        stream.io().peer_addr()?;
        Ok(stream)
    }

    /// Reads into the spare capacity of `buf`; see [`TcpStream::poll_recv`].
    #[inline]
    pub fn poll_recv_buf(&self, cx: &mut Context<'_>, buf: &mut bytes::BytesMut) -> Poll<io::Result<usize>> {
        let n = ready!(self.poll_recv(cx, buf.spare_capacity_mut()))?;
        // SAFETY: recv initialised the first n bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Poll::Ready(Ok(n))
    }

    /// recv(2) once the loop has seen the socket readable; until then no
    /// system call, just the waker registered. EAGAIN, or a read that did
    /// not fill `dst` (the socket is drained), forgets the readability.
    #[inline]
    fn poll_recv(&self, cx: &mut Context<'_>, dst: &mut [MaybeUninit<u8>]) -> Poll<io::Result<usize>> {
        let room = dst.len();
        loop {
            ready!(self.reg.poll_ready(cx, READ))?;
            match sys::recv(self.io().as_raw_fd(), dst) {
                Ok(n) => {
                    if n > 0 && n < room {
                        self.reg.clear(READ);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(libc::EAGAIN) => self.reg.clear(READ),
                Err(errno) => return Poll::Ready(Err(io::Error::from_raw_os_error(errno))),
            }
        }
    }

    /// send(2) once the socket is known writable; a short write (the send
    /// buffer filled) or EAGAIN forgets the writability.
    #[inline]
    pub fn poll_send(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.reg.poll_ready(cx, WRITE))?;
            match sys::send(self.io().as_raw_fd(), data) {
                Ok(n) => {
                    if n < data.len() {
                        self.reg.clear(WRITE);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(libc::EAGAIN) => self.reg.clear(WRITE),
                Err(errno) => return Poll::Ready(Err(io::Error::from_raw_os_error(errno))),
            }
        }
    }

    /// One send(2) without waiting: `WouldBlock` when the socket is known
    /// to be full. For a best-effort Terminate before closing.
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        if !self.reg.is_ready(WRITE) {
            return Err(ErrorKind::WouldBlock.into());
        }
        sys::send(self.io().as_raw_fd(), data).map_err(io::Error::from_raw_os_error)
    }

    #[inline]
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.reg.poll_ready(cx, READ)
    }

    /// Whether epoll reported input not read yet.
    #[inline]
    pub fn has_input(&self) -> bool {
        self.reg.is_ready(READ)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io().local_addr()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io().peer_addr()
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.io().set_nodelay(on)
    }

    /// Leaves the loop as a blocking-capable std socket, to be moved to
    /// another thread.
    pub fn into_std(mut self) -> io::Result<std::net::TcpStream> {
        let mut io = self.io.take().expect("socket present");
        self.reg.deregister(&mut io);
        // SAFETY: the descriptor is owned by `io`, whose ownership passes
        // to the std socket.
        Ok(unsafe { std::net::TcpStream::from_raw_fd(io.into_raw_fd()) })
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self.io().shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        if self.io.is_some() {
            self.reg.release();
        }
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io().as_fd()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io().as_raw_fd()
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // SAFETY: recv writes only initialised bytes, and only the n it
        // reports are marked initialised.
        let n = ready!(self.poll_recv(cx, unsafe { buf.unfilled_mut() }))?;
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

/// The two system calls of the hot path, made directly.
///
/// glibc's `recv` and `send` are thread-cancellation points: each call is
/// wrapped in two calls that switch asynchronous cancellation on and off
/// (about 70 instructions per transaction each way in callgrind). The
/// router never cancels threads, and these sockets never block, so the
/// wrappers buy nothing; `syscall(2)` is the same system call without them.
mod sys {
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::RawFd;

    #[inline]
    pub(super) fn recv(fd: RawFd, dst: &mut [MaybeUninit<u8>]) -> Result<usize, i32> {
        // SAFETY: `dst` is writable for its length, and the kernel writes at
        // most that many bytes; the address arguments are null.
        retrying(|| unsafe { libc::syscall(libc::SYS_recvfrom, fd, dst.as_mut_ptr(), dst.len(), 0, 0usize, 0usize) })
    }

    #[inline]
    pub(super) fn send(fd: RawFd, data: &[u8]) -> Result<usize, i32> {
        // SAFETY: `data` is readable for its length; the address arguments
        // are null. MSG_NOSIGNAL: a closed peer is EPIPE, not a signal.
        retrying(|| unsafe {
            libc::syscall(libc::SYS_sendto, fd, data.as_ptr(), data.len(), libc::MSG_NOSIGNAL, 0usize, 0usize)
        })
    }

    /// The byte count of a call, again after EINTR, or its errno (the
    /// caller tells EAGAIN apart without building an `io::Error`).
    #[inline]
    fn retrying(mut call: impl FnMut() -> libc::c_long) -> Result<usize, i32> {
        loop {
            if let Ok(n) = usize::try_from(call()) {
                return Ok(n);
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                errno => return Err(errno.unwrap_or(libc::EIO)),
            }
        }
    }
}

/// Connects to `host:port`, trying each address it resolves to in turn.
/// A literal IP address needs no lookup; a name is resolved on a thread of
/// its own (getaddrinfo blocks), again on every call so that a service name
/// that moved is followed.
pub async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => resolve(host, port).await?,
    };
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_addr(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(ErrorKind::NotFound, format!("{host}: no addresses to connect to"))))
}

async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = (host.to_string(), port);
    std::thread::Builder::new().name("pgdog-resolve".into()).spawn(move || {
        let _ = tx.send(name.to_socket_addrs().map(Iterator::collect));
    })?;
    rx.await.map_err(|_| io::Error::other("name resolution thread ended"))?
}

/// A listening socket on a worker's loop.
pub struct TcpListener {
    io: mio::net::TcpListener,
    reg: Registration,
}

impl TcpListener {
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        let mut io = mio::net::TcpListener::from_std(listener);
        // Readable until accept says otherwise: connections may be queued
        // already.
        let reg = Registration::new(&mut io, Interest::READABLE, READ)?;
        Ok(TcpListener { io, reg })
    }

    /// The next connection, on this loop.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        loop {
            ready!(self.reg.poll_ready(cx, READ))?;
            match self.io.accept() {
                Ok((stream, peer)) => return Poll::Ready(TcpStream::register(stream, WRITE).map(|s| (s, peer))),
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.reg.clear(READ),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.reg.release();
    }
}
