//! Cancel keys: the router hands each client its own (pid, secret) and
//! remembers which server backend serves that client right now, so a
//! CancelRequest reaches that backend and no other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::protocol::frontend as fe;

/// Where a cancel for one client goes at this moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerKey {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

/// One client's slot: updated on every checkout and release, read only when
/// a cancel request arrives. The backend key is one atomic word, so the
/// per-transaction updates are two plain stores; the server address, which
/// rarely changes for a client, sits behind a lock taken only when it does.
#[derive(Debug, Default)]
pub struct CancelSlot {
    /// pid << 32 | secret of the serving backend; 0 while none serves.
    backend: AtomicU64,
    addr: Mutex<Option<SocketAddr>>,
}

impl CancelSlot {
    /// Points cancels at a backend. `addr` changes rarely; callers pass it
    /// every time and the lock is only taken when it differs.
    pub fn set(&self, key: ServerKey, addr_changed: bool) {
        if addr_changed {
            if let Ok(mut a) = self.addr.lock() {
                *a = Some(key.addr);
            }
        }
        let packed = (u64::from(key.pid as u32) << 32) | u64::from(key.secret as u32);
        // A real backend never has pid 0, so 0 can mean "none".
        self.backend.store(packed, Ordering::Release);
    }

    /// No backend serves the client: cancels go nowhere.
    pub fn clear(&self) {
        self.backend.store(0, Ordering::Release);
    }

    pub fn get(&self) -> Option<ServerKey> {
        let packed = self.backend.load(Ordering::Acquire);
        if packed == 0 {
            return None;
        }
        let addr = (*self.addr.lock().ok()?)?;
        Some(ServerKey { addr, pid: (packed >> 32) as u32 as i32, secret: packed as u32 as i32 })
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
    let mut stream = crate::net::Tcp::connect_addr(key.addr).await?;
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
        a.slot.set(key, true);
        assert_eq!(reg.lookup(a.pid, a.secret), Some(key));
        assert_eq!(reg.lookup(a.pid, a.secret.wrapping_add(1)), None);
        assert_eq!(reg.lookup(b.pid, b.secret), None);
        a.slot.clear();
        assert_eq!(reg.lookup(a.pid, a.secret), None);
        let negative = ServerKey { addr: key.addr, pid: -5, secret: i32::MIN };
        a.slot.set(negative, false);
        assert_eq!(reg.lookup(a.pid, a.secret), Some(negative));
        drop(a);
        assert_eq!(reg.len(), 1);
    }
}
