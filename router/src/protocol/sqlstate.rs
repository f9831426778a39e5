//! SQLSTATE codes the pooler puts in the `C` field of the ErrorResponse and
//! NoticeResponse messages it generates itself.
//!
//! Clients and drivers branch on these codes (retry on `57P01`, report a bad
//! password on `28P01`, ...), so a pooler-made error must use the same code
//! PostgreSQL would have sent in the same situation. The constant names are
//! the condition names of PostgreSQL's `src/backend/utils/errcodes.txt`,
//! upper-cased, so they can be grepped for on both sides. Only the codes we
//! actually need (plus a few close relatives) are listed; the full table is
//! not worth carrying.

// Class 00 — Successful Completion

/// Success; used in notices that are purely informational.
pub const SUCCESSFUL_COMPLETION: &str = "00000";

// Class 01 — Warning

/// Generic warning, for NoticeResponse messages from the pooler.
pub const WARNING: &str = "01000";

// Class 08 — Connection Exception

/// Generic connection problem.
pub const CONNECTION_EXCEPTION: &str = "08000";
/// The client referred to a connection that does not exist.
pub const CONNECTION_DOES_NOT_EXIST: &str = "08003";
/// An established connection broke (for example the server went away).
pub const CONNECTION_FAILURE: &str = "08006";
/// We could not open a connection to any server for this client.
pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
/// The server refused to let the connection be established.
pub const SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION: &str = "08004";
/// The connection broke while a commit was in flight; its outcome is unknown.
pub const TRANSACTION_RESOLUTION_UNKNOWN: &str = "08007";
/// The peer sent something the wire protocol does not allow.
pub const PROTOCOL_VIOLATION: &str = "08P01";

// Class 0A — Feature Not Supported

/// A valid request the pooler (or its current mode) cannot honour.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";

// Class 22 — Data Exception

/// A parameter (startup option, SET value, ...) has an unacceptable value.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// Text that should have been in a known format could not be parsed.
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
/// A byte sequence is not valid in the connection's encoding.
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";

// Class 25 — Invalid Transaction State

/// Generic invalid transaction state.
pub const INVALID_TRANSACTION_STATE: &str = "25000";
/// The command cannot run inside a transaction block.
pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
/// The command needs a transaction block and none is open.
pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
/// The transaction already failed; commands are ignored until its end.
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
/// A session sat idle inside a transaction for too long.
pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
/// A write was attempted in a read-only transaction (or on a replica).
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";

// Class 26 — Invalid SQL Statement Name

/// A prepared statement name that is unknown on this connection.
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";

// Class 28 — Invalid Authorization Specification

/// Unknown user, no matching auth rule, or an auth method that cannot work.
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
/// Password authentication failed.
pub const INVALID_PASSWORD: &str = "28P01";

// Class 34 — Invalid Cursor Name

/// A portal (cursor) name that is unknown on this connection.
pub const INVALID_CURSOR_NAME: &str = "34000";

// Class 3D — Invalid Catalog Name

/// The requested database does not exist (or is not configured here).
pub const INVALID_CATALOG_NAME: &str = "3D000";

// Class 40 — Transaction Rollback

/// Generic rollback of the transaction.
pub const TRANSACTION_ROLLBACK: &str = "40000";
/// The transaction could not be serialised; the client may retry it.
pub const SERIALIZATION_FAILURE: &str = "40001";
/// The transaction was chosen as a deadlock victim; the client may retry it.
pub const DEADLOCK_DETECTED: &str = "40P01";

// Class 42 — Syntax Error or Access Rule Violation

/// The SQL text (or an admin command) could not be parsed.
pub const SYNTAX_ERROR: &str = "42601";
/// The user lacks the right to do this (for example admin commands).
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// A referenced object (setting, pool, ...) does not exist.
pub const UNDEFINED_OBJECT: &str = "42704";
/// A prepared statement of that name already exists on this connection.
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
/// A cursor of that name already exists on this connection.
pub const DUPLICATE_CURSOR: &str = "42P03";

// Class 53 — Insufficient Resources

/// Generic resource exhaustion.
pub const INSUFFICIENT_RESOURCES: &str = "53000";
/// An allocation failed or a memory budget was exceeded.
pub const OUT_OF_MEMORY: &str = "53200";
/// The connection limit (of the pooler, a pool or a user) is reached.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// A configured limit other than the connection count was exceeded.
pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";

// Class 54 — Program Limit Exceeded

/// A hard implementation limit (message size, name length, ...) was hit.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";

// Class 55 — Object Not In Prerequisite State

/// The object is not in a state that allows the operation (pool paused, ...).
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// The object is being used by someone else.
pub const OBJECT_IN_USE: &str = "55006";
/// A lock (or pooled resource) could not be obtained without waiting.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";

// Class 57 — Operator Intervention

/// Generic operator intervention.
pub const OPERATOR_INTERVENTION: &str = "57000";
/// The query was cancelled (by request or by a timeout).
pub const QUERY_CANCELED: &str = "57014";
/// The connection is being closed because of an administrative shutdown.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// The server crashed; clients should reconnect.
pub const CRASH_SHUTDOWN: &str = "57P02";
/// Connections are not accepted right now (starting up, shutting down, paused).
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// The database of this connection was dropped.
pub const DATABASE_DROPPED: &str = "57P04";
/// A session sat idle (outside a transaction) for too long.
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";

// Class 58 — System Error

/// An error outside PostgreSQL itself, for example an operating system call.
pub const SYSTEM_ERROR: &str = "58000";
/// An I/O error.
pub const IO_ERROR: &str = "58030";

// Class F0 — Configuration File Error

/// The configuration file could not be loaded or is invalid.
pub const CONFIG_FILE_ERROR: &str = "F0000";

// Class XX — Internal Error

/// A bug or an otherwise unexpected condition.
pub const INTERNAL_ERROR: &str = "XX000";
/// Stored data was found to be corrupt.
pub const DATA_CORRUPTED: &str = "XX001";

/// The class of a SQLSTATE: its first two characters, which group codes
/// (`"08"` is every connection exception). Clients that do not know a code
/// are supposed to fall back to its class, so routing logic can do the same.
///
/// Never panics: a code shorter than two characters is returned whole, and
/// the cut is made on a character boundary even for non-ASCII input.
pub fn class(code: &str) -> &str {
    match code.char_indices().nth(2) {
        Some((end, _)) => code.get(..end).unwrap_or(code),
        None => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(NAME, code)` for every constant declared above, read back from this
    /// file's own source so that a newly added constant is checked without
    /// having to be listed a second time.
    fn declared() -> Vec<(String, String)> {
        let source = include_str!("sqlstate.rs");
        source
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("pub const ")?;
                let (name, rest) = rest.split_once(": &str = \"")?;
                let code = rest.strip_suffix("\";")?;
                Some((name.to_string(), code.to_string()))
            })
            .collect()
    }

    #[test]
    fn codes_are_well_formed_and_unique() {
        let all = declared();
        assert!(all.len() > 40, "source parsing found only {}", all.len());
        let mut seen = std::collections::HashSet::new();
        for (name, code) in &all {
            assert_eq!(code.len(), 5, "{name}");
            assert!(code.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()), "{name} = {code}");
            assert!(seen.insert(code.clone()), "duplicate code {code}");
        }
    }

    /// Cross-check names and codes against PostgreSQL's own table when it is
    /// installed, so a typo in a code cannot go unnoticed.
    #[test]
    fn match_postgres_errcodes_txt() {
        let Some(table) = ["17", "16", "15", "14"]
            .iter()
            .find_map(|v| std::fs::read_to_string(format!("/usr/share/postgresql/{v}/errcodes.txt")).ok())
        else {
            return;
        };
        let mut known = std::collections::HashMap::new();
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [code, _kind, macro_name, rest @ ..] = fields.as_slice() {
                if let Some(short) = macro_name.strip_prefix("ERRCODE_") {
                    known.insert(short.to_string(), code.to_string());
                }
                if let Some(spec) = rest.first() {
                    known.insert(spec.to_ascii_uppercase(), code.to_string());
                }
            }
        }
        for (name, code) in declared() {
            assert_eq!(known.get(&name), Some(&code), "{name}");
        }
    }

    #[test]
    fn class_is_safe() {
        assert_eq!(class(PROTOCOL_VIOLATION), "08");
        assert_eq!(class(INTERNAL_ERROR), "XX");
        assert_eq!(class("0"), "0");
        assert_eq!(class(""), "");
        assert_eq!(class("éé000"), "éé");
        assert_eq!(class("aé"), "aé");
    }
}
