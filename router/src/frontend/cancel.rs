//! Cancel keys: the router hands each client its own (pid, secret) and
//! remembers which server backend serves that client right now, so a
//! CancelRequest reaches that backend and no other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::protocol::frontend as fe;

/// Where a cancel for one client goes at this moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerKey {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

/// One client's slot: updated on every checkout and release.
#[derive(Debug, Default)]
pub struct CancelSlot {
    target: Mutex<Option<ServerKey>>,
}

impl CancelSlot {
    pub fn set(&self, key: Option<ServerKey>) {
        if let Ok(mut t) = self.target.lock() {
            *t = key;
        }
    }

    pub fn get(&self) -> Option<ServerKey> {
        self.target.lock().ok().and_then(|t| *t)
    }
}

#[derive(Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<(i32, i32), Arc<CancelSlot>>>,
    next_pid: AtomicI32,
}

/// Removes the client's key when its session ends.
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub secret: i32,
    pub slot: Arc<CancelSlot>,
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.registry.slots.lock() {
            slots.remove(&(self.pid, self.secret));
        }
    }
}

impl CancelRegistry {
    /// Registers a client. `pid` is the real backend pid in session mode
    /// (so `pg_backend_pid()` agrees with what the client was told), or
    /// None for a router-assigned one; the secret is always random.
    pub fn register(self: &Arc<Self>, pid: Option<i32>) -> CancelHandle {
        let slot = Arc::new(CancelSlot::default());
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        loop {
            let pid = pid.unwrap_or_else(|| {
                // Router pids count down from i32::MAX, far from real PostgreSQL pids.
                i32::MAX - (self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x3fff_ffff)
            });
            let secret: i32 = rand::random();
            if let std::collections::hash_map::Entry::Vacant(e) = slots.entry((pid, secret)) {
                e.insert(slot.clone());
                return CancelHandle { registry: self.clone(), pid, secret, slot };
            }
        }
    }

    pub fn lookup(&self, pid: i32, secret: i32) -> Option<ServerKey> {
        let slot = self.slots.lock().ok()?.get(&(pid, secret)).cloned()?;
        slot.get()
    }

    pub fn len(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sends a CancelRequest to a server backend. Like libpq, over a fresh
/// plain connection: PostgreSQL accepts cancels without TLS.
pub async fn send_cancel(key: ServerKey) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(key.addr).await?;
    let mut buf = BytesMut::with_capacity(16);
    fe::cancel_request(&mut buf, key.pid, key.secret);
    stream.write_all(&buf).await?;
    // PostgreSQL closes the connection when done; waiting is not needed.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_removed_on_drop() {
        let reg = Arc::new(CancelRegistry::default());
        let a = reg.register(None);
        let b = reg.register(None);
        assert_ne!((a.pid, a.secret), (b.pid, b.secret));
        let key = ServerKey { addr: "127.0.0.1:5432".parse().unwrap(), pid: 42, secret: 7 };
        a.slot.set(Some(key));
        assert_eq!(reg.lookup(a.pid, a.secret), Some(key));
        assert_eq!(reg.lookup(a.pid, a.secret.wrapping_add(1)), None);
        assert_eq!(reg.lookup(b.pid, b.secret), None);
        drop(a);
        assert_eq!(reg.len(), 1);
    }
}
