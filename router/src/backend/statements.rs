//! Named prepared statements in transaction mode.
//!
//! A client's statement names mean nothing to the next server connection
//! it lands on, and two clients may use the same name for different
//! queries. So every distinct statement (query text plus parameter types)
//! of a pool gets one router-chosen name, `__pgdog_<id>`, shared by all its
//! clients; each server connection remembers which of those it has
//! prepared, and the session prepares what is missing before it is used.
//!
//! `StatementRegistry` (per pool) interns statements; `ServerStatements`
//! (per server connection) is a bounded cache of what that connection has.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// One distinct statement of a pool, under its router-chosen name.
#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    /// The server-side name, without the NUL.
    pub name: Box<[u8]>,
    /// A complete Parse message (tag and length included) that prepares
    /// this statement under `name`: injected as is when a connection lacks it.
    pub parse: Box<[u8]>,
}

impl Statement {
    /// The query text and parameter types part of the Parse body.
    pub fn definition(&self) -> &[u8] {
        &self.parse[5 + self.name.len() + 1..]
    }
}

/// The statements of one pool, keyed by query text plus parameter types.
/// Entries live while a client holds them: the map keeps weak references
/// and sheds dead ones as it grows, so applications that build unique SQL
/// do not grow it without bound.
#[derive(Debug, Default)]
pub struct StatementRegistry {
    next_id: AtomicU64,
    map: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    by_definition: HashMap<Box<[u8]>, Weak<Statement>, crate::fasthash::FastState>,
    /// Size at which dead entries are swept next.
    sweep_at: usize,
}

impl StatementRegistry {
    /// The pool's statement for `definition` (the Parse body after the
    /// statement name: query, NUL, parameter count and types).
    pub fn intern(&self, definition: &[u8]) -> Arc<Statement> {
        let mut reg = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = reg.by_definition.get(definition).and_then(Weak::upgrade) {
            return live;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let statement = Arc::new(Statement::new(id, definition));
        if reg.by_definition.len() >= reg.sweep_at {
            reg.by_definition.retain(|_, w| w.strong_count() > 0);
            reg.sweep_at = (reg.by_definition.len() * 2).max(1024);
        }
        reg.by_definition.insert(definition.into(), Arc::downgrade(&statement));
        statement
    }

    /// Live and dead entries, for statistics and tests.
    pub fn len(&self) -> usize {
        self.map.lock().map(|r| r.by_definition.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Statement {
    fn new(id: u64, definition: &[u8]) -> Self {
        let name = format!("__pgdog_{id}").into_bytes().into_boxed_slice();
        let len = 4 + name.len() + 1 + definition.len();
        let mut parse = Vec::with_capacity(1 + len);
        parse.push(b'P');
        parse.extend_from_slice(&(len as u32).to_be_bytes());
        parse.extend_from_slice(&name);
        parse.push(0);
        parse.extend_from_slice(definition);
        Self { id, name, parse: parse.into_boxed_slice() }
    }
}

/// What one server connection has prepared, by statement id, with the
/// least recently used evicted beyond the pool's `max_prepared_statements`.
#[derive(Debug, Default)]
pub struct ServerStatements {
    /// Looked up on every Bind and Describe: the fast hash (`crate::fasthash`).
    slots: HashMap<u64, Slot, crate::fasthash::FastState>,
    tick: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    last_used: u64,
    /// False while the Parse is in flight: later messages of the same
    /// pipeline must not prepare it again, but an error may still undo it.
    confirmed: bool,
}

/// Whether a connection has a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Has {
    Yes,
    No,
}

impl ServerStatements {
    /// Whether the connection has (or is preparing) `id`; marks it used.
    #[inline]
    pub fn touch(&mut self, id: u64) -> Has {
        self.tick += 1;
        match self.slots.get_mut(&id) {
            Some(slot) => {
                slot.last_used = self.tick;
                Has::Yes
            }
            None => Has::No,
        }
    }

    /// A Parse for `id` was sent.
    pub fn begin(&mut self, id: u64) {
        self.tick += 1;
        self.slots.insert(id, Slot { last_used: self.tick, confirmed: false });
    }

    /// The server answered ParseComplete for `id`.
    pub fn confirm(&mut self, id: u64) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.confirmed = true;
        }
    }

    /// The Parse for `id` was skipped or failed, or the statement was closed.
    pub fn forget(&mut self, id: u64) {
        self.slots.remove(&id);
    }

    /// The server dropped all its statements (DEALLOCATE ALL, DISCARD ALL).
    pub fn clear(&mut self) {
        self.slots.clear();
    }

    /// The least recently used confirmed statement to close before one more
    /// is prepared, when the connection is at `capacity`. Statements still
    /// being prepared are never chosen: the pipeline that sent them needs them.
    pub fn evict(&mut self, capacity: usize) -> Option<u64> {
        if self.slots.len() < capacity {
            return None;
        }
        let victim =
            self.slots.iter().filter(|(_, s)| s.confirmed).min_by_key(|(_, s)| s.last_used).map(|(id, _)| *id)?;
        self.slots.remove(&victim);
        Some(victim)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// The server-side name of statement `id`, for a Close the router injects
/// when it evicts (the statement itself may be gone from the registry).
pub fn server_name(id: u64) -> String {
    format!("__pgdog_{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(query: &str, types: &[u32]) -> Vec<u8> {
        let mut d = query.as_bytes().to_vec();
        d.push(0);
        d.extend_from_slice(&(types.len() as u16).to_be_bytes());
        for t in types {
            d.extend_from_slice(&t.to_be_bytes());
        }
        d
    }

    #[test]
    fn same_text_and_types_share_one_statement() {
        let reg = StatementRegistry::default();
        let a = reg.intern(&definition("SELECT $1", &[23]));
        let b = reg.intern(&definition("SELECT $1", &[23]));
        let c = reg.intern(&definition("SELECT $1", &[25]));
        let d = reg.intern(&definition("SELECT $1 ", &[23]));
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_ne!(a.id, d.id);
        assert_eq!(&*a.name, format!("__pgdog_{}", a.id).as_bytes());
    }

    #[test]
    fn parse_message_is_well_formed() {
        let reg = StatementRegistry::default();
        let def = definition("SELECT 1", &[]);
        let s = reg.intern(&def);
        let (tag, total) = crate::protocol::frame::header(&s.parse).unwrap().unwrap();
        assert_eq!(tag, b'P');
        assert_eq!(total, s.parse.len());
        assert_eq!(s.definition(), &def[..]);
        assert_eq!(&s.parse[5..5 + s.name.len()], &*s.name);
    }

    #[test]
    fn dead_statements_are_swept_and_never_reuse_an_id() {
        let reg = StatementRegistry::default();
        let first = reg.intern(&definition("SELECT 0", &[])).id;
        for i in 1..3000 {
            drop(reg.intern(&definition(&format!("SELECT {i}"), &[])));
        }
        assert!(reg.len() < 3000, "dead entries swept, {} left", reg.len());
        let again = reg.intern(&definition("SELECT 0", &[]));
        assert!(again.id > first, "a statement that died gets a new id");
    }

    #[test]
    fn cache_evicts_least_recently_used_confirmed() {
        let mut s = ServerStatements::default();
        for id in 1..=3 {
            s.begin(id);
            s.confirm(id);
        }
        assert_eq!(s.evict(4), None);
        assert_eq!(s.touch(1), Has::Yes);
        assert_eq!(s.evict(3), Some(2));
        assert_eq!(s.touch(2), Has::No);
        s.begin(4);
        // 4 is in flight and 3 is the oldest confirmed.
        assert_eq!(s.evict(3), Some(3));
        assert_eq!(s.evict(2), Some(1));
        assert_eq!(s.evict(1), None, "only the in-flight one is left");
        s.forget(4);
        assert!(s.is_empty());
    }
}
