//! A bare 1:1 TCP forwarder: the floor for any proxy on this machine. Each
//! client connection gets its own PostgreSQL connection and bytes are copied
//! both ways, with no parsing and no pooling, on one thread (tokio's
//! current-thread runtime, as the router's workers). `make bench` runs it as
//! one more target, so the router's cost reads against what forwarding
//! alone costs here, and so do its ratios to direct PostgreSQL: a workload
//! whose ratio even the forwarder cannot reach is set by the machine, not by
//! the router.
//!
//! It runs as a child process (the bench binary started with [`FLAG`]), so
//! its CPU time is measured as a pooler's is.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// First argument that makes the bench binary a forwarder:
/// `bench --forward LISTEN_PORT UPSTREAM_PORT`.
pub const FLAG: &str = "--forward";

/// The child-process mode: forwards 127.0.0.1:`listen` to
/// 127.0.0.1:`upstream` until killed.
pub fn serve(listen: u16, upstream: u16) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, listen)).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    })
}

/// A running forwarder child; killed on drop.
pub struct Forwarder {
    child: Child,
    pub port: u16,
}

impl Forwarder {
    /// Starts this binary in forwarder mode in front of `upstream` and waits
    /// until it accepts connections.
    pub fn start(upstream: u16) -> Result<Forwarder, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the bench binary: {e}"))?;
        let port = free_port();
        let child = Command::new(exe)
            .args([FLAG, &port.to_string(), &upstream.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the forwarder: {e}"))?;
        let mut forwarder = Forwarder { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = forwarder.child.try_wait() {
                return Err(format!("the forwarder exited at start: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("the forwarder does not accept connections on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(forwarder)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
