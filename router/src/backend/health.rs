//! Replica health and lag monitor for read/write splitting.
//!
//! Why a monitor: a replica that is down, or replays WAL far behind the
//! primary, must stop getting reads before clients notice, and come back on
//! its own once it has recovered. Checkout failures alone (the Splitter's
//! ban) only catch a replica that is unreachable, and only when a client
//! pays for it.
//!
//! One task for the process, on the control runtime. Every
//! `health_check_interval_ms` it reads the current snapshot (so a reload's
//! pools and settings apply from the next round) and, for every database
//! with replicas, checks each host once — with the credentials of one of
//! its pools, over a connection it keeps between rounds — within
//! `health_check_timeout_ms`:
//! - the primary: `pg_current_wal_lsn()`;
//! - each replica: its replay position and the age of the last replayed
//!   transaction. Its lag is 0 once it has replayed the primary's position
//!   of the previous round (so an idle primary does not look like lag),
//!   otherwise `now() - pg_last_xact_replay_timestamp()` ([`lag_ms`]).
//!
//! The result lands in every pool of that host and database (`PoolShared`:
//! lag, lagging, last error), and a replica that failed its check or lags
//! more than `max_replica_lag` is banned for `ban_time_ms`; the Splitter
//! sends reads only to `readable()` replicas. The primary is checked and
//! its error shown, never banned: writes have nowhere else to go.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::Role;
use crate::runtime::Shared;

use super::pool::PoolShared;
use super::server::{Server, ServerError};

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

/// Which host of which database a check is for.
type HostKey = (String, String, u16);

/// What one replica check found.
struct ReplicaSample {
    in_recovery: bool,
    replayed: Option<u64>,
    replay_age_ms: Option<i64>,
}

enum Sample {
    Primary(Option<u64>),
    Replica(ReplicaSample),
}

/// What the monitor keeps between rounds.
#[derive(Default)]
struct State {
    /// Open check connections by host.
    connections: HashMap<HostKey, Server>,
    /// The primary's WAL position of the previous round, by database.
    primary_lsn: HashMap<String, u64>,
}

/// Runs until shutdown. Spawned once by the runtime; the owner awaits it.
pub async fn monitor(shared: Arc<Shared>) {
    let mut state = State::default();
    loop {
        let snapshot = shared.snapshot();
        let routing = snapshot.config.router.query_routing.clone();
        let interval = Duration::from_millis(routing.health_check_interval_ms.max(1));
        if routing.read_write_split {
            tokio::select! {
                _ = round(&snapshot.pools, &routing, &mut state) => {}
                _ = shared.shutdown.cancelled() => return,
            }
        } else {
            state = State::default();
        }
        drop(snapshot);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// One check of every host, concurrently, then the verdicts.
async fn round(
    pools: &BTreeMap<crate::backend::pool::PoolKey, Arc<PoolShared>>,
    routing: &crate::config::QueryRouting,
    state: &mut State,
) {
    // Databases with at least one replica; one representative pool per host.
    let mut hosts: BTreeMap<HostKey, Vec<Arc<PoolShared>>> = BTreeMap::new();
    for (key, pool) in pools {
        let has_replica = pools.values().any(|p| p.key.database == key.database && p.role == Role::Replica);
        if has_replica && !pool.is_retired() {
            hosts.entry((key.database.clone(), key.host.clone(), key.port)).or_default().push(pool.clone());
        }
    }
    state.connections.retain(|k, _| hosts.contains_key(k));
    let timeout = Duration::from_millis(routing.health_check_timeout_ms);
    let mut checks = JoinSet::new();
    for (host, group) in &hosts {
        let pool = group[0].clone();
        let kept = state.connections.remove(host);
        let host = host.clone();
        checks.spawn(async move {
            let (server, result) = match tokio::time::timeout(timeout, check(&pool, kept, timeout)).await {
                Ok(r) => r,
                Err(_) => (None, Err(format!("health check timed out after {} ms", timeout.as_millis()))),
            };
            (host, server, result)
        });
    }
    let mut results: BTreeMap<HostKey, Result<Sample, String>> = BTreeMap::new();
    while let Some(joined) = checks.join_next().await {
        if let Ok((host, server, result)) = joined {
            if let Some(server) = server {
                state.connections.insert(host.clone(), server);
            }
            results.insert(host, result);
        }
    }

    // This round's primary positions; replicas are held to the previous ones.
    let mut current: HashMap<String, u64> = HashMap::new();
    for ((database, _, _), result) in &results {
        if let Ok(Sample::Primary(Some(lsn))) = result {
            current.insert(database.clone(), *lsn);
        }
    }
    let ban_time = Duration::from_millis(routing.ban_time_ms);
    for (host, result) in results {
        let Some(group) = hosts.get(&host) else { continue };
        let database = &host.0;
        let earlier = state.primary_lsn.get(database).or(current.get(database)).copied();
        match result {
            Err(error) => {
                for pool in group {
                    pool.set_last_error(Some(error.clone()));
                    if pool.role == Role::Replica {
                        pool.set_lag(None, false);
                        pool.ban(ban_time);
                    }
                }
                tracing::warn!(database = %database, host = %host.1, port = host.2, %error, "health check failed");
            }
            Ok(Sample::Primary(_)) => {
                for pool in group {
                    pool.set_last_error(None);
                }
            }
            Ok(Sample::Replica(s)) => {
                let lag = if s.in_recovery { lag_ms(s.replayed, earlier, s.replay_age_ms) } else { Some(0) };
                let too_much = lag.is_none_or(|l| l > routing.max_replica_lag);
                for pool in group {
                    pool.set_last_error(None);
                    let was = pool.is_lagging();
                    pool.set_lag(lag, too_much);
                    if too_much {
                        pool.ban(ban_time);
                        if !was {
                            tracing::warn!(pool = %pool.key, lag_ms = ?lag, "replica lags, no reads until it catches up");
                        }
                    } else if was {
                        tracing::info!(pool = %pool.key, lag_ms = ?lag, "replica caught up");
                    }
                }
            }
        }
    }
    for (database, lsn) in current {
        state.primary_lsn.insert(database, lsn);
    }
}

/// Checks one host with the pool's target and credentials, reusing `kept`
/// when it is still usable. Returns the connection to keep, if any.
async fn check(pool: &PoolShared, kept: Option<Server>, timeout: Duration) -> (Option<Server>, Result<Sample, String>) {
    let mut server = match kept.filter(|s| !s.broken) {
        Some(s) => s,
        None => {
            let (password, options) = pool.connect_settings();
            let Some(mut options) = options else {
                return (None, Err("connect settings unavailable".into()));
            };
            options.timeout = timeout;
            match Server::connect(&pool.target, password.as_deref(), &options).await {
                Ok(s) => s,
                Err(e) => return (None, Err(e.to_string())),
            }
        }
    };
    let result = match pool.role {
        Role::Primary => primary_sample(&mut server).await,
        Role::Replica => replica_sample(&mut server).await,
    };
    match result {
        Ok(sample) => (Some(server), Ok(sample)),
        // The connection may be fine after an ordinary error, but a check
        // that failed is cheap to redo on a fresh one.
        Err(e) => (None, Err(e.to_string())),
    }
}

async fn primary_sample(server: &mut Server) -> Result<Sample, ServerError> {
    let rows = server.query_rows("SELECT pg_current_wal_lsn()").await?;
    let lsn = rows.first().and_then(|r| r.first()).and_then(|v| v.as_deref()).and_then(parse_lsn);
    Ok(Sample::Primary(lsn))
}

async fn replica_sample(server: &mut Server) -> Result<Sample, ServerError> {
    let rows = server
        .query_rows(
            "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), \
             (extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint",
        )
        .await?;
    let row = rows.first();
    let col = |i: usize| row.and_then(|r| r.get(i)).and_then(|v| v.as_deref());
    Ok(Sample::Replica(ReplicaSample {
        in_recovery: col(0) == Some("t"),
        replayed: col(1).and_then(parse_lsn),
        replay_age_ms: col(2).and_then(|v| v.parse().ok()),
    }))
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
