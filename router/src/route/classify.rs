//! Read/write splitting: whether a statement may run on a replica, and where
//! a session's statement goes.
//!
//! Two steps, both pure:
//! - [`Classifier::classify`] reads a query string (a simple Query, or the
//!   text of a Parse) and says what it does: read, write, or neither
//!   (session and transaction control), plus the transaction and routing
//!   facts the session must track. It knows nothing about the session.
//! - [`route`] combines that [`Decision`] with the session's facts (open
//!   transaction, pinned role, a replica-only user, sticky transactions) into
//!   a [`Target`], or a read-only violation.
//!
//! # Why the real parser, and why a cache
//!
//! Whether a statement writes depends on details a keyword scan gets wrong:
//! a `FOR UPDATE` in a subquery, a data-modifying CTE, `nextval()` nested in
//! an expression, `COPY ... FROM` versus `COPY ... TO`, `EXPLAIN ANALYZE` of
//! an `UPDATE`. So decisions are made on PostgreSQL's own parse tree
//! (libpg_query through the `pg_query` crate). A parse costs 5 µs for a
//! short SELECT and tens of µs for longer statements, more than the router's
//! whole budget per transaction, so it runs only on a cache miss: the cache is keyed on the statement's shape, its text with
//! literals stripped by our own light lexer ([`super::normalize`]), so
//! `... WHERE aid = 123` and `... WHERE aid = 456` share one entry. The cache
//! is bounded and per worker (a plain struct its caller owns, no locks);
//! [`Classifier::hit_rate`] reports how well it does, and a
//! [`CacheCounters`] block publishes the same figures to other threads
//! (metrics, admin console) without a lock.
//!
//! # Rules
//!
//! May go to a replica ([`Access::Read`]): `SELECT`/`VALUES`/`TABLE` without
//! a locking clause (`FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`,
//! `FOR KEY SHARE`) anywhere, without `INTO`, without a data-modifying CTE and
//! without a call to a writing function anywhere in the tree; `SHOW`;
//! `EXPLAIN` of a read; `COPY ... TO STDOUT` of a table or of a read;
//! `DECLARE` of a cursor over a read (without `WITH HOLD`).
//!
//! Must go to the primary ([`Access::Write`]): `INSERT`, `UPDATE`, `DELETE`,
//! `MERGE`, all DDL, `COPY ... FROM`, server-side `COPY ... TO` a file or
//! program, `CALL`, `DO`, `LOCK`, `LISTEN`/`UNLISTEN`/`NOTIFY` (refused on a
//! standby), `VACUUM`, `ANALYZE`, `CHECKPOINT`, `COMMIT/ROLLBACK PREPARED`,
//! `EXPLAIN` of a write (even without `ANALYZE`), any statement kind not
//! listed here, and a read that calls a writing function:
//! `nextval`, `setval`, `currval`, `lastval` (sequence state lives in the
//! primary session), `pg_advisory_*`, `pg_try_advisory_*`, `lo_*`,
//! `lowrite`, `pg_notify`, `txid_current`, `pg_current_xact_id`, and every
//! function listed as writing in the configuration (a bare name matches in
//! any schema, `schema.name` only that qualified call).
//!
//! Unsure, so primary ([`Access::Unknown`]): text that does not parse,
//! `PREPARE` and `EXECUTE` (the prepared statement is not visible here).
//!
//! Neither ([`Access::Any`]): transaction control, `SET`/`RESET`, `DISCARD`,
//! `DEALLOCATE`, `FETCH`/`MOVE`/`CLOSE`, `SET CONSTRAINTS`: these run
//! wherever the session or its transaction is.
//!
//! A string of several statements is a write if any of them writes.
//!
//! # Overrides
//!
//! - `SET pgdog.role = 'primary' | 'replica' | 'auto'` (also `TO`, unquoted,
//!   any case; `RESET pgdog.role`, `SET pgdog.role TO DEFAULT`, `RESET ALL`
//!   and `DISCARD ALL` mean `auto`) pins the session: reported as
//!   [`Decision::role`], applied by the caller to [`SessionFacts::pinned`].
//!   `SET LOCAL pgdog.role` is read like `SET`. Because the value decides,
//!   these statements are parsed every time and never cached.
//! - A leading comment `/* pgdog_role: replica */` or
//!   `/* pgdog_role: primary */` (also `--` comments, `=` for `:`) routes that
//!   one statement: [`Decision::hint`]. A hint inside an open transaction that
//!   already runs somewhere cannot move it.
//!
//! A hint or pin sends even a write to a replica, where PostgreSQL refuses it:
//! the client asked for that server explicitly.
//!
//! # Not covered
//!
//! Writes hidden behind views, rules, triggers or functions not listed in the
//! configuration look like reads; list such functions, or use a hint.
//! `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY` and
//! `default_transaction_read_only` are not tracked: a plain `BEGIN` after them
//! is treated as read-write.

mod analyze;
mod cache;
mod counters;
mod hint;
#[cfg(test)]
mod tests;
mod walk;

pub use cache::MAX_KEY_LEN;
pub use counters::{CacheCounters, CacheFigures};

use std::sync::Arc;

use super::normalize::normalize;
use cache::Cache;

/// Which kind of server a statement is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Primary,
    Replica,
}

/// What a statement string needs from a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Session or transaction control: runs wherever the session is.
    Any,
    /// A read: a replica may serve it.
    Read,
    /// Not known (parse failure, `EXECUTE`, ...): the primary, to be safe;
    /// a replica-only user goes to a replica, which refuses writes itself.
    Unknown,
    /// A write: the primary.
    Write,
}

/// A transaction's access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnKind {
    ReadWrite,
    /// `BEGIN READ ONLY`, `START TRANSACTION READ ONLY`, or a transaction
    /// that ran `SET TRANSACTION READ ONLY` first: may run whole on a replica.
    ReadOnly,
}

/// A `SET pgdog.role` (or a reset of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleSetting {
    /// `'primary'` or `'replica'`: every statement of the session goes there.
    Pin(Target),
    /// `'auto'`, `DEFAULT`, `RESET`: statements are routed by what they do.
    Auto,
    /// Any other value: the caller answers 22023 (invalid_parameter_value).
    Invalid,
}

/// What a statement string does, as far as routing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub access: Access,
    /// The string leaves a transaction of this kind open that it began
    /// (`BEGIN`, `BEGIN READ ONLY`, `START TRANSACTION ...`; a
    /// `SET TRANSACTION` after the `BEGIN` in the same string is folded in).
    pub begins: Option<TxnKind>,
    /// The string ends the transaction open before it (`COMMIT`, `END`,
    /// `ROLLBACK`, `ABORT`, `PREPARE TRANSACTION`). `... AND CHAIN` does not
    /// count: the next transaction continues on the same server.
    pub ends_txn: bool,
    /// `SET TRANSACTION READ ONLY | READ WRITE` or
    /// `SET transaction_read_only = ...` for the transaction already open.
    pub txn_access: Option<TxnKind>,
    /// A leading `pgdog_role` comment.
    pub hint: Option<Target>,
    /// A `SET pgdog.role` in the string (the last one wins).
    pub role: Option<RoleSetting>,
}

impl Decision {
    /// A decision with no flags.
    pub const fn of(access: Access) -> Decision {
        Decision { access, begins: None, ends_txn: false, txn_access: None, hint: None, role: None }
    }
}

/// Classifies statement strings, caching decisions by statement shape. One
/// per worker; rebuild it when the writing-functions list changes.
pub struct Classifier {
    cache: Cache<Decision>,
    capacity: usize,
    shape: Vec<u8>,
    writers: Vec<String>,
    counters: Arc<CacheCounters>,
}

impl Classifier {
    /// A classifier caching at most `capacity` shapes (0 disables the cache),
    /// treating `writing_functions` (names or `schema.name`, any case) as
    /// writes in addition to the built-in list.
    pub fn new(capacity: usize, writing_functions: &[String]) -> Self {
        Self::with_counters(capacity, writing_functions, Arc::default())
    }

    /// [`Classifier::new`] counting into `counters`, the worker's block that
    /// other threads read (and that outlives this classifier). Only one
    /// thread may use classifiers of one block.
    pub fn with_counters(capacity: usize, writing_functions: &[String], counters: Arc<CacheCounters>) -> Self {
        counters.attach(capacity);
        Classifier {
            cache: Cache::new(capacity),
            capacity,
            shape: Vec::with_capacity(256),
            writers: writing_functions.iter().map(|f| f.to_ascii_lowercase()).collect(),
            counters,
        }
    }

    /// What `sql` (one or more statements) does. Allocates nothing when the
    /// shape is cached.
    pub fn classify(&mut self, sql: &[u8]) -> Decision {
        let hint = hint::leading_hint(sql);
        if !normalize(sql, &mut self.shape) {
            // An unterminated literal: the server rejects the whole string.
            self.counters.miss();
            return Decision { hint, ..Decision::of(Access::Unknown) };
        }
        let hash = self.cache.hash(&self.shape);
        if let Some(d) = self.cache.get(hash, &self.shape) {
            self.counters.hit();
            return Decision { hint, ..d };
        }
        self.counters.miss();
        let (d, cacheable) = analyze::analyze(sql, &self.writers);
        if cacheable {
            let before = self.cache.len();
            self.cache.insert(hash, &self.shape, d);
            if self.cache.len() > before {
                self.counters.entry_added();
            }
        }
        Decision { hint, ..d }
    }

    /// Cache hits and misses so far, counted in this classifier's block (so
    /// including those of the classifiers it replaced). A string that is
    /// never cached, such as `SET pgdog.role`, counts as a miss each time.
    pub fn hit_rate(&self) -> (u64, u64) {
        let f = self.counters.figures();
        (f.hits, f.misses)
    }

    /// How many shapes are cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

impl Drop for Classifier {
    /// Its shapes and room leave the worker's figures with it.
    fn drop(&mut self) {
        self.counters.detach(self.capacity, self.cache.len());
    }
}

/// The session's open transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Txn {
    pub kind: TxnKind,
    /// Where it runs, once a statement of it has been sent; `None` while the
    /// `BEGIN` is held back by the caller.
    pub on: Option<Target>,
}

/// What [`route`] needs to know about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFacts {
    /// The explicit transaction open before this statement.
    pub txn: Option<Txn>,
    /// A `SET pgdog.role` pin.
    pub pinned: Option<Target>,
    /// The user may only use replicas (writes are refused with 25006).
    pub force_replica: bool,
    /// Every statement of a read-write transaction goes to the primary
    /// (the default). Off, a string that begins a read-write transaction is
    /// routed by what its statements do; the session keeps the transaction
    /// on that server, and defers a lone `BEGIN` to the string after it.
    pub sticky_transactions: bool,
}

/// A write by a replica-only user: SQLSTATE 25006 (read_only_sql_transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", ReadOnlyViolation::MESSAGE)]
pub struct ReadOnlyViolation;

impl ReadOnlyViolation {
    pub const SQLSTATE: &'static str = "25006";
    pub const MESSAGE: &'static str = "cannot execute a write statement: this user may only use replicas";
}

/// Where a statement goes. In order:
/// 1. a replica-only user: a write is refused, anything else goes to a replica;
/// 2. an open transaction that already runs on a server (read-only, or with
///    sticky transactions) stays there;
/// 3. a leading-comment hint, then the session's pin;
/// 4. a read-only transaction (open, begun by this string, or made so by
///    `SET TRANSACTION READ ONLY` before it ran anything) goes to a replica;
///    a read-write one, with sticky transactions, to the primary;
/// 5. otherwise by what the statement does: a read to a replica, everything
///    else to the primary.
pub fn route(d: &Decision, s: &SessionFacts) -> Result<Target, ReadOnlyViolation> {
    if s.force_replica {
        return if d.access == Access::Write { Err(ReadOnlyViolation) } else { Ok(Target::Replica) };
    }
    if let Some(Txn { kind, on: Some(on) }) = s.txn {
        if kind == TxnKind::ReadOnly || s.sticky_transactions {
            return Ok(on);
        }
    }
    if let Some(t) = d.hint.or(s.pinned) {
        return Ok(t);
    }
    let kind = match s.txn {
        Some(t) => Some(d.txn_access.unwrap_or(t.kind)),
        None => d.begins,
    };
    match (kind, d.access) {
        (Some(TxnKind::ReadOnly), _) => Ok(Target::Replica),
        (Some(TxnKind::ReadWrite), _) if s.sticky_transactions => Ok(Target::Primary),
        (_, Access::Read) => Ok(Target::Replica),
        _ => Ok(Target::Primary),
    }
}

/// The session's transaction after `d` ran. `sent` is where the string went,
/// or `None` when the caller answered it itself (a held-back `BEGIN`).
pub fn next_txn(txn: Option<Txn>, d: &Decision, sent: Option<Target>) -> Option<Txn> {
    let mut txn = txn;
    if d.ends_txn {
        txn = None;
    }
    match (&mut txn, d.begins) {
        (None, Some(kind)) => Some(Txn { kind, on: sent }),
        (Some(t), _) => {
            if t.on.is_none() {
                if let Some(kind) = d.txn_access {
                    t.kind = kind;
                }
                t.on = sent;
            }
            txn
        }
        (None, None) => None,
    }
}
