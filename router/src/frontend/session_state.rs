//! Session state a client builds up in transaction mode: its SETs, and the
//! session-only features that pin it to one server connection.
//!
//! The router sees which settings a query touches (`route::command`) but
//! not whether they stuck: a SET may fail, sit in a transaction that rolls
//! back, or be undone by ROLLBACK TO SAVEPOINT. So when a request that
//! touched settings is done, the router asks the server what is in force
//! for those names (one round trip, only after such requests) and takes
//! that as the client's settings, re-applied on whichever connection serves
//! it next. Features whose state cannot be re-created elsewhere (LISTEN,
//! session advisory locks, temporary tables, WITH HOLD cursors, SQL
//! PREPARE, ...) keep the client on its connection until it disconnects.

use crate::backend::params::{push_literal, StartupParams};
use crate::route::command::{self, Command, Discard, Name, SessionFeature};

/// What a query means for the session, beyond the settings it touches.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects<'a> {
    /// A feature that needs this server connection for the rest of the session.
    pub pin: Option<Pinned>,
    /// The query is exactly `DEALLOCATE name`.
    pub deallocate: Option<Name<'a>>,
    /// DEALLOCATE ALL or DISCARD ALL: the client's statements are gone.
    pub forget_statements: bool,
}

/// Why a client keeps its server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinned {
    Feature(SessionFeature),
    /// SQL-level PREPARE: the statement lives on this connection only.
    SqlPrepare,
}

impl Pinned {
    pub fn describe(self) -> &'static str {
        match self {
            Pinned::Feature(f) => f.describe(),
            Pinned::SqlPrepare => "SQL PREPARE",
        }
    }
}

#[derive(Debug)]
pub struct SessionState {
    /// The client's startup settings.
    base: StartupParams,
    /// Settings the client changed since, with the values the server reported.
    overlay: Vec<(String, String)>,
    /// Names SET or RESET on the bound connection since the last sync.
    touched: Vec<String>,
    /// RESET ALL or DISCARD ALL ran on the bound connection.
    reset_all: bool,
    /// DEALLOCATE ALL or DISCARD ALL ran: the connection's prepared
    /// statements are gone, or must go (if the command failed).
    deallocate_all: bool,
    pub pinned: Option<Pinned>,
}

impl SessionState {
    pub fn new(base: StartupParams) -> Self {
        Self { base, overlay: Vec::new(), touched: Vec::new(), reset_all: false, deallocate_all: false, pinned: None }
    }

    /// The settings the client expects in force: startup values and its SETs.
    pub fn params(&self) -> StartupParams {
        self.base.merged(&self.overlay)
    }

    /// Looks at the text of a query the client sends (simple Query, or the
    /// Parse of an extended one) and records what it does to the session.
    pub fn observe<'a>(&mut self, sql: &'a [u8]) -> Effects<'a> {
        let mut effects = Effects::default();
        if command::is_plain(sql) {
            return effects;
        }
        let mut count = 0;
        let mut deallocate = None;
        for c in command::commands(sql) {
            count += 1;
            match c {
                Command::Set { name, .. } | Command::Reset { name } => self.touch(&name),
                Command::ResetAll => self.reset_everything(),
                Command::Discard(Discard::All) => {
                    self.reset_everything();
                    self.deallocate_all = true;
                    effects.forget_statements = true;
                }
                Command::Deallocate(None) => {
                    self.deallocate_all = true;
                    effects.forget_statements = true;
                }
                Command::Deallocate(Some(name)) => deallocate = Some(name),
                Command::Prepare => effects.pin = effects.pin.or(Some(Pinned::SqlPrepare)),
                Command::SessionOnly(f) => effects.pin = effects.pin.or(Some(Pinned::Feature(f))),
                _ => {}
            }
        }
        if count == 1 {
            effects.deallocate = deallocate;
        }
        if self.pinned.is_none() {
            self.pinned = effects.pin;
        }
        effects
    }

    fn touch(&mut self, name: &str) {
        if !self.touched.iter().any(|t| t == name) {
            self.touched.push(name.to_string());
        }
    }

    fn reset_everything(&mut self) {
        self.reset_all = true;
        self.overlay.clear();
        self.touched.clear();
    }

    /// Whether the bound connection must be asked what is in force, or
    /// cleaned, before it goes back to the pool.
    pub fn needs_sync(&self) -> bool {
        !self.touched.is_empty() || self.reset_all || self.deallocate_all
    }

    /// SQL run on the bound connection before release: statements dropped
    /// if DEALLOCATE ALL may have failed, then the touched settings read
    /// back as (name, setting, source, current_setting). pg_settings gives
    /// the source, so a value back at its default is told apart from one
    /// the client set; `role` and custom settings (`myapp.tenant`) are not
    /// in pg_settings and are read with current_setting.
    pub fn sync_sql(&self) -> String {
        let mut sql = String::new();
        if self.deallocate_all {
            sql.push_str("DEALLOCATE ALL;");
        }
        if !self.touched.is_empty() {
            sql.push_str("SELECT n, s.setting, s.source, current_setting(n, true) FROM unnest(ARRAY[");
            for (i, name) in self.touched.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                push_literal(&mut sql, name);
            }
            sql.push_str("]::text[]) AS n LEFT JOIN pg_settings s ON lower(s.name) = n");
        }
        sql
    }

    /// Takes the rows of `sync_sql` and returns what the connection now has
    /// in force, given what it had (`applied`) before the client's request.
    pub fn apply_sync(&mut self, rows: &[Vec<Option<String>>], applied: &StartupParams) -> StartupParams {
        let mut server: Vec<(String, String)> = if self.reset_all { Vec::new() } else { applied.pairs().to_vec() };
        for row in rows {
            let Some(Some(name)) = row.first() else { continue };
            let value = row.get(1).cloned().flatten();
            let source = row.get(2).cloned().flatten();
            let current = row.get(3).cloned().flatten();
            let set_by_client = match (&value, source.as_deref()) {
                (Some(v), Some(source)) => (source == "session").then(|| v.clone()),
                // Not in pg_settings: `role` reads "none" when unset, a
                // custom setting reads empty once reset.
                _ => current.filter(|c| !(c.is_empty() || name == "role" && c == "none")),
            };
            self.overlay.retain(|(k, _)| k != name);
            server.retain(|(k, _)| k != name);
            if let Some(v) = set_by_client {
                self.overlay.push((name.clone(), v.clone()));
                server.push((name.clone(), v));
            }
        }
        self.touched.clear();
        self.reset_all = false;
        self.deallocate_all = false;
        StartupParams::from_pairs(server)
    }

    /// Forgets changes not yet synced (the connection that had them is gone).
    pub fn abandon(&mut self) {
        self.touched.clear();
        self.reset_all = false;
        self.deallocate_all = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    fn state() -> SessionState {
        let startup = vec![("application_name".to_string(), "app".to_string())];
        SessionState::new(StartupParams::from_startup(&startup).unwrap())
    }

    #[test]
    fn plain_queries_touch_nothing() {
        let mut s = state();
        assert_eq!(s.observe(b"SELECT 1"), Effects::default());
        assert!(!s.needs_sync());
    }

    #[test]
    fn set_is_read_back_and_kept() {
        let mut s = state();
        s.observe(b"SET search_path = a, b; SET TIME ZONE 'UTC'");
        assert!(s.needs_sync());
        let sql = s.sync_sql();
        assert!(sql.contains("ARRAY['search_path','timezone']"), "{sql}");
        let applied = s.params();
        let rows = vec![
            row(&[Some("search_path"), Some("a, b"), Some("session"), Some("a, b")]),
            row(&[Some("timezone"), Some("UTC"), Some("configuration file"), Some("UTC")]),
        ];
        let server = s.apply_sync(&rows, &applied);
        assert!(!s.needs_sync());
        let p = s.params();
        assert_eq!(p.get("search_path"), Some("a, b"));
        assert_eq!(p.get("timezone"), None, "back at the server default: nothing to re-apply");
        assert_eq!(p.get("application_name"), Some("app"));
        assert_eq!(server, p, "the connection has exactly what the client expects");
    }

    #[test]
    fn rolled_back_set_does_not_stick_and_reset_forgets() {
        let mut s = state();
        s.observe(b"SET statement_timeout = '5s'");
        let applied = s.params();
        s.apply_sync(&[row(&[Some("statement_timeout"), Some("5000"), Some("session"), Some("5s")])], &applied);
        assert_eq!(s.params().get("statement_timeout"), Some("5000"));
        // A later SET that rolled back: the server still reports 5000.
        s.observe(b"BEGIN; SET statement_timeout = 0; ROLLBACK");
        let applied = s.params();
        s.apply_sync(&[row(&[Some("statement_timeout"), Some("5000"), Some("session"), Some("5s")])], &applied);
        assert_eq!(s.params().get("statement_timeout"), Some("5000"));
        s.observe(b"RESET statement_timeout");
        let applied = s.params();
        s.apply_sync(&[row(&[Some("statement_timeout"), Some("0"), Some("default"), Some("0")])], &applied);
        assert_eq!(s.params().get("statement_timeout"), None);
    }

    #[test]
    fn role_and_custom_settings_come_from_current_setting() {
        let mut s = state();
        s.observe(b"SET ROLE reader; SET myapp.tenant = '42'");
        let applied = s.params();
        let rows = vec![
            row(&[Some("role"), None, None, Some("reader")]),
            row(&[Some("myapp.tenant"), None, None, Some("42")]),
        ];
        s.apply_sync(&rows, &applied);
        assert_eq!(s.params().get("role"), Some("reader"));
        assert_eq!(s.params().get("myapp.tenant"), Some("42"));
        s.observe(b"RESET ROLE; RESET myapp.tenant");
        let applied = s.params();
        let rows =
            vec![row(&[Some("role"), None, None, Some("none")]), row(&[Some("myapp.tenant"), None, None, Some("")])];
        s.apply_sync(&rows, &applied);
        assert_eq!(s.params().get("role"), None);
        assert_eq!(s.params().get("myapp.tenant"), None);
    }

    #[test]
    fn reset_all_returns_to_startup_settings() {
        let mut s = state();
        s.observe(b"SET search_path = x");
        let applied = s.params();
        let server = s.apply_sync(&[row(&[Some("search_path"), Some("x"), Some("session"), Some("x")])], &applied);
        s.observe(b"RESET ALL");
        assert!(s.needs_sync());
        assert_eq!(s.sync_sql(), "", "nothing to read back");
        let server = s.apply_sync(&[], &server);
        assert_eq!(server.pairs(), &[], "RESET ALL undid even the startup settings the router applied");
        assert_eq!(s.params().get("application_name"), Some("app"), "re-applied on the next checkout");
        assert_eq!(s.params().get("search_path"), None);
    }

    #[test]
    fn session_only_features_pin() {
        let mut s = state();
        assert_eq!(s.observe(b"LISTEN jobs").pin, Some(Pinned::Feature(SessionFeature::Listen)));
        assert_eq!(s.pinned, Some(Pinned::Feature(SessionFeature::Listen)));
        s.observe(b"PREPARE q AS SELECT 1");
        assert_eq!(s.pinned, Some(Pinned::Feature(SessionFeature::Listen)), "the first reason is kept");
        let mut s = state();
        assert_eq!(s.observe(b"PREPARE q AS SELECT 1").pin, Some(Pinned::SqlPrepare));
    }

    #[test]
    fn deallocate_one_only_when_alone() {
        let mut s = state();
        assert_eq!(s.observe(b"DEALLOCATE s1").deallocate.as_deref(), Some("s1"));
        assert_eq!(s.observe(b"DEALLOCATE s1; SELECT 1").deallocate, None);
        let e = s.observe(b"DEALLOCATE ALL");
        assert!(e.forget_statements);
        assert_eq!(s.sync_sql(), "DEALLOCATE ALL;");
        let e = s.observe(b"DISCARD ALL");
        assert!(e.forget_statements);
    }
}
