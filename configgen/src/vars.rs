//! The template variables: names, defaults, allowed values, flags and
//! environment variables, and how one value is picked from the four sources
//! (flag > environment > values file > default).

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
        help: "PostgreSQL port on the primary and replica",
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
        help: "metrics name prefix (not rendered until the router has [metrics])",
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

/// A resolved value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Int(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
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
    }
}

/// Parse and check `raw` for `var`.
pub fn parse_value(var: &Var, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    let ok = match var.kind {
        Kind::Text => !raw.is_empty() && !raw.chars().any(|c| c == '"' || c == '\\' || c.is_control()),
        Kind::Host => {
            !raw.is_empty() && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        }
        Kind::Int { min, max } => {
            return match raw.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Value::Int(n)),
                _ => Err(format!("{raw:?} is not {}", allowed(var.kind))),
            };
        }
        Kind::Bool => {
            return match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Value::Bool(true)),
                "false" | "0" | "no" => Ok(Value::Bool(false)),
                _ => Err(format!("{raw:?} is not {}", allowed(var.kind))),
            };
        }
        Kind::Choice(options) => options.contains(&raw),
    };
    if ok {
        Ok(Value::Text(raw.to_string()))
    } else {
        Err(format!("{raw:?} is not {}", allowed(var.kind)))
    }
}

fn default_value(var: &Var, resolved: &Values) -> Value {
    match var.default {
        Default::Text(s) => Value::Text(s.to_string()),
        Default::Int(n) => Value::Int(n),
        Default::Bool(b) => Value::Bool(b),
        Default::Derived(_, derive) => Value::Text(derive(resolved)),
    }
}

/// Resolve every variable. `flags` and `file` are keyed by variable name.
pub fn resolve(
    flags: &BTreeMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
    file: &BTreeMap<String, String>,
) -> Result<Values, VarError> {
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
    Ok(values)
}

/// Read a values file (`.toml`, `.json`, `.yaml`/`.yml`) into variable name →
/// raw value. Keys must be variable names; values must be scalars.
pub fn parse_values_file(name: &str, text: &str) -> Result<BTreeMap<String, String>, VarError> {
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
    let mut out = BTreeMap::new();
    for (key, value) in map {
        if find(&key).is_none() {
            let known: Vec<&str> = VARS.iter().map(|v| v.name).collect();
            return Err(err(format!("unknown variable {key:?} (expected one of: {})", known.join(", "))));
        }
        let raw = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => return Err(err(format!("{key}: expected a string, number or boolean, got {other}"))),
        };
        out.insert(key, raw);
    }
    Ok(out)
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
        let values = resolve(&BTreeMap::new(), &no_env, &BTreeMap::new()).unwrap();
        assert_eq!(values.text("ClusterName"), "default");
        assert_eq!(values.text("Namespace"), "orochi-cloud");
        assert_eq!(values.get("ShardCount"), Some(&Value::Int(32)));
        assert_eq!(values.get("TLSEnabled"), Some(&Value::Bool(false)));
        assert_eq!(values.text("PrimaryHost"), "default-rw.orochi-cloud.svc.cluster.local");
        assert_eq!(values.text("ReplicaHost"), "default-ro.orochi-cloud.svc.cluster.local");
        assert_eq!(values.0.len(), VARS.len());
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
        let values = resolve(&flags, &env, &file).unwrap();
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
        let values = resolve(&BTreeMap::new(), &env, &map(&[("ShardCount", "4")])).unwrap();
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
            ("ClusterName", "a b", "letters, digits"),
            ("DatabaseName", "x\"y", "without quotes"),
        ];
        for (name, raw, expect) in cases {
            let err = resolve(&map(&[(name, raw)]), &no_env, &BTreeMap::new()).unwrap_err().to_string();
            assert!(err.starts_with(name), "{err}");
            assert!(err.contains(expect), "{err}");
        }
        let env = |name: &str| (name == "SHARD_COUNT").then(|| "0".to_string());
        let err = resolve(&BTreeMap::new(), &env, &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("ShardCount (from environment variable SHARD_COUNT)"), "{err}");
    }

    #[test]
    fn min_above_max() {
        let err =
            resolve(&map(&[("MinPoolSize", "20"), ("MaxPoolSize", "10")]), &no_env, &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("MinPoolSize"), "{err}");
    }

    #[test]
    fn values_files() {
        let toml = parse_values_file("v.toml", "ClusterName = \"c\"\nShardCount = 4\nTLSEnabled = true\n").unwrap();
        assert_eq!(toml, map(&[("ClusterName", "c"), ("ShardCount", "4"), ("TLSEnabled", "true")]));
        let json = parse_values_file("v.json", r#"{"ClusterName": "c", "ShardCount": 4}"#).unwrap();
        assert_eq!(json, map(&[("ClusterName", "c"), ("ShardCount", "4")]));
        let yaml = parse_values_file("v.yaml", "ClusterName: c\nShardCount: 4\n").unwrap();
        assert_eq!(yaml, map(&[("ClusterName", "c"), ("ShardCount", "4")]));
        let err = parse_values_file("v.toml", "Nope = 1\n").unwrap_err().to_string();
        assert!(err.contains("unknown variable \"Nope\""), "{err}");
        assert!(parse_values_file("v.ini", "").is_err());
    }
}
