//! The SHOW views. Each starts with PgBouncer 1.18's columns, verbatim and
//! in order (see shared/reference/pgbouncer-admin-columns.md), so exporters
//! and dashboards built on PgBouncer's console keep working; the router's
//! own columns follow. Counters PgBouncer has and the router does not track
//! (cancel requests in flight, tested connections) are 0.

use std::collections::BTreeMap;

use crate::backend::pool::PoolShared;
use crate::config::{PoolMode, Role};
use crate::runtime::{Shared, Snapshot};
use crate::stats::clients::ClientState;
use crate::stats::Totals;

use super::table::{timestamp, Kind, Table, Value};

use Kind::{Float, Int, Text};

pub fn mode_name(mode: PoolMode) -> &'static str {
    match mode {
        PoolMode::Transaction => "transaction",
        PoolMode::Session => "session",
        PoolMode::Statement => "statement",
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Replica => "replica",
    }
}

/// The `[pools.NAME]` a pool's user draws its settings from.
pub fn pool_name(snapshot: &Snapshot, user: &str, database: &str) -> String {
    snapshot
        .config
        .users
        .iter()
        .find(|u| u.name == user && u.database == database)
        .map(|u| u.pool.clone())
        .unwrap_or_else(|| "default".into())
}

/// SHOW POOLS' columns; also the fields of `GET /api/v1/pools` (the
/// `Pool` schema in `http/openapi.json` lists the same, checked by a test).
pub const POOLS_COLUMNS: [(&str, Kind); 25] = [
    ("database", Text),
    ("user", Text),
    ("cl_active", Int),
    ("cl_waiting", Int),
    ("cl_active_cancel_req", Int),
    ("cl_waiting_cancel_req", Int),
    ("sv_active", Int),
    ("sv_active_cancel", Int),
    ("sv_being_canceled", Int),
    ("sv_idle", Int),
    ("sv_used", Int),
    ("sv_tested", Int),
    ("sv_login", Int),
    ("maxwait", Int),
    ("maxwait_us", Int),
    ("pool_mode", Text),
    // The router's own.
    ("role", Text),
    ("host", Text),
    ("port", Int),
    ("pool", Text),
    ("pool_size", Int),
    ("paused", Int),
    ("banned", Int),
    ("replica_lag_ms", Int),
    ("last_error", Text),
];

pub fn pools(shared: &Shared) -> Table {
    let mut t = Table::new(&POOLS_COLUMNS);
    let snapshot = shared.snapshot();
    let clients = shared.client_list.counts();
    for (key, pool) in &snapshot.pools {
        let s = pool.stats();
        let logged_in = clients.get(key).copied().unwrap_or(0);
        let wait = pool.oldest_wait_age_us().unwrap_or(0);
        let login = (pool.open_count() as u64).saturating_sub(s.active + s.idle);
        t.push(vec![
            key.database.as_str().into(),
            key.user.as_str().into(),
            logged_in.saturating_sub(s.waiting).into(),
            s.waiting.into(),
            0u64.into(),
            0u64.into(),
            s.active.into(),
            0u64.into(),
            0u64.into(),
            s.idle.into(),
            0u64.into(),
            0u64.into(),
            login.into(),
            (wait / 1_000_000).into(),
            (wait % 1_000_000).into(),
            mode_name(pool.mode()).into(),
            pool.live_role().into(),
            key.host.as_str().into(),
            key.port.into(),
            pool_name(&snapshot, &key.user, &key.database).into(),
            pool.max_size().into(),
            pool.is_paused().into(),
            (!pool.readable()).into(),
            lag(pool),
            last_error(pool),
        ]);
    }
    t
}

/// `replica_lag_ms`: the health monitor's last measurement, NULL for the
/// host that takes writes or before the first one.
fn lag(pool: &PoolShared) -> Value {
    match (pool.is_writer(), pool.lag_ms()) {
        (false, Some(ms)) => ms.into(),
        _ => Value::Null,
    }
}

fn last_error(pool: &PoolShared) -> Value {
    pool.last_error().map(Value::from).unwrap_or(Value::Null)
}

/// SHOW CLIENTS and SHOW SERVERS share PgBouncer's column list.
const CONNECTION_COLUMNS: [(&str, Kind); 18] = [
    ("type", Text),
    ("user", Text),
    ("database", Text),
    ("state", Text),
    ("addr", Text),
    ("port", Int),
    ("local_addr", Text),
    ("local_port", Int),
    ("connect_time", Text),
    ("request_time", Text),
    ("wait", Int),
    ("wait_us", Int),
    ("close_needed", Int),
    ("ptr", Text),
    ("link", Text),
    ("remote_pid", Int),
    ("tls", Text),
    ("application_name", Text),
];

fn connection_table(ours: &[(&'static str, Kind)]) -> Table {
    let mut columns = CONNECTION_COLUMNS.to_vec();
    columns.extend_from_slice(ours);
    Table::new(&columns)
}

pub fn clients(shared: &Shared) -> Table {
    let mut t = connection_table(&[("id", Int), ("server_host", Text), ("server_port", Int)]);
    let now = std::time::SystemTime::now();
    for c in shared.client_list.list() {
        let state = c.activity.state();
        let request_time = c.activity.request_time();
        // PgBouncer's wait / wait_us: how long a waiting client has waited
        // for a server so far (seconds, then the microseconds part).
        let waited = match state {
            ClientState::Waiting => now.duration_since(request_time).unwrap_or_default(),
            _ => std::time::Duration::ZERO,
        };
        t.push(vec![
            "C".into(),
            c.pool.key.user.as_str().into(),
            c.pool.key.database.as_str().into(),
            state.name().into(),
            c.addr.ip().to_string().into(),
            c.addr.port().into(),
            c.local_addr.map(|a| a.ip().to_string()).unwrap_or_default().into(),
            c.local_addr.map(|a| a.port()).unwrap_or(0).into(),
            timestamp(c.connected).into(),
            timestamp(request_time).into(),
            waited.as_secs().into(),
            u64::from(waited.subsec_micros()).into(),
            0u64.into(),
            format!("{:x}", c.id).into(),
            "".into(),
            0i32.into(),
            if c.tls { "TLS" } else { "" }.into(),
            c.application_name.as_ref().into(),
            c.id.into(),
            c.pool.key.host.as_str().into(),
            c.pool.key.port.into(),
        ]);
    }
    t
}

pub fn servers(shared: &Shared) -> Table {
    let mut t = connection_table(&[
        ("role", Text),
        ("server_user", Text),
        ("server_database", Text),
        ("banned", Int),
        ("replica_lag_ms", Int),
        ("last_error", Text),
    ]);
    let snapshot = shared.snapshot();
    for (key, pool) in &snapshot.pools {
        for (entry, idle) in pool.servers() {
            let connected = timestamp(entry.connected);
            t.push(vec![
                "S".into(),
                key.user.as_str().into(),
                key.database.as_str().into(),
                if idle { "idle" } else { "active" }.into(),
                key.host.as_str().into(),
                key.port.into(),
                entry.local_addr.map(|a| a.ip().to_string()).unwrap_or_default().into(),
                entry.local_addr.map(|a| a.port()).unwrap_or(0).into(),
                connected.clone().into(),
                connected.into(),
                0u64.into(),
                0u64.into(),
                pool.is_retired().into(),
                format!("{:x}", entry.pid).into(),
                "".into(),
                entry.pid.into(),
                if entry.tls { "TLS" } else { "" }.into(),
                "pgdog-router".into(),
                pool.live_role().into(),
                pool.target.user.as_str().into(),
                pool.target.database.as_str().into(),
                (!pool.readable()).into(),
                lag(pool),
                last_error(pool),
            ]);
        }
    }
    t
}

/// Counters of every pool of the snapshot, summed per logical database.
pub fn totals_by_database(snapshot: &Snapshot) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for (key, pool) in &snapshot.pools {
        out.entry(key.database.clone()).or_default().merge(&pool.stats());
    }
    out
}

pub fn stats(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("total_xact_count", Int),
        ("total_query_count", Int),
        ("total_received", Int),
        ("total_sent", Int),
        ("total_xact_time", Int),
        ("total_query_time", Int),
        ("total_wait_time", Int),
        ("avg_xact_count", Int),
        ("avg_query_count", Int),
        ("avg_recv", Int),
        ("avg_sent", Int),
        ("avg_xact_time", Int),
        ("avg_query_time", Int),
        ("avg_wait_time", Int),
        // The router's own.
        ("total_errors", Int),
    ]);
    let totals = totals_by_database(&shared.snapshot());
    let sampler = shared.sampler.lock().unwrap_or_else(|e| e.into_inner());
    for (database, s) in &totals {
        let a = sampler.averages(database);
        t.push(vec![
            database.as_str().into(),
            s.transactions.into(),
            s.queries.into(),
            s.received.into(),
            s.sent.into(),
            s.transaction_us.into(),
            s.query_us.into(),
            s.wait_us.into(),
            a.xact_count.into(),
            a.query_count.into(),
            a.recv.into(),
            a.sent.into(),
            a.xact_time.into(),
            a.query_time.into(),
            a.wait_time.into(),
            s.errors.values().sum::<u64>().into(),
        ]);
    }
    t
}

pub fn databases(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", Text),
        ("host", Text),
        ("port", Int),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int),
        ("min_pool_size", Int),
        ("reserve_pool", Int),
        ("pool_mode", Text),
        ("max_connections", Int),
        ("current_connections", Int),
        ("paused", Int),
        ("disabled", Int),
        // The router's own.
        ("role", Text),
        ("shard", Int),
    ]);
    let snapshot = shared.snapshot();
    let default = snapshot.config.router.pools.get("default").cloned().unwrap_or_default();
    for db in &snapshot.config.router.databases {
        let pools: Vec<_> = snapshot
            .pools
            .iter()
            .filter(|(k, _)| k.database == db.name && k.host == db.host && k.port == db.port)
            .map(|(_, p)| p)
            .collect();
        let current: usize = pools.iter().map(|p| p.open_count()).sum();
        let paused = !pools.is_empty() && pools.iter().all(|p| p.is_paused());
        t.push(vec![
            db.name.as_str().into(),
            db.host.as_str().into(),
            db.port.into(),
            db.server_database().into(),
            Value::Null,
            default.max_pool_size.into(),
            default.min_pool_size.into(),
            0u64.into(),
            mode_name(default.pool_mode).into(),
            db.max_connections.into(),
            current.into(),
            paused.into(),
            0u64.into(),
            role_name(db.role).into(),
            db.shard.map(|s| Value::from(s as u64)).unwrap_or(Value::Null),
        ]);
    }
    t
}

/// Keys that take effect only at start-up: the client port and its worker
/// threads. (A reload moves the console, metrics and API listeners, which
/// `general.host` also places, but not the client port.)
const RESTART_ONLY: [&str; 4] = ["general.host", "general.port", "general.workers", "general.max_client_conn"];

/// Names whose values are secrets wherever they appear.
fn is_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    matches!(last, "password" | "server_password" | "token" | "secret")
}

/// The running `pgdog.toml` (defaults filled in) as key/value rows; no
/// secret is shown (the API token is never serialised, users are not part
/// of this file).
pub fn config(shared: &Shared) -> Table {
    let mut t = Table::new(&[("key", Text), ("value", Text), ("default", Text), ("changeable", Text)]);
    let snapshot = shared.snapshot();
    let current = flatten(&snapshot.config.router);
    let defaults = flatten(&crate::config::RouterConfig::default());
    for (key, value) in current {
        let value = if is_secret(&key) { "<redacted>".to_string() } else { value };
        let default = defaults.get(&key).cloned().map(Value::from).unwrap_or(Value::Null);
        let changeable = if RESTART_ONLY.contains(&key.as_str()) { "no" } else { "yes" };
        t.push(vec![key.into(), value.into(), default, changeable.into()]);
    }
    t
}

/// Dotted keys and display values of a serialisable config.
fn flatten<T: serde::Serialize>(value: &T) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            toml::Value::Array(items) if items.iter().any(|i| i.is_table()) => {
                for (i, item) in items.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), item, out);
                }
            }
            toml::Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = toml::Value::try_from(value) {
        walk("", &v, &mut out);
    }
    out
}

/// The read/write classifier's cache of query shapes, one row per worker
/// (each worker has its own cache). `hit_rate` is NULL before the first
/// lookup; `capacity` is 0 on a worker that has not needed a classifier
/// (no split session logged in there yet, or `read_write_split` off).
pub fn query_cache(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("worker", Int),
        ("hits", Int),
        ("misses", Int),
        ("hit_rate", Float),
        ("entries", Int),
        ("capacity", Int),
    ]);
    for (worker, counters) in shared.query_caches.iter().enumerate() {
        let f = counters.figures();
        t.push(vec![
            worker.into(),
            f.hits.into(),
            f.misses.into(),
            f.hit_rate().map(Value::from).unwrap_or(Value::Null),
            f.entries.into(),
            f.capacity.into(),
        ]);
    }
    t
}

pub fn version() -> Table {
    let mut t = Table::new(&[("version", Text)]);
    t.push(vec![format!("pgdog-router {}", env!("CARGO_PKG_VERSION")).into()]);
    t
}
