//! The read/write-split part of `make bench`: a second router in front of
//! the bench primary and a streaming replica of it, with
//! `read_write_split = true`, run against the router in front of the
//! primary alone on select-only workloads at 10 clients. Every statement
//! there is a read, so the split router classifies each one (a hit in its
//! parse cache after the first) and sends it to the replica.
//!
//! What the ratio measures: both PostgreSQL servers share this machine's two
//! cores with pgbench and the routers, so reading from a replica brings no
//! extra server capacity here. Split / unsplit is the cost of splitting —
//! classification, a second pool, the health monitor — against the issue's
//! goal of at least [`GOAL`]× at -c10.

use std::time::{Duration, Instant};

use super::pgbench::{QueryMode, Script, Workload};
use crate::{free_port, http, PgCluster};

/// Split / unsplit TPS the read/write-splitting issue asks for at -c10.
pub const GOAL: f64 = 0.95;

/// Metric prefix of the split router, so its figures are found whatever
/// the default prefix is.
const PREFIX: &str = "bench_split";

/// Whether `workload` also runs through the split router: select-only at
/// 10 clients, simple and extended protocol.
pub fn runs(workload: &Workload) -> bool {
    workload.script == Script::SelectOnly
        && workload.clients == 10
        && matches!(workload.mode, QueryMode::Simple | QueryMode::Extended)
}

/// The split router's configuration: like the bench router (one worker,
/// transaction mode, 20 server connections per host, room for clients),
/// over the primary and the replica, reads to the replica.
pub fn router_config(cluster: &PgCluster) -> String {
    format!(
        "[general]
host = \"127.0.0.1\"
port = {port}
admin_port = {admin}
metrics_port = {metrics}
workers = 1
max_client_conn = 1000

[metrics]
metric_prefix = \"{PREFIX}\"

[pools.default]
pool_mode = \"transaction\"
max_pool_size = 20

[query_routing]
read_write_split = true

[[databases]]
name = \"pgdog\"
host = \"127.0.0.1\"
port = {primary}
role = \"primary\"

[[databases]]
name = \"pgdog\"
host = \"127.0.0.1\"
port = {replica}
role = \"replica\"
",
        port = free_port(),
        admin = free_port(),
        metrics = free_port(),
        primary = cluster.primary_port,
        replica = cluster.replica_port,
    )
}

/// Waits until the replica has replayed everything the primary has written
/// so far (the `pgbench -i` load), so the split router's reads find the
/// same data and the replica is not banned for lag.
pub fn wait_caught_up(cluster: &PgCluster, timeout: Duration) -> Result<(), String> {
    let target = cluster.psql_admin("SELECT pg_current_wal_lsn()");
    let check = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
    let deadline = Instant::now() + timeout;
    loop {
        if cluster.replica_psql_admin(&check) == "t" {
            return Ok(());
        }
        if Instant::now() > deadline {
            let at = cluster.replica_psql_admin("SELECT pg_last_wal_replay_lsn()");
            return Err(format!("replica replayed up to {at}, not {target}, after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the split router's metrics say after the runs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SplitFigures {
    /// Parse-cache lookups answered without a parse, and with one.
    pub cache_hits: f64,
    pub cache_misses: f64,
    /// Query shapes cached.
    pub cache_entries: f64,
    /// Server connections handed out by the primary's and the replica's
    /// pools, one per transaction in transaction mode: a run whose reads
    /// fell back to the primary (replica banned) shows here. (Not
    /// `queries_total`: a session's query counts go to the pool it logged
    /// in to, the primary's, wherever the query ran.)
    pub primary_checkouts: f64,
    pub replica_checkouts: f64,
}

impl SplitFigures {
    pub fn hit_rate(&self) -> Option<f64> {
        let lookups = self.cache_hits + self.cache_misses;
        (lookups > 0.0).then(|| self.cache_hits / lookups)
    }

    pub fn replica_share(&self) -> Option<f64> {
        let all = self.primary_checkouts + self.replica_checkouts;
        (all > 0.0).then(|| self.replica_checkouts / all)
    }
}

/// Scrapes the split router's `/metrics`.
pub fn read_figures(metrics_port: u16) -> Result<SplitFigures, String> {
    let resp = http(metrics_port, "GET", "/metrics", &[], "").map_err(|e| format!("GET /metrics: {e}"))?;
    if resp.status != 200 {
        return Err(format!("GET /metrics: status {}", resp.status));
    }
    parse_figures(&resp.body)
}

fn parse_figures(text: &str) -> Result<SplitFigures, String> {
    let one = |name: &str| {
        sum(text, &format!("{PREFIX}_{name}"), None).ok_or_else(|| format!("{PREFIX}_{name} missing from /metrics"))
    };
    let checkouts = |role: &str| sum(text, &format!("{PREFIX}_checkouts_total"), Some(("role", role))).unwrap_or(0.0);
    Ok(SplitFigures {
        cache_hits: one("query_cache_hits_total")?,
        cache_misses: one("query_cache_misses_total")?,
        cache_entries: one("query_cache_entries")?,
        primary_checkouts: checkouts("primary"),
        replica_checkouts: checkouts("replica"),
    })
}

/// The sum of the samples of metric `name` (with label `label` = value, if
/// given) in a text exposition; `None` when it has none.
fn sum(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
        if metric != name || label.is_some_and(|(k, v)| !labels.contains(&format!("{k}=\"{v}\""))) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_figures_from_an_exposition() {
        let text = "\
# HELP bench_split_query_cache_hits_total x
# TYPE bench_split_query_cache_hits_total counter
bench_split_query_cache_hits_total 998
bench_split_query_cache_misses_total 2
bench_split_query_cache_entries 2
bench_split_checkouts_total{database=\"pgdog\",role=\"primary\",server=\"127.0.0.1:1\"} 10
bench_split_checkouts_total{database=\"pgdog\",role=\"replica\",server=\"127.0.0.1:2\"} 990
bench_split_checkouts_totally_else 5
";
        let f = parse_figures(text).unwrap();
        assert_eq!((f.cache_hits, f.cache_misses, f.cache_entries), (998.0, 2.0, 2.0));
        assert_eq!(f.hit_rate(), Some(0.998));
        assert_eq!(f.replica_share(), Some(0.99));
        assert!(parse_figures("bench_split_checkouts_total 1\n").is_err());
    }

    #[test]
    fn split_runs_are_select_only_at_ten_clients() {
        let w = |script, mode, clients| Workload { script, mode, clients };
        assert!(runs(&w(Script::SelectOnly, QueryMode::Simple, 10)));
        assert!(runs(&w(Script::SelectOnly, QueryMode::Extended, 10)));
        assert!(!runs(&w(Script::SelectOnly, QueryMode::Prepared, 10)));
        assert!(!runs(&w(Script::SelectOnly, QueryMode::Simple, 100)));
        assert!(!runs(&w(Script::TpcbLike, QueryMode::Simple, 10)));
    }
}
