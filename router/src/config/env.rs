//! Environment overrides: container deployments set a handful of variables
//! instead of templating `pgdog.toml`. A variable, when set, wins over the file.
//!
//! | variable             | key                                   |
//! |----------------------|---------------------------------------|
//! | `PGDOG_HOST`         | `general.host`                        |
//! | `PGDOG_PORT`         | `general.port` (1..=65535)            |
//! | `PGDOG_ADMIN_PORT`   | `general.admin_port` (1..=65535)      |
//! | `PGDOG_METRICS_PORT` | `general.metrics_port` (1..=65535)    |
//! | `PGDOG_LOG_LEVEL`    | `general.log_level`                   |
//! | `PGDOG_API_PORT`     | `api.port` (1..=65535)                |
//! | `PGDOG_API_TOKEN`    | the API bearer token (wins over `api.token_file` / `api.token_env`) |
//! | `TLS_ENABLED`        | `general.tls_mode` (true/false/1/0)   |
//! | `TLS_CERT_PATH`      | `general.tls_certificate`             |
//! | `TLS_KEY_PATH`       | `general.tls_private_key`             |
//! | `TLS_CA_PATH`        | `general.tls_ca`                      |
//!
//! `TLS_ENABLED=false` sets `tls_mode = "disable"`. `TLS_ENABLED=true` turns
//! `disable` into `allow` (an explicit `require` stays), and when the file
//! names neither certificate nor key it uses `TLS_CERT_PATH` / `TLS_KEY_PATH`,
//! defaulting to `/etc/pgdog/certs/tls.crt` / `tls.key` (the mount point of the
//! deployment's certificate secret). `TLS_CERT_PATH` / `TLS_KEY_PATH`, when set,
//! override the file. `TLS_CA_PATH` applies only when explicitly set: guessing a
//! CA path would silently switch on client-certificate checks. The three
//! `TLS_*_PATH` variables are read only when `TLS_ENABLED=true`.
//!
//! An empty variable counts as unset, because orchestrators commonly render
//! `VAR=` for "not configured".

use super::load::{ConfigError, KeyPath};
use super::types::{ClientTlsMode, RouterConfig};

const DEFAULT_CERT_PATH: &str = "/etc/pgdog/certs/tls.crt";
const DEFAULT_KEY_PATH: &str = "/etc/pgdog/certs/tls.key";

/// A key whose value came from the environment, so a validation failure on it
/// can blame the variable rather than a line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Override {
    pub key: KeyPath,
    pub var: &'static str,
}

/// Apply the variables above to `cfg`. A malformed value is an error naming
/// the variable.
pub fn apply_env_overrides(cfg: &mut RouterConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    apply_tracked(cfg, env).map(|_| ())
}

/// [`apply_env_overrides`], also reporting which keys were overridden.
pub(crate) fn apply_tracked(
    cfg: &mut RouterConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Override>, ConfigError> {
    let get = |var: &str| env(var).filter(|value| !value.trim().is_empty());
    let mut applied = Vec::new();
    let general = &mut cfg.general;

    if let Some(host) = get("PGDOG_HOST") {
        general.host = host.trim().to_string();
        applied.push(Override { key: KeyPath::new("general.host"), var: "PGDOG_HOST" });
    }
    for (var, key, slot) in [
        ("PGDOG_PORT", "general.port", &mut general.port),
        ("PGDOG_ADMIN_PORT", "general.admin_port", &mut general.admin_port),
        ("PGDOG_METRICS_PORT", "general.metrics_port", &mut general.metrics_port),
    ] {
        if let Some(value) = get(var) {
            *slot = parse_port(var, key, &value)?;
            applied.push(Override { key: KeyPath::new(key), var });
        }
    }
    if let Some(value) = get("PGDOG_API_PORT") {
        cfg.api.port = parse_port("PGDOG_API_PORT", "api.port", &value)?;
        applied.push(Override { key: KeyPath::new("api.port"), var: "PGDOG_API_PORT" });
    }
    let general = &mut cfg.general;
    if let Some(level) = get("PGDOG_LOG_LEVEL") {
        // Checked by validation like the file's value; the error then names
        // this variable.
        general.log_level = level.trim().to_string();
        applied.push(Override { key: KeyPath::new("general.log_level"), var: "PGDOG_LOG_LEVEL" });
    }

    if let Some(value) = get("TLS_ENABLED") {
        let enabled = parse_bool("TLS_ENABLED", &value)?;
        applied.push(Override { key: KeyPath::new("general.tls_mode"), var: "TLS_ENABLED" });
        if !enabled {
            general.tls_mode = ClientTlsMode::Disable;
            return Ok(applied);
        }
        if general.tls_mode == ClientTlsMode::Disable {
            general.tls_mode = ClientTlsMode::Allow;
        }
        // Fill defaults only when the file names neither: with just one of
        // them the file is inconsistent and validation should say so.
        let neither = general.tls_certificate.is_none() && general.tls_private_key.is_none();
        for (var, key, default, slot) in [
            ("TLS_CERT_PATH", "general.tls_certificate", DEFAULT_CERT_PATH, &mut general.tls_certificate),
            ("TLS_KEY_PATH", "general.tls_private_key", DEFAULT_KEY_PATH, &mut general.tls_private_key),
        ] {
            match get(var) {
                Some(path) => *slot = Some(path.trim().to_string()),
                None if neither => *slot = Some(default.to_string()),
                None => continue,
            }
            applied.push(Override { key: KeyPath::new(key), var });
        }
        if let Some(path) = get("TLS_CA_PATH") {
            general.tls_ca = Some(path.trim().to_string());
            applied.push(Override { key: KeyPath::new("general.tls_ca"), var: "TLS_CA_PATH" });
        }
    }
    Ok(applied)
}

fn parse_port(var: &str, key: &str, value: &str) -> Result<u16, ConfigError> {
    match value.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ConfigError::Env {
            var: var.to_string(),
            message: format!("invalid value {value:?} for {key} (expected a port number 1..=65535)"),
        }),
    }
}

fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ConfigError::Env {
            var: var.to_string(),
            message: format!("invalid value {value:?} (expected true, false, 1 or 0)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::parse_str;
    use super::*;

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    fn applied(toml: &str, vars: &[(&str, &str)]) -> Result<RouterConfig, ConfigError> {
        let mut cfg: RouterConfig = toml::from_str(toml).unwrap();
        apply_env_overrides(&mut cfg, &env_of(vars))?;
        Ok(cfg)
    }

    #[test]
    fn no_variables_change_nothing() {
        let toml = "[general]\nport = 7000\n";
        assert_eq!(applied(toml, &[]).unwrap(), toml::from_str(toml).unwrap());
    }

    #[test]
    fn variables_override_the_file() {
        let cfg = applied(
            "[general]\nhost = \"127.0.0.1\"\nport = 7000\nlog_level = \"warn\"\n",
            &[
                ("PGDOG_HOST", "::"),
                ("PGDOG_PORT", " 6543 "),
                ("PGDOG_ADMIN_PORT", "6544"),
                ("PGDOG_METRICS_PORT", "9187"),
                ("PGDOG_LOG_LEVEL", "debug"),
                ("PGDOG_UNRELATED", "x"),
            ],
        )
        .unwrap();
        let g = &cfg.general;
        assert_eq!((g.host.as_str(), g.port, g.admin_port, g.metrics_port), ("::", 6543, 6544, 9187));
        assert_eq!(g.log_level, "debug");
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let cfg = applied("[general]\nport = 7000\n", &[("PGDOG_PORT", ""), ("TLS_ENABLED", " ")]).unwrap();
        assert_eq!(cfg.general.port, 7000);
        assert_eq!(cfg.general.tls_mode, ClientTlsMode::Allow);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("PGDOG_PORT", "abc", "environment variable PGDOG_PORT: invalid value \"abc\" for general.port"),
            ("PGDOG_PORT", "0", "environment variable PGDOG_PORT: invalid value \"0\""),
            ("PGDOG_ADMIN_PORT", "70000", "environment variable PGDOG_ADMIN_PORT: invalid value \"70000\""),
            ("PGDOG_METRICS_PORT", "-1", "environment variable PGDOG_METRICS_PORT: invalid value \"-1\""),
            ("TLS_ENABLED", "yes please", "environment variable TLS_ENABLED: invalid value \"yes please\""),
        ];
        for (var, value, expected) in cases {
            let err = applied("", &[(var, value)]).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{var}={value}: {err}");
        }
    }

    #[test]
    fn tls_enabled_fills_default_paths() {
        let cfg = applied("[general]\ntls_mode = \"disable\"\n", &[("TLS_ENABLED", "TRUE")]).unwrap();
        let g = &cfg.general;
        assert_eq!(g.tls_mode, ClientTlsMode::Allow);
        assert_eq!(g.tls_certificate.as_deref(), Some(DEFAULT_CERT_PATH));
        assert_eq!(g.tls_private_key.as_deref(), Some(DEFAULT_KEY_PATH));
        assert_eq!(g.tls_ca, None, "CA only when TLS_CA_PATH is set");
    }

    #[test]
    fn tls_paths_from_variables_win() {
        let toml = "[general]\ntls_mode = \"require\"\ntls_certificate = \"/a.crt\"\ntls_private_key = \"/a.key\"\n";
        let vars = [("TLS_ENABLED", "1"), ("TLS_CERT_PATH", "/b.crt"), ("TLS_CA_PATH", "/ca.crt")];
        let g = applied(toml, &vars).unwrap().general;
        assert_eq!(g.tls_mode, ClientTlsMode::Require, "require stays");
        assert_eq!(g.tls_certificate.as_deref(), Some("/b.crt"));
        assert_eq!(g.tls_private_key.as_deref(), Some("/a.key"), "file keeps keys the env does not set");
        assert_eq!(g.tls_ca.as_deref(), Some("/ca.crt"));
    }

    #[test]
    fn tls_paths_ignored_unless_enabled() {
        let g = applied("", &[("TLS_CERT_PATH", "/b.crt"), ("TLS_CA_PATH", "/ca.crt")]).unwrap().general;
        assert_eq!((g.tls_certificate, g.tls_ca), (None, None));
    }

    #[test]
    fn tls_disabled_by_variable() {
        let toml = "[general]\ntls_mode = \"require\"\ntls_certificate = \"/a.crt\"\ntls_private_key = \"/a.key\"\n";
        let g = applied(toml, &[("TLS_ENABLED", "false")]).unwrap().general;
        assert_eq!(g.tls_mode, ClientTlsMode::Disable);
    }

    #[test]
    fn validation_failures_of_env_values_blame_the_variable() {
        let db = "[[databases]]\nname = \"p\"\nhost = \"h\"\n";
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("PGDOG_ADMIN_PORT", "5432")],
                "environment variable PGDOG_ADMIN_PORT: general.admin_port: port 5432 is already used by general.port",
            ),
            (&[("PGDOG_LOG_LEVEL", "loud")], "environment variable PGDOG_LOG_LEVEL: general.log_level:"),
            (&[("PGDOG_HOST", "  ")], ""),
        ];
        for (vars, expected) in cases {
            let result = parse_str(db, "pgdog.toml", "", "users.toml", &env_of(vars));
            match (expected.is_empty(), result) {
                (true, Ok(_)) => {}
                (false, Err(err)) => {
                    assert!(err.to_string().starts_with(expected), "{vars:?}: {err}")
                }
                (_, other) => panic!("{vars:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn overrides_are_tracked() {
        let mut cfg = RouterConfig::default();
        let applied = apply_tracked(&mut cfg, &env_of(&[("PGDOG_PORT", "1"), ("TLS_ENABLED", "1")])).unwrap();
        let vars: Vec<&str> = applied.iter().map(|o| o.var).collect();
        assert_eq!(vars, ["PGDOG_PORT", "TLS_ENABLED", "TLS_CERT_PATH", "TLS_KEY_PATH"]);
    }
}
