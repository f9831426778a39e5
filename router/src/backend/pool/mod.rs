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
//!
//! Fairness between workers: each worker publishes when its longest-waiting
//! client started waiting. A connection coming back goes to the client that
//! has waited longest across workers (within `FAIRNESS_SLACK_US`); when that
//! client is on another worker, the plain socket is deregistered here and
//! adopted there (`Server::detach` / `Detached::attach`). TLS connections
//! cannot move, so they are closed and the other worker opens its own.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::{PoolMode, PoolSettings, Role};
use crate::net::Keepalive;
use crate::stats::{PoolStats, Totals};

use super::server::{Detached, ServerError, ServerTarget};
use super::statements::StatementRegistry;
use super::topology::Topology;

mod local;

pub use local::Pool;

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
    /// The router is shutting down (a client held by PAUSE is let go).
    #[error("terminating connection: pgdog-router is shutting down")]
    ShuttingDown,
}

/// Caps server connections to one host across all pools (`max_connections`).
#[derive(Debug, Default)]
pub struct HostLimit {
    pub max: AtomicUsize,
    pub open: AtomicUsize,
    /// When (µs, process clock) a pool last could not open a connection
    /// because the host was full; 0 never. Pools with idle connections and
    /// no waiting clients then close one, so one user's idle pool cannot
    /// starve another's.
    starved_at: AtomicU64,
}

impl HostLimit {
    /// Whether a pool was refused host capacity within the last second.
    pub(crate) fn recently_starved(&self) -> bool {
        let at = self.starved_at.load(Ordering::Relaxed);
        at != 0 && now_us().saturating_sub(at) < 1_000_000
    }
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
    /// Sent in the startup packet: `pgdog-router` for pooled connections,
    /// another name for the health monitor's, so `pg_stat_activity` tells
    /// them apart from the first moment.
    pub application_name: &'static str,
}

/// What one worker publishes about its share of a pool: counters for the
/// admin side, and what other workers need to be fair to its clients.
#[derive(Default)]
pub struct WorkerShare {
    pub active: AtomicUsize,
    pub idle: AtomicUsize,
    pub waiting: AtomicUsize,
    pub checkouts: AtomicU64,
    pub wait_us: AtomicU64,
    /// When this worker's longest-waiting client started waiting, in µs
    /// of the process clock; 0 while nobody waits. Other workers read it on
    /// every checkin, so it sits on a cache line of its own, away from the
    /// counters this worker bumps on every checkout.
    oldest_wait_us: CacheLine<AtomicU64>,
    /// Connections other workers handed over, not yet adopted.
    inbox: Mutex<Vec<Detached>>,
    arrived: Notify,
    /// Query-path counters (see `stats`), on their own cache lines: this
    /// worker writes them on every request; others only read them at a scrape.
    pub stats: CacheLine<PoolStats>,
    /// Backend pids of this worker's idle connections, republished by the
    /// housekeeping tick (so up to 100 ms old) for SHOW SERVERS.
    idle_pids: Mutex<Vec<i32>>,
}

/// One open server connection as the admin side lists it.
#[derive(Debug, Clone)]
pub struct ServerEntry {
    pub pid: i32,
    pub connected: std::time::SystemTime,
    pub local_addr: Option<std::net::SocketAddr>,
    pub tls: bool,
}

/// Keeps a value on its own cache line (128 bytes covers adjacent-line
/// prefetching on x86).
#[derive(Default)]
#[repr(align(128))]
pub struct CacheLine<T>(pub T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Microseconds since the process clock started; never 0.
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// How much longer another worker's client must have waited before a
/// returned connection goes there instead of to a local client. Bounds the
/// unfairness between workers without moving connections back and forth
/// on every release under load.
const FAIRNESS_SLACK_US: u64 = 2_000;

/// `PoolShared::lag_ms` before anything was measured.
const LAG_UNKNOWN: u64 = u64::MAX;

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
    /// Ids of client startup settings a server of this pool has accepted,
    /// so only new combinations cost a checkout at login.
    accepted_params: Mutex<std::collections::HashSet<u64>>,
    /// ParameterStatus values of this pool's servers, for client logins.
    server_params: Mutex<Option<ServerParams>>,
    pub opened_total: AtomicU64,
    pub closed_total: AtomicU64,
    pub errors_total: AtomicU64,
    shares: RwLock<Vec<Arc<WorkerShare>>>,
    /// Bumped when a worker's share joins or leaves.
    shares_version: AtomicU64,
    /// Named prepared statements of this pool's clients (transaction mode),
    /// shared by every pool of the same user and database: a client's
    /// statement may run on the primary or on any replica.
    pub statements: Arc<StatementRegistry>,
    /// Read/write splitting: until when (ms on the process clock) reads
    /// avoid this replica after it failed; 0 when not banned.
    banned_until_ms: AtomicU64,
    /// Times reads started avoiding this pool (a ban that began while it
    /// was not banned), for the metrics.
    pub bans_total: AtomicU64,
    /// Replica lag the health monitor last measured, in ms; `LAG_UNKNOWN`
    /// before the first measurement and for primaries.
    lag_ms: AtomicU64,
    /// Set by the health monitor while the lag exceeds `max_replica_lag`.
    lagging: AtomicBool,
    /// The live roles of this database's hosts (failover), and this
    /// pool's host's id there.
    pub topology: Arc<Topology>,
    pub host_id: usize,
    /// The last health check's failure, cleared when a check succeeds.
    last_error: Mutex<Option<String>>,
    /// Admin PAUSE: checkouts wait until RESUME. Workers see it through
    /// `generation`, so the checkout fast path pays nothing for it.
    paused: AtomicBool,
    resumed: Notify,
    /// Admin RECONNECT: server connections opened before this instant are
    /// closed when next idle instead of being reused.
    reconnect_before: Mutex<Option<crate::clock::Tick>>,
    /// Open server connections by backend pid, for SHOW SERVERS. Touched on
    /// open and close only.
    servers: Mutex<std::collections::BTreeMap<i32, ServerEntry>>,
}

/// What a pool shares with other pools: the host's connection cap (pools
/// of one host), the statement registry (pools of one user and database),
/// the live roles of the database's hosts (pools of one database).
pub struct PoolLinks {
    pub host: Arc<HostLimit>,
    pub statements: Arc<StatementRegistry>,
    pub topology: Arc<Topology>,
    /// This pool's host's id in `topology`.
    pub host_id: usize,
}

impl PoolShared {
    pub fn new(
        key: PoolKey,
        role: Role,
        target: ServerTarget,
        password: Option<String>,
        settings: PoolSettings,
        connect: ConnectOptions,
        links: PoolLinks,
    ) -> Arc<Self> {
        let PoolLinks { host, statements, topology, host_id } = links;
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
            accepted_params: Mutex::new(std::collections::HashSet::new()),
            server_params: Mutex::new(None),
            opened_total: AtomicU64::new(0),
            closed_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            shares: RwLock::new(Vec::new()),
            shares_version: AtomicU64::new(0),
            statements,
            banned_until_ms: AtomicU64::new(0),
            bans_total: AtomicU64::new(0),
            lag_ms: AtomicU64::new(LAG_UNKNOWN),
            lagging: AtomicBool::new(false),
            topology,
            host_id,
            last_error: Mutex::new(None),
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
            reconnect_before: Mutex::new(None),
            servers: Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// Keeps reads away from this pool for `duration` (its host failed or
    /// lags); a ban in force is extended.
    pub fn ban(&self, duration: Duration) {
        let until = process_millis() + duration.as_millis() as u64;
        let previous = self.banned_until_ms.swap(until.max(1), Ordering::Relaxed);
        if previous == 0 || process_millis() >= previous {
            self.bans_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether reads may go here: not banned, not lagging, not fenced.
    pub fn readable(&self) -> bool {
        !self.is_banned() && !self.lagging.load(Ordering::Relaxed) && !self.is_fenced()
    }

    /// Whether this pool's host takes the database's writes now: the
    /// configured primary until a failover moved them (`backend::topology`).
    pub fn is_writer(&self) -> bool {
        self.topology.writer() == self.host_id
    }

    /// Whether this host claims to be a primary while another is the
    /// writer: it gets no traffic at all.
    pub fn is_fenced(&self) -> bool {
        self.topology.is_fenced(self.host_id)
    }

    /// The role the host plays now, for SHOW POOLS and the API.
    pub fn live_role(&self) -> &'static str {
        if self.is_writer() {
            "primary"
        } else if self.is_fenced() {
            "fenced"
        } else {
            "replica"
        }
    }

    /// Records a replica lag measurement (None: unknown) and whether it is
    /// more than reads tolerate.
    pub fn set_lag(&self, lag_ms: Option<u64>, too_much: bool) {
        self.lag_ms.store(lag_ms.unwrap_or(LAG_UNKNOWN), Ordering::Relaxed);
        let was = self.lagging.swap(too_much, Ordering::Relaxed);
        if too_much && !was && !self.is_banned() {
            // Reads start avoiding it (counted like a ban for the metrics).
            self.bans_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The last measured replica lag in ms, if any.
    pub fn lag_ms(&self) -> Option<u64> {
        Some(self.lag_ms.load(Ordering::Relaxed)).filter(|&l| l != LAG_UNKNOWN)
    }

    pub fn is_lagging(&self) -> bool {
        self.lagging.load(Ordering::Relaxed)
    }

    /// Records the outcome of a health check: None when it succeeded.
    pub fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = error;
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// The password and connect options new server connections use, for
    /// connections the router opens outside the pool (health checks).
    pub fn connect_settings(&self) -> (Option<String>, Option<ConnectOptions>) {
        let password = self.password.read().ok().and_then(|p| p.clone());
        (password, self.connect.read().ok().map(|c| c.clone()))
    }

    pub fn is_banned(&self) -> bool {
        let until = self.banned_until_ms.load(Ordering::Relaxed);
        until != 0 && process_millis() < until
    }

    /// Server connections handed to clients right now, all workers together.
    pub fn active_count(&self) -> usize {
        self.totals().0
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

    pub fn params_accepted(&self, id: u64) -> bool {
        id == 0 || self.accepted_params.lock().is_ok_and(|p| p.contains(&id))
    }

    pub fn accept_params(&self, id: u64) {
        /// Distinct setting combinations remembered; past this the memo starts over.
        const MAX_REMEMBERED: usize = 10_000;
        if let Ok(mut p) = self.accepted_params.lock() {
            if p.len() >= MAX_REMEMBERED {
                p.clear();
            }
            p.insert(id);
        }
    }

    pub fn server_params(&self) -> Option<ServerParams> {
        self.server_params.lock().ok().and_then(|p| p.clone())
    }

    /// Sums of the per-worker counters.
    pub fn totals(&self) -> (usize, usize, usize, u64, u64) {
        let workers = self.shares.read().map(|w| w.clone()).unwrap_or_default();
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

    /// Counters and gauges summed over the workers' shares.
    pub fn stats(&self) -> Totals {
        let workers = self.shares.read().map(|w| w.clone()).unwrap_or_default();
        let mut t = Totals::default();
        for w in workers {
            w.stats.add_to(&mut t);
            t.active += w.active.load(Ordering::Relaxed) as u64;
            t.idle += w.idle.load(Ordering::Relaxed) as u64;
            t.waiting += w.waiting.load(Ordering::Relaxed) as u64;
            t.checkouts += w.checkouts.load(Ordering::Relaxed);
            t.wait_us += w.wait_us.load(Ordering::Relaxed);
        }
        t
    }

    /// Since when (µs of the process clock) the longest-waiting client of
    /// any worker has waited; None while nobody waits.
    pub fn oldest_wait_age_us(&self) -> Option<u64> {
        let workers = self.shares.read().map(|w| w.clone()).unwrap_or_default();
        let oldest = workers.iter().map(|w| w.oldest_wait_us.load(Ordering::Relaxed)).filter(|&s| s != 0).min()?;
        Some(now_us().saturating_sub(oldest))
    }

    /// Open server connections, each with whether it is idle.
    pub fn servers(&self) -> Vec<(ServerEntry, bool)> {
        let workers = self.shares.read().map(|w| w.clone()).unwrap_or_default();
        let mut idle = std::collections::HashSet::new();
        for w in &workers {
            if let Ok(pids) = w.idle_pids.lock() {
                idle.extend(pids.iter().copied());
            }
        }
        let servers = self.servers.lock().map(|s| s.values().cloned().collect::<Vec<_>>()).unwrap_or_default();
        servers.into_iter().map(|e| (e.clone(), idle.contains(&e.pid))).collect()
    }

    pub(crate) fn server_opened(&self, entry: ServerEntry) {
        if let Ok(mut s) = self.servers.lock() {
            s.insert(entry.pid, entry);
        }
    }

    pub(crate) fn server_closed(&self, pid: i32) {
        if let Ok(mut s) = self.servers.lock() {
            s.remove(&pid);
        }
    }

    /// Holds new checkouts until [`resume`](Self::resume); transactions
    /// already holding a server connection go on.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::Release);
        self.resumed.notify_waiters();
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Recycles every server connection open now: each is closed when it
    /// is next idle (never under a client), and new ones replace them.
    pub fn reconnect(&self) {
        if let Ok(mut r) = self.reconnect_before.lock() {
            *r = Some(crate::clock::Tick::now());
        }
        self.generation.fetch_add(1, Ordering::Release);
        self.freed.notify_waiters();
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
            self.host.starved_at.store(now_us(), Ordering::Relaxed);
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

/// Milliseconds on a clock that starts with the process: cheap to compare
/// and to keep in an atomic.
fn process_millis() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
