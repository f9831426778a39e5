//! A fast keyed hash for the hash maps the hot path looks up on every
//! request: the classifier's cache of query shapes, a client's prepared
//! statements by name, a server connection's statements by id.
//!
//! Why not std's SipHash: it costs a few hundred instructions per short key,
//! several times per request, and what it resists — crafted collisions —
//! matters little here: every key is hashed with a random per-process key,
//! the maps are per worker or per client, and a client able to send new
//! query shapes or statement names at will gains nothing from collisions
//! that it could not get by sending more of them. The mix is FxHash's
//! multiply-rotate over 8-byte words, with a finalizer so the low bits
//! (hashbrown's bucket index) depend on every byte.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::OnceLock;

const K: u64 = 0x517c_c1b7_2722_0a95;

#[inline]
fn mix(h: u64, word: u64) -> u64 {
    (h.rotate_left(5) ^ word).wrapping_mul(K)
}

/// Hashes `bytes` with `key`: length first, then the bytes as
/// little-endian words (the last one zero-padded), then the finalizer.
pub fn hash_bytes(key: u64, bytes: &[u8]) -> u64 {
    finish(absorb(mix(key, bytes.len() as u64), bytes))
}

#[inline]
fn absorb(mut h: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = mix(h, u64::from_le_bytes(b));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(b));
    }
    h
}

#[inline]
fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The process's random key.
fn process_key() -> u64 {
    static KEY: OnceLock<u64> = OnceLock::new();
    *KEY.get_or_init(|| RandomState::new().hash_one(0u64))
}

/// `BuildHasher` for `HashMap`s: every map of the process shares its key.
#[derive(Clone, Copy, Debug)]
pub struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        FastState(process_key())
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

pub struct FastHasher(u64);

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0 = absorb(mix(self.0, bytes.len() as u64), bytes);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0, n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = mix(self.0, n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        finish(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_every_byte_the_length_and_the_key() {
        let base = b"select abalance from pgbench_accounts where aid = ?".to_vec();
        let h = hash_bytes(7, &base);
        for i in 0..base.len() {
            let mut other = base.clone();
            other[i] ^= 1;
            assert_ne!(hash_bytes(7, &other), h, "byte {i}");
        }
        // Zero padding of the last word must not hide a length difference.
        assert_ne!(hash_bytes(7, b"a"), hash_bytes(7, b"a\0"));
        assert_ne!(hash_bytes(7, b""), hash_bytes(7, b"\0"));
        assert_ne!(hash_bytes(8, &base), h);
        // Low bits (a bucket) vary across similar keys.
        let buckets: std::collections::HashSet<u64> =
            (0..64).map(|i| hash_bytes(7, format!("select c{i} from t").as_bytes()) & 63).collect();
        assert!(buckets.len() > 32, "{}", buckets.len());
        let ids: std::collections::HashSet<u64> = (0..64u64).map(|i| FastState(7).hash_one(i) & 63).collect();
        assert!(ids.len() > 32, "{}", ids.len());
    }

    #[test]
    fn works_as_a_map_hasher() {
        let mut m: std::collections::HashMap<Box<[u8]>, u32, FastState> = Default::default();
        for i in 0..1000u32 {
            m.insert(format!("stmt_{i}").into_bytes().into(), i);
        }
        for i in 0..1000u32 {
            assert_eq!(m.get(format!("stmt_{i}").as_bytes()), Some(&i));
        }
    }
}
