//! Configuration types: what `pgdog.toml` and `users.toml` hold once parsed.
//!
//! These structs are the schema. `load.rs` reads files into them (unknown keys
//! are errors), `validate.rs` range-checks them, `env.rs` applies environment
//! overrides. Durations are milliseconds and their keys end in `_ms`
//! (`server_idle_timeout` keeps its historical name and is also ms).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `pgdog.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    pub general: General,
    /// Pool settings by pool name; users pick one with `pool`, `default` otherwise.
    pub pools: BTreeMap<String, PoolSettings>,
    pub databases: Vec<DatabaseEntry>,
    pub sharding: Sharding,
    pub admin: Admin,
    pub metrics: Metrics,
    pub api: Api,
    pub query_routing: QueryRouting,
}

/// `[query_routing]`: read/write splitting between a database's primary and
/// its replicas.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryRouting {
    /// Send reads to replicas. Off by default: it changes what a client may
    /// read (a replica can lag), so operators opt in.
    pub read_write_split: bool,
    /// Every statement of an explicit transaction goes to the primary (a
    /// `BEGIN READ ONLY` transaction may still run whole on a replica).
    pub sticky_transactions: bool,
    /// Replicas lagging more than this many milliseconds get no reads.
    pub max_replica_lag: u64,
    pub load_balancing: LoadBalancing,
    /// The primary also serves reads, as one more member of the read set.
    pub primary_reads: bool,
    /// Functions that write, beyond the built-in ones (nextval, setval,
    /// pg_advisory_*, lo_*): a query calling one goes to the primary.
    pub writing_functions: Vec<String>,
    /// After a client writes outside a transaction, its reads go to the
    /// primary for this many milliseconds (read-your-writes); 0 turns it off.
    pub read_your_writes_ms: u64,
    /// Entries of the classifier's cache of query shapes, per worker.
    pub query_cache_size: usize,
    /// How often each replica is health-checked and its lag measured.
    pub health_check_interval_ms: u64,
    /// Time a health check may take (connect plus query) before it fails.
    pub health_check_timeout_ms: u64,
    /// How long reads avoid a replica that failed a check or a checkout.
    pub ban_time_ms: u64,
    /// Where reads go when no replica is eligible.
    pub replica_fallback: ReplicaFallback,
}

/// What a read does when every replica is banned or lagging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaFallback {
    /// The primary serves it.
    Primary,
    /// It fails with SQLSTATE 08006.
    Error,
}

impl Default for QueryRouting {
    fn default() -> Self {
        Self {
            read_write_split: false,
            sticky_transactions: true,
            max_replica_lag: 10_000,
            load_balancing: LoadBalancing::RoundRobin,
            primary_reads: false,
            writing_functions: Vec::new(),
            read_your_writes_ms: 0,
            query_cache_size: 10_000,
            health_check_interval_ms: 1_000,
            health_check_timeout_ms: 1_000,
            ban_time_ms: 5_000,
            replica_fallback: ReplicaFallback::Primary,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    RoundRobin,
    Random,
    LeastActive,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    pub host: String,
    pub port: u16,
    pub admin_port: u16,
    pub metrics_port: u16,
    /// Event-loop threads; 0 means one per core.
    pub workers: usize,
    pub tls_certificate: Option<String>,
    pub tls_private_key: Option<String>,
    /// CA bundle; when set, clients must present a certificate it signed.
    pub tls_ca: Option<String>,
    pub tls_mode: ClientTlsMode,
    /// CA bundle for `server_tls = "verify-full"`; the Mozilla roots when unset.
    pub server_tls_ca: Option<String>,
    pub max_client_conn: usize,
    pub client_login_timeout_ms: u64,
    /// 0 disables.
    pub idle_in_transaction_timeout_ms: u64,
    pub shutdown_timeout_ms: u64,
    /// Timeout for opening (TCP + TLS + auth) one server connection.
    pub connect_timeout_ms: u64,
    /// Idle time after which a server connection is checked (`;`) before reuse.
    pub server_check_delay_ms: u64,
    pub tcp_keepalive: bool,
    pub tcp_keepalive_idle_ms: u64,
    pub tcp_keepalive_interval_ms: u64,
    pub tcp_keepalive_count: u32,
    pub log_level: String,
    /// Log every query with its duration, pool and server.
    pub log_queries: bool,
}

impl Default for General {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 5432,
            admin_port: 6432,
            metrics_port: 9090,
            workers: 0,
            tls_certificate: None,
            tls_private_key: None,
            tls_ca: None,
            tls_mode: ClientTlsMode::Allow,
            server_tls_ca: None,
            max_client_conn: 10_000,
            client_login_timeout_ms: 15_000,
            idle_in_transaction_timeout_ms: 0,
            shutdown_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            server_check_delay_ms: 30_000,
            tcp_keepalive: true,
            tcp_keepalive_idle_ms: 60_000,
            tcp_keepalive_interval_ms: 10_000,
            tcp_keepalive_count: 6,
            log_level: "info".into(),
            log_queries: false,
        }
    }
}

/// What the router asks of clients. `allow`: TLS if the client asks and a
/// certificate is configured; `require`: plaintext clients are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    Disable,
    Allow,
    Require,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolMode {
    Transaction,
    Session,
    Statement,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    pub pool_mode: PoolMode,
    pub min_pool_size: usize,
    pub max_pool_size: usize,
    /// Milliseconds an idle server connection is kept above `min_pool_size`.
    pub server_idle_timeout: u64,
    pub checkout_timeout_ms: u64,
    /// Server connections older than this are closed when returned; 0 = never.
    pub server_lifetime_ms: u64,
    /// Transaction and statement mode: named prepared statements each server
    /// connection keeps (least recently used closed beyond it); 0 turns the
    /// tracking off and passes statement names through unchanged.
    pub max_prepared_statements: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            pool_mode: PoolMode::Transaction,
            min_pool_size: 0,
            max_pool_size: 20,
            server_idle_timeout: 600_000,
            checkout_timeout_ms: 5_000,
            server_lifetime_ms: 3_600_000,
            max_prepared_statements: 200,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Primary,
    Replica,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTls {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// One `[[databases]]` entry: a server host serving a logical database.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseEntry {
    pub name: String,
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Database on the server; defaults to `name`.
    #[serde(default)]
    pub database_name: Option<String>,
    #[serde(default = "default_role")]
    pub role: Role,
    #[serde(default)]
    pub shard: Option<u32>,
    #[serde(default = "default_server_tls")]
    pub server_tls: ServerTls,
    /// Cap on server connections to this host across all pools; 0 = no cap.
    #[serde(default)]
    pub max_connections: usize,
}

impl DatabaseEntry {
    pub fn server_database(&self) -> &str {
        self.database_name.as_deref().unwrap_or(&self.name)
    }
}

fn default_pg_port() -> u16 {
    5432
}
fn default_role() -> Role {
    Role::Primary
}
fn default_server_tls() -> ServerTls {
    ServerTls::Prefer
}

/// `[sharding]`: accepted by the schema so rendered configs validate;
/// `enabled = true` is refused until sharding is built.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sharding {
    pub enabled: bool,
    pub default_shard_count: u32,
    pub sharding_function: ShardingFunction,
    pub tables: Vec<ShardedTable>,
    pub two_phase_commit: TwoPhaseCommit,
}

impl Default for Sharding {
    fn default() -> Self {
        Self {
            enabled: false,
            default_shard_count: 32,
            sharding_function: ShardingFunction::PostgresHash,
            tables: Vec::new(),
            two_phase_commit: TwoPhaseCommit::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardingFunction {
    PostgresHash,
    Crc32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardedTable {
    pub name: String,
    pub column: String,
    #[serde(default)]
    pub shards: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwoPhaseCommit {
    pub enabled: bool,
    pub timeout_seconds: u64,
    pub cleanup_interval_seconds: u64,
}

impl Default for TwoPhaseCommit {
    fn default() -> Self {
        Self { enabled: false, timeout_seconds: 30, cleanup_interval_seconds: 60 }
    }
}

/// `[admin]`: the admin console on `general.admin_port`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Names from users.toml allowed on the admin port (their users.toml
    /// passwords and auth method apply).
    pub admin_users: Vec<String>,
    /// Whether the console's RELOAD command is allowed.
    pub allow_reload: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Self { admin_users: vec!["pgdog_admin".into()], allow_reload: true }
    }
}

/// `[metrics]`: the Prometheus endpoint on `general.metrics_port`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Prefix of every metric name.
    pub metric_prefix: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self { metric_prefix: "orochi_pgdog".into() }
    }
}

/// `[api]`: the HTTP control API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    pub port: u16,
    /// Listen address; `general.host` when unset.
    pub bind: Option<String>,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// File holding the bearer token (one trailing newline dropped).
    pub token_file: Option<String>,
    /// The resolved token (`PGDOG_API_TOKEN`, `token_file` or `token_env`);
    /// never written out. None: the authenticated endpoints are disabled.
    #[serde(skip)]
    pub token: Option<String>,
}

impl Default for Api {
    fn default() -> Self {
        Self { port: 8080, bind: None, token_env: None, token_file: None, token: None }
    }
}

/// `users.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsersConfig {
    pub users: Vec<UserEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    Scram,
    Md5,
    Trust,
}

/// One `[[users]]` entry as written in the file. Secrets may come from the
/// file, an environment variable or another file; `resolve` turns the three
/// forms into one value (see `secrets.rs`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    /// Logical database this entry grants.
    pub database: String,
    /// Pool settings name; `default` when absent.
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
    #[serde(default)]
    pub server_user: Option<String>,
    #[serde(default)]
    pub server_password: Option<String>,
    #[serde(default)]
    pub server_password_env: Option<String>,
    #[serde(default)]
    pub server_password_file: Option<String>,
    #[serde(default = "default_auth")]
    pub auth: AuthMethod,
    /// A read-only user: never routed to the primary; writes are refused
    /// with 25006 (needs `[query_routing] read_write_split`).
    #[serde(default)]
    pub force_replica: bool,
}

fn default_auth() -> AuthMethod {
    AuthMethod::Scram
}

/// A user entry after secrets are resolved: what the router runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    /// Plain password, `SCRAM-SHA-256$...` verifier or `md5...` hash; None only for trust.
    pub password: Option<String>,
    pub database: String,
    pub pool: String,
    pub pool_mode: Option<PoolMode>,
    pub server_user: String,
    /// None: the server must accept the user without a password (trust).
    pub server_password: Option<String>,
    pub auth: AuthMethod,
    pub force_replica: bool,
}

/// Both files, loaded, resolved and validated: the snapshot a reload swaps.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub router: RouterConfig,
    pub users: Vec<User>,
}
