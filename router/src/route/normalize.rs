//! A statement's shape: its text with literals replaced by a placeholder,
//! for keying the classifier's cache.
//!
//! Parsing with the real PostgreSQL parser costs tens of microseconds, far
//! more than the router's budget per transaction, and most applications send
//! the same few statement shapes with different literals (`pgbench -S` sends a
//! different `aid` every time). Where a statement goes never depends on its
//! literal values, only on its keywords, identifiers and punctuation, so the
//! shape is a sound cache key. (The one exception, settings whose *value*
//! decides, such as `SET pgdog.role = 'replica'`, is never cached: see
//! [`super::classify`].)
//!
//! The scan reuses the statement lexer of [`super::command`], so comments,
//! quoted identifiers, `E'...'` and dollar quoting are read exactly as
//! PostgreSQL reads them. It writes into a caller's buffer and allocates
//! nothing else.
//!
//! What the shape keeps and drops:
//! - string literals (`'...'`, `E'...'`, `U&'...'`, `$tag$...$tag$`, and the
//!   bit strings and national strings `B'...'`, `X'...'`, `N'...'`) and
//!   numbers become [`PLACEHOLDER`]; a sign directly before a number where an
//!   operand is expected (`= -5`, `(-1, +2)`) joins it;
//! - a comma-separated run of literals becomes one placeholder, so
//!   `IN (1, 2, 3)` and `IN (4)` share a shape;
//! - parameters (`$1`) are kept as they are;
//! - unquoted words are ASCII-lowercased (PostgreSQL folds them anyway),
//!   quoted identifiers are kept exactly;
//! - runs of whitespace and comments become one space; tokens written without
//!   a gap stay without one, so `a<=b` and `a< =b` keep different shapes;
//! - trailing `;` and whitespace are dropped.

use super::command::lexer::{Kind, Lexer, Token};

/// What a literal becomes in a shape.
pub const PLACEHOLDER: u8 = b'?';

/// Writes the shape of `sql` into `out` (cleared first). Returns false when
/// the text ends inside a quoted literal or identifier: such a statement is a
/// syntax error, and its shape is not worth caching.
pub fn normalize(sql: &[u8], out: &mut Vec<u8>) -> bool {
    if plain_shape(sql, out).is_some() {
        return true;
    }
    out.clear();
    let mut lx = Lexer { sql, pos: 0 };
    let mut prev_end = 0usize;
    // Whether the last token emitted ends an operand, after which `-` is a
    // binary operator rather than a sign.
    let mut after_operand = false;
    let mut list = List::None;
    while let Some(t) = lx.next() {
        if !out.is_empty() && t.start > prev_end {
            out.push(b' ');
        }
        let mut end = t.end;
        let mut literal = false;
        match t.kind {
            Kind::Str => {
                if !t.closed {
                    return false;
                }
                literal = true;
            }
            Kind::Quoted | Kind::UnicodeQuoted => {
                if !t.closed {
                    return false;
                }
                out.extend_from_slice(lx.text(t));
            }
            Kind::Word => match prefixed_string(&mut lx, t) {
                Some(Some(e)) => {
                    end = e;
                    literal = true;
                }
                Some(None) => return false,
                None => {
                    let at = out.len();
                    out.extend_from_slice(lx.text(t));
                    if let Some(word) = out.get_mut(at..) {
                        word.make_ascii_lowercase();
                    }
                }
            },
            Kind::Other if is_number(lx.text(t)) => {
                end = exponent(&mut lx, t);
                literal = true;
            }
            Kind::Other if !after_operand && matches!(lx.text(t), b"-" | b"+") && next_is_number(&lx) => {
                if let Some(n) = lx.next() {
                    end = exponent(&mut lx, n);
                }
                literal = true;
            }
            _ => out.extend_from_slice(lx.text(t)),
        }
        prev_end = end;
        if literal {
            list = list.literal(out);
            after_operand = true;
            continue;
        }
        let text = lx.text(t);
        list = list.token(text == b",");
        after_operand = match t.kind {
            Kind::Word | Kind::Quoted | Kind::UnicodeQuoted | Kind::Close => true,
            // `$1`, `]`.
            Kind::Other => text.first() == Some(&b'$') || text == b"]",
            _ => false,
        };
    }
    while matches!(out.last(), Some(b';' | b' ')) {
        out.pop();
    }
    true
}

/// The shape of the plain statements most traffic consists of, in one pass
/// over the bytes: ASCII words, unsigned numbers, `'...'` strings, `$n`
/// parameters, punctuation and whitespace. None when the text holds
/// anything else — a comment, quoted identifier, dollar quote, prefixed or
/// backslash string, sign, exponent, non-ASCII byte — and then `normalize`
/// runs the full lexer. Where it answers, the shape is exactly the lexer's
/// (tested on the same cases), at a fraction of the cost: this runs for
/// every request a splitting router routes, cache hit or not.
fn plain_shape(sql: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    out.reserve(sql.len());
    let n = sql.len();
    let class = |i: usize| sql.get(i).map_or(END, |&b| CLASS[b as usize]);
    let mut i = 0;
    let mut gap = false;
    let mut list = List::None;
    while i < n {
        let b = sql[i];
        let c = CLASS[b as usize];
        if c == SPACE {
            gap = true;
            i += 1;
            continue;
        }
        if gap && !out.is_empty() {
            out.push(b' ');
        }
        gap = false;
        let literal = match c {
            WORD => {
                let start = i;
                while matches!(class(i), WORD | DIGIT) {
                    i += 1;
                }
                // `E'..'`, `a$b`, a quoted or non-ASCII continuation.
                if matches!(class(i), ODD | QUOTE | DOLLAR) {
                    return None;
                }
                out.extend(sql[start..i].iter().map(u8::to_ascii_lowercase));
                false
            }
            DIGIT => {
                while class(i) == DIGIT {
                    i += 1;
                }
                if sql.get(i) == Some(&b'.') {
                    i += 1;
                    while class(i) == DIGIT {
                        i += 1;
                    }
                }
                // `1e5`, `0x1F`, `1_000`, `1.2.3`, `1$`: the lexer's.
                if matches!(class(i), WORD | ODD | DOLLAR) || sql.get(i) == Some(&b'.') {
                    return None;
                }
                true
            }
            QUOTE => {
                i += 1;
                loop {
                    // Unterminated: the lexer reports it.
                    let at = memchr::memchr2(b'\'', b'\\', &sql[i..])?;
                    if sql[i + at] == b'\\' {
                        return None;
                    }
                    i += at + 1;
                    if sql.get(i) != Some(&b'\'') {
                        break;
                    }
                    // A doubled quote inside the string.
                    i += 1;
                }
                true
            }
            DOLLAR => {
                let start = i;
                i += 1;
                if class(i) != DIGIT {
                    return None;
                }
                while class(i) == DIGIT {
                    i += 1;
                }
                if !matches!(class(i), PUNCT | SPACE | END) {
                    return None;
                }
                out.extend_from_slice(&sql[start..i]);
                false
            }
            ODD => return None,
            _ if b == b'/' && sql.get(i + 1) == Some(&b'*') => return None,
            _ if b == b'.' && class(i + 1) == DIGIT => return None,
            _ => {
                out.push(b);
                i += 1;
                false
            }
        };
        if literal {
            list = list.literal(out);
            continue;
        }
        list = list.token(b == b',');
    }
    while matches!(out.last(), Some(b';' | b' ')) {
        out.pop();
    }
    Some(())
}

/// Byte classes of [`plain_shape`]'s scan.
const PUNCT: u8 = 0;
const SPACE: u8 = 1;
const WORD: u8 = 2;
const DIGIT: u8 = 3;
const QUOTE: u8 = 4;
const DOLLAR: u8 = 5;
/// Anything the one-pass scan leaves to the lexer.
const ODD: u8 = 6;
/// Past the end of the text.
const END: u8 = 7;

static CLASS: [u8; 256] = {
    let mut t = [PUNCT; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => SPACE,
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => WORD,
            b'0'..=b'9' => DIGIT,
            b'\'' => QUOTE,
            b'$' => DOLLAR,
            b'"' | b'\\' | b'&' | b'-' | b'+' | 0 | 0x80..=0xff => ODD,
            _ => PUNCT,
        };
        b += 1;
    }
    t
};

/// Where a run of literals stands: `Placeholder(end)` right after one ended
/// at `out[..end]`; `Comma(end)` after that and a comma.
#[derive(Clone, Copy)]
enum List {
    None,
    Placeholder(usize),
    Comma(usize),
}

impl List {
    /// A literal was read: writes its placeholder, or, right after `?,`,
    /// drops the comma and separator instead (`?, ?` → `?`).
    fn literal(self, out: &mut Vec<u8>) -> List {
        match self {
            List::Comma(mark) => {
                out.truncate(mark);
                List::Placeholder(mark)
            }
            _ => {
                out.push(PLACEHOLDER);
                List::Placeholder(out.len())
            }
        }
    }

    /// Another token was written; `comma` when it is `,`.
    fn token(self, comma: bool) -> List {
        match self {
            List::Placeholder(mark) if comma => List::Comma(mark),
            _ => List::None,
        }
    }
}

/// Digits or `.5`: the lexer's number tokens (it gives `$1` and operators the
/// same kind).
fn is_number(text: &[u8]) -> bool {
    match text {
        [d, ..] if d.is_ascii_digit() => true,
        [b'.', d, ..] => d.is_ascii_digit(),
        _ => false,
    }
}

fn next_is_number(lx: &Lexer<'_>) -> bool {
    lx.peek().is_some_and(|n| n.kind == Kind::Other && is_number(lx.text(n)))
}

/// The lexer stops a number at a sign (`1e-5` is `1e`, `-`, `5`); the end of
/// the whole number, consuming a signed exponent if `t` needs one.
fn exponent(lx: &mut Lexer<'_>, t: Token) -> usize {
    let text = lx.text(t);
    let hex = text.len() > 1 && text.first() == Some(&b'0') && matches!(text.get(1), Some(b'x' | b'X'));
    if !hex
        && matches!(text.last(), Some(b'e' | b'E'))
        && matches!(lx.at(t.end), b'+' | b'-')
        && lx.at(t.end + 1).is_ascii_digit()
    {
        let n = lx.number(t.end + 1);
        return n.end;
    }
    t.end
}

/// `B'...'`, `X'...'`, `N'...'`: a one-letter word followed without a gap by a
/// string is one literal. `Some(Some(end))` when `t` opens one (the string is
/// consumed), `Some(None)` when that string is unterminated, `None` otherwise.
fn prefixed_string(lx: &mut Lexer<'_>, t: Token) -> Option<Option<usize>> {
    if !matches!(lx.text(t), [b'b' | b'B' | b'x' | b'X' | b'n' | b'N']) || lx.at(t.end) != b'\'' {
        return None;
    }
    let s = lx.next()?;
    Some(s.closed.then_some(s.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str) -> String {
        let mut out = Vec::new();
        assert!(normalize(sql.as_bytes(), &mut out), "{sql}");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn shapes() {
        let cases = [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 123",
                "select abalance from pgbench_accounts where aid = ?",
            ),
            (
                "select  abalance\n\tFROM pgbench_accounts WHERE aid=456;",
                "select abalance from pgbench_accounts where aid=?",
            ),
            // Strings of every kind.
            ("SELECT 'it''s', E'a\\'b', U&'d\\0061t'", "select ?"),
            ("SELECT $$a ' b$$, $tag$ x $$ y $tag$", "select ?"),
            ("SELECT B'0101', x'1F', N'abc'", "select ?"),
            ("SELECT b 'x'", "select b ?"),
            // A run of literals is one; parameters stay.
            ("SELECT * FROM t WHERE id IN (1, 2, 3)", "select * from t where id in (?)"),
            ("SELECT * FROM t WHERE id IN (7)", "select * from t where id in (?)"),
            ("SELECT * FROM t WHERE id = $1 AND b IN ($2, $3)", "select * from t where id = $1 and b in ($2, $3)"),
            ("INSERT INTO t VALUES ($1, 'x', 3)", "insert into t values ($1, ?)"),
            // Signs and numbers.
            ("SELECT * FROM t WHERE a = -5", "select * from t where a = ?"),
            ("SELECT * FROM t WHERE a = - 5.5", "select * from t where a = ?"),
            ("SELECT * FROM t WHERE a IN (-1, +2, 3)", "select * from t where a in (?)"),
            ("SELECT a - 1, a-1, (a)-1", "select a - ?, a-?, (a)-?"),
            ("SELECT 1e-5, 2.5E+3, .5, 0x1F, 1_000", "select ?"),
            ("SELECT -1e-5", "select -?"),
            ("SELECT x, - 2", "select x, ?"),
            // Comments collapse; quoted identifiers are kept exactly.
            ("SELECT /* c */ 1 -- tail\n FROM \"My Table\"", "select ? from \"My Table\""),
            ("SELECT /* nested /* c */ */ x", "select x"),
            ("SELECT 1;;  ", "select ?"),
            ("SELECT a<=b, a< =b", "select a<=b, a< =b"),
            ("SELECT 'a'::text, col::int", "select ?::text, col::int"),
            ("SELECT nextval('s')", "select nextval(?)"),
            ("SELECT U&\"d\\0061t\" FROM \"T\"", "select U&\"d\\0061t\" from \"T\""),
            ("", ""),
            ("  /* only a comment */ ", ""),
        ];
        for (sql, want) in cases {
            assert_eq!(shape(sql), want, "{sql}");
        }
    }

    #[test]
    fn same_shape_different_literals() {
        let pairs = [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 123",
                "select ABALANCE from pgbench_accounts where aid = 98765",
            ),
            ("UPDATE t SET a = 'x' WHERE id = 1", "UPDATE t SET a = E'y\\n' WHERE id = -2"),
            ("SELECT * FROM t WHERE d > '2020-01-01'::date", "SELECT * FROM t WHERE d > $x$2021$x$::date"),
        ];
        for (a, b) in pairs {
            assert_eq!(shape(a), shape(b), "{a} / {b}");
        }
        let differ = [
            ("SELECT a FROM t WHERE id = 1", "SELECT b FROM t WHERE id = 1"),
            ("SELECT * FROM t", "SELECT * FROM \"T\""),
            ("SELECT * FROM t WHERE id = 1", "SELECT * FROM t WHERE id = $1"),
            ("SELECT * FROM t", "SELECT * FROM t FOR UPDATE"),
        ];
        for (a, b) in differ {
            assert_ne!(shape(a), shape(b), "{a} / {b}");
        }
    }

    /// The full lexer's shape, bypassing the one-pass scan.
    fn lexer_shape(sql: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        // Force the lexer path: a leading comment makes the scan decline,
        // and the lexer drops it (a leading gap adds no space).
        let mut with_comment = b"/**/".to_vec();
        with_comment.extend_from_slice(sql);
        normalize(&with_comment, &mut out).then_some(out)
    }

    #[test]
    fn one_pass_scan_matches_the_lexer_where_it_answers() {
        let corpus: &[&str] = &[
            "SELECT abalance FROM pgbench_accounts WHERE aid = 123;",
            "select  abalance\n\tFROM pgbench_accounts WHERE aid=456;",
            "UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 7",
            "SELECT * FROM t WHERE id IN (1, 2, 3)",
            "SELECT * FROM t WHERE id IN (1,2 ,3 , 'x')",
            "SELECT * FROM t WHERE id = $1 AND b IN ($2, $3)",
            "INSERT INTO t VALUES ($1, 'x', 3)",
            "INSERT INTO t (a, b) VALUES (1, 'it''s'), (2, '')",
            "SELECT 'a'::text, col::int, 1.5, 2., t.c FROM s.t",
            "SELECT a<=b, a< =b, a/b, a%b, a*b FROM t WHERE (a) > 1",
            "SELECT nextval('s'); ",
            "SELECT 1;;  ",
            "SELECT * FROM t FOR UPDATE",
            "SELECT x, y FROM t ORDER BY 1 LIMIT 10 OFFSET 20",
            "BEGIN READ ONLY",
            "SET pgdog.role = 'replica'",
            "SELECT E'a', b'01', x'1F'",
            "SELECT $$x$$",
            "SELECT \"T\" FROM t",
            "SELECT -1, +2, 1e5, 0x1F, 1_000, .5",
            "SELECT 'unterminated",
            "SELECT 'a\\b'",
            "SELECT a$b FROM t",
            "SELECT /* c */ 1",
            "SELECT 1 -- c",
            "SELECT 'é'",
            "SELECT t.c, a.b.c FROM s.t WHERE x = $1::int AND y = $2",
            "INSERT INTO t VALUES ($1,$2),($3,$4)",
            "SELECT 1'a', 2 'b'",
            "SELECT $1.x, $1$",
            "SELECT 1.2.3",
            "",
            "   ",
        ];
        let mut answered = 0;
        for sql in corpus {
            let mut fast = Vec::new();
            if plain_shape(sql.as_bytes(), &mut fast).is_some() {
                answered += 1;
                assert_eq!(
                    Some(fast.clone()),
                    lexer_shape(sql.as_bytes()),
                    "{sql}: {}",
                    String::from_utf8_lossy(&fast)
                );
            }
        }
        // The common statements take the one-pass scan.
        assert!(answered >= 19, "{answered}");
        for declined in ["SELECT E'a'", "SELECT $$x$$", "SELECT -1", "SELECT /* c */ 1", "SELECT 'unterminated"] {
            assert!(plain_shape(declined.as_bytes(), &mut Vec::new()).is_none(), "{declined}");
        }
    }

    #[test]
    fn unterminated_is_reported() {
        let mut out = Vec::new();
        for sql in ["SELECT 'abc", "SELECT \"abc", "SELECT $$abc", "SELECT E'abc\\'", "SELECT B'01"] {
            assert!(!normalize(sql.as_bytes(), &mut out), "{sql}");
        }
    }

    #[test]
    fn reuses_the_buffer() {
        let mut out = Vec::with_capacity(64);
        let ptr = out.as_ptr();
        assert!(normalize(b"SELECT 1", &mut out));
        assert!(normalize(b"SELECT 2 FROM t", &mut out));
        assert_eq!(out, b"select ? from t");
        assert_eq!(out.as_ptr(), ptr);
    }
}
