//! Statistics the query path records and the admin console, `/metrics` and
//! the HTTP API read.
//!
//! Recording is worker-local: every counter lives in one worker's share of a
//! pool ([`crate::backend::pool::WorkerShare`]) and has exactly one writer,
//! that worker's thread, so an update is a relaxed load and store on a cache
//! line no other thread writes — no locked read-modify-write, no lock, no
//! label lookup. Readers (a scrape, `SHOW STATS`) sum the shares when asked.
//! The only lock is taken on an error reply, to count it by SQLSTATE class.

pub mod clients;
mod session;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use session::SessionStats;

/// Upper bounds (µs) of the query-duration histogram buckets; a last,
/// implicit bucket is +Inf. Spans pooled OLTP (sub-millisecond) to reports.
pub const BUCKETS_US: [u64; 14] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000, 30_000_000];

/// One worker's counters for one pool. Written only by that worker's thread.
#[derive(Default)]
pub struct PoolStats {
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    /// Bytes received from clients (forwarded to servers).
    pub received: AtomicU64,
    /// Bytes sent to clients (from servers).
    pub sent: AtomicU64,
    pub transaction_us: AtomicU64,
    pub query_us: AtomicU64,
    /// Per-bucket (not cumulative) query counts; the last is +Inf.
    pub buckets: [AtomicU64; BUCKETS_US.len() + 1],
    /// Error replies by SQLSTATE class (first two characters).
    errors: Mutex<BTreeMap<[u8; 2], u64>>,
}

/// Adds to a counter this thread alone writes: a plain load and store.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl PoolStats {
    #[inline]
    pub(crate) fn record_query(&self, us: u64) {
        bump(&self.queries, 1);
        bump(&self.query_us, us);
        let bucket = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len());
        bump(&self.buckets[bucket], 1);
    }

    pub(crate) fn record_error(&self, code: &str) {
        let b = code.as_bytes();
        let class = [b.first().copied().unwrap_or(b'?'), b.get(1).copied().unwrap_or(b'?')];
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(class).or_default() += 1;
        }
    }

    /// Adds this worker's counts to `into`.
    pub fn add_to(&self, into: &mut Totals) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        into.transactions += get(&self.transactions);
        into.queries += get(&self.queries);
        into.received += get(&self.received);
        into.sent += get(&self.sent);
        into.transaction_us += get(&self.transaction_us);
        into.query_us += get(&self.query_us);
        for (sum, b) in into.buckets.iter_mut().zip(&self.buckets) {
            *sum += get(b);
        }
        if let Ok(errors) = self.errors.lock() {
            for (class, n) in errors.iter() {
                *into.errors.entry(String::from_utf8_lossy(class).into_owned()).or_default() += n;
            }
        }
    }
}

/// Counters of one pool summed over workers, plus the gauges of its shares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub transactions: u64,
    pub queries: u64,
    pub received: u64,
    pub sent: u64,
    pub transaction_us: u64,
    pub query_us: u64,
    pub buckets: [u64; BUCKETS_US.len() + 1],
    pub errors: BTreeMap<String, u64>,
    /// Server connections serving a client.
    pub active: u64,
    /// Idle server connections.
    pub idle: u64,
    /// Clients waiting for a server connection.
    pub waiting: u64,
    pub checkouts: u64,
    /// Total time clients waited for a server connection.
    pub wait_us: u64,
}

impl Totals {
    /// Adds another pool's totals (for per-database sums).
    pub fn merge(&mut self, other: &Totals) {
        self.transactions += other.transactions;
        self.queries += other.queries;
        self.received += other.received;
        self.sent += other.sent;
        self.transaction_us += other.transaction_us;
        self.query_us += other.query_us;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        for (class, n) in &other.errors {
            *self.errors.entry(class.clone()).or_default() += n;
        }
        self.active += other.active;
        self.idle += other.idle;
        self.waiting += other.waiting;
        self.checkouts += other.checkouts;
        self.wait_us += other.wait_us;
    }
}

/// How often totals are sampled for the `avg_*` columns of SHOW STATS.
pub const STATS_PERIOD: Duration = Duration::from_secs(15);

/// The last two samples of per-database totals: `avg_*` figures are the
/// rates and averages between them, as PgBouncer's are over its stats period.
#[derive(Default)]
pub struct Sampler {
    previous: Option<(Instant, BTreeMap<String, Totals>)>,
    last: Option<(Instant, BTreeMap<String, Totals>)>,
}

/// Rates per second and averages (µs) over the last stats period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Averages {
    pub xact_count: u64,
    pub query_count: u64,
    pub recv: u64,
    pub sent: u64,
    pub xact_time: u64,
    pub query_time: u64,
    pub wait_time: u64,
}

impl Sampler {
    pub fn record(&mut self, at: Instant, totals: BTreeMap<String, Totals>) {
        self.previous = self.last.take();
        self.last = Some((at, totals));
    }

    /// Averages of one database; zero until two samples exist.
    pub fn averages(&self, database: &str) -> Averages {
        let (Some((t0, before)), Some((t1, after))) = (&self.previous, &self.last) else {
            return Averages::default();
        };
        let secs = t1.saturating_duration_since(*t0).as_secs().max(1);
        let zero = Totals::default();
        let a = before.get(database).unwrap_or(&zero);
        let Some(b) = after.get(database) else { return Averages::default() };
        let d = |x: u64, y: u64| y.saturating_sub(x);
        let per = |total: u64, count: u64| total.checked_div(count).unwrap_or(0);
        let xacts = d(a.transactions, b.transactions);
        let queries = d(a.queries, b.queries);
        Averages {
            xact_count: xacts / secs,
            query_count: queries / secs,
            recv: d(a.received, b.received) / secs,
            sent: d(a.sent, b.sent) / secs,
            xact_time: per(d(a.transaction_us, b.transaction_us), xacts),
            query_time: per(d(a.query_us, b.query_us), queries),
            wait_time: per(d(a.wait_us, b.wait_us), d(a.checkouts, b.checkouts)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_land_in_the_first_bucket_that_holds_them() {
        let stats = PoolStats::default();
        for us in [0, 100, 101, 30_000_000, 30_000_001] {
            stats.record_query(us);
        }
        let mut t = Totals::default();
        stats.add_to(&mut t);
        assert_eq!(t.queries, 5);
        assert_eq!(t.buckets[0], 2);
        assert_eq!(t.buckets[1], 1);
        assert_eq!(t.buckets[BUCKETS_US.len() - 1], 1);
        assert_eq!(t.buckets[BUCKETS_US.len()], 1);
    }

    #[test]
    fn errors_count_by_class() {
        let stats = PoolStats::default();
        stats.record_error("42P01");
        stats.record_error("42601");
        stats.record_error("53300");
        stats.record_error("");
        let mut t = Totals::default();
        stats.add_to(&mut t);
        assert_eq!(t.errors.get("42"), Some(&2));
        assert_eq!(t.errors.get("53"), Some(&1));
        assert_eq!(t.errors.get("??"), Some(&1));
    }
}
