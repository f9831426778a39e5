//! The routing hint a statement may carry in a leading comment, such as
//! `/* pgdog_role: replica */ SELECT ...` or `-- pgdog_role=primary`.
//!
//! Read before the statement's shape is taken (the shape drops comments), and
//! only in the comments before the first token, so a hint cannot hide inside
//! a string literal or in the middle of a statement. Hints are per statement:
//! they never enter the cache.

use super::super::command::lexer::Lexer;
use super::Target;

const KEY: &[u8] = b"pgdog_role";

/// The target a leading comment asks for. The key is matched without regard
/// to case and may be followed by `:` or `=`; the value is `primary` or
/// `replica`. Anything else, including no comment, is `None`.
pub(super) fn leading_hint(sql: &[u8]) -> Option<Target> {
    let mut lx = Lexer { sql, pos: 0 };
    lx.skip_trivia();
    let mut rest = sql.get(..lx.pos)?;
    while let Some(at) = find_ignore_case(rest, KEY) {
        rest = rest.get(at + KEY.len()..)?;
        let value = rest.trim_ascii_start();
        let Some(value) = value.strip_prefix(b":").or_else(|| value.strip_prefix(b"=")) else {
            continue;
        };
        let value = value.trim_ascii_start();
        let value = value.strip_prefix(b"'").or_else(|| value.strip_prefix(b"\"")).unwrap_or(value);
        let len = value.iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
        let word = value.get(..len)?;
        if word.eq_ignore_ascii_case(b"primary") {
            return Some(Target::Primary);
        }
        if word.eq_ignore_ascii_case(b"replica") {
            return Some(Target::Replica);
        }
    }
    None
}

fn find_ignore_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle))
}
