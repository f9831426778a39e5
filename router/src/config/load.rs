//! Loading: read `pgdog.toml` and `users.toml`, apply environment overrides,
//! resolve secrets, validate, and hand back one [`Config`].
//!
//! Every failure becomes a [`ConfigError`] whose `Display` is a single line
//! that names the file, the line and column, and the key, because that line is
//! all an operator sees when the router refuses to start or a reload is
//! rejected.
//!
//! Locating keys: serde only tells us *what* went wrong, and validation runs
//! on plain structs that no longer know where their values came from. So, only
//! when something needs a location, the source is parsed a second time into a
//! small tree whose table keys and array elements carry byte spans (see
//! `KeyIndex`). That parse is best effort: if it fails (the typed parse
//! already reports syntax errors with a span of their own) errors still carry
//! the file and the position toml gave us.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::{Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::env;
use super::secrets;
use super::types::{Config, RouterConfig, User, UsersConfig};
use super::validate;

/// Pool used by users without `pool`; it exists even when `[pools]` omits it.
pub(crate) const DEFAULT_POOL: &str = "default";

/// Why a configuration could not be loaded. `Display` is always one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// A problem at a known place in a file. `key` is the dotted key path
    /// (`pools.default.max_pool_size`, `users[2].password`), empty for syntax
    /// errors; `message` already includes it where that reads naturally.
    #[error("{file}:{line}:{column}: {message}")]
    At { file: String, line: usize, column: usize, key: String, message: String },
    /// A problem in a file whose position toml did not report.
    #[error("{file}: {message}")]
    InFile { file: String, message: String },
    /// A bad environment variable, or a value it set that failed validation:
    /// the file is not to blame, so no file position is given.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl ConfigError {
    /// The dotted key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::At { key, .. } if !key.is_empty() => Some(key),
            _ => None,
        }
    }
}

/// Load `config` (pgdog.toml) and `users` (users.toml; `None` means no users)
/// with overrides from the process environment.
pub fn load_files(config: &Path, users: Option<&Path>) -> Result<Config, ConfigError> {
    let config_name = config.display().to_string();
    let config_toml = read(config)?;
    let (users_name, users_toml) = match users {
        Some(path) => (path.display().to_string(), read(path)?),
        None => ("users.toml".to_string(), String::new()),
    };
    let env = |name: &str| std::env::var(name).ok();
    parse_str(&config_toml, &config_name, &users_toml, &users_name, &env)
}

/// [`load_files`] on strings, with an injectable environment so tests and the
/// config generator never touch the process environment. `config_name` and
/// `users_name` are only used in error messages.
pub fn parse_str(
    config_toml: &str,
    config_name: &str,
    users_toml: &str,
    users_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let router_src = Source::new(config_name, config_toml);
    let users_src = Source::new(users_name, users_toml);

    let mut router: RouterConfig = router_src.deserialize()?;
    let users: UsersConfig = users_src.deserialize()?;

    let overrides = env::apply_tracked(&mut router, env)?;
    // Users without `pool` land in `default`, so it must always exist; an
    // explicit `[pools.default]` keeps its settings.
    router.pools.entry(DEFAULT_POOL.to_string()).or_default();

    let to_error = |issue: Issue| -> ConfigError {
        if issue.file == FileKind::Router {
            if let Some(ov) = overrides.iter().find(|ov| ov.key == issue.key) {
                return ConfigError::Env {
                    var: ov.var.to_string(),
                    message: format!("{}: {}", issue.key, issue.message),
                };
            }
        }
        let src = match issue.file {
            FileKind::Router => &router_src,
            FileKind::Users => &users_src,
        };
        src.located(&issue.key, &issue.message)
    };

    validate::check_router(&router).map_err(to_error)?;
    router.api.token = secrets::resolve_api_token(&router.api, env).map_err(to_error)?;
    let users: Vec<User> = users
        .users
        .iter()
        .enumerate()
        .map(|(index, entry)| secrets::resolve_user(entry, index, env))
        .collect::<Result<_, _>>()
        .map_err(to_error)?;
    validate::check_users(&users, &router).map_err(to_error)?;

    Ok(Config { router, users })
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|err| ConfigError::Read { path: path.display().to_string(), reason: io_reason(&err) })
}

/// `No such file or directory` rather than `... (os error 2)`: the errno adds
/// nothing for an operator reading a one-line error.
pub(crate) fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(pos) if text.ends_with(')') => text[..pos].to_string(),
        _ => text,
    }
}

/// Which of the two files an [`Issue`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Router,
    Users,
}

/// A problem found after deserialisation (validation, secrets): the key it is
/// about and what is wrong. [`parse_str`] turns it into a located [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub file: FileKind,
    pub key: KeyPath,
    pub message: String,
}

impl Issue {
    pub(crate) fn router(key: KeyPath, message: impl Into<String>) -> Self {
        Issue { file: FileKind::Router, key, message: message.into() }
    }

    pub(crate) fn users(key: KeyPath, message: impl Into<String>) -> Self {
        Issue { file: FileKind::Users, key, message: message.into() }
    }
}

/// A key path such as `pools.default.max_pool_size` or `databases[1].role`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    /// A path of bare keys written with dots, e.g. `"general.port"`. Names that
    /// may contain dots (pool names) must be appended with [`KeyPath::key`].
    pub(crate) fn new(dotted: &str) -> Self {
        KeyPath(dotted.split('.').filter(|s| !s.is_empty()).map(|s| Segment::Key(s.to_string())).collect())
    }

    pub(crate) fn key(&self, name: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(name.to_string()));
        path
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    fn parent(&self) -> Option<KeyPath> {
        let (_, rest) = self.0.split_last()?;
        Some(KeyPath(rest.to_vec()))
    }

    fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    fn has_index(&self) -> bool {
        self.0.iter().any(|s| matches!(s, Segment::Index(_)))
    }

    fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// How the table at this path is named in "unknown key ... in X".
    fn table_description(&self) -> String {
        if self.is_root() {
            "at the top level".to_string()
        } else if self.has_index() {
            format!("in {self}")
        } else {
            format!("in [{self}]")
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare =
                        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One file's name and text, and the ways of pointing into it.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

impl<'a> Source<'a> {
    fn new(name: &'a str, text: &'a str) -> Self {
        Source { name, text }
    }

    fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|err| self.de_error(&err))
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |p| p + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    fn de_error(&self, err: &toml::de::Error) -> ConfigError {
        let message = err.message();
        let Some(span) = err.span() else {
            return ConfigError::InFile { file: self.name.to_string(), message: describe_de_error(message, None) };
        };
        let path = KeyIndex::build(self.text).and_then(|index| index.path_at(&span));
        let (line, column) = self.line_col(span.start);
        ConfigError::At {
            file: self.name.to_string(),
            line,
            column,
            key: path.as_ref().map(ToString::to_string).unwrap_or_default(),
            message: describe_de_error(message, path.as_ref()),
        }
    }

    /// An error about `key`, placed at the key if the file spells it out, else
    /// at the nearest enclosing table or array entry that it does, else 1:1
    /// (a value that only came from defaults).
    fn located(&self, key: &KeyPath, message: &str) -> ConfigError {
        let offset = KeyIndex::build(self.text).and_then(|index| index.offset_of(key)).unwrap_or(0);
        let (line, column) = self.line_col(offset);
        let message = if key.is_root() { message.to_string() } else { format!("{key}: {message}") };
        ConfigError::At { file: self.name.to_string(), line, column, key: key.to_string(), message }
    }
}

/// toml's messages can span lines ("invalid table header\nexpected `.`");
/// the error must stay on one.
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// Names between backticks, in order: serde quotes field and variant names so.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Rewrite serde's wording into the router's: keys rather than fields, the
/// key path in front, no backticks, integer types as ranges.
fn describe_de_error(message: &str, path: Option<&KeyPath>) -> String {
    let message = one_line(message);
    let names = backticked(&message);
    let prefix = |text: String| match path {
        Some(path) if !path.is_root() => format!("{path}: {text}"),
        _ => text,
    };

    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let table = match path {
            // The error points at the unknown key itself; name its table.
            Some(path) if path.last_key() == Some(name) => path.parent().unwrap_or_default().table_description(),
            Some(path) => path.table_description(),
            None => String::new(),
        };
        let expected = if names.len() > 1 {
            format!(" (expected one of: {})", names[1..].join(", "))
        } else {
            " (no keys are allowed here)".to_string()
        };
        let table = if table.is_empty() { table } else { format!(" {table}") };
        return format!("unknown key \"{name}\"{table}{expected}");
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let value = rest.split('`').next().unwrap_or_default();
        let expected = if names.len() > 1 { names[1..].join(", ") } else { "nothing".to_string() };
        return prefix(format!("unknown variant \"{value}\", expected one of {expected}"));
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        return prefix(format!("missing required key \"{name}\""));
    }
    prefix(plain_types(&unquote(&message)))
}

/// serde and toml quote names and values in backticks; the router's messages
/// quote strings with `"` and leave numbers bare.
fn unquote(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(
            |(i, part)| {
                if i % 2 == 0 || part.parse::<f64>().is_ok() {
                    part.to_string()
                } else {
                    format!("\"{part}\"")
                }
            },
        )
        .collect()
}

/// Rust type names mean nothing to someone editing TOML.
fn plain_types(text: &str) -> String {
    let mut text = text
        .replace("expected u16", "expected an integer in 0..=65535")
        .replace("expected u32", "expected an integer in 0..=4294967295")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected usize", "expected a non-negative integer");
    for (rust, toml) in [("expected struct ", "expected a table"), ("expected enum ", "expected a string")] {
        if let Some(start) = text.find(rust) {
            let name_end = text[start + rust.len()..]
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .map_or(text.len(), |end| start + rust.len() + end);
            text.replace_range(start..name_end, toml);
        }
    }
    text
}

/// Byte spans of every table key and array element of one TOML document,
/// keyed by path, in document order.
struct KeyIndex {
    entries: Vec<(KeyPath, Range<usize>)>,
}

impl KeyIndex {
    /// `None` when the text does not parse as TOML (or holds something the
    /// span tree cannot represent, such as a datetime).
    fn build(text: &str) -> Option<KeyIndex> {
        let root: Node = toml::from_str(text).ok()?;
        let mut entries = Vec::new();
        walk(&root, &KeyPath::default(), &mut entries);
        Some(KeyIndex { entries })
    }

    /// Where `path` is written, or where its closest written ancestor is.
    fn offset_of(&self, path: &KeyPath) -> Option<usize> {
        let mut path = Some(path.clone());
        while let Some(p) = path {
            if let Some((_, span)) = self.entries.iter().find(|(k, _)| *k == p) {
                return Some(span.start);
            }
            path = p.parent();
        }
        None
    }

    /// The key a toml error span is about. Unknown keys and missing keys
    /// point exactly at a key or an array element; bad values point at the
    /// value, which follows its key, so the closest preceding key wins.
    fn path_at(&self, span: &Range<usize>) -> Option<KeyPath> {
        if let Some((path, _)) = self.entries.iter().rev().find(|(_, s)| s == span) {
            return Some(path.clone());
        }
        self.entries
            .iter()
            .filter(|(_, s)| s.start <= span.start)
            .max_by_key(|(_, s)| s.start)
            .map(|(path, _)| path.clone())
    }
}

fn walk(node: &Node, path: &KeyPath, out: &mut Vec<(KeyPath, Range<usize>)>) {
    match node {
        Node::Table(entries) => {
            for (key, value) in entries {
                let child = path.key(key.get_ref());
                out.push((child.clone(), key.span()));
                walk(value, &child, out);
            }
        }
        Node::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let child = path.index(i);
                out.push((child.clone(), item.span()));
                walk(item.get_ref(), &child, out);
            }
        }
        Node::Leaf => {}
    }
}

/// A TOML document reduced to its shape. Keys and array elements carry spans;
/// table values do not, because tables implied by dotted headers
/// (`pools` in `[pools.default]`) have no span and `Spanned` would fail on them.
enum Node {
    Table(Vec<(Spanned<String>, Node)>),
    Array(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any TOML value")
            }

            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Table(entries))
            }
        }

        deserializer.deserialize_any(NodeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::super::types::{AuthMethod, General, PoolSettings, Role};
    use super::*;

    const MINIMAL: &str = "[[databases]]\nname = \"postgres\"\nhost = \"127.0.0.1\"\n";
    const MINIMAL_USERS: &str = "[[users]]\nname = \"alice\"\npassword = \"secret\"\ndatabase = \"postgres\"\n";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(config: &str, users: &str) -> Result<Config, ConfigError> {
        parse_str(config, "pgdog.toml", users, "users.toml", &no_env)
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let config = parse(MINIMAL, MINIMAL_USERS).unwrap();
        assert_eq!(config.router.general.port, 5432);
        assert_eq!(config.router.pools.get(DEFAULT_POOL), Some(&PoolSettings::default()));
        assert_eq!(config.router.databases[0].role, Role::Primary);
        let alice = &config.users[0];
        assert_eq!(alice.pool, "default");
        assert_eq!(alice.server_user, "alice");
        assert_eq!(alice.server_password.as_deref(), Some("secret"));
        assert_eq!(alice.auth, AuthMethod::Scram);
    }

    #[test]
    fn explicit_default_pool_keeps_its_settings() {
        let config = parse(&format!("{MINIMAL}[pools.default]\nmax_pool_size = 7\n"), "").unwrap();
        assert_eq!(config.router.pools["default"].max_pool_size, 7);
        assert!(config.users.is_empty());
    }

    /// (case, pgdog.toml, users.toml, expected start of the error, words it must contain)
    #[test]
    fn deserialisation_errors_name_file_line_and_key() {
        let cases: &[(&str, &str, &str, &str, &[&str])] = &[
            (
                "unknown top-level key",
                "foo = 1\n",
                "",
                "pgdog.toml:1:1: ",
                &["unknown key \"foo\" at the top level", "general"],
            ),
            (
                "unknown key in [general]",
                "[general]\nport = 6000\nmax_pool = 3\n",
                "",
                "pgdog.toml:3:1: ",
                &["unknown key \"max_pool\" in [general]", "expected one of:", "admin_port"],
            ),
            (
                "unknown key in [pools.default]",
                "[pools.default]\n\nmax_pool = 3\n",
                "",
                "pgdog.toml:3:1: ",
                &["unknown key \"max_pool\" in [pools.default] (expected one of: pool_mode, min_pool_size"],
            ),
            (
                "unknown key in [[databases]]",
                "[[databases]]\nname = \"a\"\nhost = \"h\"\n\n[[databases]]\nname = \"a\"\n  hots = \"h\"\n",
                "",
                "pgdog.toml:7:3: ",
                &["unknown key \"hots\" in databases[1]", "host"],
            ),
            (
                "unknown key in [[users]]",
                MINIMAL,
                "[[users]]\nname = \"a\"\ndatabase = \"postgres\"\npasswd = \"x\"\n",
                "users.toml:4:1: ",
                &["unknown key \"passwd\" in users[0]", "password_env"],
            ),
            (
                "unknown variant",
                MINIMAL,
                "[[users]]\nname = \"a\"\npassword = \"x\"\ndatabase = \"postgres\"\nauth = \"sha1\"\n",
                "users.toml:5:8: ",
                &["users[0].auth: unknown variant \"sha1\", expected one of scram, md5, trust"],
            ),
            (
                "wrong type",
                "[general]\nport = \"abc\"\n",
                "",
                "pgdog.toml:2:8: ",
                &["general.port: invalid type: string \"abc\", expected an integer in 0..=65535"],
            ),
            (
                "out of range for the type",
                "[general]\nadmin_port = 70000\n",
                "",
                "pgdog.toml:2:14: ",
                &["general.admin_port: invalid value: integer 70000"],
            ),
            (
                "missing required key",
                "[[databases]]\nname = \"x\"\nhost = \"h\"\n[[databases]]\nname = \"y\"\n",
                "",
                "pgdog.toml:4:1: ",
                &["databases[1]: missing required key \"host\""],
            ),
            (
                "unknown role",
                "[[databases]]\nname = \"x\"\nhost = \"h\"\nrole = \"leader\"\n",
                "",
                "pgdog.toml:4:8: ",
                &["databases[0].role: unknown variant \"leader\""],
            ),
            (
                "syntax error",
                "[general\nport = 1\n",
                "",
                "pgdog.toml:1:9: ",
                &["invalid table header; expected \".\", \"]\""],
            ),
            (
                "table where a value belongs",
                "general = 5\n",
                "",
                "pgdog.toml:1:11: ",
                &["general: invalid type: integer 5, expected a table"],
            ),
            (
                "inline tables",
                "pools = { default = { max_pool = 1 } }\n",
                "",
                "pgdog.toml:1:23: ",
                &["unknown key \"max_pool\" in [pools.default]"],
            ),
            ("duplicate key", "[general]\nport = 1\nport = 2\n", "", "pgdog.toml:3:", &["duplicate key"]),
        ];
        for (case, config, users, start, words) in cases {
            let err = parse(config, users).expect_err(case).to_string();
            assert!(err.starts_with(start), "{case}: {err}");
            assert!(!err.contains('\n'), "{case}: not one line: {err}");
            for word in *words {
                assert!(err.contains(word), "{case}: {err:?} lacks {word:?}");
            }
        }
    }

    #[test]
    fn health_check_keys_parse_and_are_range_checked() {
        let routing = |extra: &str| format!("{MINIMAL}[query_routing]\n{extra}\n");
        let config = parse(
            &routing(
                "health_check_interval_ms = 200\nhealth_check_timeout_ms = 300\nban_time_ms = 400\n\
                 replica_fallback = \"error\"",
            ),
            "",
        )
        .unwrap();
        let q = &config.router.query_routing;
        assert_eq!((q.health_check_interval_ms, q.health_check_timeout_ms, q.ban_time_ms), (200, 300, 400));
        assert_eq!(q.replica_fallback, super::super::types::ReplicaFallback::Error);
        for (bad, key) in [
            ("health_check_interval_ms = 0", "query_routing.health_check_interval_ms"),
            ("health_check_timeout_ms = 5", "query_routing.health_check_timeout_ms"),
            ("ban_time_ms = 0", "query_routing.ban_time_ms"),
            ("replica_fallback = \"nowhere\"", "query_routing.replica_fallback"),
        ] {
            let err = parse(&routing(bad), "").unwrap_err();
            assert_eq!(err.key(), Some(key), "{bad}: {err}");
        }
    }

    #[test]
    fn error_key_is_exposed() {
        let err = parse("[pools.default]\nmax_pool = 3\n", "").unwrap_err();
        assert_eq!(err.key(), Some("pools.default.max_pool"));
    }

    #[test]
    fn line_and_column_count_characters() {
        let src = Source::new("f", "a = \"é\"\nbé = 1\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(10), (2, 2));
        assert_eq!(src.line_col(12), (2, 3));
        assert_eq!(src.line_col(1000), (3, 1));
    }

    #[test]
    fn key_paths_display_quoted_segments() {
        let path = KeyPath::new("pools").key("my.pool").key("max_pool_size");
        assert_eq!(path.to_string(), "pools.\"my.pool\".max_pool_size");
        assert_eq!(KeyPath::new("databases").index(1).key("role").to_string(), "databases[1].role");
    }

    #[test]
    fn located_falls_back_to_enclosing_table() {
        let src = Source::new("pgdog.toml", "\n[pools.\"a.b\"]\nmin_pool_size = 1\n");
        let err = src.located(&KeyPath::new("pools").key("a.b").key("max_pool_size"), "bad");
        assert_eq!(err.to_string(), "pgdog.toml:2:8: pools.\"a.b\".max_pool_size: bad");
        let err = src.located(&KeyPath::new("general.port"), "bad");
        assert_eq!(err.to_string(), "pgdog.toml:1:1: general.port: bad");
    }

    #[test]
    fn load_files_reads_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pgdog.toml");
        let users = dir.path().join("users.toml");
        std::fs::write(&config, MINIMAL).unwrap();
        std::fs::write(&users, MINIMAL_USERS).unwrap();
        let loaded = load_files(&config, Some(&users)).unwrap();
        assert_eq!(loaded.users.len(), 1);
        let loaded = load_files(&config, None).unwrap();
        assert!(loaded.users.is_empty());

        std::fs::write(&users, "[[users]]\nname = 1\n").unwrap();
        let err = load_files(&config, Some(&users)).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2:8: users[0].name", users.display())), "{err}");
    }

    #[test]
    fn missing_file_is_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = load_files(&missing, None).unwrap_err().to_string();
        assert_eq!(err, format!("cannot read {}: No such file or directory", missing.display()));
    }

    const REFERENCE: &str = include_str!("../../../config/pgdog.reference.toml");
    const REFERENCE_USERS: &str = include_str!("../../../config/users.reference.toml");

    #[test]
    fn reference_configs_load() {
        let env = |name: &str| (name == "PGDOG_APP_PASSWORD").then(|| "app-secret".to_string());
        let config = parse_str(REFERENCE, "pgdog.reference.toml", REFERENCE_USERS, "users.reference.toml", &env)
            .unwrap_or_else(|err| panic!("{err}"));
        let general = &config.router.general;
        assert_eq!(general, &General::default(), "reference shows the defaults");
        assert_eq!(config.router.databases.len(), 1);
        assert_eq!(config.router.databases[0].host, "127.0.0.1");
        let auths: Vec<AuthMethod> = config.users.iter().map(|u| u.auth).collect();
        assert!(
            auths.contains(&AuthMethod::Scram)
                && auths.contains(&AuthMethod::Md5)
                && auths.contains(&AuthMethod::Trust)
        );
        assert!(config.users.iter().any(|u| u.password.as_deref() == Some("app-secret")));
    }

    /// Every key the schema knows must be mentioned (set or commented out) in
    /// the reference files, so a new field cannot ship undocumented.
    #[test]
    fn reference_configs_mention_every_key() {
        use super::super::types::*;
        let mut router = RouterConfig::default();
        router.general.tls_certificate = Some(String::new());
        router.general.tls_private_key = Some(String::new());
        router.general.tls_ca = Some(String::new());
        router.pools.insert("default".into(), PoolSettings::default());
        router.databases.push(DatabaseEntry {
            name: String::new(),
            host: String::new(),
            port: 5432,
            database_name: Some(String::new()),
            role: Role::Primary,
            shard: Some(0),
            server_tls: ServerTls::Prefer,
            max_connections: 0,
        });
        router.sharding.tables.push(ShardedTable { name: String::new(), column: String::new(), shards: Some(1) });
        router.api.bind = Some(String::new());
        router.api.token_env = Some(String::new());
        router.api.token_file = Some(String::new());
        let users = UsersConfig {
            users: vec![UserEntry {
                name: String::new(),
                password: Some(String::new()),
                password_env: Some(String::new()),
                password_file: Some(String::new()),
                database: String::new(),
                pool: Some(String::new()),
                pool_mode: Some(PoolMode::Session),
                server_user: Some(String::new()),
                server_password: Some(String::new()),
                server_password_env: Some(String::new()),
                server_password_file: Some(String::new()),
                auth: AuthMethod::Scram,
                force_replica: true,
            }],
        };

        fn keys(value: &toml::Value, out: &mut Vec<String>) {
            match value {
                toml::Value::Table(table) => {
                    for (key, value) in table {
                        out.push(key.clone());
                        keys(value, out);
                    }
                }
                toml::Value::Array(items) => items.iter().for_each(|item| keys(item, out)),
                _ => {}
            }
        }
        for (text, value) in [
            (REFERENCE, toml::Value::try_from(&router).unwrap()),
            (REFERENCE_USERS, toml::Value::try_from(&users).unwrap()),
        ] {
            let mut all = Vec::new();
            keys(&value, &mut all);
            for key in all {
                let mentioned = text.lines().any(|line| {
                    let line = line.trim_start().trim_start_matches('#').trim_start();
                    line.starts_with(&format!("{key} ="))
                        || line.starts_with(&format!("[{key}"))
                        || line.starts_with(&format!("[[{key}"))
                        || line.contains(&format!(".{key}]"))
                });
                assert!(mentioned, "reference config does not mention `{key}`");
            }
        }
    }
}
