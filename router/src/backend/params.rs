//! Session settings a client asked for at startup (`application_name`,
//! `TimeZone`, `search_path`, `options=-c name=value`, ...), which must be in
//! force on whichever server connection serves that client.
//!
//! Server connections open with the router's own startup packet; a client's
//! settings are applied with `SET` on checkout and undone with `RESET` when a
//! client with other settings comes next. Most clients send the same few
//! values, so the comparison is usually one hash and skips the round trip.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A client's startup settings, normalised (lower-case names, sorted).
#[derive(Debug, Clone, Default)]
pub struct StartupParams {
    /// 0 for "no settings"; otherwise a hash of the pairs.
    id: u64,
    pairs: Arc<[(String, String)]>,
}

impl PartialEq for StartupParams {
    /// Compared on every checkout: the same shared set (the usual case, a
    /// connection last used by this client or its like) is equal without
    /// comparing its strings.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && (Arc::ptr_eq(&self.pairs, &other.pairs) || self.pairs == other.pairs)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParamError(pub String);

impl StartupParams {
    /// Builds the set from startup packet parameters other than user,
    /// database and replication; `options` is split into its `-c` settings.
    pub fn from_startup(params: &[(String, String)]) -> Result<Self, ParamError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in params {
            match name.as_str() {
                "user" | "database" | "replication" => {}
                "options" => {
                    for (k, v) in parse_options(value)? {
                        insert(&mut pairs, k, v)?;
                    }
                }
                // Protocol extensions are answered by NegotiateProtocolVersion, not set.
                n if n.starts_with("_pq_.") => {}
                _ => insert(&mut pairs, name.clone(), value.clone())?,
            }
        }
        Ok(Self::from_pairs(pairs))
    }

    /// A set from already-normalised pairs (lower-case names): the client's
    /// startup settings with its SETs on top, or what a server has in force.
    pub fn from_pairs(mut pairs: Vec<(String, String)>) -> Self {
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        let id = if pairs.is_empty() {
            0
        } else {
            let mut h = DefaultHasher::new();
            pairs.hash(&mut h);
            h.finish() | 1
        };
        Self { id, pairs: pairs.into() }
    }

    /// These settings with `overlay`'s values replacing or adding to them.
    pub fn merged(&self, overlay: &[(String, String)]) -> Self {
        if overlay.is_empty() {
            return self.clone();
        }
        let mut pairs: Vec<(String, String)> =
            self.pairs.iter().filter(|(k, _)| !overlay.iter().any(|(o, _)| o == k)).cloned().collect();
        pairs.extend(overlay.iter().cloned());
        Self::from_pairs(pairs)
    }

    #[inline]
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The SQL that turns a connection with `self` in force into one with
    /// `wanted` in force: SET what differs, RESET what `wanted` lacks.
    pub fn transition_sql(&self, wanted: &StartupParams) -> String {
        let mut sql = String::new();
        // set_config takes a value as the startup packet and the config
        // file do: `SET search_path TO 'a, b'` would name one schema
        // "a, b", while set_config('search_path', 'a, b', false) sets two.
        let mut first = true;
        for (k, v) in wanted.pairs.iter() {
            if self.pairs.iter().any(|(k2, v2)| k2 == k && v2 == v) {
                continue;
            }
            sql.push_str(if first { "SELECT set_config(" } else { ", set_config(" });
            first = false;
            push_literal(&mut sql, k);
            sql.push_str(", ");
            push_literal(&mut sql, v);
            sql.push_str(", false)");
        }
        if !first {
            sql.push(';');
        }
        for (k, _) in self.pairs.iter() {
            if !wanted.pairs.iter().any(|(k2, _)| k2 == k) {
                sql.push_str("RESET ");
                push_setting_name(&mut sql, k);
                sql.push(';');
            }
        }
        sql
    }
}

/// A setting name as SQL: each dot-separated part a quoted identifier, so
/// any name the client used is safe (names are already lower case).
fn push_setting_name(sql: &mut String, name: &str) {
    for (i, part) in name.split('.').enumerate() {
        if i > 0 {
            sql.push('.');
        }
        sql.push('"');
        sql.push_str(&part.replace('"', "\"\""));
        sql.push('"');
    }
}

fn insert(pairs: &mut Vec<(String, String)>, name: String, value: String) -> Result<(), ParamError> {
    let name = name.to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if !valid {
        return Err(ParamError(format!("invalid configuration parameter name \"{name}\"")));
    }
    pairs.retain(|(k, _)| *k != name);
    pairs.push((name, value));
    Ok(())
}

/// A string literal that means `value` whatever `standard_conforming_strings` is.
pub fn push_literal(sql: &mut String, value: &str) {
    if value.contains('\\') {
        sql.push_str("E'");
        for c in value.chars() {
            match c {
                '\'' => sql.push_str("''"),
                '\\' => sql.push_str("\\\\"),
                c => sql.push(c),
            }
        }
    } else {
        sql.push('\'');
        for c in value.chars() {
            if c == '\'' {
                sql.push('\'');
            }
            sql.push(c);
        }
    }
    sql.push('\'');
}

/// Splits libpq's `options` as PostgreSQL does (whitespace separates, a
/// backslash escapes the next character) and keeps `-c name=value`,
/// `-cname=value` and `--name=value`. Other server switches are refused:
/// the router cannot apply them per transaction.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, ParamError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
                in_word = true;
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }

    let mut out = Vec::new();
    let mut iter = words.into_iter();
    while let Some(w) = iter.next() {
        let setting = if w == "-c" {
            iter.next().ok_or_else(|| ParamError("-c requires a value in options".into()))?
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_string()
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_string()
        } else {
            return Err(ParamError(format!(
                "unsupported server option \"{w}\" in options: only -c name=value is supported"
            )));
        };
        let (k, v) = setting
            .split_once('=')
            .ok_or_else(|| ParamError(format!("invalid option \"{setting}\": expected name=value")))?;
        // PostgreSQL lets `--search-path` stand for `search_path`.
        out.push((k.replace('-', "_"), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> StartupParams {
        let v: Vec<(String, String)> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        StartupParams::from_startup(&v).unwrap()
    }

    #[test]
    fn options_are_split_like_postgres() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("-c search_path=foo", &[("search_path", "foo")]),
            ("-csearch_path=foo -c statement_timeout=5s", &[("search_path", "foo"), ("statement_timeout", "5s")]),
            ("--search-path=a\\ b", &[("search_path", "a b")]),
            ("", &[]),
        ];
        for (input, expected) in cases {
            let got = parse_options(input).unwrap();
            let expected: Vec<(String, String)> =
                expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
            assert_eq!(&got, &expected, "{input}");
        }
        assert!(parse_options("-B 100").is_err());
        assert!(parse_options("-c").is_err());
        assert!(parse_options("-c novalue").is_err());
    }

    #[test]
    fn user_and_database_are_not_settings() {
        let p = params(&[("user", "u"), ("database", "d"), ("application_name", "app"), ("TimeZone", "UTC")]);
        assert_eq!(p.pairs(), &[("application_name".into(), "app".into()), ("timezone".into(), "UTC".into())]);
        assert_eq!(params(&[("user", "u")]).id(), 0);
    }

    #[test]
    fn transition_sets_and_resets() {
        let a = params(&[("application_name", "a"), ("search_path", "x")]);
        let b = params(&[("application_name", "b"), ("timezone", "UTC")]);
        assert_eq!(
            a.transition_sql(&b),
            "SELECT set_config('application_name', 'b', false), set_config('timezone', 'UTC', false);RESET \"search_path\";"
        );
        let dotted = StartupParams::from_pairs(vec![("myapp.tenant".into(), "7".into())]);
        assert_eq!(dotted.transition_sql(&StartupParams::default()), "RESET \"myapp\".\"tenant\";");
        assert_eq!(a.transition_sql(&a), "");
        assert_eq!(StartupParams::default().transition_sql(&StartupParams::default()), "");
    }

    #[test]
    fn literals_are_quoted() {
        let p = params(&[("application_name", "it's"), ("search_path", "a\\b")]);
        assert_eq!(
            StartupParams::default().transition_sql(&p),
            "SELECT set_config('application_name', 'it''s', false), set_config('search_path', E'a\\\\b', false);"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let v = vec![("bad name;drop".to_string(), "x".to_string())];
        assert!(StartupParams::from_startup(&v).is_err());
    }

    #[test]
    fn overlay_replaces_and_adds() {
        let base = params(&[("application_name", "a"), ("timezone", "UTC")]);
        let o =
            vec![("timezone".to_string(), "Europe/Paris".to_string()), ("search_path".to_string(), "x".to_string())];
        let m = base.merged(&o);
        assert_eq!(m.get("TimeZone"), Some("Europe/Paris"));
        assert_eq!(m.get("search_path"), Some("x"));
        assert_eq!(m.get("application_name"), Some("a"));
        assert_eq!(m, params(&[("application_name", "a"), ("timezone", "Europe/Paris"), ("search_path", "x")]));
        assert_eq!(base.merged(&[]), base);
    }

    #[test]
    fn same_settings_same_id() {
        assert_eq!(params(&[("a", "1"), ("b", "2")]), params(&[("b", "2"), ("a", "1")]));
    }
}
