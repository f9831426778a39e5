//! Host health, replica lag and failover monitor.
//!
//! Why a monitor: a replica that is down, or replays WAL far behind the
//! primary, must stop getting reads before clients notice, and come back on
//! its own once it has recovered; a promoted replica must get the writes. Checkout failures alone (the Splitter's
//! ban) only catch a replica that is unreachable, and only when a client
//! pays for it.
//!
//! One task for the process, on the control runtime. Every
//! `health_check_interval_ms` it reads the current snapshot (so a reload's
//! pools and settings apply from the next round) and, for every database
//! with more than one host, checks each host once — with the credentials of
//! one of its pools, over a connection it keeps between rounds — within
//! `health_check_timeout_ms`: `pg_is_in_recovery()`, the WAL position
//! (`pg_current_wal_lsn()` on a primary, `pg_last_wal_replay_lsn()` on a
//! standby) and a standby's age of the last replayed transaction.
//!
//! With the answers it elects the host that takes writes
//! (`backend::topology`: failover after a promotion, fencing of a second
//! host that accepts writes), then judges the others as replicas: lag is 0
//! once a replica has replayed the writer's position of the previous round
//! (so an idle primary does not look like lag), otherwise
//! `now() - pg_last_xact_replay_timestamp()` ([`lag_ms`]).
//!
//! The result lands in every pool of that host and database (`PoolShared`:
//! lag, lagging, last error), and a replica that failed its check or lags
//! more than `max_replica_lag` is banned for `ban_time_ms`; the Splitter
//! sends reads only to `readable()` replicas. The writer is checked and its
//! error shown, never banned: writes have nowhere else to go. The monitor
//! runs whether or not reads are split: failover concerns writes too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::runtime::Shared;

use super::pool::PoolShared;
use super::server::{Conn, Server, ServerError};
use super::topology::{HostStatus, Topology};

/// A WAL position as PostgreSQL prints it (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
        return None;
    }
    Some((hi << 32) | lo)
}

/// A replica's lag in ms. `replayed`: its replay position; `primary`: the
/// primary's position sampled one interval earlier; `replay_age_ms`:
/// `now() - pg_last_xact_replay_timestamp()` on the replica (None when it
/// has replayed no transaction yet). None: not caught up and no way to tell
/// by how much.
pub fn lag_ms(replayed: Option<u64>, primary: Option<u64>, replay_age_ms: Option<i64>) -> Option<u64> {
    if let (Some(r), Some(p)) = (replayed, primary) {
        if r >= p {
            return Some(0);
        }
    }
    replay_age_ms.map(|age| age.max(0) as u64)
}

/// `application_name` of the monitor's connections: one per checked host,
/// outside the pools (not counted in `max_pool_size`).
pub const APPLICATION_NAME: &str = "pgdog-router health check";

/// Which host of which database a check is for.
type HostKey = (String, String, u16);

/// What one host check found.
struct Sample {
    /// `pg_is_in_recovery()`: a standby.
    in_recovery: bool,
    /// A primary's `pg_current_wal_lsn()`, a standby's `pg_last_wal_replay_lsn()`.
    lsn: Option<u64>,
    /// A standby's `now() - pg_last_xact_replay_timestamp()`.
    replay_age_ms: Option<i64>,
}

/// Why a check failed, and whether the host answered at all.
struct Failure {
    message: String,
    /// The server answered but its state could not be read (the checking
    /// login was refused, too many connections): not evidence that it is
    /// down, so it never moves writes (`HostStatus::Unknown`).
    reachable: bool,
}

impl Failure {
    fn down(message: String) -> Self {
        Failure { message, reachable: false }
    }

    fn of(e: &ServerError) -> Self {
        // Shutting down, crashed or starting up: as good as down.
        const GOING: [&str; 3] = ["57P01", "57P02", "57P03"];
        let reachable = match e {
            ServerError::Login(f) | ServerError::Query(f) => !GOING.contains(&f.code.as_str()),
            ServerError::UnsupportedAuth(_)
            | ServerError::NoPassword(_)
            | ServerError::Scram(_)
            | ServerError::TlsRefused(_) => true,
            _ => false,
        };
        Failure { message: e.to_string(), reachable }
    }
}

/// What the monitor keeps between rounds.
#[derive(Default)]
struct State {
    /// Open check connections by host.
    connections: HashMap<HostKey, Server>,
    /// The writer's WAL position of the previous round, by topology.
    primary_lsn: HashMap<usize, u64>,
}

/// Runs until shutdown. Spawned once by the runtime; the owner awaits it.
pub async fn monitor(shared: Arc<Shared>) {
    let mut state = State::default();
    loop {
        let snapshot = shared.snapshot();
        let routing = snapshot.config.router.query_routing.clone();
        let interval = Duration::from_millis(routing.health_check_interval_ms.max(1));
        tokio::select! {
            _ = round(&snapshot.pools, &routing, &mut state) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        drop(snapshot);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// A topology's identity for the monitor's state.
fn topology_id(topology: &Arc<Topology>) -> usize {
    Arc::as_ptr(topology) as usize
}

/// One check of every host of every database with more than one host,
/// concurrently; then the elections (`backend::topology`) and the verdicts.
async fn round(
    pools: &BTreeMap<crate::backend::pool::PoolKey, Arc<PoolShared>>,
    routing: &crate::config::QueryRouting,
    state: &mut State,
) {
    // The pools of each checked host; the first one's credentials check it.
    let mut hosts: BTreeMap<HostKey, Vec<Arc<PoolShared>>> = BTreeMap::new();
    // The topologies to elect in, each once.
    let mut topologies: BTreeMap<usize, (Arc<Topology>, String)> = BTreeMap::new();
    for (key, pool) in pools {
        if pool.topology.member_count() > 1 && !pool.is_retired() {
            hosts.entry((key.database.clone(), key.host.clone(), key.port)).or_default().push(pool.clone());
            topologies
                .entry(topology_id(&pool.topology))
                .or_insert_with(|| (pool.topology.clone(), key.database.clone()));
        }
    }
    state.connections.retain(|k, _| hosts.contains_key(k));
    state.primary_lsn.retain(|id, _| topologies.contains_key(id));
    let timeout = Duration::from_millis(routing.health_check_timeout_ms);
    let mut checks = JoinSet::new();
    for (host, group) in &hosts {
        let pool = group[0].clone();
        let kept = state.connections.remove(host);
        let host = host.clone();
        checks.spawn(async move {
            let (server, result) = match tokio::time::timeout(timeout, check(&pool, kept, timeout)).await {
                Ok(r) => r,
                Err(_) => {
                    (None, Err(Failure::down(format!("health check timed out after {} ms", timeout.as_millis()))))
                }
            };
            (host, server, result)
        });
    }
    let mut results: BTreeMap<HostKey, Result<Sample, Failure>> = BTreeMap::new();
    while let Some(joined) = checks.join_next().await {
        if let Ok((host, server, result)) = joined {
            if let Some(server) = server {
                state.connections.insert(host.clone(), server);
            }
            results.insert(host, result);
        }
    }

    let ban_time = Duration::from_millis(routing.ban_time_ms);
    for (id, (topology, database)) in topologies {
        let members = topology.members();
        let ids: Vec<usize> = members.iter().map(|m| m.0).collect();
        let keys: Vec<HostKey> = members.iter().map(|(_, h, p)| (database.clone(), h.clone(), *p)).collect();
        let statuses: Vec<HostStatus> = keys
            .iter()
            .map(|k| match results.get(k) {
                Some(Ok(s)) if s.in_recovery => HostStatus::Standby,
                Some(Ok(_)) => HostStatus::Writable,
                Some(Err(f)) if f.reachable => HostStatus::Unknown,
                Some(Err(_)) => HostStatus::Unreachable,
                // Not checked this round (no pool of it is live): no evidence.
                None => HostStatus::Unknown,
            })
            .collect();
        let name = |host_id: usize| {
            members.iter().find(|m| m.0 == host_id).map(|m| format!("{}:{}", m.1, m.2)).unwrap_or_default()
        };
        if let Some(old) = topology.record(&ids, &statuses) {
            tracing::warn!(database = %database, from = %name(old), to = %name(topology.writer()), "failover: the primary is gone and another host was promoted; writes move there");
        }
        // Replicas are held to the writer's position of the previous round.
        let writer = ids.iter().position(|&i| i == topology.writer()).map(|at| &keys[at]);
        let current = writer.and_then(|w| match results.get(w) {
            Some(Ok(s)) if !s.in_recovery => s.lsn,
            _ => None,
        });
        // No verdict on lag without the writer's position of the previous
        // round: right after start-up (every replica is a little behind the
        // position of this very moment), or while the writer is down (there
        // is nothing new to replay, and the age of the last replayed
        // transaction only measures how long the writer has been gone —
        // reads must go on).
        let earlier = state.primary_lsn.get(&id).copied().filter(|_| current.is_some());
        let writer_name = name(topology.writer());
        for (key, &host_id) in keys.iter().zip(&ids) {
            let Some(group) = hosts.get(key) else { continue };
            let Some(result) = results.remove(key) else { continue };
            let role = if topology.writer() == host_id { Verdict::Writer } else { Verdict::Other(&writer_name) };
            verdict(group, role, result, earlier, routing, ban_time);
        }
        match current {
            Some(lsn) => state.primary_lsn.insert(id, lsn),
            None => state.primary_lsn.remove(&id),
        };
    }
}

/// Whether a checked host is the writer; for the others, the writer's name.
enum Verdict<'a> {
    Writer,
    Other(&'a str),
}

/// Records what one host's check means for its pools.
fn verdict(
    group: &[Arc<PoolShared>],
    role: Verdict<'_>,
    result: Result<Sample, Failure>,
    earlier: Option<u64>,
    routing: &crate::config::QueryRouting,
    ban_time: Duration,
) {
    let key = &group[0].key;
    let writer = matches!(role, Verdict::Writer);
    match result {
        Err(failure) => {
            let error = failure.message;
            for pool in group {
                pool.set_last_error(Some(error.clone()));
                // The writer is never banned: writes have nowhere else to go.
                if !writer {
                    pool.set_lag(None, false);
                    pool.ban(ban_time);
                }
            }
            tracing::warn!(database = %key.database, host = %key.host, port = key.port, %error, "health check failed");
        }
        Ok(_) if writer => {
            for pool in group {
                pool.set_last_error(None);
                pool.set_lag(None, false);
            }
        }
        Ok(s) if !s.in_recovery => {
            // Accepts writes while another host is the writer: fenced.
            let Verdict::Other(writer_name) = role else { return };
            let error = format!(
                "accepts writes while {writer_name} is the primary: fenced, no traffic until it rejoins as a standby"
            );
            for pool in group {
                if pool.last_error().as_deref() != Some(error.as_str()) {
                    tracing::error!(pool = %pool.key, "{error}");
                }
                pool.set_last_error(Some(error.clone()));
                pool.set_lag(None, false);
            }
        }
        Ok(s) => {
            let Some(earlier) = earlier else {
                for pool in group {
                    pool.set_last_error(None);
                }
                return;
            };
            let lag = lag_ms(s.lsn, Some(earlier), s.replay_age_ms);
            let too_much = lag.is_none_or(|l| l > routing.max_replica_lag);
            for pool in group {
                pool.set_last_error(None);
                // Lag takes the replica out of the read set only while it
                // lasts (no ban: it returns at the first round it is back).
                let was = pool.is_lagging();
                pool.set_lag(lag, too_much);
                if too_much && !was {
                    tracing::warn!(pool = %pool.key, lag_ms = ?lag, "replica lags, no reads until it catches up");
                } else if was && !too_much {
                    tracing::info!(pool = %pool.key, lag_ms = ?lag, "replica caught up");
                }
            }
        }
    }
}

/// Checks one host with the pool's target and credentials, reusing `kept`
/// when it is still usable. Returns the connection to keep, if any.
async fn check(
    pool: &PoolShared,
    kept: Option<Server>,
    timeout: Duration,
) -> (Option<Server>, Result<Sample, Failure>) {
    let mut server = match kept.filter(|s| !s.broken) {
        Some(s) => s,
        None => {
            let (password, options) = pool.connect_settings();
            let Some(mut options) = options else {
                return (None, Err(Failure { message: "connect settings unavailable".into(), reachable: true }));
            };
            options.timeout = timeout;
            // Operators (and pg_stat_activity) can tell it from pooled connections.
            options.application_name = APPLICATION_NAME;
            match Conn::connect(&pool.target, password.as_deref(), &options).await {
                Ok(s) => s,
                Err(e) => return (None, Err(Failure::of(&e))),
            }
        }
    };
    match sample(&mut server).await {
        Ok(sample) => (Some(server), Ok(sample)),
        // The connection may be fine after an ordinary error, but a check
        // that failed is cheap to redo on a fresh one.
        Err(e) => (None, Err(Failure::of(&e))),
    }
}

/// One query for any host: whether it is a standby, its WAL position, and
/// (on a standby) the age of the last replayed transaction.
async fn sample(server: &mut Server) -> Result<Sample, ServerError> {
    let rows = server
        .query_rows(
            "SELECT pg_is_in_recovery(), \
             CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
             (extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint",
        )
        .await?;
    let row = rows.first();
    let col = |i: usize| row.and_then(|r| r.get(i)).and_then(|v| v.as_deref());
    Ok(Sample {
        in_recovery: col(0) == Some("t"),
        lsn: col(1).and_then(parse_lsn),
        replay_age_ms: col(2).and_then(|v| v.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        for bad in ["", "0", "/1", "1/", "x/1", "1/2/3", "100000000/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lag_rule() {
        // (replayed, primary one interval ago, replay age) -> lag
        let cases = [
            // Caught up with the earlier position: no lag, however old the
            // last replayed transaction (an idle primary).
            (Some(100), Some(100), Some(60_000), Some(0)),
            (Some(150), Some(100), None, Some(0)),
            // Behind: the age of the last replayed transaction.
            (Some(99), Some(100), Some(1_234), Some(1_234)),
            // Clocks a little apart: never negative.
            (Some(99), Some(100), Some(-5), Some(0)),
            // Behind with nothing replayed yet: unknown.
            (Some(99), Some(100), None, None),
            // No primary sample (primary down): the age alone.
            (Some(99), None, Some(700), Some(700)),
            (None, Some(100), Some(10), Some(10)),
        ];
        for (replayed, primary, age, want) in cases {
            assert_eq!(lag_ms(replayed, primary, age), want, "{replayed:?} {primary:?} {age:?}");
        }
    }
}
