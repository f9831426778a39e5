//! The classifier's cache figures, readable from other threads.
//!
//! A worker's classifier is its own (no lock), but the metrics endpoint and
//! the admin console run on the control thread. So the classifier counts
//! into a block of atomics that only its worker's thread writes: an update
//! is a relaxed load and store, not a locked read-modify-write, on a cache
//! line no other thread writes — the pattern of the pools' statistics
//! (`crate::stats`). Readers load the fields whenever they like; the figures
//! of one block may be a few updates apart from each other, which a scrape
//! does not mind.
//!
//! The block belongs to the worker, not to one classifier: a reload that
//! rebuilds the classifier hands the same block to the new one, so `hits`
//! and `misses` never go back (Prometheus counters). `entries` and
//! `capacity` are the sums over the worker's live classifiers — sessions
//! that logged in before such a reload keep the old one until they end —
//! so they say what the worker's caches hold and may hold in memory.

use std::sync::atomic::{AtomicU64, Ordering};

/// One worker's figures. Written only by that worker's thread.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CacheCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    entries: AtomicU64,
    capacity: AtomicU64,
}

/// What a reader sees of one block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheFigures {
    pub hits: u64,
    pub misses: u64,
    /// Shapes cached now.
    pub entries: u64,
    /// Shapes the caches may hold (`query_cache_size` per live classifier).
    pub capacity: u64,
}

impl CacheFigures {
    /// `hits / (hits + misses)`, or `None` before the first lookup.
    pub fn hit_rate(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }

    /// Adds another worker's figures.
    pub fn merge(&mut self, other: &CacheFigures) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.entries += other.entries;
        self.capacity += other.capacity;
    }
}

/// Changes a counter this thread alone writes: a plain load and store.
#[inline]
fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

#[inline]
fn sub(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).saturating_sub(n), Ordering::Relaxed);
}

impl CacheCounters {
    #[inline]
    pub(super) fn hit(&self) {
        add(&self.hits, 1);
    }

    #[inline]
    pub(super) fn miss(&self) {
        add(&self.misses, 1);
    }

    pub(super) fn entry_added(&self) {
        add(&self.entries, 1);
    }

    /// A classifier of this capacity starts using the block.
    pub(super) fn attach(&self, capacity: usize) {
        add(&self.capacity, capacity as u64);
    }

    /// A classifier holding `entries` shapes of `capacity` is dropped.
    pub(super) fn detach(&self, capacity: usize, entries: usize) {
        sub(&self.capacity, capacity as u64);
        sub(&self.entries, entries as u64);
    }

    /// The current figures (any thread).
    pub fn figures(&self) -> CacheFigures {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheFigures {
            hits: get(&self.hits),
            misses: get(&self.misses),
            entries: get(&self.entries),
            capacity: get(&self.capacity),
        }
    }
}
