//! Which host of a logical database takes writes now: the configured
//! primary until it is gone and a replica has been promoted.
//!
//! Why the router decides this at all: after a failover (an operator, or a
//! tool such as Patroni, promotes a replica) clients must reach the new
//! primary without a router restart, and an old primary that comes back
//! still believing it is primary must never receive a write, or two hosts
//! would accept writes on diverging histories.
//!
//! The health monitor (`backend::health`) asks every host of a database
//! `pg_is_in_recovery()` each interval and hands the answers to [`elect`], a
//! pure function. Its rules:
//! - The writer stays the writer while it answers and accepts writes.
//! - When the writer is unreachable or has become a standby, and exactly one
//!   other host accepts writes (it was promoted), that host is the writer. A
//!   writer that answers but whose state cannot be read (the check's login
//!   refused) is not gone: it keeps the writes.
//! - Any other host that accepts writes is *fenced*: no writes, no reads
//!   (its data may have diverged). A fence holds until the host reports it
//!   is a standby again (rebuilt as a replica) or a reload changes the
//!   database's hosts. A fenced host is never elected, so an old primary
//!   that came back cannot win a later election either.
//! - Two or more promoted hosts with the writer gone: ambiguous, so the
//!   router keeps the old writer (writes fail while it is down) and fences
//!   them all; an operator decides and reloads the configuration.
//! - Nothing reachable accepts writes: the writer stays as it was, writes
//!   fail fast with the connection error, and resume by themselves when it
//!   answers again.
//!
//! One `Topology` per logical database (and shard), shared by the pools of
//! all its users; it survives a reload that keeps the database's hosts, so a
//! routine reload after a failover does not send writes back to the old
//! primary. Restarting the router starts again from the configured primary:
//! after a failover, update `role` in the configuration.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// What a health check learned about one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    /// The check failed: down, refusing connections, or timed out.
    Unreachable,
    /// `pg_is_in_recovery()` is false: it accepts writes.
    Writable,
    /// `pg_is_in_recovery()` is true: a streaming replica.
    Standby,
    /// It answered, but its state could not be read (the check's login was
    /// refused, too many connections). Not evidence that it is down: a
    /// writer in this state keeps the writes; a fence holds.
    Unknown,
}

/// The outcome of one round: the writer and the fenced hosts, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub writer: usize,
    pub fenced: Vec<bool>,
}

/// Applies the rules in the module comment. `writer` and `fenced` are the
/// current state; `statuses` has one entry per host, in the same order.
pub fn elect(writer: usize, fenced: &[bool], statuses: &[HostStatus]) -> Election {
    let was_fenced = |i: usize| fenced.get(i).copied().unwrap_or(false);
    // Only a writer that is down or has become a standby gives way.
    let writer_gone = matches!(statuses.get(writer), Some(HostStatus::Unreachable | HostStatus::Standby));
    let mut candidates =
        (0..statuses.len()).filter(|&i| i != writer && statuses[i] == HostStatus::Writable && !was_fenced(i));
    let new_writer = match (writer_gone, candidates.next(), candidates.next()) {
        (true, Some(promoted), None) => promoted,
        _ => writer,
    };
    let fenced = (0..statuses.len())
        .map(|i| {
            i != new_writer
                && match statuses[i] {
                    HostStatus::Writable => true,
                    HostStatus::Standby => false,
                    HostStatus::Unreachable | HostStatus::Unknown => was_fenced(i),
                }
        })
        .collect();
    Election { writer: new_writer, fenced }
}

/// No host takes writes (a database configured with replicas only).
pub const NO_WRITER: usize = usize::MAX;

/// Hosts one topology can tell apart over its lifetime (ids are never
/// reused, so a reload that swaps hosts in and out uses new ones). Past
/// this a reload starts a fresh topology.
pub const MAX_HOSTS: usize = 64;

/// The live roles of one logical database's hosts.
///
/// Hosts are known by a stable id (their first appearance), not by their
/// position in the configuration, so that a reload adding or removing a
/// replica keeps every pool, and the failover state, as they are.
#[derive(Debug)]
pub struct Topology {
    /// (host, port) by id; append-only.
    known: Mutex<Vec<(String, u16)>>,
    /// The current configuration: member ids in order, and the id of the
    /// configured primary (`NO_WRITER` when none).
    layout: Mutex<(Vec<usize>, usize)>,
    /// The id of the host that takes writes, or `NO_WRITER`.
    writer: AtomicUsize,
    /// Fenced hosts, one bit per id.
    fenced: AtomicU64,
    /// Times the writer moved to another host.
    pub failovers_total: AtomicU64,
}

impl Topology {
    /// A topology for `hosts` in configuration order, `configured` the
    /// index of the primary among them. None when there are more than
    /// [`MAX_HOSTS`].
    pub fn new(hosts: &[(String, u16)], configured: Option<usize>) -> Option<Self> {
        let t = Topology {
            known: Mutex::new(Vec::new()),
            layout: Mutex::new((Vec::new(), NO_WRITER)),
            writer: AtomicUsize::new(NO_WRITER),
            fenced: AtomicU64::new(0),
            failovers_total: AtomicU64::new(0),
        };
        t.relayout(hosts, configured).then_some(t)
    }

    /// Applies a reload's list of hosts. The writer stays where a failover
    /// put it unless the configured primary changed (the operator decided)
    /// or the writer left the configuration. False when the new hosts
    /// would exceed [`MAX_HOSTS`] ids: the caller starts a new topology.
    pub fn relayout(&self, hosts: &[(String, u16)], configured: Option<usize>) -> bool {
        let mut known = lock(&self.known);
        let mut ids = Vec::with_capacity(hosts.len());
        for host in hosts {
            let id = match known.iter().position(|k| k == host) {
                Some(id) => id,
                None if known.len() < MAX_HOSTS => {
                    known.push(host.clone());
                    known.len() - 1
                }
                None => return false,
            };
            ids.push(id);
        }
        drop(known);
        let primary = configured.and_then(|i| ids.get(i).copied()).unwrap_or(NO_WRITER);
        let mut layout = lock(&self.layout);
        let writer = self.writer();
        if layout.1 != primary || !ids.contains(&writer) {
            self.writer.store(primary, Ordering::Relaxed);
            self.fenced.store(0, Ordering::Relaxed);
        }
        *layout = (ids, primary);
        true
    }

    /// The stable id of a configured host.
    pub fn id_of(&self, host: &str, port: u16) -> Option<usize> {
        lock(&self.known).iter().position(|(h, p)| h == host && *p == port)
    }

    /// How many hosts the database has now.
    pub fn member_count(&self) -> usize {
        lock(&self.layout).0.len()
    }

    /// The current members as (id, host, port), in configuration order.
    pub fn members(&self) -> Vec<(usize, String, u16)> {
        let known = lock(&self.known);
        let layout = lock(&self.layout);
        layout.0.iter().filter_map(|&id| known.get(id).map(|(h, p)| (id, h.clone(), *p))).collect()
    }

    /// The id of the host that takes writes, or `NO_WRITER`.
    pub fn writer(&self) -> usize {
        self.writer.load(Ordering::Relaxed)
    }

    pub fn is_fenced(&self, id: usize) -> bool {
        id < MAX_HOSTS && self.fenced.load(Ordering::Relaxed) & (1 << id) != 0
    }

    /// Runs one election over the members' `statuses` (in the order of
    /// [`members`](Self::members)) and records it. Returns the previous
    /// writer's id when the writer moved.
    pub fn record(&self, members: &[usize], statuses: &[HostStatus]) -> Option<usize> {
        let writer = self.writer();
        let at = members.iter().position(|&id| id == writer)?;
        if statuses.len() != members.len() {
            return None;
        }
        let fenced: Vec<bool> = members.iter().map(|&id| self.is_fenced(id)).collect();
        let e = elect(at, &fenced, statuses);
        let mut bits = 0u64;
        for (&id, &f) in members.iter().zip(&e.fenced) {
            if f && id < MAX_HOSTS {
                bits |= 1 << id;
            }
        }
        self.fenced.store(bits, Ordering::Relaxed);
        let new_writer = members[e.writer];
        if new_writer == writer {
            return None;
        }
        self.writer.store(new_writer, Ordering::Relaxed);
        self.failovers_total.fetch_add(1, Ordering::Relaxed);
        Some(writer)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::HostStatus::{Standby as S, Unknown as K, Unreachable as U, Writable as W};
    use super::*;

    #[test]
    fn election_rules() {
        // (writer, fenced before, statuses) -> (writer, fenced after)
        let f = false;
        let t = true;
        type Case<'a> = (usize, &'a [bool], &'a [HostStatus], usize, &'a [bool]);
        let cases: &[Case] = &[
            // A healthy cluster stays as it is.
            (0, &[f, f, f], &[W, S, S], 0, &[f, f, f]),
            // Replicas down: nothing changes for writes.
            (0, &[f, f, f], &[W, U, U], 0, &[f, f, f]),
            // The primary is down, nothing promoted: keep it (writes fail
            // fast and resume when it is back).
            (0, &[f, f, f], &[U, S, S], 0, &[f, f, f]),
            (0, &[f, f, f], &[U, U, U], 0, &[f, f, f]),
            // The primary is down and one replica was promoted: fail over.
            (0, &[f, f, f], &[U, W, S], 1, &[f, f, f]),
            (0, &[f, f, f], &[U, S, W], 2, &[f, f, f]),
            // The primary was demoted (rejoined as a standby) and another
            // promoted: fail over, the old one may serve reads.
            (0, &[f, f, f], &[S, W, S], 1, &[f, f, f]),
            // The old primary comes back still writable while the new one
            // is up: fenced, never a second writer.
            (1, &[f, f, f], &[W, W, S], 1, &[t, f, f]),
            // A replica promoted by mistake while the primary is fine.
            (0, &[f, f, f], &[W, W, S], 0, &[f, t, f]),
            // The fence holds while the host is down or still writable...
            (1, &[t, f, f], &[U, W, S], 1, &[t, f, f]),
            (1, &[t, f, f], &[W, W, S], 1, &[t, f, f]),
            // ...and a fenced host is never elected, even when the writer
            // is gone.
            (1, &[t, f, f], &[W, U, S], 1, &[t, f, f]),
            // Rebuilt as a standby: the fence lifts.
            (1, &[t, f, f], &[S, W, S], 1, &[f, f, f]),
            // Two promoted hosts with the writer gone: ambiguous, keep the
            // writer and fence both.
            (0, &[f, f, f], &[U, W, W], 0, &[f, t, t]),
            // One candidate fenced, one clean: the clean one wins.
            (0, &[f, t, f], &[U, W, W], 2, &[f, t, f]),
            // A writer that answers but cannot be read keeps the writes,
            // even with a promoted host beside it (which is fenced).
            (0, &[f, f, f], &[K, W, S], 0, &[f, t, f]),
            // An unreadable fenced host stays fenced; an unreadable replica
            // is not fenced.
            (1, &[t, f, f], &[K, W, K], 1, &[t, f, f]),
            // A single host.
            (0, &[f], &[U], 0, &[f]),
            (0, &[f], &[W], 0, &[f]),
        ];
        for (i, (writer, fenced, statuses, want_writer, want_fenced)) in cases.iter().enumerate() {
            let e = elect(*writer, fenced, statuses);
            assert_eq!(e, Election { writer: *want_writer, fenced: want_fenced.to_vec() }, "case {i}: {statuses:?}");
        }
    }

    fn hosts(names: &[&str]) -> Vec<(String, u16)> {
        names.iter().map(|n| (n.to_string(), 5432)).collect()
    }

    #[test]
    fn topology_records_a_failover_once() {
        let t = Topology::new(&hosts(&["a", "b"]), Some(0)).unwrap();
        let ids = [0, 1];
        assert_eq!(t.writer(), 0);
        assert_eq!(t.record(&ids, &[W, S]), None);
        assert_eq!(t.record(&ids, &[U, W]), Some(0));
        assert_eq!(t.writer(), 1);
        assert_eq!(t.record(&ids, &[U, W]), None);
        // The old primary returns writable: fenced, the writer stays.
        assert_eq!(t.record(&ids, &[W, W]), None);
        assert!(t.is_fenced(0) && !t.is_fenced(1));
        assert_eq!(t.failovers_total.load(Ordering::Relaxed), 1);
        // A status list of the wrong length is ignored.
        assert_eq!(t.record(&ids, &[U]), None);
    }

    #[test]
    fn reload_keeps_ids_and_failover_state() {
        let t = Topology::new(&hosts(&["a", "b"]), Some(0)).unwrap();
        t.record(&[0, 1], &[U, W]);
        assert_eq!(t.writer(), 1);
        // A replica added in front: ids stay, the writer stays.
        assert!(t.relayout(&hosts(&["c", "a", "b"]), Some(1)));
        assert_eq!(t.id_of("c", 5432), Some(2));
        assert_eq!(t.writer(), 1);
        let members: Vec<usize> = t.members().iter().map(|m| m.0).collect();
        assert_eq!(members, [2, 0, 1]);
        // The operator names the new primary in the configuration: it is.
        assert!(t.relayout(&hosts(&["c", "a", "b"]), Some(2)));
        assert_eq!(t.writer(), 1);
        // Names another one: the configuration wins over the failover.
        assert!(t.relayout(&hosts(&["c", "a", "b"]), Some(0)));
        assert_eq!(t.writer(), 2);
        // The writer removed from the configuration: back to the configured primary.
        t.record(&[2, 0, 1], &[U, W, S]);
        assert_eq!(t.writer(), 0);
        assert!(t.relayout(&hosts(&["c", "b"]), Some(0)));
        assert_eq!(t.writer(), 2);
    }

    #[test]
    fn ids_are_bounded() {
        let many: Vec<String> = (0..MAX_HOSTS + 1).map(|i| format!("h{i}")).collect();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(Topology::new(&hosts(&names[..MAX_HOSTS]), Some(0)).is_some());
        assert!(Topology::new(&hosts(&names), Some(0)).is_none());
    }

    #[test]
    fn replica_only_database_never_elects() {
        let t = Topology::new(&hosts(&["a"]), None).unwrap();
        assert_eq!(t.writer(), NO_WRITER);
        assert_eq!(t.record(&[0], &[W]), None);
        assert_eq!(t.writer(), NO_WRITER);
    }
}
