//! What a statement does to session state, read by a light lexer.
//!
//! In transaction mode a client's transactions run on whichever server
//! connection is free, so whatever a statement leaves in the *session* (a SET,
//! a prepared statement, a LISTEN, a temporary table, an advisory lock) would
//! leak to the next client or be missing on the next server. The pooler must
//! therefore see SET/RESET/DISCARD/PREPARE/LISTEN and friends: replay what it
//! can re-create, pin the client or refuse what it cannot.
//!
//! That needs the shape of a statement, not a parse tree. This module skips
//! whitespace, comments, string literals and quoted identifiers the way
//! PostgreSQL's scanner does, so that a `;` or keyword inside them is never
//! mistaken for structure, splits the text into statements and reads the first
//! few keywords of each. The full parser arrives with read/write splitting;
//! [`is_plain`] stays the cheap test in front of both.
//!
//! Assumes `standard_conforming_strings = on` (the default since 9.1): with it
//! off, a backslash also escapes a quote inside `'...'`.

use std::borrow::Cow;

use lexer::{Kind, Lexer, Token, KEYWORD_MAX};

pub(super) mod lexer;

/// One statement's effect on session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Nothing the pooler must track (SELECT, INSERT, SET LOCAL, NOTIFY, ...).
    Other,
    /// BEGIN, START TRANSACTION.
    Begin,
    /// COMMIT, END, and PREPARE TRANSACTION 'x' (which ends the session's
    /// transaction and keeps its SETs, like a commit). COMMIT AND CHAIN too:
    /// the SETs are committed even though a new transaction opens at once.
    Commit,
    /// ROLLBACK, ABORT (with or without AND CHAIN). ROLLBACK TO SAVEPOINT and
    /// ROLLBACK PREPARED are [`Command::Other`].
    Rollback,
    /// `SET [SESSION] name {TO|=} value` and the special forms `SET TIME ZONE`
    /// (`timezone`), `SET ROLE` (`role`), `SET SCHEMA` (`search_path`),
    /// `SET NAMES` (`client_encoding`) and `SET XML OPTION` (`xmloption`).
    ///
    /// `name` is ASCII-lowercased, quoted or not, because PostgreSQL matches
    /// setting names case-insensitively; dotted names (`myapp.tenant`) are kept
    /// whole. `value` is the SQL text of the value list exactly as written,
    /// without surrounding whitespace or comments, except that a lone `DEFAULT`
    /// in any case becomes `"DEFAULT"`. Replay `timezone` as
    /// `SET TIME ZONE {value}`: only that form accepts `LOCAL` and `INTERVAL ...`.
    Set { name: Name<'a>, value: &'a str },
    /// `RESET name` (name as for [`Command::Set`]), including RESET TIME ZONE
    /// and RESET ROLE.
    Reset { name: Name<'a> },
    /// RESET ALL.
    ResetAll,
    /// DISCARD ALL / PLANS / SEQUENCES / TEMP | TEMPORARY.
    Discard(Discard),
    /// SQL-level `PREPARE name [(types)] AS ...`.
    Prepare,
    /// SQL-level `EXECUTE name [(args)]`.
    Execute,
    /// `DEALLOCATE [PREPARE] name` is `Some(name)`: lowercased unless quoted,
    /// since statement names are case-sensitive. `DEALLOCATE [PREPARE] ALL` is
    /// `None`.
    Deallocate(Option<Name<'a>>),
    /// A feature whose state outlives the transaction and that the pooler
    /// cannot re-create on another connection: the caller pins or refuses.
    SessionOnly(SessionFeature),
}

/// What `DISCARD` throws away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    All,
    Plans,
    Sequences,
    Temp,
}

/// Session state that only the server connection it was created on holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionFeature {
    /// LISTEN (UNLISTEN is [`Command::Other`]).
    Listen,
    /// A call of `pg_advisory_lock`, `pg_try_advisory_lock` or their `_shared`
    /// forms, bare or `pg_catalog.`-qualified, quoted or not. The `_xact_`
    /// forms end with the transaction and do not count. Calls inside string
    /// literals do not count either, except in the body of a `DO` block. A
    /// PREPARE whose body takes one is reported here, because the EXECUTE that
    /// takes the lock cannot be tied back to it.
    AdvisoryLock,
    /// `CREATE [GLOBAL|LOCAL] TEMP|TEMPORARY TABLE|VIEW|SEQUENCE`, a CREATE of
    /// anything in `pg_temp.`, `SELECT ... INTO TEMP`, and `EXPLAIN ANALYZE` of
    /// those. A temporary table created `ON COMMIT DROP` is
    /// [`Command::Other`]: it dies with the transaction.
    TempObject,
    /// `DECLARE name ... CURSOR WITH HOLD FOR ...`.
    HoldCursor,
    /// SET SESSION AUTHORIZATION and RESET SESSION AUTHORIZATION.
    SessionAuthorization,
    /// SET SESSION CHARACTERISTICS AS TRANSACTION ...
    SessionCharacteristics,
    /// `LOAD 'library'`.
    Load,
    /// A SET or RESET whose name or value is not valid UTF-8 (a client in a
    /// single-byte `client_encoding`) or whose name is a `U&"..."` identifier:
    /// the pooler cannot read it back, so it cannot replay it.
    OpaqueSetting,
}

impl SessionFeature {
    /// The feature as named in "... is not supported in transaction mode".
    pub fn describe(self) -> &'static str {
        match self {
            SessionFeature::Listen => "LISTEN",
            SessionFeature::AdvisoryLock => "session-level advisory locks",
            SessionFeature::TempObject => "temporary tables",
            SessionFeature::HoldCursor => "WITH HOLD cursors",
            SessionFeature::SessionAuthorization => "SET SESSION AUTHORIZATION",
            SessionFeature::SessionCharacteristics => "SET SESSION CHARACTERISTICS",
            SessionFeature::Load => "LOAD",
            SessionFeature::OpaqueSetting => "SET or RESET with text that is not plain UTF-8",
        }
    }
}

/// An identifier as normalised: owned only when lowercasing was needed.
pub type Name<'a> = Cow<'a, str>;

/// Iterates the statements of a query string, classified.
///
/// The text ends at the first NUL, as it does for the server. Empty statements
/// are skipped. An unterminated string, identifier or comment runs to the end
/// of the text, as in PostgreSQL's scanner (which then rejects the query).
pub fn commands(sql: &[u8]) -> Commands<'_> {
    // `split` always yields at least one piece: the text before the first NUL.
    let sql = sql.split(|&b| b == 0).next().unwrap_or_default();
    Commands { sql, pos: 0 }
}

/// Fast path: true when no statement of `sql` can be anything but
/// [`Command::Other`]. If it returns true, [`commands`] yields only `Other`;
/// it may return false for text that turns out plain.
///
/// Without allocating, in one pass over the text (the pooler calls this for
/// every query, so it must cost a few instructions per byte): no `;` but a
/// trailing one (so one statement), no `advisory` anywhere (so no
/// advisory-lock call), a first keyword that only starts plain statements,
/// and for SELECT and WITH no `temp` anywhere (so no `SELECT ... INTO TEMP`).
pub fn is_plain(sql: &[u8]) -> bool {
    // The text ends at its NUL; only the bytes `LOOK` marks need a look.
    // A chunk at a time: a mask of the bytes that may be marked, then a
    // look at just those (usually none or one per chunk).
    let mut end = sql.len();
    let mut semi = None;
    let mut temp = false;
    let mut base = 0;
    'scan: while base < sql.len() {
        // `skip`: bytes at the start of the chunk already looked at.
        let (chunk, skip): ([u8; marks::CHUNK], usize) = match sql.get(base..base + marks::CHUNK) {
            Some(chunk) => (chunk.try_into().unwrap_or([b' '; marks::CHUNK]), 0),
            // The last, short chunk: the text's last CHUNK bytes, overlapping
            // the previous chunk, when the text is that long.
            None if sql.len() >= marks::CHUNK => {
                let start = sql.len() - marks::CHUNK;
                (sql[start..].try_into().unwrap_or([b' '; marks::CHUNK]), base - start)
            }
            // A text shorter than a chunk is padded with spaces, never marked.
            None => {
                let mut chunk = [b' '; marks::CHUNK];
                chunk[..sql.len() - base].copy_from_slice(&sql[base..]);
                (chunk, 0)
            }
        };
        let mut marked = marks::marked(&chunk) >> (skip as u32 * marks::STRIDE);
        while marked != 0 {
            let at = base + (marked.trailing_zeros() / marks::STRIDE) as usize;
            marked &= marked - 1;
            // Padding can show as marked next to a match: read as a space.
            match LOOK[usize::from(sql.get(at).copied().unwrap_or(b' '))] {
                LOOK_NONE => {}
                LOOK_NUL => {
                    end = at;
                    break 'scan;
                }
                LOOK_SEMI => semi = semi.or(Some(at)),
                // The third letter of `advisory` and of `temp`.
                LOOK_V => {
                    if word_at(sql, at, 2, b"advisory") {
                        return false;
                    }
                }
                _ => temp = temp || word_at(sql, at, 2, b"temp"),
            }
        }
        base += marks::CHUNK;
    }
    let sql = &sql[..end];
    match semi {
        // A trailing `;` (pgbench and many drivers end every query with
        // one) ends the only statement; any other may start a second.
        Some(i) if !sql[i + 1..].iter().all(|c| c.is_ascii_whitespace()) => false,
        Some(i) => plain_statement(&sql[..i], temp),
        None => plain_statement(sql, temp),
    }
}

/// The rest of [`is_plain`], given its one statement and whether the text
/// has `temp` anywhere: a first keyword that only starts plain statements,
/// and for SELECT and WITH no `temp` (so no `SELECT ... INTO TEMP`).
fn plain_statement(stmt: &[u8], temp: bool) -> bool {
    let mut buf = [0; KEYWORD_MAX];
    // The usual statement starts with its keyword: read the word without
    // the lexer (which the rest, a comment or a parenthesis, needs). A
    // letter starting a string (`E'...'`, `U&'...'`) reads as a one-letter
    // word here, which is no keyword listed below, as the lexer's string
    // token is none.
    let text = stmt.trim_ascii_start();
    if text.first().is_some_and(u8::is_ascii_alphabetic) {
        let len = text.iter().position(|&b| !lexer::is_ident_cont(b)).unwrap_or(text.len());
        let Some(word) = buf.get_mut(..len) else { return false };
        word.copy_from_slice(&text[..len]);
        word.make_ascii_lowercase();
        return plain_keyword(word, false, temp);
    }
    plain_statement_lexed(stmt, temp)
}

/// [`plain_statement`] through the lexer, for any statement.
fn plain_statement_lexed(stmt: &[u8], temp: bool) -> bool {
    let mut buf = [0; KEYWORD_MAX];
    let mut lex = Lexer { sql: stmt, pos: 0 };
    let mut parenthesised = false;
    let first = loop {
        match lex.next() {
            Some(t) if t.kind == Kind::Open => parenthesised = true,
            Some(t) => break t,
            None => return false,
        }
    };
    lex.keyword(first, &mut buf).is_some_and(|word| plain_keyword(word, parenthesised, temp))
}

/// A first keyword (lowercase) that only starts plain statements; for
/// SELECT and WITH, and in parentheses, only without `temp` in the text.
fn plain_keyword(word: &[u8], parenthesised: bool, temp: bool) -> bool {
    match word {
        b"select" | b"with" => !temp,
        b"insert" | b"update" | b"delete" | b"merge" | b"values" | b"table" | b"show" | b"copy" | b"fetch"
        | b"move" | b"close" | b"notify" | b"unlisten" | b"call" | b"truncate" => !(parenthesised && temp),
        _ => false,
    }
}

/// The statements of a query string, classified; see [`commands`].
#[derive(Debug, Clone)]
pub struct Commands<'a> {
    sql: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Commands<'a> {
    type Item = Command<'a>;

    fn next(&mut self) -> Option<Command<'a>> {
        let mut lex = Lexer { sql: self.sql, pos: self.pos };
        let first = loop {
            match lex.next() {
                Some(t) if t.kind == Kind::Semi => {}
                Some(t) => break t,
                None => {
                    self.pos = self.sql.len();
                    return None;
                }
            }
        };
        let (end, advisory) = statement_end(&mut lex, first);
        self.pos = lex.pos;
        // Classify within the statement only, so that reading "the rest" of a
        // SET value stops at its `;`.
        let mut stmt = Lexer { sql: self.sql.get(..end).unwrap_or(self.sql), pos: first.end };
        let command = classify(&mut stmt, first);
        Some(match command {
            Command::Other | Command::Prepare | Command::Execute if advisory => {
                Command::SessionOnly(SessionFeature::AdvisoryLock)
            }
            command => command,
        })
    }
}

impl std::iter::FusedIterator for Commands<'_> {}

/// Reads to the `;` that ends the statement starting with `first`: the end
/// of its last token, and whether it calls a session-level advisory lock.
fn statement_end(lex: &mut Lexer<'_>, first: Token) -> (usize, bool) {
    let mut parens = 0u32;
    let mut routine = RoutineBody::default();
    let mut calls = AdvisoryCalls::default();
    let mut t = first;
    loop {
        match t.kind {
            Kind::Open => parens += 1,
            Kind::Close => parens = parens.saturating_sub(1),
            _ => {}
        }
        routine.feed(lex, t, parens);
        calls.feed(lex, t);
        let end = t.end;
        match lex.next() {
            // CREATE RULE ... DO (a; b) keeps semicolons inside parentheses,
            // and a BEGIN ATOMIC body between BEGIN and END.
            Some(next) if next.kind != Kind::Semi || parens > 0 || routine.depth > 0 => t = next,
            _ => return (end, calls.found),
        }
    }
}

/// Finds a `CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END`
/// body, whose own semicolons do not end the statement. PostgreSQL's grammar
/// knows; a splitter has to count BEGIN ATOMIC, CASE and END.
#[derive(Default)]
struct RoutineBody {
    prefix: Prefix,
    depth: u32,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    #[default]
    Start,
    Create,
    Or,
    Replace,
    Routine,
    Neither,
}

impl RoutineBody {
    /// `lex` is positioned just after `t`, so it can peek at ATOMIC.
    fn feed(&mut self, lex: &Lexer<'_>, t: Token, parens: u32) {
        let routine = |t| lex.is(t, "function") || lex.is(t, "procedure");
        self.prefix = match self.prefix {
            Prefix::Start if lex.is(t, "create") => Prefix::Create,
            Prefix::Create if lex.is(t, "or") => Prefix::Or,
            Prefix::Or if lex.is(t, "replace") => Prefix::Replace,
            Prefix::Create | Prefix::Replace if routine(t) => Prefix::Routine,
            Prefix::Routine => Prefix::Routine,
            _ => Prefix::Neither,
        };
        if self.prefix != Prefix::Routine || parens > 0 {
            return;
        }
        // Only BEGIN ATOMIC opens a body: a function may be *named* begin.
        if lex.is(t, "begin") && lex.peek().is_some_and(|n| lex.is(n, "atomic")) {
            self.depth += 1;
        } else if lex.is(t, "case") && self.depth > 0 {
            // CASE ... END inside the body closes with END too.
            self.depth += 1;
        } else if lex.is(t, "end") {
            self.depth = self.depth.saturating_sub(1);
        }
    }
}

/// The session-level advisory-lock functions; the `_xact_` forms are not here.
const LOCK_FUNCTIONS: [&str; 4] =
    ["pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"];

/// Watches a token stream for `[pg_catalog.]pg_advisory_lock(`.
#[derive(Default)]
struct AdvisoryCalls {
    before: Option<Token>,
    before2: Option<Token>,
    /// The last token named a lock function: a `(` next makes it a call.
    named: bool,
    found: bool,
}

impl AdvisoryCalls {
    fn feed(&mut self, lex: &Lexer<'_>, t: Token) {
        self.found |= self.named && t.kind == Kind::Open;
        self.named = LOCK_FUNCTIONS.iter().any(|f| lex.ident_is(t, f))
            && match self.before {
                // `other_schema.pg_advisory_lock` is somebody else's function.
                Some(dot) if dot.kind == Kind::Dot => self.before2.is_some_and(|s| lex.ident_is(s, "pg_catalog")),
                _ => true,
            };
        self.before2 = self.before;
        self.before = Some(t);
    }
}

/// Whether `sql` calls a session-level advisory lock, also looking into the
/// string literals it contains, `nesting` levels deep (EXECUTE in a DO body).
fn calls_advisory_lock(sql: &[u8], nesting: u32) -> bool {
    let mut lex = Lexer { sql, pos: 0 };
    let mut calls = AdvisoryCalls::default();
    while let Some(t) = lex.next() {
        calls.feed(&lex, t);
        if calls.found || (t.kind == Kind::Str && nesting > 0 && calls_advisory_lock(lex.body(t), nesting - 1)) {
            return true;
        }
    }
    false
}

/// Classifies one statement: `first` is its first token and `lex` is bounded
/// to the statement and positioned after `first`.
fn classify<'a>(lex: &mut Lexer<'a>, first: Token) -> Command<'a> {
    if first.kind == Kind::Open {
        return select_into(lex, first);
    }
    let mut buf = [0; KEYWORD_MAX];
    let Some(keyword) = lex.keyword(first, &mut buf) else {
        return Command::Other;
    };
    match keyword {
        b"begin" => Command::Begin,
        b"start" if lex.eat("transaction") => Command::Begin,
        // COMMIT PREPARED 'x' finishes some other prepared transaction.
        b"commit" | b"end" if !lex.eat("prepared") => Command::Commit,
        b"abort" => Command::Rollback,
        b"rollback" => {
            let _ = lex.eat("work") || lex.eat("transaction");
            if lex.eat("to") || lex.eat("prepared") {
                Command::Other
            } else {
                Command::Rollback
            }
        }
        b"prepare" => {
            let mut l = *lex;
            if l.eat("transaction") && l.next().is_some_and(|t| t.kind == Kind::Str) {
                Command::Commit
            } else {
                Command::Prepare
            }
        }
        b"execute" => Command::Execute,
        b"deallocate" => deallocate(lex),
        b"set" => set(lex),
        b"reset" => reset(lex),
        b"discard" => discard(lex),
        b"listen" => Command::SessionOnly(SessionFeature::Listen),
        b"load" => Command::SessionOnly(SessionFeature::Load),
        b"declare" => declare(lex),
        b"create" => create(lex),
        b"select" | b"with" => select_into(lex, first),
        b"explain" => explain(lex),
        b"do" => do_block(lex),
        _ => Command::Other,
    }
}

fn set<'a>(lex: &mut Lexer<'a>) -> Command<'a> {
    let Some(mut t) = lex.next() else {
        return Command::Other;
    };
    // `SET local = 1` names a setting; `SET LOCAL x = 1` is transaction-scoped.
    if lex.is(t, "local") && !lex.assigns() {
        return Command::Other;
    }
    let mut session = false;
    if lex.is(t, "session") && !lex.assigns() {
        session = true;
        match lex.next() {
            Some(next) => t = next,
            None => return Command::Other,
        }
    }
    if !lex.assigns() {
        let mut buf = [0; KEYWORD_MAX];
        match lex.keyword(t, &mut buf) {
            Some(b"time") if lex.eat("zone") => return setting(Cow::Borrowed("timezone"), lex, false),
            Some(b"role") => return setting(Cow::Borrowed("role"), lex, false),
            Some(b"schema") => return setting(Cow::Borrowed("search_path"), lex, false),
            // `SET NAMES` alone means the default encoding.
            Some(b"names") => return setting(Cow::Borrowed("client_encoding"), lex, true),
            Some(b"xml") if lex.eat("option") => return setting(Cow::Borrowed("xmloption"), lex, false),
            // SET [SESSION] TRANSACTION ... only applies to the current transaction.
            Some(b"transaction") => return Command::Other,
            Some(b"authorization") if session => return Command::SessionOnly(SessionFeature::SessionAuthorization),
            Some(b"characteristics") if session => return Command::SessionOnly(SessionFeature::SessionCharacteristics),
            Some(b"session") if lex.eat("authorization") => {
                return Command::SessionOnly(SessionFeature::SessionAuthorization)
            }
            Some(b"session") if lex.eat("characteristics") => {
                return Command::SessionOnly(SessionFeature::SessionCharacteristics)
            }
            _ => {}
        }
    }
    let name = lex.setting_name(t);
    if !lex.eat("to") && !lex.eat_kind(Kind::Equals) {
        // Not an assignment (SET CONSTRAINTS ..., or a syntax error): the
        // server changes no session setting.
        return Command::Other;
    }
    match name {
        Ok(name) => setting(name, lex, false),
        Err(NameError::Opaque) => Command::SessionOnly(SessionFeature::OpaqueSetting),
        Err(NameError::Syntax) => Command::Other,
    }
}

/// `Set { name, value }` with the rest of the statement as the value.
fn setting<'a>(name: Name<'a>, lex: &mut Lexer<'a>, empty_is_default: bool) -> Command<'a> {
    let Some(first) = lex.next() else {
        return if empty_is_default { Command::Set { name, value: "DEFAULT" } } else { Command::Other };
    };
    let mut last = first;
    while let Some(t) = lex.next() {
        last = t;
    }
    if first.start == last.start && lex.is(first, "default") {
        return Command::Set { name, value: "DEFAULT" };
    }
    match std::str::from_utf8(lex.slice(first.start, last.end)) {
        Ok(value) => Command::Set { name, value },
        Err(_) => Command::SessionOnly(SessionFeature::OpaqueSetting),
    }
}

fn reset<'a>(lex: &mut Lexer<'a>) -> Command<'a> {
    let Some(t) = lex.next() else {
        return Command::Other;
    };
    let command = if lex.is(t, "all") {
        Command::ResetAll
    } else if lex.is(t, "time") && lex.eat("zone") {
        Command::Reset { name: Cow::Borrowed("timezone") }
    } else if lex.is(t, "session") && lex.eat("authorization") {
        Command::SessionOnly(SessionFeature::SessionAuthorization)
    } else if lex.is(t, "transaction") && lex.eat("isolation") && lex.eat("level") {
        // Only the current transaction's isolation level.
        Command::Other
    } else {
        match lex.setting_name(t) {
            Ok(name) => Command::Reset { name },
            Err(NameError::Opaque) => Command::SessionOnly(SessionFeature::OpaqueSetting),
            Err(NameError::Syntax) => Command::Other,
        }
    };
    // Trailing words make it a syntax error, which changes nothing.
    if lex.next().is_some() {
        return Command::Other;
    }
    command
}

fn discard<'a>(lex: &mut Lexer<'a>) -> Command<'a> {
    let Some(t) = lex.next() else {
        return Command::Other;
    };
    let mut buf = [0; KEYWORD_MAX];
    let what = match lex.keyword(t, &mut buf) {
        Some(b"all") => Discard::All,
        Some(b"plans") => Discard::Plans,
        Some(b"sequences") => Discard::Sequences,
        Some(b"temp" | b"temporary") => Discard::Temp,
        _ => return Command::Other,
    };
    Command::Discard(what)
}

fn deallocate<'a>(lex: &mut Lexer<'a>) -> Command<'a> {
    let Some(mut t) = lex.next() else {
        return Command::Other;
    };
    // `DEALLOCATE PREPARE` alone deallocates a statement named "prepare".
    if lex.is(t, "prepare") {
        if let Some(next) = lex.next() {
            t = next;
        }
    }
    if lex.is(t, "all") {
        return Command::Deallocate(None);
    }
    match t.kind {
        Kind::Word | Kind::Quoted | Kind::UnicodeQuoted => Command::Deallocate(Some(lex.statement_name(t))),
        _ => Command::Other,
    }
}

fn declare<'a>(lex: &mut Lexer<'a>) -> Command<'a> {
    // The cursor's name comes first and may be any identifier.
    if lex.next().is_none() {
        return Command::Other;
    }
    // Options stop at FOR; the query after it may say WITH freely.
    while let Some(t) = lex.next() {
        if lex.is(t, "for") {
            break;
        }
        if lex.is(t, "with") && lex.eat("hold") {
            return Command::SessionOnly(SessionFeature::HoldCursor);
        }
    }
    Command::Other
}

fn create<'a>(lex: &mut Lexer<'a>) -> Command<'a> {
    let _ = lex.eat("or") && lex.eat("replace");
    let _ = lex.eat("global") || lex.eat("local");
    let mut temp = lex.eat("temp") || lex.eat("temporary");
    let mut parens = 0u32;
    let (mut before, mut before2) = (None, None);
    let mut on_commit_drop = false;
    while let Some(t) = lex.next() {
        match t.kind {
            Kind::Open => parens += 1,
            Kind::Close => parens = parens.saturating_sub(1),
            _ => {}
        }
        // pg_temp.x is a temporary object whatever the CREATE says, and so is
        // a view over one.
        temp |= lex.is_temp_schema(t) && lex.peek().is_some_and(|n| n.kind == Kind::Dot);
        on_commit_drop |= parens == 0
            && lex.is(t, "drop")
            && before.is_some_and(|b| lex.is(b, "commit"))
            && before2.is_some_and(|b| lex.is(b, "on"));
        before2 = before;
        before = Some(t);
    }
    if temp && !on_commit_drop {
        Command::SessionOnly(SessionFeature::TempObject)
    } else {
        Command::Other
    }
}

/// Words that may follow `SELECT ... INTO temp` when `temp` is a table name.
const AFTER_INTO_TARGET: [&str; 13] = [
    "from",
    "where",
    "group",
    "having",
    "window",
    "order",
    "limit",
    "offset",
    "fetch",
    "for",
    "union",
    "intersect",
    "except",
];

/// SELECT / WITH / parenthesised query: `SELECT ... INTO TEMP t` creates a
/// temporary table.
fn select_into<'a>(lex: &mut Lexer<'a>, first: Token) -> Command<'a> {
    let mut before = first;
    while let Some(t) = lex.next() {
        // INSERT INTO and MERGE INTO (in a WITH) name an existing table.
        if lex.is(t, "into") && !lex.is(before, "insert") && !lex.is(before, "merge") && into_temp(*lex) {
            return Command::SessionOnly(SessionFeature::TempObject);
        }
        before = t;
    }
    Command::Other
}

/// After INTO: `[GLOBAL|LOCAL] TEMP|TEMPORARY [TABLE] name` or `pg_temp.name`.
fn into_temp(mut lex: Lexer<'_>) -> bool {
    let Some(mut t) = lex.next() else {
        return false;
    };
    if lex.is(t, "global") || lex.is(t, "local") {
        match lex.next() {
            Some(next) => t = next,
            None => return false,
        }
    }
    if lex.is(t, "temp") || lex.is(t, "temporary") {
        // `INTO temp FROM x` makes a permanent table called temp.
        return lex.next().is_some_and(|n| match n.kind {
            Kind::Quoted | Kind::UnicodeQuoted => true,
            Kind::Word => !AFTER_INTO_TARGET.iter().any(|w| lex.is(n, w)),
            _ => false,
        });
    }
    lex.is_temp_schema(t) && lex.peek().is_some_and(|n| n.kind == Kind::Dot)
}

/// EXPLAIN runs its statement only with ANALYZE; of the statements it can
/// run, only the temp-table creators change the session.
fn explain<'a>(lex: &mut Lexer<'a>) -> Command<'a> {
    let analyzes = |lex: &Lexer<'_>, t| lex.is(t, "analyze") || lex.is(t, "analyse");
    let mut analyze = false;
    let mut t = match lex.next() {
        Some(t) => t,
        None => return Command::Other,
    };
    if t.kind == Kind::Open {
        // `(ANALYZE false)` counts as ANALYZE: a needless pin, never a leak.
        let mut depth = 1u32;
        while depth > 0 {
            let Some(option) = lex.next() else {
                return Command::Other;
            };
            match option.kind {
                Kind::Open => depth += 1,
                Kind::Close => depth -= 1,
                _ => analyze |= analyzes(lex, option),
            }
        }
        t = match lex.next() {
            Some(t) => t,
            None => return Command::Other,
        };
    } else {
        while analyzes(lex, t) || lex.is(t, "verbose") {
            analyze |= analyzes(lex, t);
            t = match lex.next() {
                Some(t) => t,
                None => return Command::Other,
            };
        }
    }
    // Not `classify`: EXPLAIN EXPLAIN ... must not recurse.
    let inner = if t.kind == Kind::Open || lex.is(t, "select") || lex.is(t, "with") {
        select_into(lex, t)
    } else if lex.is(t, "create") {
        create(lex)
    } else {
        Command::Other
    };
    match inner {
        Command::SessionOnly(SessionFeature::TempObject) if analyze => inner,
        _ => Command::Other,
    }
}

/// How deep to look into strings inside a DO body (`EXECUTE 'SELECT ...'`).
const DO_NESTING: u32 = 2;

/// A DO block's body is a string literal, but it runs: look inside it for
/// advisory-lock calls, the one session feature plpgsql commonly reaches.
fn do_block<'a>(lex: &mut Lexer<'a>) -> Command<'a> {
    while let Some(t) = lex.next() {
        if t.kind == Kind::Str && calls_advisory_lock(lex.body(t), DO_NESTING) {
            return Command::SessionOnly(SessionFeature::AdvisoryLock);
        }
    }
    Command::Other
}

/// Whether `word` occurs in `text`, ignoring ASCII case: a vectorised
/// search for its rare letter `pivot` (either case), which sits at
/// `offset` in `word`, then a comparison around each hit.
/// Whether `word` (lowercase) starts `offset` bytes before `at`, in any case.
#[inline]
fn word_at(text: &[u8], at: usize, offset: usize, word: &[u8]) -> bool {
    at.checked_sub(offset)
        .and_then(|start| text.get(start..start + word.len()))
        .is_some_and(|w| w.eq_ignore_ascii_case(word))
}

/// Which bytes of a chunk of text may be one `LOOK` marks (NUL, `;`,
/// `v`/`V`, `m`/`M`): bit `i * STRIDE` of `marked` stands for byte `i`.
/// Harmless extras may show (ESC folds to `;`); `LOOK` has the last word.
mod marks {
    #[cfg(target_arch = "x86_64")]
    pub use sse2::{marked, CHUNK, STRIDE};
    #[cfg(not(target_arch = "x86_64"))]
    pub use swar::{marked, CHUNK, STRIDE};

    /// Sixteen bytes per SSE2 compare (every x86_64 has SSE2): four
    /// compares and a movemask, against the eight-byte SWAR word's dozen
    /// and a half operations.
    #[cfg(target_arch = "x86_64")]
    pub mod sse2 {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
        };

        pub const CHUNK: usize = 16;
        pub const STRIDE: u32 = 1;

        #[inline]
        pub fn marked(chunk: &[u8; CHUNK]) -> u64 {
            // SAFETY: SSE2 is part of the x86_64 baseline; the load reads
            // the sixteen bytes of `chunk`, with no alignment requirement.
            unsafe {
                let v = _mm_loadu_si128(chunk.as_ptr().cast());
                // Setting bit 5 folds upper-case letters to lower case;
                // `;` has it set already.
                let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
                let at = |b: u8| _mm_cmpeq_epi8(folded, _mm_set1_epi8(b as i8));
                let hits = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, _mm_setzero_si128()), at(b';')),
                    _mm_or_si128(at(b'v'), at(b'm')),
                );
                u64::from(_mm_movemask_epi8(hits) as u16)
            }
        }
    }

    /// The portable version: eight bytes as a little-endian word, the high
    /// bit of each byte that may be marked (a byte above a match may show
    /// too).
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    pub mod swar {
        pub const CHUNK: usize = 8;
        pub const STRIDE: u32 = 8;

        #[inline]
        pub fn marked(chunk: &[u8; CHUNK]) -> u64 {
            const ONES: u64 = 0x0101_0101_0101_0101;
            const HIGHS: u64 = 0x8080_8080_8080_8080;
            let w = u64::from_le_bytes(*chunk);
            let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
            let folded = w | (ONES * 0x20);
            zero(w)
                | zero(folded ^ (ONES * u64::from(b';')))
                | zero(folded ^ (ONES * u64::from(b'v')))
                | zero(folded ^ (ONES * u64::from(b'm')))
        }
    }
}

/// What [`is_plain`] does with a byte: most bytes, nothing.
const LOOK_NONE: u8 = 0;
const LOOK_NUL: u8 = 1;
const LOOK_SEMI: u8 = 2;
const LOOK_V: u8 = 3;
const LOOK_M: u8 = 4;
static LOOK: [u8; 256] = {
    let mut t = [LOOK_NONE; 256];
    t[0] = LOOK_NUL;
    t[b';' as usize] = LOOK_SEMI;
    t[b'v' as usize] = LOOK_V;
    t[b'V' as usize] = LOOK_V;
    t[b'm' as usize] = LOOK_M;
    t[b'M' as usize] = LOOK_M;
    t
};

/// Why a name cannot be reported.
enum NameError {
    /// Not an identifier: the server rejects the statement.
    Syntax,
    /// Not valid UTF-8, or a `U&"..."` identifier.
    Opaque,
}

/// Names and words, read where the grammar expects them.
impl<'a> Lexer<'a> {
    /// `pg_temp` or `pg_temp_N`, the session's temporary schema.
    fn is_temp_schema(&self, t: Token) -> bool {
        let (text, fold) = match t.kind {
            Kind::Word => (self.text(t), true),
            Kind::Quoted if t.closed => (self.body(t), false),
            _ => return false,
        };
        let head = text.get(..7).unwrap_or_default();
        let schema = if fold { head.eq_ignore_ascii_case(b"pg_temp") } else { head == b"pg_temp" };
        schema && matches!(text.get(7), None | Some(b'_'))
    }

    /// Whether the next token is `TO` or `=`: the word before it is a name.
    fn assigns(&self) -> bool {
        self.peek().is_some_and(|t| t.kind == Kind::Equals || self.is(t, "to"))
    }

    /// A setting name starting at `first`: `part(.part)*`, each part a word
    /// or quoted identifier, all ASCII-lowercased. Consumes the parts.
    fn setting_name(&mut self, first: Token) -> Result<Name<'a>, NameError> {
        let part = |t: Token| match t.kind {
            Kind::Word => Ok(()),
            Kind::Quoted if t.closed => Ok(()),
            Kind::UnicodeQuoted => Err(NameError::Opaque),
            _ => Err(NameError::Syntax),
        };
        part(first)?;
        // Borrowable: one quoted part without `""`, or unquoted parts with
        // nothing between them and their dots.
        let mut borrow = match first.kind {
            Kind::Quoted => (!self.body(first).contains(&b'"')).then_some((first.body_start, first.body_end)),
            _ => Some((first.start, first.end)),
        };
        let mut last = first;
        loop {
            let mut copy = *self;
            let Some(dot) = copy.next().filter(|t| t.kind == Kind::Dot) else {
                break;
            };
            let next = copy.next().ok_or(NameError::Syntax)?;
            part(next)?;
            let adjacent =
                first.kind == Kind::Word && next.kind == Kind::Word && dot.start == last.end && next.start == dot.end;
            borrow = borrow.filter(|_| adjacent).map(|(from, _)| (from, next.end));
            last = next;
            *self = copy;
        }
        if let Some((from, to)) = borrow {
            let text = self.slice(from, to);
            if !text.iter().any(u8::is_ascii_uppercase) {
                return std::str::from_utf8(text).map(Cow::Borrowed).map_err(|_| NameError::Opaque);
            }
        }
        let mut name = Vec::with_capacity(self.slice(first.start, last.end).len());
        let mut parts = Lexer { sql: self.sql, pos: first.start };
        while let Some(t) = parts.next().filter(|t| t.end <= last.end) {
            match t.kind {
                Kind::Dot => name.push(b'.'),
                Kind::Quoted => unquote_into(&mut name, self.body(t)),
                _ => name.extend_from_slice(self.text(t)),
            }
        }
        name.make_ascii_lowercase();
        String::from_utf8(name).map(Cow::Owned).map_err(|_| NameError::Opaque)
    }

    /// A prepared statement's name: lowercased unless quoted. Never fails:
    /// text that is not UTF-8 is replaced, the worst case being a DEALLOCATE
    /// the caller cannot match.
    fn statement_name(&self, t: Token) -> Name<'a> {
        let text = self.text(t);
        match t.kind {
            Kind::Word if !text.iter().any(u8::is_ascii_uppercase) => String::from_utf8_lossy(text),
            Kind::Word => Cow::Owned(String::from_utf8_lossy(text).to_ascii_lowercase()),
            Kind::Quoted if !self.body(t).contains(&b'"') => String::from_utf8_lossy(self.body(t)),
            Kind::Quoted => {
                let mut name = Vec::with_capacity(self.body(t).len());
                unquote_into(&mut name, self.body(t));
                Cow::Owned(String::from_utf8_lossy(&name).into_owned())
            }
            _ => String::from_utf8_lossy(text),
        }
    }
}

/// Appends a quoted identifier's body with each `""` made `"`.
fn unquote_into(out: &mut Vec<u8>, body: &[u8]) {
    let mut quote = false;
    for &b in body {
        // Every `"` in a closed body is half of a pair: keep the first.
        if b == b'"' {
            quote = !quote;
            if !quote {
                continue;
            }
        }
        out.push(b);
    }
}

#[cfg(test)]
mod tests;
