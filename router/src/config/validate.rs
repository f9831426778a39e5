//! Validation: the checks serde cannot express. Ranges, keys that must agree
//! with each other, and references from `users.toml` into `pgdog.toml`.
//!
//! Checks run in file order and stop at the first problem: the error is one
//! line, and fixing problems one at a time in order is what an operator does
//! anyway. Each problem is reported against the key that holds the bad value,
//! so `load.rs` can point at its line.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;

use super::load::{Issue, KeyPath};
use super::types::{ClientTlsMode, General, PoolSettings, Role, RouterConfig, User};

const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// Check `pgdog.toml` on its own (after environment overrides).
pub(crate) fn check_router(cfg: &RouterConfig) -> Result<(), Issue> {
    check_general(&cfg.general)?;
    for (name, pool) in &cfg.pools {
        check_pool(&KeyPath::new("pools").key(name), pool)?;
    }
    check_databases(cfg)?;
    check_sharding(cfg)?;
    check_query_routing(&cfg.query_routing)?;
    check_ops(cfg)
}

/// `[admin]`, `[metrics]`, `[api]`.
fn check_ops(cfg: &RouterConfig) -> Result<(), Issue> {
    for (i, name) in cfg.admin.admin_users.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(Issue::router(KeyPath::new("admin.admin_users").index(i), "must not be empty"));
        }
    }
    let prefix = &cfg.metrics.metric_prefix;
    let valid =
        prefix.chars().enumerate().all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
    if prefix.is_empty() || !valid {
        return Err(Issue::router(
            KeyPath::new("metrics.metric_prefix"),
            format!(
                "{prefix:?} is not a Prometheus metric name prefix (letters, digits and _, not starting with a digit)"
            ),
        ));
    }
    let api = &cfg.api;
    in_range(KeyPath::new("api.port"), api.port, 1, u16::MAX)?;
    let general = &cfg.general;
    for (other, port) in
        [("port", general.port), ("admin_port", general.admin_port), ("metrics_port", general.metrics_port)]
    {
        if api.port == port {
            return Err(Issue::router(
                KeyPath::new("api.port"),
                format!("port {port} is already used by general.{other}"),
            ));
        }
    }
    if api.bind.as_deref().is_some_and(|b| b.trim().is_empty()) {
        return Err(Issue::router(KeyPath::new("api.bind"), "must not be empty (omit it to use general.host)"));
    }
    Ok(())
}

/// Check resolved users against each other and against `pgdog.toml`.
pub(crate) fn check_users(users: &[User], cfg: &RouterConfig) -> Result<(), Issue> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, user) in users.iter().enumerate() {
        let at = KeyPath::new("users").index(index);
        if let Some(first) = seen.insert((&user.name, &user.database), index) {
            return Err(Issue::users(
                at.key("name"),
                format!("duplicate user {:?} for database {:?} (also users[{first}])", user.name, user.database),
            ));
        }
        if !cfg.pools.contains_key(&user.pool) {
            return Err(Issue::users(
                at.key("pool"),
                format!(
                    "user {:?} names pool {:?}, which is not in [pools] ({})",
                    user.name,
                    user.pool,
                    names(&cfg.pools)
                ),
            ));
        }
        if !cfg.databases.iter().any(|db| db.name == user.database) {
            return Err(Issue::users(
                at.key("database"),
                format!("user {:?} names database {:?}, which no [[databases]] entry serves", user.name, user.database),
            ));
        }
        if user.force_replica && !cfg.query_routing.read_write_split {
            return Err(Issue::users(
                at.key("force_replica"),
                "needs [query_routing] read_write_split = true in pgdog.toml (without it every query goes to the primary)",
            ));
        }
    }
    Ok(())
}

fn check_general(general: &General) -> Result<(), Issue> {
    let key = |name: &str| KeyPath::new("general").key(name);
    if general.host.trim().is_empty() {
        return Err(Issue::router(key("host"), "must not be empty"));
    }
    let ports = [("port", general.port), ("admin_port", general.admin_port), ("metrics_port", general.metrics_port)];
    for (i, &(name, port)) in ports.iter().enumerate() {
        in_range(key(name), port, 1, u16::MAX)?;
        if let Some((other, _)) = ports[..i].iter().find(|(_, p)| *p == port) {
            return Err(Issue::router(key(name), format!("port {port} is already used by general.{other}")));
        }
    }
    at_most(key("workers"), general.workers, 1024)?;
    if general.tls_certificate.is_some() != general.tls_private_key.is_some() {
        let (set, missing) = if general.tls_certificate.is_some() {
            ("tls_certificate", "tls_private_key")
        } else {
            ("tls_private_key", "tls_certificate")
        };
        return Err(Issue::router(key(set), format!("general.{missing} must be set too (set both or neither)")));
    }
    if general.tls_mode == ClientTlsMode::Require && general.tls_certificate.is_none() {
        return Err(Issue::router(
            key("tls_mode"),
            "\"require\" needs general.tls_certificate and general.tls_private_key",
        ));
    }
    if general.tls_ca.is_some() && general.tls_certificate.is_none() {
        return Err(Issue::router(
            key("tls_ca"),
            "client certificates need TLS: set general.tls_certificate and general.tls_private_key too",
        ));
    }
    in_range(key("max_client_conn"), general.max_client_conn, 1, 1_000_000)?;
    in_range(key("client_login_timeout_ms"), general.client_login_timeout_ms, 1, u64::MAX)?;
    at_most(key("shutdown_timeout_ms"), general.shutdown_timeout_ms, 86_400_000)?;
    check_log_level(&general.log_level).map_err(|message| Issue::router(key("log_level"), message))
}

/// A level name, or an `EnvFilter` directive string (it contains `=`, such
/// as `info,pgdog_router::backend=debug`), which the subscriber parses itself.
fn check_log_level(level: &str) -> Result<(), String> {
    if level.contains('=') || LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level.trim())) {
        Ok(())
    } else {
        Err(format!(
            "unknown level {level:?} (expected one of {}, or a filter directive such as \"info,pgdog_router=debug\")",
            LOG_LEVELS.join(", ")
        ))
    }
}

fn check_pool(at: &KeyPath, pool: &PoolSettings) -> Result<(), Issue> {
    in_range(at.key("max_pool_size"), pool.max_pool_size, 1, 10_000)?;
    in_range(at.key("max_prepared_statements"), pool.max_prepared_statements, 0, 100_000)?;
    if pool.min_pool_size > pool.max_pool_size {
        return Err(Issue::router(
            at.key("min_pool_size"),
            format!("{} is larger than max_pool_size ({})", pool.min_pool_size, pool.max_pool_size),
        ));
    }
    in_range(at.key("checkout_timeout_ms"), pool.checkout_timeout_ms, 1, 3_600_000)
}

fn check_databases(cfg: &RouterConfig) -> Result<(), Issue> {
    // (logical database, shard) -> index of its primary
    let mut primaries: HashMap<(&str, u32), usize> = HashMap::new();
    // (logical database, shard, host, port) -> first entry: a host listed
    // twice in one shard would be two pools of one server, and ambiguous
    // to the failover logic.
    let mut hosts: HashMap<(&str, u32, &str, u16), usize> = HashMap::new();
    for (index, db) in cfg.databases.iter().enumerate() {
        let at = KeyPath::new("databases").index(index);
        if db.name.trim().is_empty() {
            return Err(Issue::router(at.key("name"), "must not be empty"));
        }
        if db.host.trim().is_empty() {
            return Err(Issue::router(at.key("host"), "must not be empty"));
        }
        in_range(at.key("port"), db.port, 1, u16::MAX)?;
        if db.database_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(Issue::router(at.key("database_name"), "must not be empty (omit it to use name)"));
        }
        at_most(at.key("max_connections"), db.max_connections, 100_000)?;
        let shard_hosts = hosts.keys().filter(|k| k.0 == db.name && k.1 == db.shard.unwrap_or(0)).count();
        if shard_hosts >= crate::backend::topology::MAX_HOSTS {
            return Err(Issue::router(
                at.key("host"),
                format!("database {:?} has more than {} hosts", db.name, crate::backend::topology::MAX_HOSTS),
            ));
        }
        if let Some(first) = hosts.insert((&db.name, db.shard.unwrap_or(0), &db.host, db.port), index) {
            return Err(Issue::router(
                at.key("host"),
                format!(
                    "database {:?} already lists {}:{} (databases[{first}]); a host may serve a database (shard) once",
                    db.name, db.host, db.port
                ),
            ));
        }
        if db.role == Role::Primary {
            // Without sharding every entry is shard 0.
            let shard = db.shard.unwrap_or(0);
            if let Some(first) = primaries.insert((&db.name, shard), index) {
                return Err(Issue::router(
                    at.key("role"),
                    format!(
                        "database {:?} shard {shard} already has a primary (databases[{first}]); \
                         at most one entry per shard may have role = \"primary\"",
                        db.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_query_routing(routing: &crate::config::types::QueryRouting) -> Result<(), Issue> {
    let at = KeyPath::new("query_routing");
    in_range(at.key("query_cache_size"), routing.query_cache_size, 1, 1_000_000)?;
    at_most(at.key("max_replica_lag"), routing.max_replica_lag, 86_400_000)?;
    at_most(at.key("read_your_writes_ms"), routing.read_your_writes_ms, 86_400_000)?;
    in_range(at.key("health_check_interval_ms"), routing.health_check_interval_ms, 10, 3_600_000)?;
    in_range(at.key("health_check_timeout_ms"), routing.health_check_timeout_ms, 10, 3_600_000)?;
    in_range(at.key("ban_time_ms"), routing.ban_time_ms, 1, 86_400_000)?;
    for (i, f) in routing.writing_functions.iter().enumerate() {
        if f.trim().is_empty() {
            return Err(Issue::router(at.key("writing_functions").index(i), "must not be empty"));
        }
    }
    Ok(())
}

fn check_sharding(cfg: &RouterConfig) -> Result<(), Issue> {
    let at = KeyPath::new("sharding");
    if cfg.sharding.enabled {
        return Err(Issue::router(at.key("enabled"), "sharding is not supported yet (sharding.enabled must be false)"));
    }
    in_range(at.key("default_shard_count"), cfg.sharding.default_shard_count, 1, 1024)
}

fn in_range<T: PartialOrd + Display>(key: KeyPath, value: T, min: T, max: T) -> Result<(), Issue> {
    if value < min || value > max {
        return Err(Issue::router(key, format!("{value} is out of range (expected {min}..={max})")));
    }
    Ok(())
}

fn at_most<T: PartialOrd + Display>(key: KeyPath, value: T, max: T) -> Result<(), Issue> {
    if value > max {
        return Err(Issue::router(key, format!("{value} is out of range (expected at most {max})")));
    }
    Ok(())
}

fn names<V>(map: &BTreeMap<String, V>) -> String {
    let names: Vec<&str> = map.keys().map(String::as_str).collect();
    format!("defined: {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::load::{parse_str, ConfigError};

    const DB: &str = "[[databases]]\nname = \"postgres\"\nhost = \"127.0.0.1\"\n";
    const USER: &str = "[[users]]\nname = \"alice\"\npassword = \"pw\"\ndatabase = \"postgres\"\n";

    fn parse(config: &str, users: &str) -> Result<(), ConfigError> {
        parse_str(config, "pgdog.toml", users, "users.toml", &|_| None).map(|_| ())
    }

    #[test]
    fn valid_configs_pass() {
        let cases: &[(&str, &str, &str)] = &[
            ("minimal", DB, USER),
            ("empty files", "", ""),
            ("level directive", "[general]\nlog_level = \"info,pgdog_router=trace\"\n", ""),
            ("upper-case level", "[general]\nlog_level = \"WARN\"\n", ""),
            ("tls pair", "[general]\ntls_mode = \"require\"\ntls_certificate = \"/c\"\ntls_private_key = \"/k\"\ntls_ca = \"/ca\"\n", ""),
            (
                "primaries on different shards and databases",
                "[[databases]]\nname = \"a\"\nhost = \"h\"\nshard = 0\n[[databases]]\nname = \"a\"\nhost = \"h\"\nshard = 1\n\
                 [[databases]]\nname = \"b\"\nhost = \"h\"\n[[databases]]\nname = \"b\"\nhost = \"h\"\nport = 5433\nrole = \"replica\"\n",
                "",
            ),
            (
                "named pool and same user on two databases",
                "[pools.reporting]\nmax_pool_size = 5\n[[databases]]\nname = \"postgres\"\nhost = \"h\"\n[[databases]]\nname = \"other\"\nhost = \"h\"\n",
                "[[users]]\nname = \"a\"\npassword = \"p\"\ndatabase = \"postgres\"\npool = \"reporting\"\n\
                 [[users]]\nname = \"a\"\npassword = \"p\"\ndatabase = \"other\"\n",
            ),
            ("limits inclusive", "[general]\nworkers = 1024\nmax_client_conn = 1000000\nshutdown_timeout_ms = 86400000\n[pools.default]\nmin_pool_size = 10000\nmax_pool_size = 10000\ncheckout_timeout_ms = 3600000\n[sharding]\ndefault_shard_count = 1024\n", ""),
        ];
        for (case, config, users) in cases {
            if let Err(err) = parse(config, users) {
                panic!("{case}: {err}");
            }
        }
    }

    /// (pgdog.toml, users.toml, expected start: "file:line:col: key:", words in the rest)
    #[test]
    fn every_check_names_file_line_and_key() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("[general]\nport = 0\n", "", "pgdog.toml:2:1: general.port:", "0 is out of range (expected 1..=65535)"),
            ("[general]\nadmin_port = 0\n", "", "pgdog.toml:2:1: general.admin_port:", "out of range"),
            ("[general]\n\nmetrics_port = 0\n", "", "pgdog.toml:3:1: general.metrics_port:", "out of range"),
            ("[general]\nport = 7000\nadmin_port = 7000\n", "", "pgdog.toml:3:1: general.admin_port:", "port 7000 is already used by general.port"),
            ("[general]\nmetrics_port = 6432\n", "", "pgdog.toml:2:1: general.metrics_port:", "already used by general.admin_port"),
            ("[general]\nhost = \"\"\n", "", "pgdog.toml:2:1: general.host:", "must not be empty"),
            ("[general]\nworkers = 1025\n", "", "pgdog.toml:2:1: general.workers:", "1025 is out of range (expected at most 1024)"),
            ("[general]\nmax_client_conn = 0\n", "", "pgdog.toml:2:1: general.max_client_conn:", "expected 1..=1000000"),
            ("[general]\nmax_client_conn = 1000001\n", "", "pgdog.toml:2:1: general.max_client_conn:", "out of range"),
            ("[general]\nclient_login_timeout_ms = 0\n", "", "pgdog.toml:2:1: general.client_login_timeout_ms:", "out of range"),
            ("[general]\nshutdown_timeout_ms = 86400001\n", "", "pgdog.toml:2:1: general.shutdown_timeout_ms:", "at most 86400000"),
            ("[general]\ntls_mode = \"require\"\n", "", "pgdog.toml:2:1: general.tls_mode:", "needs general.tls_certificate"),
            ("[general]\ntls_certificate = \"/c\"\n", "", "pgdog.toml:2:1: general.tls_certificate:", "general.tls_private_key must be set too"),
            ("[general]\ntls_private_key = \"/k\"\n", "", "pgdog.toml:2:1: general.tls_private_key:", "general.tls_certificate must be set too"),
            ("[general]\ntls_ca = \"/ca\"\n", "", "pgdog.toml:2:1: general.tls_ca:", "client certificates need TLS"),
            ("[general]\nlog_level = \"verbose\"\n", "", "pgdog.toml:2:1: general.log_level:", "unknown level \"verbose\" (expected one of trace, debug, info, warn, error"),
            ("[pools.default]\nmax_pool_size = 0\n", "", "pgdog.toml:2:1: pools.default.max_pool_size:", "expected 1..=10000"),
            ("[pools.big]\nmax_pool_size = 10001\n", "", "pgdog.toml:2:1: pools.big.max_pool_size:", "out of range"),
            ("[pools.default]\nmin_pool_size = 21\n", "", "pgdog.toml:2:1: pools.default.min_pool_size:", "21 is larger than max_pool_size (20)"),
            ("[pools.default]\ncheckout_timeout_ms = 0\n", "", "pgdog.toml:2:1: pools.default.checkout_timeout_ms:", "expected 1..=3600000"),
            ("[pools.\"a.b\"]\ncheckout_timeout_ms = 3600001\n", "", "pgdog.toml:2:1: pools.\"a.b\".checkout_timeout_ms:", "out of range"),
            ("[[databases]]\nname = \"\"\nhost = \"h\"\n", "", "pgdog.toml:2:1: databases[0].name:", "must not be empty"),
            ("[[databases]]\nname = \"d\"\nhost = \"h\"\n[[databases]]\nname = \"d\"\nhost = \" \"\n", "", "pgdog.toml:6:1: databases[1].host:", "must not be empty"),
            ("[[databases]]\nname = \"d\"\nhost = \"h\"\nport = 0\n", "", "pgdog.toml:4:1: databases[0].port:", "out of range"),
            ("[[databases]]\nname = \"d\"\nhost = \"h\"\ndatabase_name = \"\"\n", "", "pgdog.toml:4:1: databases[0].database_name:", "must not be empty"),
            ("[[databases]]\nname = \"d\"\nhost = \"h\"\nmax_connections = 100001\n", "", "pgdog.toml:4:1: databases[0].max_connections:", "at most 100000"),
            (
                "[[databases]]\nname = \"d\"\nhost = \"a\"\n\n[[databases]]\nname = \"d\"\nhost = \"b\"\nrole = \"replica\"\n\n[[databases]]\nname = \"d\"\nhost = \"c\"\nrole = \"primary\"\n",
                "",
                "pgdog.toml:13:1: databases[2].role:",
                "database \"d\" shard 0 already has a primary (databases[0])",
            ),
            (
                "[[databases]]\nname = \"d\"\nhost = \"a\"\nshard = 3\n[[databases]]\nname = \"d\"\nhost = \"b\"\nshard = 3\n",
                "",
                "pgdog.toml:5:1: databases[1].role:",
                "shard 3 already has a primary",
            ),
            (
                "[[databases]]\nname = \"d\"\nhost = \"a\"\n[[databases]]\nname = \"d\"\nhost = \"a\"\nport = 5432\nrole = \"replica\"\n",
                "",
                "pgdog.toml:6:1: databases[1].host:",
                "database \"d\" already lists a:5432 (databases[0])",
            ),
            ("[api]\nport = 5432\n", "", "pgdog.toml:2:1: api.port:", "port 5432 is already used by general.port"),
            ("[api]\nbind = \"\"\n", "", "pgdog.toml:2:1: api.bind:", "must not be empty"),
            ("[api]\ntoken_env = \"PGDOG_NO_SUCH_TOKEN_VAR\"\n", "", "pgdog.toml:2:1: api.token_env:", "is not set"),
            ("[api]\ntoken_env = \"A\"\ntoken_file = \"/x\"\n", "", "pgdog.toml:3:1: api.token_file:", "at most one"),
            ("[api]\ntoken_file = \"/nonexistent/token\"\n", "", "pgdog.toml:2:1: api.token_file:", "cannot read /nonexistent/token"),
            ("[metrics]\nmetric_prefix = \"9x\"\n", "", "pgdog.toml:2:1: metrics.metric_prefix:", "not a Prometheus metric name prefix"),
            ("[admin]\nadmin_users = [\"a\", \"\"]\n", "", "pgdog.toml:2:", "admin.admin_users[1]: must not be empty"),
            ("[sharding]\nenabled = true\n", "", "pgdog.toml:2:1: sharding.enabled:", "sharding is not supported yet (sharding.enabled must be false)"),
            ("[sharding]\ndefault_shard_count = 0\n", "", "pgdog.toml:2:1: sharding.default_shard_count:", "expected 1..=1024"),
            ("[sharding]\ndefault_shard_count = 1025\n", "", "pgdog.toml:2:1: sharding.default_shard_count:", "out of range"),
            (
                DB,
                "[[users]]\nname = \"a\"\npassword = \"p\"\ndatabase = \"postgres\"\npool = \"nope\"\n",
                "users.toml:5:1: users[0].pool:",
                "user \"a\" names pool \"nope\", which is not in [pools] (defined: default)",
            ),
            (
                DB,
                "[[users]]\nname = \"a\"\npassword = \"p\"\ndatabase = \"postgres\"\n[[users]]\nname = \"b\"\npassword = \"p\"\ndatabase = \"pg\"\n",
                "users.toml:8:1: users[1].database:",
                "user \"b\" names database \"pg\", which no [[databases]] entry serves",
            ),
            (
                DB,
                "[[users]]\nname = \"a\"\npassword = \"p\"\ndatabase = \"postgres\"\n[[users]]\nname = \"a\"\nauth = \"trust\"\ndatabase = \"postgres\"\n",
                "users.toml:6:1: users[1].name:",
                "duplicate user \"a\" for database \"postgres\" (also users[0])",
            ),
        ];
        for (config, users, start, words) in cases {
            let err = parse(config, users).expect_err(start).to_string();
            assert!(err.starts_with(start), "expected {start:?}, got {err:?}");
            assert!(err.contains(words), "{err:?} lacks {words:?}");
            assert!(!err.contains('\n'), "{err:?} is not one line");
        }
    }

    #[test]
    fn hosts_per_database_are_capped() {
        let max = crate::backend::topology::MAX_HOSTS;
        let hosts = |n: usize| {
            (0..n)
                .map(|i| format!("[[databases]]\nname = \"d\"\nhost = \"h{i}\"\nrole = \"replica\"\n"))
                .collect::<String>()
        };
        parse(&hosts(max), "").expect("MAX_HOSTS hosts are fine");
        let err = parse(&hosts(max + 1), "").expect_err("one more").to_string();
        assert!(err.contains(&format!("databases[{max}].host")), "{err}");
        assert!(err.contains(&format!("more than {max} hosts")), "{err}");
    }

    #[test]
    fn key_absent_from_file_points_at_its_table() {
        // max_pool_size keeps its default (20); the culprit is the table.
        let err = parse("[general]\nport = 7000\n\n[pools.default]\nmin_pool_size = 30\n", "").unwrap_err();
        assert!(err.to_string().starts_with("pgdog.toml:5:1: pools.default.min_pool_size:"), "{err}");
        let err = parse("[general]\nport = 6432\n", "").unwrap_err();
        assert!(err.to_string().starts_with("pgdog.toml:1:2: general.admin_port: port 6432"), "{err}");
    }
}
