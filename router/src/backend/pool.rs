//! Pools of server connections.
//!
//! A pool serves one (user, logical database, server host). Each worker
//! thread holds its own share of the pool (`Pool`, single-threaded, no locks
//! on checkout or checkin); what all shares have in common — the size limit,
//! settings, counters — lives in `PoolShared`. A worker opens connections as
//! long as the pool-wide count is under `max_pool_size`. When one worker has
//! waiting clients and the pool is full, workers with spare idle connections
//! close one so the starving worker can open its own: moving capacity between
//! threads is the rare path, and nothing crosses threads on the hot path.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use crate::config::{PoolMode, PoolSettings, Role};
use crate::net::Keepalive;

use super::server::{Server, ServerError, ServerTarget};

/// ParameterStatus values a server reported: what clients are told at login.
pub type ServerParams = Arc<Vec<(String, String)>>;

/// Identifies a pool: who connects, which logical database, which host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub user: String,
    pub database: String,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} ({}:{})", self.user, self.database, self.host, self.port)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("timed out after {waited_ms} ms waiting for a server connection from pool {pool}")]
    Timeout { pool: String, waited_ms: u64 },
    #[error("{0}")]
    Server(#[from] ServerError),
    #[error("pool {0} was removed by a configuration reload")]
    Retired(String),
}

/// Caps server connections to one host across all pools (`max_connections`).
#[derive(Debug, Default)]
pub struct HostLimit {
    pub max: AtomicUsize,
    pub open: AtomicUsize,
}

/// How server connections are opened; fixed per pool until a reload.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub timeout: Duration,
    pub keepalive: Option<Keepalive>,
    /// Reuse after this much idle time only after a trivial query succeeds.
    pub check_delay: Duration,
    /// Verifying TLS config for `server_tls = "verify-full"`.
    pub verify_full: Arc<rustls::ClientConfig>,
}

/// Counters one worker writes and the admin side reads.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub active: AtomicUsize,
    pub idle: AtomicUsize,
    pub waiting: AtomicUsize,
    pub checkouts: AtomicU64,
    pub wait_us: AtomicU64,
}

/// What every worker's share of a pool has in common.
pub struct PoolShared {
    pub key: PoolKey,
    pub role: Role,
    pub target: ServerTarget,
    password: RwLock<Option<String>>,
    settings: RwLock<PoolSettings>,
    max_size: AtomicUsize,
    connect: RwLock<ConnectOptions>,
    /// Server connections open or being opened, all workers together.
    open: AtomicUsize,
    host: Arc<HostLimit>,
    /// Clients waiting for a connection, all workers together.
    waiting: AtomicUsize,
    /// Rung when a connection is closed to make room for another worker.
    freed: Notify,
    retired: AtomicBool,
    /// Bumped by every reload, so workers refresh their cached settings
    /// with one atomic load instead of taking a lock per checkout.
    generation: AtomicU64,
    /// ParameterStatus values of this pool's servers, for client logins.
    server_params: Mutex<Option<ServerParams>>,
    pub opened_total: AtomicU64,
    pub closed_total: AtomicU64,
    pub errors_total: AtomicU64,
    workers: Mutex<Vec<Arc<WorkerStats>>>,
}

impl PoolShared {
    pub fn new(
        key: PoolKey,
        role: Role,
        target: ServerTarget,
        password: Option<String>,
        settings: PoolSettings,
        connect: ConnectOptions,
        host: Arc<HostLimit>,
    ) -> Arc<Self> {
        Arc::new(Self {
            key,
            role,
            target,
            password: RwLock::new(password),
            max_size: AtomicUsize::new(settings.max_pool_size),
            settings: RwLock::new(settings),
            connect: RwLock::new(connect),
            open: AtomicUsize::new(0),
            host,
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
            retired: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            server_params: Mutex::new(None),
            opened_total: AtomicU64::new(0),
            closed_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
        })
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn mode(&self) -> PoolMode {
        self.settings.read().map(|s| s.pool_mode).unwrap_or(PoolMode::Transaction)
    }

    /// Applies reloaded settings; connections already open stay open.
    pub fn update(&self, settings: PoolSettings, password: Option<String>, connect: ConnectOptions) {
        self.max_size.store(settings.max_pool_size, Ordering::Relaxed);
        if let Ok(mut s) = self.settings.write() {
            *s = settings;
        }
        if let Ok(mut p) = self.password.write() {
            *p = password;
        }
        if let Ok(mut c) = self.connect.write() {
            *c = connect;
        }
        self.generation.fetch_add(1, Ordering::Release);
        self.freed.notify_waiters();
    }

    /// Marks the pool as removed: its connections close as they come back.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.freed.notify_waiters();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    pub fn host_limit(&self) -> Arc<HostLimit> {
        self.host.clone()
    }

    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn max_size(&self) -> usize {
        self.max_size.load(Ordering::Relaxed)
    }

    pub fn server_params(&self) -> Option<ServerParams> {
        self.server_params.lock().ok().and_then(|p| p.clone())
    }

    /// Sums of the per-worker counters.
    pub fn totals(&self) -> (usize, usize, usize, u64, u64) {
        let workers = self.workers.lock().map(|w| w.clone()).unwrap_or_default();
        let mut t = (0, 0, 0, 0, 0);
        for w in workers {
            t.0 += w.active.load(Ordering::Relaxed);
            t.1 += w.idle.load(Ordering::Relaxed);
            t.2 += w.waiting.load(Ordering::Relaxed);
            t.3 += w.checkouts.load(Ordering::Relaxed);
            t.4 += w.wait_us.load(Ordering::Relaxed);
        }
        t
    }

    /// Takes one unit of pool and host capacity, if both have room.
    fn try_reserve(&self) -> bool {
        if self.is_retired() {
            return false;
        }
        let max = self.max_size();
        if self.open.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).is_err() {
            return false;
        }
        let host_max = self.host.max.load(Ordering::Relaxed);
        if host_max > 0
            && self
                .host
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < host_max).then_some(n + 1))
                .is_err()
        {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if host_max == 0 {
            self.host.open.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.host.open.fetch_sub(1, Ordering::AcqRel);
        self.closed_total.fetch_add(1, Ordering::Relaxed);
        self.freed.notify_waiters();
    }
}

/// One worker's share of a pool.
pub struct Pool {
    pub shared: Arc<PoolShared>,
    idle: RefCell<Vec<Server>>,
    waiters: RefCell<VecDeque<oneshot::Sender<Result<Server, PoolError>>>>,
    opening: Cell<usize>,
    stats: Arc<WorkerStats>,
    /// This worker's part of `min_pool_size`.
    min_share: usize,
    local: RefCell<LocalSettings>,
}

/// A worker's copy of the pool settings, valid for one `generation`.
struct LocalSettings {
    generation: u64,
    checkout_timeout: Duration,
    lifetime: Option<Duration>,
    check_delay: Duration,
}

impl Pool {
    pub fn new(shared: Arc<PoolShared>, worker: usize, workers: usize) -> Rc<Self> {
        let stats = Arc::new(WorkerStats::default());
        if let Ok(mut w) = shared.workers.lock() {
            w.push(stats.clone());
        }
        let min = shared.settings().min_pool_size;
        let workers = workers.max(1);
        let min_share = min / workers + usize::from(worker < min % workers);
        let pool = Rc::new(Self {
            shared,
            idle: RefCell::new(Vec::new()),
            waiters: RefCell::new(VecDeque::new()),
            opening: Cell::new(0),
            stats,
            min_share,
            local: RefCell::new(LocalSettings {
                generation: 0,
                checkout_timeout: Duration::ZERO,
                lifetime: None,
                check_delay: Duration::ZERO,
            }),
        });
        tokio::task::spawn_local(maintain(Rc::downgrade(&pool)));
        pool
    }

    /// Refreshes the cached settings if a reload changed them.
    fn refresh(&self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if self.local.borrow().generation == generation {
            return;
        }
        let settings = self.shared.settings();
        let check_delay = self.shared.connect.read().map(|c| c.check_delay).unwrap_or(Duration::from_secs(30));
        *self.local.borrow_mut() = LocalSettings {
            generation,
            checkout_timeout: Duration::from_millis(settings.checkout_timeout_ms),
            lifetime: (settings.server_lifetime_ms > 0).then(|| Duration::from_millis(settings.server_lifetime_ms)),
            check_delay,
        };
    }

    /// A server connection for one client, from the idle list or newly
    /// opened, waiting up to `checkout_timeout_ms` when the pool is full.
    pub async fn checkout(self: &Rc<Self>) -> Result<Server, PoolError> {
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        self.refresh();
        if let Some(server) = self.take_idle().await {
            self.stats.active.fetch_add(1, Ordering::Relaxed);
            return Ok(server);
        }
        if self.shared.is_retired() {
            return Err(PoolError::Retired(self.shared.key.to_string()));
        }
        let started = Instant::now();
        let timeout = self.local.borrow().checkout_timeout;
        let (tx, mut rx) = oneshot::channel();
        self.waiters.borrow_mut().push_back(tx);
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = WaitingGuard(self);
        self.grow();
        let deadline = tokio::time::Instant::now() + timeout;
        let result = loop {
            tokio::select! {
                r = &mut rx => break r.unwrap_or_else(|_| Err(PoolError::Retired(self.shared.key.to_string()))),
                _ = tokio::time::sleep_until(deadline) => {
                    // A connection may have been handed over in the same instant.
                    if let Ok(r) = rx.try_recv() { break r; }
                    rx.close();
                    break Err(PoolError::Timeout { pool: self.shared.key.to_string(), waited_ms: timeout.as_millis() as u64 });
                }
                _ = self.shared.freed.notified() => self.grow(),
                _ = tokio::time::sleep(Duration::from_millis(100)) => self.grow(),
            }
        };
        let waited = started.elapsed().as_micros() as u64;
        self.stats.wait_us.fetch_add(waited, Ordering::Relaxed);
        if result.is_ok() {
            self.stats.active.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn take_idle(&self) -> Option<Server> {
        loop {
            let server = self.idle.borrow_mut().pop()?;
            self.stats.idle.fetch_sub(1, Ordering::Relaxed);
            let check_delay = self.local.borrow().check_delay;
            if server.last_used.elapsed() < check_delay {
                return Some(server);
            }
            // Long idle: make sure the server is still there before a client depends on it.
            let mut server = server;
            if server.execute("").await.is_ok() && !server.broken {
                return Some(server);
            }
            self.discard(server);
        }
    }

    /// Opens connections for waiting clients, concurrently, while capacity allows.
    fn grow(self: &Rc<Self>) {
        loop {
            let live = self.live_waiters();
            if live <= self.opening.get() || !self.shared.try_reserve() {
                return;
            }
            self.opening.set(self.opening.get() + 1);
            let pool = self.clone();
            tokio::task::spawn_local(async move {
                let result = pool.open().await;
                pool.opening.set(pool.opening.get() - 1);
                match result {
                    Ok(server) => pool.hand_over(server),
                    Err(err) => {
                        pool.shared.release();
                        pool.shared.errors_total.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(pool = %pool.shared.key, error = %err, "opening a server connection failed");
                        // Fail fast: the waiter that asked for this connection learns why.
                        if let Some(w) = pool.pop_live_waiter() {
                            let _ = w.send(Err(PoolError::Server(err)));
                        }
                    }
                }
            });
        }
    }

    async fn open(&self) -> Result<Server, ServerError> {
        let connect = self
            .shared
            .connect
            .read()
            .map(|c| c.clone())
            .map_err(|_| ServerError::Protocol("pool settings lock poisoned".into()))?;
        let password = self.shared.password.read().ok().and_then(|p| p.clone());
        let server = Server::connect(&self.shared.target, password.as_deref(), &connect).await?;
        self.shared.opened_total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut p) = self.shared.server_params.lock() {
            if p.is_none() {
                *p = Some(Arc::new(server.params.clone()));
            }
        }
        tracing::debug!(pool = %self.shared.key, pid = server.pid, "opened server connection");
        Ok(server)
    }

    fn live_waiters(&self) -> usize {
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| !w.is_closed());
        waiters.len()
    }

    fn pop_live_waiter(&self) -> Option<oneshot::Sender<Result<Server, PoolError>>> {
        let mut waiters = self.waiters.borrow_mut();
        while let Some(w) = waiters.pop_front() {
            if !w.is_closed() {
                return Some(w);
            }
        }
        None
    }

    /// Gives a usable connection to the next waiter, or keeps it idle.
    fn hand_over(&self, mut server: Server) {
        while let Some(w) = self.pop_live_waiter() {
            match w.send(Ok(server)) {
                Ok(()) => return,
                Err(Ok(s)) => server = s,
                Err(Err(_)) => return,
            }
        }
        // No one here needs it; if another worker is starving, make room there.
        if self.shared.waiting.load(Ordering::Relaxed) > 0 && self.shared.open_count() >= self.shared.max_size() {
            self.discard(server);
            return;
        }
        server.last_used = Instant::now();
        self.stats.idle.fetch_add(1, Ordering::Relaxed);
        self.idle.borrow_mut().push(server);
    }

    /// Returns a connection after a client is done with it. The caller has
    /// already made it clean (idle transaction status, session state reset)
    /// or marked it broken.
    pub fn checkin(&self, server: Server) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.refresh();
        let expired = self.local.borrow().lifetime.is_some_and(|l| server.created.elapsed() >= l);
        if server.broken || server.status != b'I' || expired || self.shared.is_retired() {
            self.discard(server);
            return;
        }
        self.hand_over(server);
    }

    /// Closes a connection and frees its capacity for whoever waits.
    pub fn discard(&self, mut server: Server) {
        server.terminate();
        drop(server);
        self.shared.release();
        if self.live_waiters() > 0 {
            // Capacity is free again; a waiter here may use it.
            self.shared.freed.notify_waiters();
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}

/// Decrements the waiting counters however `checkout` ends.
struct WaitingGuard<'a>(&'a Pool);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.shared.waiting.fetch_sub(1, Ordering::Relaxed);
        self.0.stats.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-worker housekeeping: idle timeout, lifetime, min size, donating idle
/// connections to starving workers. Ends when the pool is dropped.
async fn maintain(pool: std::rc::Weak<Pool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_idle_scan = Instant::now();
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let shared = &pool.shared;

        // Donate: another worker waits, the pool is full, we have spare idle.
        if shared.waiting.load(Ordering::Relaxed) > 0
            && pool.live_waiters() == 0
            && shared.open_count() >= shared.max_size()
        {
            let spare = pool.idle.borrow_mut().pop();
            if let Some(server) = spare {
                pool.stats.idle.fetch_sub(1, Ordering::Relaxed);
                pool.discard(server);
            }
        }

        if shared.is_retired() {
            let drained: Vec<Server> = pool.idle.borrow_mut().drain(..).collect();
            for server in drained {
                pool.stats.idle.fetch_sub(1, Ordering::Relaxed);
                pool.discard(server);
            }
            continue;
        }

        if last_idle_scan.elapsed() >= Duration::from_secs(1) {
            last_idle_scan = Instant::now();
            let settings = shared.settings();
            let idle_timeout = Duration::from_millis(settings.server_idle_timeout);
            let lifetime = Duration::from_millis(settings.server_lifetime_ms);
            let mut expired = Vec::new();
            {
                let mut idle = pool.idle.borrow_mut();
                let mut i = 0;
                while i < idle.len() {
                    let s = &idle[i];
                    let too_old = settings.server_lifetime_ms > 0 && s.created.elapsed() >= lifetime;
                    let too_idle = settings.server_idle_timeout > 0
                        && s.last_used.elapsed() >= idle_timeout
                        && shared.open_count().saturating_sub(expired.len()) > settings.min_pool_size;
                    if too_old || too_idle {
                        expired.push(idle.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            for server in expired {
                pool.stats.idle.fetch_sub(1, Ordering::Relaxed);
                pool.discard(server);
            }
            // Keep this worker's share of min_pool_size open.
            let have = pool.idle_count() + pool.stats.active.load(Ordering::Relaxed) + pool.opening.get();
            if have < pool.min_share && shared.try_reserve() {
                pool.opening.set(pool.opening.get() + 1);
                let result = pool.open().await;
                pool.opening.set(pool.opening.get() - 1);
                match result {
                    Ok(server) => pool.hand_over(server),
                    Err(err) => {
                        shared.release();
                        tracing::warn!(pool = %shared.key, error = %err, "opening a min_pool_size connection failed");
                    }
                }
            }
        }
    }
}
