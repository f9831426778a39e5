//! Routing decisions as pure functions: given the configured topology and
//! what a client asked for, which server serves it. No sockets, clocks or
//! globals, so every rule is a table-driven unit test.
//!
//! Today a logical database is served by its primary (shard 0). Read/write
//! splitting and sharding add their choices here.
//!
//! - `command` reads what a statement does to session state (SET, RESET,
//!   DISCARD, LISTEN, ...), which transaction mode must track.
//! - `classify` decides read or write for read/write splitting with the real
//!   PostgreSQL parser, behind a cache keyed on `normalize`'s statement shape
//!   (the text with literals stripped), and routes a statement to the primary
//!   or a replica given the session's facts.

pub mod classify;
pub mod command;
pub mod normalize;

use crate::config::{DatabaseEntry, Role};

/// The primary that serves `database` (shard 0 when sharding is off).
pub fn primary<'a>(databases: &'a [DatabaseEntry], database: &str) -> Option<&'a DatabaseEntry> {
    databases.iter().filter(|d| d.name == database && d.role == Role::Primary).find(|d| d.shard.unwrap_or(0) == 0)
}

/// Whether any entry serves `database`: an unknown name is 3D000.
pub fn database_exists(databases: &[DatabaseEntry], database: &str) -> bool {
    databases.iter().any(|d| d.name == database)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerTls;

    fn entry(name: &str, host: &str, role: Role, shard: Option<u32>) -> DatabaseEntry {
        DatabaseEntry {
            name: name.into(),
            host: host.into(),
            port: 5432,
            database_name: None,
            role,
            shard,
            server_tls: ServerTls::Disable,
            max_connections: 0,
        }
    }

    #[test]
    fn picks_the_primary_of_the_named_database() {
        let dbs = vec![
            entry("app", "replica1", Role::Replica, None),
            entry("app", "primary", Role::Primary, None),
            entry("other", "other-primary", Role::Primary, None),
            entry("sharded", "s1", Role::Primary, Some(1)),
            entry("sharded", "s0", Role::Primary, Some(0)),
        ];
        let cases =
            [("app", Some("primary")), ("other", Some("other-primary")), ("sharded", Some("s0")), ("nope", None)];
        for (db, host) in cases {
            assert_eq!(primary(&dbs, db).map(|d| d.host.as_str()), host, "{db}");
        }
        assert!(database_exists(&dbs, "app"));
        assert!(!database_exists(&dbs, "nope"));
    }

    #[test]
    fn replica_only_database_has_no_primary() {
        let dbs = vec![entry("ro", "replica", Role::Replica, None)];
        assert!(primary(&dbs, "ro").is_none());
        assert!(database_exists(&dbs, "ro"));
    }
}
