//! Logged-in clients, for SHOW CLIENTS, per-pool client counts and the
//! HTTP API. A client is added once at login and removed when its session
//! ends: one short lock each, never on the query path. What the client is
//! doing (`Activity`) its session writes with relaxed stores, no lock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::pool::{PoolKey, PoolShared};
use crate::clock::Tick;

/// What the admin side shows about one client. Kept small: every logged-in
/// client has one (user and database are the pool's, not copies).
#[derive(Clone)]
pub struct ClientInfo {
    pub id: u64,
    pub pool: Arc<PoolShared>,
    pub addr: SocketAddr,
    pub local_addr: Option<SocketAddr>,
    pub connected: SystemTime,
    pub tls: bool,
    pub application_name: Box<str>,
    pub activity: Arc<Activity>,
}

/// A client's state as PgBouncer's SHOW CLIENTS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// No server bound and no request waiting for one.
    Idle = 0,
    /// A server is bound: a request or transaction is in progress (session
    /// mode: always).
    Active = 1,
    /// Waiting for a server connection (pool full or paused).
    Waiting = 2,
}

impl ClientState {
    pub fn name(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }
}

/// What one client is doing. Its session is the only writer (relaxed
/// stores on its own allocation); the admin side reads it when listing.
#[derive(Debug)]
pub struct Activity {
    state: AtomicU8,
    /// When the latest request started, µs since the Unix epoch.
    request_us: AtomicU64,
}

impl Activity {
    /// An idle client whose latest request is its login.
    pub fn new(connected: SystemTime) -> Self {
        let us = connected.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Activity { state: AtomicU8::new(ClientState::Idle as u8), request_us: AtomicU64::new(us) }
    }

    #[inline]
    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }

    /// A request started at `at` (an instant the caller has read anyway;
    /// converted to wall-clock time without another clock read).
    #[inline]
    pub fn request_started(&self, at: Tick) {
        let (anchor, anchor_us) = wall_anchor();
        let us = anchor_us + at.micros_since(*anchor);
        self.request_us.store(us, Ordering::Relaxed);
    }

    pub fn request_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.request_us.load(Ordering::Relaxed))
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new(SystemTime::now())
    }
}

/// One instant and the wall-clock time at it (µs since the Unix epoch), read
/// once per process: instants become wall-clock times by offset.
fn wall_anchor() -> &'static (Tick, u64) {
    static ANCHOR: OnceLock<(Tick, u64)> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        (Tick::now(), now)
    })
}

#[derive(Default)]
pub struct ClientRegistry {
    clients: Mutex<BTreeMap<u64, ClientInfo>>,
}

impl ClientRegistry {
    /// Adds a client; it is removed when the returned guard drops.
    pub fn register(self: &Arc<Self>, info: ClientInfo) -> ClientGuard {
        let id = info.id;
        if let Ok(mut c) = self.clients.lock() {
            c.insert(id, info);
        }
        ClientGuard { registry: self.clone(), id }
    }

    pub fn list(&self) -> Vec<ClientInfo> {
        self.clients.lock().map(|c| c.values().cloned().collect()).unwrap_or_default()
    }

    /// Logged-in clients per pool.
    pub fn counts(&self) -> BTreeMap<PoolKey, u64> {
        let mut out = BTreeMap::new();
        if let Ok(c) = self.clients.lock() {
            for info in c.values() {
                *out.entry(info.pool.key.clone()).or_default() += 1;
            }
        }
        out
    }
}

/// Removes its client from the registry when dropped.
pub struct ClientGuard {
    registry: Arc<ClientRegistry>,
    id: u64,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.registry.clients.lock() {
            c.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_records_state_and_request_time() {
        let connected = SystemTime::now() - Duration::from_secs(60);
        let a = Activity::new(connected);
        assert_eq!(a.state(), ClientState::Idle);
        let at_login = a.request_time().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(at_login, connected.duration_since(UNIX_EPOCH).unwrap().as_secs());
        a.set_state(ClientState::Waiting);
        assert_eq!(a.state().name(), "waiting");
        a.set_state(ClientState::Active);
        assert_eq!(a.state().name(), "active");
        a.request_started(Tick::now());
        let later = a.request_time().duration_since(connected).unwrap();
        assert!(later >= Duration::from_secs(59), "{later:?}");
        // Within a generous bound of the wall clock (no speed assumption).
        let skew = SystemTime::now().duration_since(a.request_time()).unwrap_or_default();
        assert!(skew < Duration::from_secs(30), "{skew:?}");
    }
}
