//! One worker's share of a pool: its idle connections, its waiting
//! clients, checkout and checkin. Single-threaded (`Rc`, `RefCell`): the
//! hot path takes no lock.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{now_us, PoolError, PoolShared, WorkerShare, FAIRNESS_SLACK_US};
use crate::backend::server::{Conn, Detach, Detached, Server, ServerError};
use crate::clock::{self, Tick};
use crate::rt;
use crate::runtime::StopSignal;

type Reply = oneshot::Sender<Result<Server, PoolError>>;

/// A client waiting for a connection, and since when (µs, process clock).
struct Waiter {
    since: u64,
    reply: Reply,
}

/// A worker's copy of the pool settings, valid for one `generation`.
struct LocalSettings {
    generation: u64,
    checkout_timeout: Duration,
    /// `server_lifetime_ms` in nanoseconds (`crate::clock::nanos`).
    lifetime: Option<u64>,
    /// `server_check_delay_ms` in nanoseconds.
    check_delay: u64,
    paused: bool,
    /// Connections opened before this are recycled (admin RECONNECT).
    reconnect_before: Option<Tick>,
}

/// The other workers' shares, as of one `shares_version`.
struct Peers {
    version: u64,
    shares: Vec<Arc<WorkerShare>>,
}

/// One worker's share of a pool.
pub struct Pool {
    pub shared: Arc<PoolShared>,
    idle: RefCell<Vec<Server>>,
    waiters: RefCell<VecDeque<Waiter>>,
    opening: Cell<usize>,
    share: Arc<WorkerShare>,
    peers: RefCell<Peers>,
    /// This worker's part of `min_pool_size`.
    min_share: usize,
    local: RefCell<LocalSettings>,
    /// This worker's shutdown signal: lets go of clients held by PAUSE.
    stop: Rc<StopSignal>,
}

impl Pool {
    pub fn new(shared: Arc<PoolShared>, worker: usize, workers: usize, stop: Rc<StopSignal>) -> Rc<Self> {
        let share = Arc::new(WorkerShare::default());
        if let Ok(mut shares) = shared.shares.write() {
            shares.push(share.clone());
        }
        shared.shares_version.fetch_add(1, Ordering::Release);
        let min = shared.settings().min_pool_size;
        let workers = workers.max(1);
        let min_share = min / workers + usize::from(worker < min % workers);
        let pool = Rc::new(Self {
            shared,
            idle: RefCell::new(Vec::new()),
            waiters: RefCell::new(VecDeque::new()),
            opening: Cell::new(0),
            share,
            peers: RefCell::new(Peers { version: u64::MAX, shares: Vec::new() }),
            min_share,
            local: RefCell::new(LocalSettings {
                generation: 0,
                checkout_timeout: Duration::ZERO,
                lifetime: None,
                check_delay: 0,
                paused: false,
                reconnect_before: None,
            }),
            stop,
        });
        rt::spawn_local(maintain(Rc::downgrade(&pool)));
        pool
    }

    /// Refreshes the cached settings if a reload changed them: one atomic
    /// load per call in the common case.
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
            lifetime: (settings.server_lifetime_ms > 0)
                .then(|| clock::nanos(Duration::from_millis(settings.server_lifetime_ms))),
            check_delay: clock::nanos(check_delay),
            paused: self.shared.is_paused(),
            reconnect_before: self.shared.reconnect_before.lock().ok().and_then(|r| *r),
        };
    }

    /// This worker's counters, for the sessions it serves.
    pub fn share(&self) -> &Arc<WorkerShare> {
        &self.share
    }

    /// Whether a connection predates an admin RECONNECT and must go.
    fn outdated(&self, server: &Server) -> bool {
        self.local.borrow().reconnect_before.is_some_and(|t| server.created < t)
    }

    /// While the pool is paused, waits (counted as waiting) for RESUME.
    /// Shutdown ends the wait with `ShuttingDown`: nothing would resume it.
    async fn wait_while_paused(&self) -> Result<(), PoolError> {
        if !self.shared.is_paused() {
            return Ok(());
        }
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        add(&self.share.waiting, 1);
        let _waiting = WaitingGuard(self);
        loop {
            let resumed = self.shared.resumed.notified();
            // Registered before the check, so a trigger in between is seen.
            let stopping = self.stop.wait();
            if !self.shared.is_paused() {
                break;
            }
            if self.stop.is_stopped() {
                return Err(PoolError::ShuttingDown);
            }
            // The timeout covers a RESUME between the check and the wait.
            tokio::select! {
                _ = rt::time::timeout(Duration::from_millis(100), resumed) => {}
                _ = stopping => {}
            }
        }
        self.refresh();
        Ok(())
    }

    /// A server connection for one client, from the idle list or newly
    /// opened, waiting up to `checkout_timeout_ms` when the pool is full.
    pub async fn checkout(self: &Rc<Self>) -> Result<Server, PoolError> {
        add(&self.share.checkouts, 1);
        self.refresh();
        self.wait_while_paused().await?;
        // Clients already waiting here go first.
        if self.waiters.borrow().is_empty() {
            // Another worker's clients wait while this one has spare: share.
            if let Some(peer) = self.fairer_peer(None) {
                let spare = self.idle.borrow_mut().pop();
                if let Some(server) = spare {
                    sub(&self.share.idle, 1);
                    self.donate(server, &peer);
                }
            }
            if let Some(server) = self.take_idle().await {
                add(&self.share.active, 1);
                return Ok(server);
            }
        }
        if self.shared.is_retired() {
            return Err(PoolError::Retired(self.shared.key.to_string()));
        }
        let started = Instant::now();
        let timeout = self.local.borrow().checkout_timeout;
        let (reply, mut rx) = oneshot::channel();
        self.waiters.borrow_mut().push_back(Waiter { since: now_us(), reply });
        self.publish_oldest_wait();
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        add(&self.share.waiting, 1);
        let _waiting = WaitingGuard(self);
        // An idle connection may be here after all (kept for a fairer peer
        // that has since been served).
        self.serve_waiters();
        self.grow();
        let deadline = Instant::now() + timeout;
        let result = loop {
            tokio::select! {
                r = &mut rx => break r.unwrap_or_else(|_| Err(PoolError::Retired(self.shared.key.to_string()))),
                _ = rt::time::sleep_until(deadline) => {
                    // A connection may have been handed over in the same instant.
                    if let Ok(r) = rx.try_recv() { break r; }
                    rx.close();
                    tracing::info!(pool = %self.shared.key, "checkout timed out");
                    break Err(PoolError::Timeout { pool: self.shared.key.to_string(), waited_ms: timeout.as_millis() as u64 });
                }
                _ = self.share.arrived.notified() => self.adopt_arrivals(),
                _ = self.shared.freed.notified() => self.grow(),
                _ = rt::time::sleep(Duration::from_millis(100)) => {
                    self.adopt_arrivals();
                    self.grow();
                }
            }
        };
        self.publish_oldest_wait();
        add(&self.share.wait_us, started.elapsed().as_micros() as u64);
        if result.is_ok() {
            add(&self.share.active, 1);
        }
        result
    }

    /// The checkout fast path, without waiting: an idle connection used
    /// recently enough to need no liveness check, when nobody waits here or
    /// has waited longer on another worker. None sends the caller to
    /// [`checkout`](Self::checkout).
    pub fn checkout_now(&self) -> Option<Server> {
        self.checkout_now_at(Tick::now())
    }

    /// [`checkout_now`](Self::checkout_now) with the caller's reading of the clock.
    pub fn checkout_now_at(&self, now: Tick) -> Option<Server> {
        self.refresh();
        if self.local.borrow().paused || !self.waiters.borrow().is_empty() || self.fairer_peer(None).is_some() {
            return None;
        }
        let fresh = {
            let idle = self.idle.borrow();
            let check_delay = self.local.borrow().check_delay;
            idle.last().is_some_and(|s| s.ready_without_check(check_delay, now) && !self.outdated(s))
        };
        if !fresh {
            return None;
        }
        let server = self.idle.borrow_mut().pop()?;
        sub(&self.share.idle, 1);
        add(&self.share.checkouts, 1);
        add(&self.share.active, 1);
        Some(server)
    }

    async fn take_idle(&self) -> Option<Server> {
        loop {
            let server = self.idle.borrow_mut().pop()?;
            sub(&self.share.idle, 1);
            if self.outdated(&server) {
                self.discard(server);
                continue;
            }
            if server.ready_without_check(self.local.borrow().check_delay, Tick::now()) {
                return Some(server);
            }
            // Long idle, or the server spoke while idle (a FATAL before it
            // closed, a notice): make sure it is still there, and consume
            // what it sent, before a client depends on it.
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
            if self.live_waiters() <= self.opening.get() || !self.shared.try_reserve() {
                return;
            }
            self.opening.set(self.opening.get() + 1);
            let pool = self.clone();
            rt::spawn_local(async move {
                let result = pool.open().await;
                pool.opening.set(pool.opening.get() - 1);
                match result {
                    Ok(server) => pool.hand_over(server, Tick::now()),
                    Err(err) => {
                        pool.shared.release();
                        pool.shared.errors_total.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(pool = %pool.shared.key, error = %err, "opening a server connection failed");
                        // Fail fast: the client that asked for this connection learns why.
                        if let Some(w) = pool.pop_live_waiter() {
                            let _ = w.reply.send(Err(PoolError::Server(err)));
                            pool.publish_oldest_wait();
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
        let server = Conn::connect(&self.shared.target, password.as_deref(), &connect).await?;
        self.shared.opened_total.fetch_add(1, Ordering::Relaxed);
        self.shared.server_opened(super::ServerEntry {
            pid: server.pid,
            connected: std::time::SystemTime::now(),
            local_addr: server.stream.tcp().local_addr().ok(),
            tls: server.stream.is_tls(),
        });
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
        waiters.retain(|w| !w.reply.is_closed());
        waiters.len()
    }

    fn pop_live_waiter(&self) -> Option<Waiter> {
        let mut waiters = self.waiters.borrow_mut();
        while let Some(w) = waiters.pop_front() {
            if !w.reply.is_closed() {
                return Some(w);
            }
        }
        None
    }

    /// When this worker's longest-waiting live client started waiting.
    fn oldest_wait(&self) -> Option<u64> {
        let mut waiters = self.waiters.borrow_mut();
        while waiters.front().is_some_and(|w| w.reply.is_closed()) {
            waiters.pop_front();
        }
        waiters.front().map(|w| w.since)
    }

    fn publish_oldest_wait(&self) {
        let oldest = self.oldest_wait().unwrap_or(0);
        // Writing only on change keeps the line shared (not bouncing
        // between cores) while nobody waits.
        if self.share.oldest_wait_us.load(Ordering::Relaxed) != oldest {
            self.share.oldest_wait_us.store(oldest, Ordering::Relaxed);
        }
    }

    /// Another worker whose client has waited longer than ours (by more
    /// than the slack), or than `local` when given.
    fn fairer_peer(&self, local: Option<u64>) -> Option<Arc<WorkerShare>> {
        let version = self.shared.shares_version.load(Ordering::Acquire);
        if self.peers.borrow().version != version {
            let shares = self.shared.shares.read().map(|s| s.clone()).unwrap_or_default();
            let shares = shares.into_iter().filter(|s| !Arc::ptr_eq(s, &self.share)).collect();
            *self.peers.borrow_mut() = Peers { version, shares };
        }
        let peers = self.peers.borrow();
        let mut best: Option<(u64, &Arc<WorkerShare>)> = None;
        for peer in &peers.shares {
            let since = peer.oldest_wait_us.load(Ordering::Relaxed);
            if since != 0 && best.is_none_or(|(b, _)| since < b) {
                best = Some((since, peer));
            }
        }
        let (since, peer) = best?;
        match local {
            Some(local) if since + FAIRNESS_SLACK_US >= local => None,
            _ => Some(peer.clone()),
        }
    }

    /// Gives a usable connection to whichever client has waited longest:
    /// here, on another worker, or nobody yet (then it stays idle here).
    /// `now`: the caller's reading of the clock (the connection's last use).
    fn hand_over(&self, mut server: Server, now: Tick) {
        // Nobody waits for this pool on any worker (the common case): the
        // connection goes straight to the idle list, without the fairness
        // bookkeeping below. A client that starts waiting on another worker
        // just now is served by the next release or its own new connection.
        if self.shared.waiting.load(Ordering::Relaxed) == 0 && self.waiters.borrow().is_empty() {
            server.last_used = now;
            add(&self.share.idle, 1);
            self.idle.borrow_mut().push(server);
            return;
        }
        if !self.shared.is_retired() {
            if let Some(peer) = self.fairer_peer(self.oldest_wait()) {
                self.donate(server, &peer);
                return;
            }
        }
        self.hand_over_here(server, now);
    }

    fn hand_over_here(&self, mut server: Server, now: Tick) {
        while let Some(w) = self.pop_live_waiter() {
            match w.reply.send(Ok(server)) {
                Ok(()) => {
                    self.publish_oldest_wait();
                    return;
                }
                Err(Ok(s)) => server = s,
                Err(Err(_)) => return,
            }
        }
        self.publish_oldest_wait();
        server.last_used = now;
        add(&self.share.idle, 1);
        self.idle.borrow_mut().push(server);
    }

    /// Hands idle connections to local waiters (after a fairer peer was served).
    fn serve_waiters(&self) {
        while self.live_waiters() > 0 {
            let Some(server) = self.idle.borrow_mut().pop() else { return };
            sub(&self.share.idle, 1);
            self.hand_over_here(server, Tick::now());
        }
    }

    /// Moves a connection to another worker's waiting client.
    fn donate(&self, server: Server, peer: &WorkerShare) {
        let pid = server.pid;
        match server.detach() {
            Detach::Moved(detached) => {
                if let Ok(mut inbox) = peer.inbox.lock() {
                    inbox.push(detached);
                }
                peer.arrived.notify_one();
            }
            // TLS cannot move: close it so the other worker may open one.
            Detach::Pinned(server) => self.discard(server),
            Detach::Lost => {
                self.shared.server_closed(pid);
                self.shared.release()
            }
        }
    }

    /// Takes in connections other workers handed over.
    fn adopt_arrivals(&self) {
        let arrived: Vec<Detached> = self.share.inbox.lock().map(|mut i| std::mem::take(&mut *i)).unwrap_or_default();
        for detached in arrived {
            match detached.attach() {
                // A waiter takes what it is handed without a check: a
                // connection that spoke in transit is almost always one the
                // server closed, so it goes rather than reaching a client.
                Ok(server) if server.spoke_while_idle() => self.discard(server),
                Ok(server) => self.hand_over_here(server, Tick::now()),
                Err(e) => {
                    tracing::warn!(pool = %self.shared.key, error = %e, "adopting a server connection failed");
                    self.shared.release();
                }
            }
        }
    }

    /// Returns a connection after a client is done with it. The caller has
    /// already made it clean (idle transaction status, session state reset)
    /// or marked it broken.
    pub fn checkin(&self, server: Server) {
        self.checkin_at(server, Tick::now());
    }

    /// [`checkin`](Self::checkin) with the caller's reading of the clock
    /// (a session has just read it to time the request): the hot path
    /// reads the clock once per request, not once per use.
    pub fn checkin_at(&self, server: Server, now: Tick) {
        sub(&self.share.active, 1);
        self.refresh();
        let expired = self.local.borrow().lifetime.is_some_and(|l| clock::reached(now, server.created, l))
            || self.outdated(&server);
        if server.broken || server.status != b'I' || expired || self.shared.is_retired() {
            self.discard(server);
            return;
        }
        self.hand_over(server, now);
    }

    /// Closes a connection and frees its capacity for whoever waits.
    pub fn discard(&self, mut server: Server) {
        self.shared.server_closed(server.pid);
        server.terminate();
        drop(server);
        self.shared.release();
    }

    /// Republishes which connections are idle here, when that changed.
    fn publish_idle_pids(&self) {
        let idle = self.idle.borrow();
        if let Ok(mut pids) = self.share.idle_pids.lock() {
            if pids.len() != idle.len() || pids.iter().zip(idle.iter()).any(|(p, s)| *p != s.pid) {
                *pids = idle.iter().map(|s| s.pid).collect();
            }
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(mut shares) = self.shared.shares.write() {
            shares.retain(|s| !Arc::ptr_eq(s, &self.share));
        }
        self.shared.shares_version.fetch_add(1, Ordering::Release);
        // Connections parked here or on their way here give their capacity back.
        for server in self.idle.get_mut().drain(..) {
            let mut server = server;
            self.shared.server_closed(server.pid);
            server.terminate();
            self.shared.release();
        }
        let arrived = self.share.inbox.lock().map(|mut i| std::mem::take(&mut *i)).unwrap_or_default();
        for _ in arrived {
            self.shared.release();
        }
    }
}

/// Counters in a worker's share have one writer, this thread: a load and a
/// store (plain moves) instead of a locked read-modify-write per update.
#[inline]
fn add<T: Counter>(counter: &T, n: u64) {
    counter.set(counter.get().wrapping_add(n));
}

#[inline]
fn sub<T: Counter>(counter: &T, n: u64) {
    counter.set(counter.get().wrapping_sub(n));
}

trait Counter {
    fn get(&self) -> u64;
    fn set(&self, v: u64);
}

impl Counter for std::sync::atomic::AtomicUsize {
    fn get(&self) -> u64 {
        self.load(Ordering::Relaxed) as u64
    }
    fn set(&self, v: u64) {
        self.store(v as usize, Ordering::Relaxed)
    }
}

impl Counter for std::sync::atomic::AtomicU64 {
    fn get(&self) -> u64 {
        self.load(Ordering::Relaxed)
    }
    fn set(&self, v: u64) {
        self.store(v, Ordering::Relaxed)
    }
}

/// Decrements the waiting counters however `checkout` ends.
struct WaitingGuard<'a>(&'a Pool);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.shared.waiting.fetch_sub(1, Ordering::Relaxed);
        sub(&self.0.share.waiting, 1);
    }
}

/// Per-worker housekeeping: adopting handed-over connections, giving idle
/// ones to other workers' waiting clients, idle timeout, lifetime, min size.
/// Ends when the pool is dropped.
async fn maintain(pool: Weak<Pool>) {
    let mut tick = rt::time::interval(Duration::from_millis(100));
    let mut last_idle_scan = Instant::now();
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let shared = &pool.shared;
        pool.adopt_arrivals();
        pool.publish_idle_pids();

        if shared.is_retired() {
            let drained: Vec<Server> = pool.idle.borrow_mut().drain(..).collect();
            for server in drained {
                sub(&pool.share.idle, 1);
                pool.discard(server);
            }
            continue;
        }

        // The host is full and another pool waits for room: give up an idle
        // connection nobody here needs.
        if pool.live_waiters() == 0 && shared.host.recently_starved() {
            let spare = pool.idle.borrow_mut().pop();
            if let Some(server) = spare {
                sub(&pool.share.idle, 1);
                pool.discard(server);
            }
        }

        // Idle here while another worker's clients wait: send them over.
        while pool.live_waiters() == 0 && pool.fairer_peer(None).is_some() {
            let Some(server) = pool.idle.borrow_mut().pop() else { break };
            sub(&pool.share.idle, 1);
            pool.hand_over(server, Tick::now());
        }

        // Admin RECONNECT: idle connections opened before it go now.
        pool.refresh();
        if pool.local.borrow().reconnect_before.is_some() && pool.idle.borrow().iter().any(|s| pool.outdated(s)) {
            let outdated: Vec<Server> = {
                let mut idle = pool.idle.borrow_mut();
                let (old, keep): (Vec<Server>, Vec<Server>) = idle.drain(..).partition(|s| pool.outdated(s));
                *idle = keep;
                old
            };
            for server in outdated {
                sub(&pool.share.idle, 1);
                pool.discard(server);
            }
        }

        if last_idle_scan.elapsed() >= Duration::from_secs(1) {
            last_idle_scan = Instant::now();
            expire_idle(&pool);
            // Keep this worker's share of min_pool_size open.
            let have = pool.idle_count() + pool.share.active.load(Ordering::Relaxed) + pool.opening.get();
            if have < pool.min_share && shared.try_reserve() {
                pool.opening.set(pool.opening.get() + 1);
                let result = pool.open().await;
                pool.opening.set(pool.opening.get() - 1);
                match result {
                    Ok(server) => pool.hand_over(server, Tick::now()),
                    Err(err) => {
                        shared.release();
                        tracing::warn!(pool = %shared.key, error = %err, "opening a min_pool_size connection failed");
                    }
                }
            }
        }
    }
}

/// Closes idle connections past `server_idle_timeout` (above the minimum)
/// or past `server_lifetime_ms`.
fn expire_idle(pool: &Pool) {
    let shared = &pool.shared;
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
        sub(&pool.share.idle, 1);
        pool.discard(server);
    }
}
