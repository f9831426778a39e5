//! Loopback port allocation.
//!
//! Ports are picked at random *below* the kernel's ephemeral range and
//! checked with a probe bind. Why not the kernel's own choice (bind to port
//! 0): that hands out ephemeral ports, which the tests' own outgoing
//! connections (router to PostgreSQL, clients to the router) also use as
//! source ports; such a connection closed in the window before the real
//! listener binds leaves a TIME_WAIT on the port, and the listener's bind
//! then fails with EADDRINUSE despite SO_REUSEADDR (seen on this machine).
//! Random picks keep parallel test binaries apart; a process-wide set makes
//! sure one test process never uses a port twice. When the ephemeral range
//! leaves too little room below it, the kernel's choice is the fallback.

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
    if let Some((low, high)) = below_ephemeral() {
        let mut state = seed();
        for _ in 0..1000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let port = low + (state % u64::from(high - low)) as u16;
            if issued.contains(&port) {
                continue;
            }
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                issued.insert(port);
                return port;
            }
        }
    }
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

/// Ports from 10000 up to the start of the ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), if that is at least 5000.
fn below_ephemeral() -> Option<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let start: u16 = range.split_whitespace().next()?.parse().ok()?;
    (start >= 15_000).then_some((10_000, start))
}

/// A per-process, per-call seed for the port picker (no crate for this).
fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now())) | 1
}
