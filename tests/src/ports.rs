//! Loopback port allocation.
//!
//! Ports come from the kernel (bind to port 0) rather than a fixed range so
//! that parallel test binaries rarely collide. The kernel may hand the same
//! ephemeral port out again once our probe socket is closed, so a process-wide
//! set makes sure one test process never uses a port twice; another process can
//! still take it in the window before the real listener binds, which is rare
//! enough to accept.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

/// Ports already handed out by this process.
fn issued() -> &'static Mutex<HashSet<u16>> {
    static ISSUED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    ISSUED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process
/// has not handed out before.
pub fn free_port() -> u16 {
    // A poisoned lock only means another test panicked while holding it; the
    // set itself is still consistent.
    let mut issued = issued().lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to find a free port");
        let port = listener.local_addr().expect("local_addr of probe socket").port();
        // Keep `listener` alive until the port is recorded so the kernel cannot
        // give the same port to a concurrent probe in this loop.
        if issued.insert(port) {
            return port;
        }
    }
    panic!("no unused loopback port after 1000 attempts");
}
