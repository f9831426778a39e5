//! Accepting clients: one listening socket per worker on the same port
//! (SO_REUSEPORT), so the kernel spreads connections across workers and no
//! connection is handed between threads.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::net::Tcp;
use crate::rt::{self, TcpListener};
use socket2::{Domain, Protocol, Socket, Type};

use crate::runtime::Worker;

pub fn bind(addr: &str) -> io::Result<std::net::TcpListener> {
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(addr)?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing"))?,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Accepts until shutdown, then waits for this worker's sessions to end.
pub async fn serve(worker: Rc<Worker>, socket: std::net::TcpListener) {
    let listener = match TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register listener");
            worker.shared.shutdown.cancel();
            return;
        }
    };
    let active = Rc::new(Cell::new(0usize));
    let shutdown = worker.shared.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let worker = worker.clone();
                    let active = active.clone();
                    active.set(active.get() + 1);
                    rt::spawn_local(async move {
                        super::login::handle_client(worker, Tcp::Loop(tcp), peer).await;
                        active.set(active.get() - 1);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    rt::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    worker.stop.trigger();
    while active.get() > 0 {
        rt::time::sleep(Duration::from_millis(20)).await;
    }
}
