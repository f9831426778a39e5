//! Read/write splitting for one session: which pool, the primary's or a
//! replica's, serves the client's next request. Also where writes go after
//! a failover: the primary is whichever host the database's topology names
//! writer now (`backend::topology`), so every session of a database with
//! more than one host has a Splitter, splitting reads or not.
//!
//! The decision is `route::classify`'s (pure); this module holds what it
//! needs from the session (the `SET pgdog.role` pin, the time of the last
//! write for read-your-writes) and picks a replica by the configured
//! balancing, skipping banned and lagging ones (see `backend::health`). A transaction-mode session binds a
//! server for a whole transaction, so a decision is only ever made at a
//! request boundary outside a transaction.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::backend::pool::Pool;
use crate::config::LoadBalancing;
use crate::route::classify::{self, Access, Classifier, Decision, RoleSetting, SessionFacts, Target, TxnKind};

/// Settings from `[query_routing]` and the user, fixed at login.
#[derive(Debug, Clone)]
pub struct SplitSettings {
    /// `read_write_split`: reads may go to replicas. Without it every
    /// request goes to the primary.
    pub split_reads: bool,
    pub primary_reads: bool,
    pub balancing: LoadBalancing,
    pub read_your_writes: Option<Duration>,
    pub force_replica: bool,
    pub sticky_transactions: bool,
    /// How long reads avoid a replica whose server could not be reached
    /// (`ban_time_ms`).
    pub ban_time: Duration,
    /// `replica_fallback = "error"`: a read with replicas configured but
    /// none eligible fails instead of going to the primary.
    pub fallback_error: bool,
}

pub struct Splitter {
    /// The pools of every host of the database (this user's).
    hosts: Vec<Rc<Pool>>,
    /// The host that took writes when last asked: almost always still the
    /// writer, so finding the primary is one atomic load.
    writer: Cell<usize>,
    /// The worker's classifier; None when reads are not split (a Splitter
    /// that only follows failovers classifies nothing).
    classifier: Option<Rc<RefCell<Classifier>>>,
    settings: SplitSettings,
    /// `SET pgdog.role = 'primary' | 'replica'`.
    pinned: Option<Target>,
    last_write: Option<Instant>,
    turn: Cell<usize>,
}

/// Where a request goes, or why it cannot.
pub enum Choice {
    Primary,
    Replica(Rc<Pool>),
    /// A write by a replica-only user (25006).
    ReadOnly,
    /// `SET pgdog.role` to something else than primary, replica or auto (22023).
    InvalidRole,
    /// A read while every replica is banned or lagging, with
    /// `replica_fallback = "error"` (08006).
    NoReplica,
}

/// The message of [`Choice::NoReplica`].
pub const NO_REPLICA: &str =
    "no replica can serve reads (all are down, banned or lagging more than max_replica_lag) and replica_fallback is \"error\"";

impl Splitter {
    /// `hosts` holds a pool per host of the database; `primary` is the one
    /// that takes writes now.
    pub fn new(
        hosts: Vec<Rc<Pool>>,
        primary: usize,
        classifier: Option<Rc<RefCell<Classifier>>>,
        settings: SplitSettings,
    ) -> Self {
        Self {
            hosts,
            writer: Cell::new(primary),
            classifier,
            settings,
            pinned: None,
            last_write: None,
            turn: Cell::new(0),
        }
    }

    /// Whether reads are split at all; without it only [`primary`](Self::primary) matters.
    pub fn splits_reads(&self) -> bool {
        self.settings.split_reads
    }

    /// The pool of the host that takes writes now. When no host does (a
    /// database of replicas only), the last known one: its errors say why.
    pub fn primary(&self) -> &Rc<Pool> {
        let cached = self.writer.get();
        if self.hosts.get(cached).is_some_and(|p| p.shared.is_writer()) {
            return &self.hosts[cached];
        }
        if let Some(i) = self.hosts.iter().position(|p| p.shared.is_writer()) {
            self.writer.set(i);
            return &self.hosts[i];
        }
        &self.hosts[cached.min(self.hosts.len() - 1)]
    }

    /// What the statement texts of one request (a simple query, or the
    /// Parse / Bind texts of an extended batch) need, combined: the most
    /// demanding access, and the first statement's transaction and hint.
    pub fn decide<'a>(&self, texts: impl IntoIterator<Item = &'a [u8]>) -> Option<Decision> {
        let mut classifier = self.classifier.as_ref()?.borrow_mut();
        let mut combined: Option<Decision> = None;
        for text in texts {
            let d = classifier.classify(text);
            combined = Some(match combined {
                None => d,
                Some(mut c) => {
                    c.access = c.access.max(d.access);
                    c.role = d.role.or(c.role);
                    c
                }
            });
        }
        combined
    }

    /// Where a request with decision `d` goes (None: nothing readable, the
    /// primary). Records a `SET pgdog.role` and, for read-your-writes, writes.
    pub fn choose(&mut self, d: Option<&Decision>) -> Choice {
        let Some(d) = d else { return self.primary_or_forced() };
        match d.role {
            Some(RoleSetting::Pin(t)) => self.pinned = Some(t),
            Some(RoleSetting::Auto) => self.pinned = None,
            Some(RoleSetting::Invalid) => return Choice::InvalidRole,
            None => {}
        }
        let facts = SessionFacts {
            txn: None,
            pinned: self.pinned,
            force_replica: self.settings.force_replica,
            sticky_transactions: self.settings.sticky_transactions,
        };
        let target = match classify::route(d, &facts) {
            Ok(t) => t,
            Err(_) => return Choice::ReadOnly,
        };
        if target == Target::Primary {
            if matches!(d.access, Access::Write | Access::Unknown) {
                self.last_write = Some(Instant::now());
            }
            return Choice::Primary;
        }
        let recent_write = match (self.settings.read_your_writes, self.last_write) {
            (Some(window), Some(at)) => at.elapsed() < window,
            _ => false,
        };
        if recent_write && !self.settings.force_replica && d.hint.is_none() && self.pinned.is_none() {
            return Choice::Primary;
        }
        match self.pick_replica() {
            Some(pool) => Choice::Replica(pool),
            None => self.fallback(),
        }
    }

    /// Where a read goes that no replica can take. A replica-only user
    /// never touches the primary: for it, no replica is an error.
    fn fallback(&self) -> Choice {
        if self.settings.force_replica
            || (self.settings.fallback_error && !self.settings.primary_reads && self.hosts.len() > 1)
        {
            Choice::NoReplica
        } else {
            Choice::Primary
        }
    }

    pub fn ban_time(&self) -> Duration {
        self.settings.ban_time
    }

    pub fn fallback_error(&self) -> bool {
        self.settings.fallback_error
    }

    pub fn force_replica(&self) -> bool {
        self.settings.force_replica
    }

    /// `sticky_transactions = false`: a lone `BEGIN` waits for the
    /// transaction's first statement, which then picks the server.
    pub fn defers_begin(&self) -> bool {
        self.settings.split_reads && !self.settings.sticky_transactions && !self.settings.force_replica
    }

    /// Whether `text` is one statement that opens a read-write transaction
    /// (`BEGIN`, `START TRANSACTION ISOLATION LEVEL ...`), nothing else.
    pub fn is_lone_begin(&mut self, text: &[u8]) -> bool {
        // Most requests are plain statements: the lexer's cheap test rules
        // them out before the classifier is asked (every request of a
        // session with deferral comes through here before being routed).
        if crate::route::command::is_plain(text) {
            return false;
        }
        let single = match memchr::memchr(b';', text) {
            Some(i) => text[i + 1..].iter().all(|b| b.is_ascii_whitespace() || *b == b';'),
            None => true,
        };
        single
            && self.decide([text]).is_some_and(|d| {
                d.begins == Some(TxnKind::ReadWrite) && d.hint.is_none() && d.role.is_none() && !d.ends_txn
            })
    }

    /// Whether a request that arrives while the session is on a replica
    /// must go elsewhere (it writes, or asks for the primary).
    pub fn needs_primary(&mut self, text: &[u8]) -> bool {
        if self.settings.force_replica {
            return false;
        }
        let d = self.decide([text]);
        match d {
            Some(d) if d.role.is_some() => true,
            Some(d) => {
                let facts = SessionFacts {
                    txn: None,
                    pinned: self.pinned,
                    force_replica: false,
                    sticky_transactions: self.settings.sticky_transactions,
                };
                !matches!(classify::route(&d, &facts), Ok(Target::Replica))
            }
            None => true,
        }
    }

    fn primary_or_forced(&self) -> Choice {
        if self.settings.force_replica {
            return match self.pick_replica() {
                Some(pool) => Choice::Replica(pool),
                None => self.fallback(),
            };
        }
        Choice::Primary
    }

    /// A replica that is not banned or lagging, by the configured balancing; the
    /// primary counts as one when it also serves reads (then None means it).
    fn pick_replica(&self) -> Option<Rc<Pool>> {
        // Two passes over the few hosts instead of collecting the
        // candidates: this runs for every read.
        let candidates = || self.hosts.iter().filter(|p| !p.shared.is_writer() && p.shared.readable());
        let count = candidates().count();
        let extra = usize::from(self.settings.primary_reads && !self.settings.force_replica);
        let n = count + extra;
        if n == 0 {
            return None;
        }
        let index = match self.settings.balancing {
            LoadBalancing::RoundRobin => {
                let t = self.turn.get();
                self.turn.set(t.wrapping_add(1));
                t % n
            }
            LoadBalancing::Random => rand::random::<usize>() % n,
            LoadBalancing::LeastActive => {
                let mut best = (usize::MAX, 0);
                for (i, p) in candidates().enumerate() {
                    best = best.min((p.shared.active_count(), i));
                }
                if extra == 1 {
                    best = best.min((self.primary().shared.active_count(), count));
                }
                best.1
            }
        };
        candidates().nth(index).cloned()
    }
}
