//! Process wiring: the shared state every worker sees, config snapshots and
//! reload, worker threads (one single-threaded event loop each), signals
//! and graceful shutdown.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::backend::pool::{ConnectOptions, HostLimit, Pool, PoolKey, PoolLinks, PoolShared};
use crate::backend::server::ServerTarget;
use crate::backend::statements::StatementRegistry;
use crate::backend::topology::Topology;
use crate::config::{self, Config, DatabaseEntry, General, PoolSettings, QueryRouting, Role};
use crate::frontend::auth::Credential;
use crate::frontend::cancel::CancelRegistry;
use crate::frontend::{listener, tls};
use crate::logging::{self, LogLevel};
use crate::net::Keepalive;
use crate::ops;
use crate::route::classify::{CacheCounters, Classifier};
use crate::stats::clients::ClientRegistry;
use crate::stats::Sampler;

/// Why a reload was refused; the running configuration stays either way.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration file to reload")]
    NoFile,
    /// The files do not load: the error names file, line and key.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// The files load but cannot be applied (a TLS file that does not parse).
    #[error("{0}")]
    Apply(String),
    /// The admin console, metrics or API moves to an address that cannot be
    /// bound; it keeps listening where it was.
    #[error("{0}")]
    Listen(#[from] crate::ops::ListenError),
}

/// One configuration generation: the config plus everything derived from
/// it. A reload builds a new one and swaps it in; sessions keep the one they
/// logged in with.
pub struct Snapshot {
    pub config: Config,
    /// (user, database) → credential to check clients against.
    pub credentials: HashMap<(String, String), Credential>,
    pub pools: BTreeMap<PoolKey, Arc<PoolShared>>,
    pub tls: Option<TlsAcceptor>,
    /// The live roles of each (database, shard)'s hosts, kept across reloads.
    pub topologies: HashMap<(String, u32), Arc<Topology>>,
}

impl Snapshot {
    /// Builds a snapshot, reusing the pools of `previous` whose key is
    /// unchanged so their server connections survive a reload.
    pub fn build(config: Config, previous: Option<&Snapshot>) -> Result<Snapshot, String> {
        let general = &config.router.general;
        let tls = match (&general.tls_certificate, &general.tls_private_key) {
            (Some(cert), Some(key)) => {
                Some(tls::acceptor(cert, key, general.tls_ca.as_deref()).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let connect = connect_options(general)?;
        let mut hosts: HashMap<(String, u16), Arc<HostLimit>> = HashMap::new();
        if let Some(prev) = previous {
            for pool in prev.pools.values() {
                hosts.entry((pool.key.host.clone(), pool.key.port)).or_insert_with(|| pool.host_limit());
            }
        }
        let mut credentials = HashMap::new();
        let mut pools = BTreeMap::new();
        // One statement registry per (user, database), kept across reloads.
        let mut registries: HashMap<(String, String), Arc<StatementRegistry>> = HashMap::new();
        if let Some(prev) = previous {
            for pool in prev.pools.values() {
                registries
                    .entry((pool.key.user.clone(), pool.key.database.clone()))
                    .or_insert_with(|| pool.statements.clone());
            }
        }
        let topologies = topologies(&config, previous)?;
        for user in &config.users {
            credentials.insert(
                (user.name.clone(), user.database.clone()),
                Credential::prepare(user.auth, user.password.as_deref()),
            );
            let mut settings: PoolSettings = config.router.pools.get(&user.pool).cloned().unwrap_or_default();
            if let Some(mode) = user.pool_mode {
                settings.pool_mode = mode;
            }
            for db in config.router.databases.iter().filter(|d| d.name == user.database) {
                let key = PoolKey {
                    user: user.name.clone(),
                    database: db.name.clone(),
                    host: db.host.clone(),
                    port: db.port,
                };
                let host = hosts.entry((db.host.clone(), db.port)).or_default().clone();
                host.max.store(db.max_connections, Ordering::Relaxed);
                let target = ServerTarget {
                    host: db.host.clone(),
                    port: db.port,
                    database: db.server_database().to_string(),
                    user: user.server_user.clone(),
                    tls: db.server_tls,
                };
                let (topology, host_id) = member(&topologies, db);
                let reuse = previous.and_then(|p| p.pools.get(&key)).filter(|p| {
                    p.target == target
                        && p.role == db.role
                        && Arc::ptr_eq(&p.topology, topology)
                        && p.host_id == host_id
                });
                let pool = match reuse {
                    Some(existing) => {
                        existing.update(settings.clone(), user.server_password.clone(), connect.clone());
                        existing.clone()
                    }
                    None => PoolShared::new(
                        key.clone(),
                        db.role,
                        target,
                        user.server_password.clone(),
                        settings.clone(),
                        connect.clone(),
                        PoolLinks {
                            host,
                            statements: registries.entry((user.name.clone(), db.name.clone())).or_default().clone(),
                            topology: topology.clone(),
                            host_id,
                        },
                    ),
                };
                pools.insert(key, pool);
            }
        }
        if let Some(prev) = previous {
            for (key, pool) in &prev.pools {
                if !pools.get(key).is_some_and(|p| Arc::ptr_eq(p, pool)) {
                    pool.retire();
                }
            }
        }
        Ok(Snapshot { config, credentials, pools, tls, topologies })
    }
}

/// A database entry's topology and its host's id there.
fn member<'a>(topologies: &'a HashMap<(String, u32), Arc<Topology>>, db: &DatabaseEntry) -> (&'a Arc<Topology>, usize) {
    let topology = &topologies[&(db.name.clone(), db.shard.unwrap_or(0))];
    (topology, topology.id_of(&db.host, db.port).unwrap_or(usize::MAX))
}

/// The topology of every (database, shard) of `config`: the previous
/// snapshot's, relaid out to the new hosts so failover state survives a
/// reload, or a new one.
fn topologies(config: &Config, previous: Option<&Snapshot>) -> Result<HashMap<(String, u32), Arc<Topology>>, String> {
    let databases = &config.router.databases;
    let mut built = HashMap::new();
    for db in databases {
        let shard = db.shard.unwrap_or(0);
        let key = (db.name.clone(), shard);
        if built.contains_key(&key) {
            continue;
        }
        let members: Vec<&DatabaseEntry> =
            databases.iter().filter(|d| d.name == db.name && d.shard.unwrap_or(0) == shard).collect();
        let hosts: Vec<(String, u16)> = members.iter().map(|d| (d.host.clone(), d.port)).collect();
        let configured = members.iter().position(|d| d.role == Role::Primary);
        let kept = previous.and_then(|p| p.topologies.get(&key)).filter(|t| t.relayout(&hosts, configured)).cloned();
        let topology = match kept {
            Some(t) => t,
            None => Arc::new(Topology::new(&hosts, configured).ok_or_else(|| {
                format!("database {:?} lists more than {} hosts", db.name, crate::backend::topology::MAX_HOSTS)
            })?),
        };
        built.insert(key, topology);
    }
    Ok(built)
}

fn connect_options(general: &General) -> Result<ConnectOptions, String> {
    Ok(ConnectOptions {
        timeout: Duration::from_millis(general.connect_timeout_ms),
        keepalive: general.tcp_keepalive.then_some(Keepalive {
            idle: Duration::from_millis(general.tcp_keepalive_idle_ms),
            interval: Duration::from_millis(general.tcp_keepalive_interval_ms),
            count: general.tcp_keepalive_count,
        }),
        check_delay: Duration::from_millis(general.server_check_delay_ms),
        verify_full: crate::backend::tls::verified(general.server_tls_ca.as_deref())?,
        application_name: "pgdog-router",
    })
}

/// State shared by all workers, passed in as a handle (no globals).
pub struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    pub cancels: Arc<CancelRegistry>,
    pub shutdown: CancellationToken,
    pub clients: AtomicUsize,
    pub workers: usize,
    pub config_path: Option<PathBuf>,
    pub users_path: Option<PathBuf>,
    /// Logged-in clients, for the admin console and the API.
    pub client_list: Arc<ClientRegistry>,
    /// Each worker's classifier cache figures, by worker index.
    pub query_caches: Vec<Arc<CacheCounters>>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// One reload at a time: two building from the same snapshot would
    /// retire each other's pools.
    reload_lock: Mutex<()>,
    pub started: SystemTime,
    /// Periodic totals behind SHOW STATS averages.
    pub sampler: Mutex<Sampler>,
    /// The admin console, metrics and API listeners, which a reload moves.
    listeners: Mutex<Option<ops::Listeners>>,
    /// Changes `general.log_level` at reload; unset when the embedding
    /// process installed its own subscriber.
    log_level: OnceLock<LogLevel>,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn new(config: Snapshot, workers: usize, config_path: Option<PathBuf>, users_path: Option<PathBuf>) -> Self {
        Shared {
            snapshot: RwLock::new(Arc::new(config)),
            cancels: Arc::new(CancelRegistry::default()),
            shutdown: CancellationToken::new(),
            clients: AtomicUsize::new(0),
            workers,
            config_path,
            users_path,
            client_list: Arc::new(ClientRegistry::default()),
            query_caches: (0..workers).map(|_| Arc::default()).collect(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            reload_lock: Mutex::new(()),
            started: SystemTime::now(),
            sampler: Mutex::new(Sampler::default()),
            listeners: Mutex::new(None),
            log_level: OnceLock::new(),
        }
    }

    /// Lets reloads change the log level through `handle`.
    pub fn set_log_level_handle(&self, handle: LogLevel) {
        let _ = self.log_level.set(handle);
    }

    /// Re-reads both files and swaps in the new snapshot. On error the
    /// running configuration stays and the error goes to the caller. The
    /// one reload path: SIGHUP, admin RELOAD and `POST /api/v1/reload`.
    /// Statistics live in the pools a reload keeps, so they carry on.
    ///
    /// All or nothing: `log_level` is parsed and moved listeners are bound
    /// before the snapshot is swapped; only then are the old listeners
    /// closed and the new level put in force. The client port
    /// (`general.host`, `general.port`) and `general.workers` need a restart.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.reload_inner();
        let counter = if result.is_ok() { &self.reloads_ok } else { &self.reloads_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!(error = %e, "reload failed; the running configuration stays"),
        }
        result
    }

    fn reload_inner(&self) -> Result<(), ReloadError> {
        let Some(config_path) = &self.config_path else {
            return Err(ReloadError::NoFile);
        };
        let config = config::load_files(config_path, self.users_path.as_deref())?;
        let current = self.snapshot();
        let level = &config.router.general.log_level;
        let new_level = match self.log_level.get() {
            Some(handle) if handle.current() != level.trim() => {
                Some((handle, logging::Filter::parse(level).map_err(ReloadError::Apply)?))
            }
            _ => None,
        };
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let moved = match listeners.as_ref() {
            Some(l) => l.prepare(&config.router)?,
            None => ops::Moved::default(),
        };
        let level = level.clone();
        let next = Snapshot::build(config, Some(&current)).map_err(ReloadError::Apply)?;
        match self.snapshot.write() {
            Ok(mut s) => *s = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        if let Some(l) = listeners.as_mut() {
            l.install(moved);
        }
        if let Some((handle, filter)) = new_level {
            handle.set(filter, &level);
            tracing::info!(log_level = %level, "log level changed");
        }
        Ok(())
    }

    /// Whether the router is draining for shutdown.
    pub fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// One worker thread's view: its shares of the pools.
pub struct Worker {
    pub shared: Arc<Shared>,
    pub index: usize,
    pools: RefCell<HashMap<PoolKey, Rc<Pool>>>,
    /// This thread's copy of the shutdown signal: sessions check and wait
    /// on it without touching state other threads write.
    pub stop: Rc<StopSignal>,
    /// The read/write classifier and its cache of query shapes, one per
    /// worker (no lock), with the settings it was built from.
    classifier: RefCell<Option<(QueryRouting, Rc<RefCell<Classifier>>)>>,
}

/// Shutdown as one worker's sessions see it: a flag to check for free and a
/// notification to wait on. The worker's listener sets it when the
/// process-wide token is cancelled.
///
/// Single-threaded on purpose: every idle client waits on it between two
/// requests, so registering a waiter must cost a few instructions, not the
/// lock and reference counting of a thread-safe `Notify`.
#[derive(Default)]
pub struct StopSignal {
    stopped: Cell<bool>,
    /// Wakers of pending waits; a slot is reused once its wait is dropped.
    waiters: RefCell<Vec<Option<std::task::Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl StopSignal {
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    pub fn trigger(&self) {
        self.stopped.set(true);
        let wakers: Vec<_> = self.waiters.borrow_mut().iter_mut().filter_map(Option::take).collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves once `trigger` has run (at once if it already has).
    pub fn wait(self: &Rc<Self>) -> StopWait {
        StopWait { signal: self.clone(), slot: None }
    }
}

/// A wait for [`StopSignal::trigger`].
pub struct StopWait {
    signal: Rc<StopSignal>,
    slot: Option<usize>,
}

impl std::future::Future for StopWait {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.signal.stopped.get() {
            return std::task::Poll::Ready(());
        }
        let this = &mut *self;
        let mut waiters = this.signal.waiters.borrow_mut();
        match this.slot {
            Some(slot) => match &mut waiters[slot] {
                Some(w) if w.will_wake(cx.waker()) => {}
                other => *other = Some(cx.waker().clone()),
            },
            None => {
                let slot = match this.signal.free.borrow_mut().pop() {
                    Some(slot) => {
                        waiters[slot] = Some(cx.waker().clone());
                        slot
                    }
                    None => {
                        waiters.push(Some(cx.waker().clone()));
                        waiters.len() - 1
                    }
                };
                this.slot = Some(slot);
            }
        }
        std::task::Poll::Pending
    }
}

impl Drop for StopWait {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            if let Some(w) = self.signal.waiters.borrow_mut().get_mut(slot) {
                *w = None;
            }
            self.signal.free.borrow_mut().push(slot);
        }
    }
}

impl Worker {
    /// This worker's classifier, rebuilt when a reload changed its settings.
    /// Every one it builds counts into the worker's block of
    /// `Shared::query_caches`, so the counts carry on across a rebuild.
    pub fn classifier(&self, routing: &QueryRouting) -> Rc<RefCell<Classifier>> {
        let mut slot = self.classifier.borrow_mut();
        if let Some((built_from, classifier)) = slot.as_ref() {
            if built_from.writing_functions == routing.writing_functions
                && built_from.query_cache_size == routing.query_cache_size
            {
                return classifier.clone();
            }
        }
        let counters = self.shared.query_caches.get(self.index).cloned().unwrap_or_default();
        let classifier = Classifier::with_counters(routing.query_cache_size, &routing.writing_functions, counters);
        let classifier = Rc::new(RefCell::new(classifier));
        *slot = Some((routing.clone(), classifier.clone()));
        classifier
    }

    /// This worker's share of a pool, created on first use.
    pub fn pool(&self, shared_pool: &Arc<PoolShared>) -> Rc<Pool> {
        let mut pools = self.pools.borrow_mut();
        if let Some(p) = pools.get(&shared_pool.key) {
            if Arc::ptr_eq(&p.shared, shared_pool) {
                return p.clone();
            }
        }
        let pool = Pool::new(shared_pool.clone(), self.index, self.shared.workers, self.stop.clone());
        pools.insert(shared_pool.key.clone(), pool.clone());
        pool
    }
}

/// Runs the router until shutdown. Returns the process exit code. With
/// `log_level`, reloads change the level of the subscriber it belongs to.
pub fn run(
    config: Config,
    config_path: Option<PathBuf>,
    users_path: Option<PathBuf>,
    log_level: Option<LogLevel>,
) -> i32 {
    let general = config.router.general.clone();
    let snapshot = match Snapshot::build(config, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgdog-router: {e}");
            return 1;
        }
    };
    let workers = match general.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    };
    let ops = snapshot.config.router.clone();
    let shared = Arc::new(Shared::new(snapshot, workers, config_path, users_path));
    if let Some(handle) = log_level {
        shared.set_log_level_handle(handle);
    }

    // Signal handlers first: a SIGHUP or SIGTERM that arrives once the port
    // accepts must be handled, not kill the process by default action.
    let control = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgdog-router: cannot start control runtime: {e}");
            return 1;
        }
    };
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let _entered = control.enter();
        match (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(hup), Ok(term), Ok(int)) => Signals { hup, term, int },
            _ => {
                eprintln!("pgdog-router: cannot install signal handlers");
                return 1;
            }
        }
    };

    // The admin console, metrics and API listeners too: a port in use is a
    // start-up error, not a router that silently lacks its probes. Bound
    // before the client port, so a client port that accepts means they do.
    let ops_listeners = match ops::Bound::all(&ops) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pgdog-router: {e}");
            return 1;
        }
    };

    // Bind every worker's listener before reporting ready, so a port in use
    // fails start-up instead of a worker.
    let addr = format!("{}:{}", general.host, general.port);
    let mut sockets = Vec::new();
    for _ in 0..workers {
        match listener::bind(&addr) {
            Ok(s) => sockets.push(s),
            Err(e) => {
                eprintln!("pgdog-router: cannot listen on {addr}: {e}");
                return 1;
            }
        }
    }
    tracing::info!(%addr, workers, "pgdog-router listening");

    let mut threads = Vec::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let worker_shared = shared.clone();
        let handle = std::thread::Builder::new().name(format!("pgdog-worker-{index}")).spawn(move || {
            let shared = worker_shared;
            let worker = Rc::new(Worker {
                shared: shared.clone(),
                index,
                pools: RefCell::new(HashMap::new()),
                stop: Rc::new(StopSignal::default()),
                classifier: RefCell::new(None),
            });
            if let Err(e) = crate::rt::block_on(listener::serve(worker, socket)) {
                tracing::error!(error = %e, "worker event loop failed");
                shared.shutdown.cancel();
            }
        });
        match handle {
            Ok(h) => threads.push(h),
            Err(e) => {
                eprintln!("pgdog-router: cannot start worker thread: {e}");
                shared.shutdown.cancel();
                return 1;
            }
        }
    }

    // Admin console, metrics and API run on the control thread: light
    // traffic, and they stay up while workers drain (readyz says 503).
    // The replica health monitor too; it ends when shutdown starts.
    control.block_on(async {
        if let Err(e) = spawn_ops(shared.clone(), ops_listeners) {
            tracing::error!(error = %e, "cannot start the admin, metrics and API listeners");
            shared.shutdown.cancel();
        }
        let monitor = tokio::spawn(crate::backend::health::monitor(shared.clone()));
        handle_signals(shared.clone(), signals, Duration::from_millis(general.shutdown_timeout_ms)).await;
        let _ = monitor.await;
    });
    for t in threads {
        let _ = t.join();
    }
    tracing::info!("pgdog-router stopped");
    0
}

/// Starts the admin console, metrics and API servers and the statistics
/// sampler on the control runtime.
fn spawn_ops(shared: Arc<Shared>, bound: ops::Bound) -> std::io::Result<()> {
    let listeners = ops::Listeners::start(&shared, bound)?;
    *shared.listeners.lock().unwrap_or_else(|e| e.into_inner()) = Some(listeners);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::stats::STATS_PERIOD);
        loop {
            tick.tick().await;
            let totals = crate::admin::show::totals_by_database(&shared.snapshot());
            if let Ok(mut s) = shared.sampler.lock() {
                s.record(Instant::now(), totals);
            }
        }
    });
    Ok(())
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

/// SIGHUP reloads; SIGTERM/SIGINT stop accepting, let transactions finish up
/// to the shutdown timeout, then end.
async fn handle_signals(shared: Arc<Shared>, signals: Signals, shutdown_timeout: Duration) {
    let Signals { mut hup, mut term, mut int } = signals;
    loop {
        tokio::select! {
            // The outcome is logged (and counted) by `reload` itself.
            _ = hup.recv() => { let _ = shared.reload(); }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = shared.shutdown.cancelled() => break,
        }
    }
    tracing::info!(clients = shared.clients.load(Ordering::Relaxed), "shutting down");
    shared.shutdown.cancel();
    let deadline = Instant::now() + shutdown_timeout;
    while shared.clients.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = shared.clients.load(Ordering::Relaxed);
    if left > 0 {
        tracing::warn!(clients = left, "shutdown timeout reached; closing remaining clients");
        std::process::exit(0);
    }
}

#[cfg(test)]
mod stop_tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    #[test]
    fn waits_wake_once_triggered_and_slots_are_reused() {
        let signal = Rc::new(StopSignal::default());
        let mut cx = Context::from_waker(Waker::noop());
        let mut a = signal.wait();
        let mut b = signal.wait();
        assert_eq!(std::pin::Pin::new(&mut a).poll(&mut cx), Poll::Pending);
        assert_eq!(std::pin::Pin::new(&mut b).poll(&mut cx), Poll::Pending);
        drop(b);
        let mut c = signal.wait();
        assert_eq!(std::pin::Pin::new(&mut c).poll(&mut cx), Poll::Pending);
        assert_eq!(signal.waiters.borrow().len(), 2, "the dropped wait's slot was reused");
        signal.trigger();
        assert_eq!(std::pin::Pin::new(&mut a).poll(&mut cx), Poll::Ready(()));
        assert_eq!(std::pin::Pin::new(&mut c).poll(&mut cx), Poll::Ready(()));
        let mut late = signal.wait();
        assert_eq!(std::pin::Pin::new(&mut late).poll(&mut cx), Poll::Ready(()));
    }
}
