//! Logged-in clients, for SHOW CLIENTS, per-pool client counts and the
//! HTTP API. A client is added once at login and removed when its session
//! ends: one short lock each, never on the query path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::backend::pool::{PoolKey, PoolShared};

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
