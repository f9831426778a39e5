//! The classifier's bounded cache: statement shape → decision.
//!
//! One per worker, owned by its caller, so there is no lock. Entries are found
//! by a keyed 64-bit hash of the shape and hold the shape itself: a lookup
//! whose hash matches but whose shape differs is a miss, and the newer shape
//! takes the slot. The hash is `crate::fasthash`'s with a random per-cache
//! key, not SipHash: it runs for every routed request, and resisting crafted
//! collisions would buy nothing — a client can send new shapes at will
//! anyway, and a collision costs a slot, never a wrong answer. Eviction is CLOCK (second chance): a hit marks its entry, and the
//! hand clears marks until it finds an unmarked entry to replace, so shapes
//! seen only once leave before shapes in use. Memory is bounded by
//! `capacity` entries of at most [`MAX_KEY_LEN`] bytes each.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// Longer shapes are not cached (they are classified on every use).
pub const MAX_KEY_LEN: usize = 4096;

pub(super) struct Cache<V> {
    index: HashMap<u64, usize, BuildHasherDefault<PassThrough>>,
    slots: Vec<Slot<V>>,
    hand: usize,
    capacity: usize,
    key: u64,
}

struct Slot<V> {
    hash: u64,
    key: Vec<u8>,
    value: V,
    referenced: bool,
}

impl<V: Copy> Cache<V> {
    pub(super) fn new(capacity: usize) -> Self {
        Cache {
            index: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), BuildHasherDefault::default()),
            slots: Vec::with_capacity(capacity.min(1 << 16)),
            hand: 0,
            capacity,
            key: RandomState::new().hash_one(0u64),
        }
    }

    pub(super) fn hash(&self, key: &[u8]) -> u64 {
        crate::fasthash::hash_bytes(self.key, key)
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The value stored for `key`, whose hash is `hash`.
    pub(super) fn get(&mut self, hash: u64, key: &[u8]) -> Option<V> {
        let slot = self.slots.get_mut(*self.index.get(&hash)?)?;
        if slot.key != key {
            return None;
        }
        slot.referenced = true;
        Some(slot.value)
    }

    /// Stores `value` for `key`, replacing an entry with the same hash or,
    /// when full, the next unmarked entry under the hand.
    pub(super) fn insert(&mut self, hash: u64, key: &[u8], value: V) {
        if self.capacity == 0 || key.len() > MAX_KEY_LEN {
            return;
        }
        let at = match self.index.get(&hash) {
            Some(&at) => at,
            None if self.slots.len() < self.capacity => {
                self.slots.push(Slot { hash, key: key.to_vec(), value, referenced: false });
                self.index.insert(hash, self.slots.len() - 1);
                return;
            }
            None => self.victim(),
        };
        let Some(slot) = self.slots.get_mut(at) else { return };
        if slot.hash != hash {
            self.index.remove(&slot.hash);
            self.index.insert(hash, at);
        }
        slot.hash = hash;
        slot.key.clear();
        slot.key.extend_from_slice(key);
        slot.value = value;
        slot.referenced = false;
    }

    /// Advances the hand past marked entries (clearing their marks) and
    /// returns the first unmarked one. Ends within two turns.
    fn victim(&mut self) -> usize {
        loop {
            let at = self.hand;
            self.hand = (self.hand + 1) % self.slots.len().max(1);
            match self.slots.get_mut(at) {
                Some(slot) if slot.referenced => slot.referenced = false,
                _ => return at,
            }
        }
    }
}

/// The index's keys are already hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)) ^ (self.0 >> 56);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
