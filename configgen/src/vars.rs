//! The template variables: names, defaults, allowed values, flags and
//! environment variables, and how one value is picked from the four sources
//! (flag > environment > values file > default). List variables
//! (`ShardedTables`) come from the values file only.

use std::collections::BTreeMap;
use std::fmt;

/// What values a variable accepts.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Non-empty text without quotes, backslashes or control characters (it is
    /// pasted into TOML strings).
    Text,
    /// A DNS name or address: letters, digits, `.`, `-`, `_`, `:`.
    Host,
    /// An integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// One of a fixed set.
    Choice(&'static [&'static str]),
    /// Distinct `Text` names separated by commas (`a,b`); in a values file
    /// also an array of strings. A list of strings in templates.
    Names,
}

/// A default: a constant, or derived from variables resolved earlier.
#[derive(Clone, Copy)]
pub enum Default {
    Text(&'static str),
    Int(i64),
    Bool(bool),
    Derived(&'static str, fn(&Values) -> String),
}

impl fmt::Display for Default {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Default::Text(s) => f.write_str(s),
            Default::Int(n) => write!(f, "{n}"),
            Default::Bool(b) => write!(f, "{b}"),
            Default::Derived(describe, _) => f.write_str(describe),
        }
    }
}

/// One template variable.
pub struct Var {
    /// As written in templates: `{{.ClusterName}}`.
    pub name: &'static str,
    /// Long flag without dashes: `cluster-name`.
    pub flag: &'static str,
    pub env: &'static str,
    pub kind: Kind,
    pub default: Default,
    pub help: &'static str,
}

const POOL_MODES: &[&str] = &["transaction", "session", "statement"];
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

fn primary_host(values: &Values) -> String {
    format!("{}-rw.{}.svc.cluster.local", values.text("ClusterName"), values.text("Namespace"))
}

fn replica_host(values: &Values) -> String {
    format!("{}-ro.{}.svc.cluster.local", values.text("ClusterName"), values.text("Namespace"))
}

fn postgres_port(values: &Values) -> String {
    values.text("PostgresPort")
}

const PORT: Kind = Kind::Int { min: 1, max: 65535 };

/// Every variable, in resolution order: derived defaults only use variables
/// listed before them.
pub const VARS: &[Var] = &[
    Var {
        name: "ClusterName",
        flag: "cluster-name",
        env: "CLUSTER_NAME",
        kind: Kind::Host,
        default: Default::Text("default"),
        help: "Orochi cluster name",
    },
    Var {
        name: "Namespace",
        flag: "namespace",
        env: "NAMESPACE",
        kind: Kind::Host,
        default: Default::Text("orochi-cloud"),
        help: "Kubernetes namespace",
    },
    Var {
        name: "DatabaseName",
        flag: "database-name",
        env: "DATABASE_NAME",
        kind: Kind::Text,
        default: Default::Text("postgres"),
        help: "logical database clients connect to",
    },
    Var {
        name: "ShardCount",
        flag: "shard-count",
        env: "SHARD_COUNT",
        kind: Kind::Int { min: 1, max: 1024 },
        default: Default::Int(32),
        help: "[sharding] default_shard_count",
    },
    Var {
        name: "PoolMode",
        flag: "pool-mode",
        env: "POOL_MODE",
        kind: Kind::Choice(POOL_MODES),
        default: Default::Text("transaction"),
        help: "[pools.default] pool_mode",
    },
    Var {
        name: "MaxPoolSize",
        flag: "max-pool-size",
        env: "MAX_POOL_SIZE",
        kind: Kind::Int { min: 1, max: 10000 },
        default: Default::Int(100),
        help: "[pools.default] max_pool_size",
    },
    Var {
        name: "MinPoolSize",
        flag: "min-pool-size",
        env: "MIN_POOL_SIZE",
        kind: Kind::Int { min: 0, max: 10000 },
        default: Default::Int(0),
        help: "[pools.default] min_pool_size (at most MaxPoolSize)",
    },
    Var {
        name: "TLSEnabled",
        flag: "tls-enabled",
        env: "TLS_ENABLED",
        kind: Kind::Bool,
        default: Default::Bool(false),
        help: "require client TLS with TLSCertPath/TLSKeyPath",
    },
    Var {
        name: "TLSCertPath",
        flag: "tls-cert-path",
        env: "TLS_CERT_PATH",
        kind: Kind::Text,
        default: Default::Text("/etc/pgdog/certs/tls.crt"),
        help: "client TLS certificate (when TLSEnabled)",
    },
    Var {
        name: "TLSKeyPath",
        flag: "tls-key-path",
        env: "TLS_KEY_PATH",
        kind: Kind::Text,
        default: Default::Text("/etc/pgdog/certs/tls.key"),
        help: "client TLS private key (when TLSEnabled)",
    },
    Var {
        name: "ListenHost",
        flag: "listen-host",
        env: "PGDOG_HOST",
        kind: Kind::Host,
        default: Default::Text("0.0.0.0"),
        help: "address the router listens on ([general] host)",
    },
    Var { name: "Port", flag: "port", env: "PGDOG_PORT", kind: PORT, default: Default::Int(5432), help: "client port" },
    Var {
        name: "AdminPort",
        flag: "admin-port",
        env: "PGDOG_ADMIN_PORT",
        kind: PORT,
        default: Default::Int(6432),
        help: "admin port",
    },
    Var {
        name: "MetricsPort",
        flag: "metrics-port",
        env: "PGDOG_METRICS_PORT",
        kind: PORT,
        default: Default::Int(9090),
        help: "metrics port",
    },
    Var {
        name: "ApiPort",
        flag: "api-port",
        env: "PGDOG_API_PORT",
        kind: PORT,
        default: Default::Int(8080),
        help: "HTTP API port ([api] port)",
    },
    Var {
        name: "PrimaryHost",
        flag: "primary-host",
        env: "PRIMARY_HOST",
        kind: Kind::Host,
        default: Default::Derived("<ClusterName>-rw.<Namespace>.svc.cluster.local", primary_host),
        help: "primary server host",
    },
    Var {
        name: "ReplicaHost",
        flag: "replica-host",
        env: "REPLICA_HOST",
        kind: Kind::Host,
        default: Default::Derived("<ClusterName>-ro.<Namespace>.svc.cluster.local", replica_host),
        help: "replica server host",
    },
    Var {
        name: "PostgresPort",
        flag: "postgres-port",
        env: "PGDOG_POSTGRES_PORT",
        kind: PORT,
        default: Default::Int(5432),
        help: "PostgreSQL port on the primary (and the replica unless ReplicaPort is set)",
    },
    Var {
        name: "ReplicaPort",
        flag: "replica-port",
        env: "PGDOG_REPLICA_PORT",
        kind: PORT,
        default: Default::Derived("<PostgresPort>", postgres_port),
        help: "PostgreSQL port on the replica",
    },
    Var {
        name: "LogLevel",
        flag: "log-level",
        env: "PGDOG_LOG_LEVEL",
        kind: Kind::Choice(LOG_LEVELS),
        default: Default::Text("info"),
        help: "[general] log_level",
    },
    Var {
        name: "MetricsPrefix",
        flag: "metrics-prefix",
        env: "METRICS_PREFIX",
        kind: Kind::Host,
        default: Default::Text("orochi_pgdog"),
        help: "[metrics] metric_prefix",
    },
    Var {
        name: "AdminUsers",
        flag: "admin-users",
        env: "ADMIN_USERS",
        kind: Kind::Names,
        default: Default::Text("pgdog_admin"),
        help: "[admin] admin_users: users.toml users allowed on the admin console, comma-separated",
    },
    Var {
        name: "AppUser",
        flag: "app-user",
        env: "APP_USER",
        kind: Kind::Text,
        default: Default::Text("app"),
        help: "users.toml: user name",
    },
    Var {
        name: "AppPasswordEnv",
        flag: "app-password-env",
        env: "APP_PASSWORD_ENV",
        kind: Kind::Text,
        default: Default::Text("PGDOG_APP_PASSWORD"),
        help: "users.toml: variable holding the user's password (password_env)",
    },
];

pub fn find(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|v| v.name == name)
}

/// One field of a list variable's items: `{{range .ShardedTables}}{{.Name}}`.
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// An optional field left out of an item is `nil` in the template (false
    /// in `{{if}}`).
    pub required: bool,
}

/// A variable holding a list of items, set only by the values file (an array
/// of tables); empty by default.
pub struct ListVar {
    pub name: &'static str,
    pub fields: &'static [Field],
    /// Items must differ in this field.
    pub unique: &'static str,
    pub help: &'static str,
}

pub const LIST_VARS: &[ListVar] = &[ListVar {
    name: "ShardedTables",
    fields: &[
        Field { name: "Name", kind: Kind::Text, required: true },
        Field { name: "Column", kind: Kind::Text, required: true },
        Field { name: "Shards", kind: Kind::Int { min: 1, max: 1024 }, required: false },
    ],
    unique: "Name",
    help: "[[sharding.tables]] entries: Name (table), Column (sharding key), Shards (1..=1024, optional; \
           default ShardCount)",
}];

pub fn find_list(name: &str) -> Option<&'static ListVar> {
    LIST_VARS.iter().find(|v| v.name == name)
}

impl ListVar {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn field_names(&self) -> String {
        self.fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
    }
}

/// One item of a list variable: field name → value (optional fields may be absent).
pub type Item = BTreeMap<&'static str, Value>;

/// A resolved value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
    /// `Kind::Names`.
    Names(Vec<String>),
    List(Vec<Item>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Int(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Names(names) => f.write_str(&names.join(",")),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    let fields: Vec<String> = item.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    write!(f, "{}{{{}}}", if i == 0 { "" } else { ", " }, fields.join(" "))?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Every variable with its resolved value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values(pub BTreeMap<&'static str, Value>);

impl Values {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Text form of a variable (empty when unset).
    pub fn text(&self, name: &str) -> String {
        self.get(name).map(ToString::to_string).unwrap_or_default()
    }
}

/// A bad value: names the variable, the source and what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct VarError(pub String);

impl fmt::Display for VarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VarError {}

/// The allowed values in a few characters, for `--help`: `1..=1024`, `a|b|c`.
pub fn allowed_short(kind: Kind) -> Option<String> {
    match kind {
        Kind::Int { min, max } => Some(format!("{min}..={max}")),
        Kind::Choice(options) => Some(options.join("|")),
        Kind::Bool => Some("true|false".into()),
        Kind::Names => Some("name,...".into()),
        Kind::Text | Kind::Host => None,
    }
}

fn allowed(kind: Kind) -> String {
    match kind {
        Kind::Text => "non-empty text without quotes, backslashes or control characters".into(),
        Kind::Host => "a non-empty name of letters, digits, '.', '-', '_' or ':'".into(),
        Kind::Int { min, max } => format!("an integer in {min}..={max}"),
        Kind::Bool => "true or false".into(),
        Kind::Choice(options) => format!("one of {}", options.join(", ")),
        Kind::Names => "a comma-separated list of distinct names (each non-empty, without quotes, backslashes or \
                        control characters)"
            .into(),
    }
}

/// Parse and check `raw` for `var`.
pub fn parse_value(var: &Var, raw: &str) -> Result<Value, String> {
    parse_kind(var.kind, raw)
}

/// Parse and check `raw` as a value of `kind`.
fn parse_kind(kind: Kind, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    let text_ok = |t: &str| !t.is_empty() && !t.chars().any(|c| c == '"' || c == '\\' || c.is_control());
    let ok = match kind {
        Kind::Text => text_ok(raw),
        Kind::Names => {
            let mut names: Vec<String> = Vec::new();
            for (index, name) in raw.split(',').map(str::trim).enumerate() {
                let why = if !text_ok(name) {
                    format!("name {} ({name:?}) is empty or has a quote, backslash or control character", index + 1)
                } else if names.iter().any(|n| n == name) {
                    format!("{name:?} is listed twice")
                } else {
                    names.push(name.to_string());
                    continue;
                };
                return Err(format!("{raw:?} is not {}: {why}", allowed(kind)));
            }
            return Ok(Value::Names(names));
        }
        Kind::Host => {
            !raw.is_empty() && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        }
        Kind::Int { min, max } => {
            return match raw.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Value::Int(n)),
                _ => Err(format!("{raw:?} is not {}", allowed(kind))),
            };
        }
        Kind::Bool => {
            return match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Value::Bool(true)),
                "false" | "0" | "no" => Ok(Value::Bool(false)),
                _ => Err(format!("{raw:?} is not {}", allowed(kind))),
            };
        }
        Kind::Choice(options) => options.contains(&raw),
    };
    if ok {
        Ok(Value::Text(raw.to_string()))
    } else {
        Err(format!("{raw:?} is not {}", allowed(kind)))
    }
}

fn default_value(var: &Var, resolved: &Values) -> Value {
    match var.default {
        // Typed like the variable (a list for `Kind::Names`).
        Default::Text(s) => parse_value(var, s).unwrap_or_else(|_| Value::Text(s.to_string())),
        Default::Int(n) => Value::Int(n),
        Default::Bool(b) => Value::Bool(b),
        // Typed like the variable (ReplicaPort follows PostgresPort as a number).
        Default::Derived(_, derive) => {
            let text = derive(resolved);
            parse_value(var, &text).unwrap_or(Value::Text(text))
        }
    }
}

/// What a values file sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileValues {
    /// Variable name → raw value.
    pub scalars: BTreeMap<String, String>,
    /// List variable name → checked `Value::List`.
    pub lists: BTreeMap<&'static str, Value>,
}

impl From<BTreeMap<String, String>> for FileValues {
    fn from(scalars: BTreeMap<String, String>) -> Self {
        FileValues { scalars, lists: BTreeMap::new() }
    }
}

/// Resolve every variable. `flags` and `file.scalars` are keyed by variable
/// name; list variables come from `file.lists` or are empty.
pub fn resolve(
    flags: &BTreeMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileValues,
) -> Result<Values, VarError> {
    let lists = &file.lists;
    let file = &file.scalars;
    let mut values = Values::default();
    for var in VARS {
        let env_value = env(var.env).filter(|v| !v.trim().is_empty());
        let picked = if let Some(raw) = flags.get(var.name) {
            Some((raw.clone(), format!("flag -{}", var.flag)))
        } else if let Some(raw) = env_value {
            Some((raw, format!("environment variable {}", var.env)))
        } else {
            file.get(var.name).map(|raw| (raw.clone(), "values file".to_string()))
        };
        let value = match picked {
            Some((raw, from)) => {
                parse_value(var, &raw).map_err(|why| VarError(format!("{} (from {from}): {why}", var.name)))?
            }
            None => default_value(var, &values),
        };
        values.0.insert(var.name, value);
    }
    if let (Some(Value::Int(min)), Some(Value::Int(max))) = (values.get("MinPoolSize"), values.get("MaxPoolSize")) {
        if min > max {
            return Err(VarError(format!(
                "MinPoolSize: {min} is more than MaxPoolSize {max} (allowed 0..=MaxPoolSize)"
            )));
        }
    }
    // The four listeners share ListenHost (the API's bind defaults to it).
    const LISTENERS: [&str; 4] = ["Port", "AdminPort", "MetricsPort", "ApiPort"];
    for (i, name) in LISTENERS.iter().enumerate() {
        if let Some(first) = LISTENERS[..i].iter().find(|other| values.get(other) == values.get(name)) {
            return Err(VarError(format!(
                "{name}: {} is already used by {first} (the router's ports must differ)",
                values.text(name)
            )));
        }
    }
    for list in LIST_VARS {
        values.0.insert(list.name, lists.get(list.name).cloned().unwrap_or(Value::List(Vec::new())));
    }
    Ok(values)
}

/// Read a values file (`.toml`, `.json`, `.yaml`/`.yml`). Keys must be
/// variable names; values must be scalars, except list variables, which are
/// arrays of tables whose items are checked here.
pub fn parse_values_file(name: &str, text: &str) -> Result<FileValues, VarError> {
    let err = |msg: String| VarError(format!("values file {name}: {msg}"));
    let lower = name.to_ascii_lowercase();
    let json: serde_json::Value = if lower.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| err(e.to_string()))?
    } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?
    } else if lower.ends_with(".toml") {
        let table: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string().trim_end().replace('\n', " ")))?;
        serde_json::to_value(table).map_err(|e| err(e.to_string()))?
    } else {
        return Err(err("unknown format (expected a .toml, .json, .yaml or .yml file)".into()));
    };
    let serde_json::Value::Object(map) = json else {
        return Err(err("expected a table of variable = value".into()));
    };
    let mut out = FileValues::default();
    for (key, value) in map {
        if let Some(list) = find_list(&key) {
            out.lists.insert(list.name, parse_list(list, value).map_err(err)?);
            continue;
        }
        if find(&key).is_none() {
            let known: Vec<&str> = VARS.iter().map(|v| v.name).chain(LIST_VARS.iter().map(|v| v.name)).collect();
            return Err(err(format!("unknown variable {key:?} (expected one of: {})", known.join(", "))));
        }
        let raw = match (find(&key).map(|v| v.kind), value) {
            // A list of names may also be an array of strings.
            (Some(Kind::Names), serde_json::Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    serde_json::Value::String(s) if !s.contains(',') => Ok(s),
                    _ => Err(err(format!("{key}: expected an array of names (strings without commas)"))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            (_, value) => scalar(value).ok_or_else(|| err(format!("{key}: expected a string, number or boolean")))?,
        };
        out.scalars.insert(key, raw);
    }
    Ok(out)
}

fn scalar(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An array of tables for `list`: known fields only, required ones present,
/// every value checked, the `unique` field distinct.
fn parse_list(list: &ListVar, value: serde_json::Value) -> Result<Value, String> {
    let serde_json::Value::Array(entries) = value else {
        return Err(format!(
            "{}: expected an array of tables with {} ([[{}]] in TOML)",
            list.name,
            list.field_names(),
            list.name
        ));
    };
    let mut items = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let at = format!("{}[{index}]", list.name);
        let serde_json::Value::Object(entry) = entry else {
            return Err(format!("{at}: expected a table with {}", list.field_names()));
        };
        let mut item = Item::new();
        for (key, value) in entry {
            let field = list
                .field(&key)
                .ok_or_else(|| format!("{at}: unknown field {key:?} (expected one of: {})", list.field_names()))?;
            let raw = scalar(value).ok_or_else(|| format!("{at}.{key}: expected a string, number or boolean"))?;
            let value = parse_kind(field.kind, &raw).map_err(|why| format!("{at}.{key}: {why}"))?;
            item.insert(field.name, value);
        }
        if let Some(missing) = list.fields.iter().find(|f| f.required && !item.contains_key(f.name)) {
            return Err(format!("{at}: {} is required", missing.name));
        }
        if let Some(key) = item.get(list.unique) {
            if let Some(first) = items.iter().position(|other: &Item| other.get(list.unique) == Some(key)) {
                return Err(format!("{at}: {} \"{key}\" is already used by {}[{first}]", list.unique, list.name));
            }
        }
        items.push(item);
    }
    Ok(Value::List(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults() {
        let values = resolve(&BTreeMap::new(), &no_env, &FileValues::default()).unwrap();
        assert_eq!(values.text("ClusterName"), "default");
        assert_eq!(values.text("Namespace"), "orochi-cloud");
        assert_eq!(values.get("ShardCount"), Some(&Value::Int(32)));
        assert_eq!(values.get("TLSEnabled"), Some(&Value::Bool(false)));
        assert_eq!(values.text("PrimaryHost"), "default-rw.orochi-cloud.svc.cluster.local");
        assert_eq!(values.text("ReplicaHost"), "default-ro.orochi-cloud.svc.cluster.local");
        assert_eq!(values.text("ListenHost"), "0.0.0.0");
        assert_eq!(values.get("ReplicaPort"), Some(&Value::Int(5432)));
        assert_eq!(values.get("ShardedTables"), Some(&Value::List(Vec::new())));
        assert_eq!(values.0.len(), VARS.len() + LIST_VARS.len());
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let env = |name: &str| match name {
            "CLUSTER_NAME" => Some("from-env".to_string()),
            "NAMESPACE" => Some("ns-env".to_string()),
            _ => None,
        };
        let flags = map(&[("ClusterName", "from-flag")]);
        let file = map(&[("ClusterName", "from-file"), ("Namespace", "ns-file"), ("ShardCount", "8")]);
        let values = resolve(&flags, &env, &file.into()).unwrap();
        assert_eq!(values.text("ClusterName"), "from-flag");
        assert_eq!(values.text("Namespace"), "ns-env");
        assert_eq!(values.get("ShardCount"), Some(&Value::Int(8)));
        assert_eq!(values.get("MaxPoolSize"), Some(&Value::Int(100)));
        // Derived defaults follow the resolved names.
        assert_eq!(values.text("PrimaryHost"), "from-flag-rw.ns-env.svc.cluster.local");
    }

    #[test]
    fn empty_env_counts_as_unset() {
        let env = |name: &str| (name == "SHARD_COUNT").then(|| " ".to_string());
        let values = resolve(&BTreeMap::new(), &env, &map(&[("ShardCount", "4")]).into()).unwrap();
        assert_eq!(values.get("ShardCount"), Some(&Value::Int(4)));
    }

    #[test]
    fn range_errors_name_variable_and_range() {
        let cases = [
            ("ShardCount", "0", "1..=1024"),
            ("ShardCount", "1025", "1..=1024"),
            ("MaxPoolSize", "0", "1..=10000"),
            ("PoolMode", "bogus", "transaction, session, statement"),
            ("TLSEnabled", "maybe", "true or false"),
            ("Port", "70000", "1..=65535"),
            ("ReplicaPort", "0", "1..=65535"),
            ("ListenHost", "0.0.0.0/0", "letters, digits"),
            ("ClusterName", "a b", "letters, digits"),
            ("DatabaseName", "x\"y", "without quotes"),
            ("ApiPort", "0", "1..=65535"),
            ("AdminUsers", "a,,b", "name 2 (\"\") is empty"),
            ("AdminUsers", "a, b ,a", "\"a\" is listed twice"),
            ("AdminUsers", "ops,x\"y", "comma-separated list of distinct names"),
            ("AdminUsers", " ", "name 1"),
            ("AdminPort", "5432", "AdminPort: 5432 is already used by Port"),
            ("ApiPort", "9090", "ApiPort: 9090 is already used by MetricsPort"),
        ];
        for (name, raw, expect) in cases {
            let err = resolve(&map(&[(name, raw)]), &no_env, &FileValues::default()).unwrap_err().to_string();
            assert!(err.starts_with(name), "{err}");
            assert!(err.contains(expect), "{err}");
        }
        let env = |name: &str| (name == "SHARD_COUNT").then(|| "0".to_string());
        let err = resolve(&BTreeMap::new(), &env, &FileValues::default()).unwrap_err().to_string();
        assert!(err.contains("ShardCount (from environment variable SHARD_COUNT)"), "{err}");
    }

    #[test]
    fn min_above_max() {
        let err = resolve(&map(&[("MinPoolSize", "20"), ("MaxPoolSize", "10")]), &no_env, &FileValues::default())
            .unwrap_err();
        assert!(err.to_string().contains("MinPoolSize"), "{err}");
    }

    #[test]
    fn admin_users_and_api_port() {
        let values = resolve(&BTreeMap::new(), &no_env, &FileValues::default()).unwrap();
        assert_eq!(values.get("AdminUsers"), Some(&Value::Names(vec!["pgdog_admin".into()])));
        assert_eq!(values.get("ApiPort"), Some(&Value::Int(8080)));
        let env = |name: &str| match name {
            "ADMIN_USERS" => Some(" ops , pgdog_admin".to_string()),
            "PGDOG_API_PORT" => Some("8081".to_string()),
            _ => None,
        };
        let values = resolve(&BTreeMap::new(), &env, &FileValues::default()).unwrap();
        assert_eq!(values.get("AdminUsers"), Some(&Value::Names(vec!["ops".into(), "pgdog_admin".into()])));
        assert_eq!(values.text("AdminUsers"), "ops,pgdog_admin");
        assert_eq!(values.get("ApiPort"), Some(&Value::Int(8081)));
        // A values file may give the list as an array too.
        let file = parse_values_file("v.toml", "AdminUsers = [\"a\", \"b\"]\n").unwrap();
        let values = resolve(&BTreeMap::new(), &no_env, &file).unwrap();
        assert_eq!(values.get("AdminUsers"), Some(&Value::Names(vec!["a".into(), "b".into()])));
        let err = parse_values_file("v.json", r#"{"AdminUsers": ["a,b"]}"#).unwrap_err().to_string();
        assert!(err.contains("AdminUsers: expected an array of names"), "{err}");
        let err = parse_values_file("v.json", r#"{"AdminUsers": [1]}"#).unwrap_err().to_string();
        assert!(err.contains("AdminUsers: expected an array of names"), "{err}");
    }

    #[test]
    fn values_files() {
        let toml = parse_values_file("v.toml", "ClusterName = \"c\"\nShardCount = 4\nTLSEnabled = true\n").unwrap();
        assert_eq!(toml, map(&[("ClusterName", "c"), ("ShardCount", "4"), ("TLSEnabled", "true")]).into());
        let json = parse_values_file("v.json", r#"{"ClusterName": "c", "ShardCount": 4}"#).unwrap();
        assert_eq!(json, map(&[("ClusterName", "c"), ("ShardCount", "4")]).into());
        let yaml = parse_values_file("v.yaml", "ClusterName: c\nShardCount: 4\n").unwrap();
        assert_eq!(yaml, map(&[("ClusterName", "c"), ("ShardCount", "4")]).into());
        let err = parse_values_file("v.toml", "ClusterName = [1]\n").unwrap_err().to_string();
        assert!(err.contains("ClusterName: expected a string, number or boolean"), "{err}");
        let err = parse_values_file("v.toml", "Nope = 1\n").unwrap_err().to_string();
        assert!(err.contains("unknown variable \"Nope\""), "{err}");
        assert!(parse_values_file("v.ini", "").is_err());
    }

    #[test]
    fn replica_port_follows_postgres_port() {
        let values = resolve(&map(&[("PostgresPort", "5433")]), &no_env, &FileValues::default()).unwrap();
        assert_eq!(values.get("ReplicaPort"), Some(&Value::Int(5433)));
        let flags = map(&[("PostgresPort", "5433"), ("ReplicaPort", "5434")]);
        let values = resolve(&flags, &no_env, &FileValues::default()).unwrap();
        assert_eq!(values.get("ReplicaPort"), Some(&Value::Int(5434)));
        let env = |name: &str| (name == "PGDOG_REPLICA_PORT").then(|| "6000".to_string());
        let values = resolve(&BTreeMap::new(), &env, &FileValues::default()).unwrap();
        assert_eq!(values.get("ReplicaPort"), Some(&Value::Int(6000)));
    }

    fn table(pairs: &[(&'static str, Value)]) -> Item {
        pairs.iter().cloned().collect()
    }

    #[test]
    fn sharded_tables_in_every_format() {
        let expect = Value::List(vec![
            table(&[("Name", Value::Text("orders".into())), ("Column", Value::Text("customer_id".into()))]),
            table(&[
                ("Name", Value::Text("items".into())),
                ("Column", Value::Text("customer_id".into())),
                ("Shards", Value::Int(8)),
            ]),
        ]);
        let toml = "ShardCount = 4\n[[ShardedTables]]\nName = \"orders\"\nColumn = \"customer_id\"\n\
                    [[ShardedTables]]\nName = \"items\"\nColumn = \"customer_id\"\nShards = 8\n";
        let json = r#"{"ShardedTables": [{"Name": "orders", "Column": "customer_id"},
                      {"Name": "items", "Column": "customer_id", "Shards": "8"}]}"#;
        let yaml = "ShardedTables:\n  - Name: orders\n    Column: customer_id\n  - Name: items\n    Column: customer_id\n    Shards: 8\n";
        for (name, text) in [("v.toml", toml), ("v.json", json), ("v.yaml", yaml)] {
            let file = parse_values_file(name, text).unwrap();
            assert_eq!(file.lists.get("ShardedTables"), Some(&expect), "{name}");
            let values = resolve(&BTreeMap::new(), &no_env, &file).unwrap();
            assert_eq!(values.get("ShardedTables"), Some(&expect), "{name}");
        }
    }

    #[test]
    fn sharded_table_errors_name_item_and_field() {
        let cases = [
            ("ShardedTables = \"orders\"\n", "ShardedTables: expected an array of tables"),
            ("ShardedTables = [1]\n", "ShardedTables[0]: expected a table"),
            ("[[ShardedTables]]\nName = \"a\"\n", "ShardedTables[0]: Column is required"),
            ("[[ShardedTables]]\nName = \"a\"\nColumn = \"c\"\nshards = 2\n", "unknown field \"shards\""),
            (
                "[[ShardedTables]]\nName = \"a\"\nColumn = \"c\"\nShards = 0\n",
                "ShardedTables[0].Shards: \"0\" is not an integer in 1..=1024",
            ),
            ("[[ShardedTables]]\nName = \"a\\\"b\"\nColumn = \"c\"\n", "ShardedTables[0].Name:"),
            (
                "[[ShardedTables]]\nName = \"a\"\nColumn = \"c\"\n[[ShardedTables]]\nName = \"a\"\nColumn = \"d\"\n",
                "ShardedTables[1]: Name \"a\" is already used by ShardedTables[0]",
            ),
        ];
        for (text, expect) in cases {
            let err = parse_values_file("v.toml", text).unwrap_err().to_string();
            assert!(err.starts_with("values file v.toml: "), "{err}");
            assert!(err.contains(expect), "{expect} in {err}");
        }
    }
}
