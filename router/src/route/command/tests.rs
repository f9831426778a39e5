use super::*;
use Command::{Begin, Commit, Execute, Other, Prepare, ResetAll, Rollback};
use SessionFeature::*;

fn set(name: &'static str, value: &'static str) -> Command<'static> {
    Command::Set { name: Cow::Borrowed(name), value }
}

fn reset(name: &'static str) -> Command<'static> {
    Command::Reset { name: Cow::Borrowed(name) }
}

fn only(feature: SessionFeature) -> Command<'static> {
    Command::SessionOnly(feature)
}

fn discard(what: Discard) -> Command<'static> {
    Command::Discard(what)
}

fn dealloc(name: Option<&'static str>) -> Command<'static> {
    Command::Deallocate(name.map(Cow::Borrowed))
}

/// Every case: text, then the commands it holds.
fn cases() -> Vec<(&'static [u8], Vec<Command<'static>>)> {
    vec![
        // Transaction control.
        (b"BEGIN", vec![Begin]),
        (b"begin isolation level serializable;", vec![Begin]),
        (b"BEGIN WORK", vec![Begin]),
        (b"START TRANSACTION READ ONLY", vec![Begin]),
        (b"start", vec![Other]),
        (b"COMMIT", vec![Commit]),
        (b"end work", vec![Commit]),
        (b"COMMIT AND NO CHAIN", vec![Commit]),
        (b"commit and chain", vec![Commit]),
        (b"COMMIT PREPARED 'gid'", vec![Other]),
        (b"PREPARE TRANSACTION 'gid'", vec![Commit]),
        (b"ROLLBACK", vec![Rollback]),
        (b"abort transaction", vec![Rollback]),
        (b"ROLLBACK AND CHAIN", vec![Rollback]),
        (b"ROLLBACK TO SAVEPOINT s1", vec![Other]),
        (b"rollback work to s1", vec![Other]),
        (b"ROLLBACK PREPARED 'gid'", vec![Other]),
        (b"SAVEPOINT s1", vec![Other]),
        // SET.
        (b"SET search_path = a, b", vec![set("search_path", "a, b")]),
        (b"SET search_path TO public, \"My Schema\"", vec![set("search_path", "public, \"My Schema\"")]),
        (b"set SESSION statement_timeout to 5000", vec![set("statement_timeout", "5000")]),
        (b"SET statement_timeout=-1", vec![set("statement_timeout", "-1")]),
        (b"SET LOCAL statement_timeout = 0", vec![Other]),
        (b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", vec![Other]),
        (b"SET SESSION TRANSACTION READ ONLY", vec![Other]),
        (b"SET TIME ZONE 'UTC'", vec![set("timezone", "'UTC'")]),
        (b"set time zone local", vec![set("timezone", "local")]),
        (b"SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE", vec![set("timezone", "INTERVAL '+00:00' HOUR TO MINUTE")]),
        (b"SET timezone = 'Europe/Paris'", vec![set("timezone", "'Europe/Paris'")]),
        (b"SET ROLE admin", vec![set("role", "admin")]),
        (b"SET SESSION ROLE NONE", vec![set("role", "NONE")]),
        (b"SET LOCAL ROLE admin", vec![Other]),
        ("SET Application_Name = 'Café'".as_bytes(), vec![set("application_name", "'Café'")]),
        (b"SET \"TimeZone\" = 'UTC'", vec![set("timezone", "'UTC'")]),
        (b"SET MyApp.Tenant_ID = '42'", vec![set("myapp.tenant_id", "'42'")]),
        (b"SET \"myapp\" . \"Tenant\" = 7", vec![set("myapp.tenant", "7")]),
        (b"SET \"my\"\"app\".x = 1", vec![set("my\"app.x", "1")]),
        (b"SET work_mem TO DEFAULT", vec![set("work_mem", "DEFAULT")]),
        (b"set work_mem = default", vec![set("work_mem", "DEFAULT")]),
        (b"SET work_mem = 'default'", vec![set("work_mem", "'default'")]),
        (b"SET SCHEMA 'app'", vec![set("search_path", "'app'")]),
        (b"SET NAMES 'UTF8'", vec![set("client_encoding", "'UTF8'")]),
        (b"SET NAMES", vec![set("client_encoding", "DEFAULT")]),
        (b"SET XML OPTION DOCUMENT", vec![set("xmloption", "DOCUMENT")]),
        (b"SET CONSTRAINTS ALL DEFERRED", vec![Other]),
        (b"SET SESSION AUTHORIZATION 'bob'", vec![only(SessionAuthorization)]),
        (b"SET SESSION SESSION AUTHORIZATION DEFAULT", vec![only(SessionAuthorization)]),
        (b"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", vec![only(SessionCharacteristics)]),
        (b"SET statement_timeout = 5 -- five ms\n", vec![set("statement_timeout", "5")]),
        (b"SET search_path = a /* keep */, b", vec![set("search_path", "a /* keep */, b")]),
        (b"SET a.b =", vec![Other]),
        (b"SET x 1", vec![Other]),
        (b"SET", vec![Other]),
        (b"SET session = 'x'", vec![set("session", "'x'")]),
        // RESET.
        (b"RESET ALL", vec![ResetAll]),
        (b"reset all", vec![ResetAll]),
        (b"RESET search_path", vec![reset("search_path")]),
        (b"RESET TIME ZONE", vec![reset("timezone")]),
        (b"RESET ROLE", vec![reset("role")]),
        (b"RESET \"MyApp\".X", vec![reset("myapp.x")]),
        (b"RESET SESSION AUTHORIZATION", vec![only(SessionAuthorization)]),
        (b"RESET TRANSACTION ISOLATION LEVEL", vec![Other]),
        (b"RESET a b", vec![Other]),
        (b"RESET", vec![Other]),
        // DISCARD.
        (b"DISCARD ALL", vec![discard(Discard::All)]),
        (b"discard plans", vec![discard(Discard::Plans)]),
        (b"DISCARD SEQUENCES", vec![discard(Discard::Sequences)]),
        (b"DISCARD TEMP", vec![discard(Discard::Temp)]),
        (b"DISCARD TEMPORARY", vec![discard(Discard::Temp)]),
        (b"DISCARD", vec![Other]),
        // Prepared statements.
        (b"PREPARE q (int) AS SELECT $1", vec![Prepare]),
        (b"PREPARE transaction AS SELECT 1", vec![Prepare]),
        (b"EXECUTE q(1)", vec![Execute]),
        (b"DEALLOCATE q", vec![dealloc(Some("q"))]),
        (b"DEALLOCATE Q", vec![dealloc(Some("q"))]),
        (b"DEALLOCATE PREPARE \"Q1\"", vec![dealloc(Some("Q1"))]),
        (b"DEALLOCATE \"a\"\"b\"", vec![dealloc(Some("a\"b"))]),
        (b"deallocate all", vec![dealloc(None)]),
        (b"DEALLOCATE PREPARE ALL", vec![dealloc(None)]),
        (b"DEALLOCATE \"ALL\"", vec![dealloc(Some("ALL"))]),
        (b"DEALLOCATE", vec![Other]),
        // LISTEN, LOAD.
        (b"LISTEN chan", vec![only(Listen)]),
        (b"UNLISTEN *", vec![Other]),
        (b"NOTIFY chan, 'LISTEN'", vec![Other]),
        (b"LOAD 'auto_explain'", vec![only(Load)]),
        // Advisory locks.
        (b"SELECT pg_advisory_lock(42)", vec![only(AdvisoryLock)]),
        (b"select PG_CATALOG.PG_TRY_ADVISORY_LOCK_SHARED(1, 2)", vec![only(AdvisoryLock)]),
        (b"SELECT pg_advisory_lock_shared(1)", vec![only(AdvisoryLock)]),
        (b"SELECT pg_try_advisory_lock(1)", vec![only(AdvisoryLock)]),
        (b"SELECT \"pg_catalog\".\"pg_advisory_lock\"(1)", vec![only(AdvisoryLock)]),
        (b"SELECT \"pg_advisory_lock\"(1)", vec![only(AdvisoryLock)]),
        (b"SELECT \"PG_ADVISORY_LOCK\"(1)", vec![Other]),
        (b"SELECT pg_advisory_xact_lock(1), pg_try_advisory_xact_lock_shared(2)", vec![Other]),
        (b"SELECT pg_advisory_unlock_all()", vec![Other]),
        (b"SELECT myschema.pg_advisory_lock(1)", vec![Other]),
        (b"SELECT 'pg_advisory_lock(1)'", vec![Other]),
        (b"SELECT pg_advisory_lock FROM t", vec![Other]),
        (b"SELECT /* pg_advisory_lock(1) */ 1", vec![Other]),
        (b"SELECT pg_advisory_lock /* why */ (1)", vec![only(AdvisoryLock)]),
        (b"UPDATE t SET locked = pg_try_advisory_lock(id)", vec![only(AdvisoryLock)]),
        (b"PREPARE p AS SELECT pg_advisory_lock($1)", vec![only(AdvisoryLock)]),
        (b"EXECUTE p(pg_advisory_lock(1))", vec![only(AdvisoryLock)]),
        (b"DO $$BEGIN PERFORM pg_advisory_lock(1); END$$", vec![only(AdvisoryLock)]),
        (b"DO LANGUAGE plpgsql $x$BEGIN EXECUTE 'SELECT pg_advisory_lock(1)'; END$x$", vec![only(AdvisoryLock)]),
        (b"DO 'BEGIN PERFORM pg_advisory_xact_lock(1); END'", vec![Other]),
        // Temporary objects.
        (b"CREATE TEMP TABLE t (id int)", vec![only(TempObject)]),
        (b"create global temporary table t as select 1", vec![only(TempObject)]),
        (b"CREATE LOCAL TEMP TABLE IF NOT EXISTS t (id int)", vec![only(TempObject)]),
        (b"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", vec![only(TempObject)]),
        (b"CREATE TEMPORARY SEQUENCE s", vec![only(TempObject)]),
        (b"CREATE TEMP TABLE t (id int) ON COMMIT DROP", vec![Other]),
        (b"CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1", vec![Other]),
        (b"CREATE TEMP TABLE t (id int) ON COMMIT DELETE ROWS", vec![only(TempObject)]),
        (b"CREATE TABLE pg_temp.t (id int)", vec![only(TempObject)]),
        (b"CREATE FUNCTION pg_temp.f() RETURNS int AS 'SELECT 1' LANGUAGE sql", vec![only(TempObject)]),
        (b"CREATE TABLE t (id int)", vec![Other]),
        (b"CREATE TABLE temp (id int)", vec![Other]),
        (b"SELECT * INTO TEMP t FROM x", vec![only(TempObject)]),
        (b"SELECT 1 INTO TEMPORARY TABLE t", vec![only(TempObject)]),
        (b"SELECT * INTO pg_temp.t FROM x", vec![only(TempObject)]),
        (b"SELECT * INTO t FROM x", vec![Other]),
        (b"SELECT * INTO temp FROM x", vec![Other]),
        (b"WITH a AS (SELECT 1) SELECT * INTO LOCAL TEMP t FROM a", vec![only(TempObject)]),
        (b"WITH a AS (INSERT INTO temp VALUES (1) RETURNING *) SELECT * FROM a", vec![Other]),
        (b"(SELECT 1 INTO TEMP t)", vec![only(TempObject)]),
        (b"INSERT INTO temp VALUES (1)", vec![Other]),
        (b"EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", vec![only(TempObject)]),
        (b"EXPLAIN (ANALYZE, BUFFERS) SELECT * INTO TEMP t FROM x", vec![only(TempObject)]),
        (b"EXPLAIN CREATE TEMP TABLE t AS SELECT 1", vec![Other]),
        (b"EXPLAIN VERBOSE SELECT 1", vec![Other]),
        (b"EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", vec![only(AdvisoryLock)]),
        // Cursors.
        (b"DECLARE c CURSOR WITH HOLD FOR SELECT 1", vec![only(HoldCursor)]),
        (b"DECLARE c BINARY NO SCROLL CURSOR with hold FOR SELECT 1", vec![only(HoldCursor)]),
        (b"DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", vec![Other]),
        (b"DECLARE c CURSOR FOR SELECT 'WITH HOLD'", vec![Other]),
        (b"DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold", vec![Other]),
        (b"DECLARE \"for\" CURSOR WITH HOLD FOR SELECT 1", vec![only(HoldCursor)]),
        // Keywords inside strings, identifiers and comments are not structure.
        (b"SELECT 'SET x=1'", vec![Other]),
        (b"/* SET */ SELECT 1", vec![Other]),
        (b"-- SET x = 1\nSELECT 1", vec![Other]),
        (b"SELECT $$;$$; SET a = 1", vec![Other, set("a", "1")]),
        (b"SELECT $tag$ $$ ; $ta$ $tag$; LISTEN x", vec![Other, only(Listen)]),
        (b"SELECT E'it\\'s; SET x = 1'; BEGIN", vec![Other, Begin]),
        (b"SELECT e'\\\\'; LISTEN x", vec![Other, only(Listen)]),
        (b"SELECT 'a\\'; LISTEN x", vec![Other, only(Listen)]),
        (b"SELECT 'it''s; SET x = 1'; COMMIT", vec![Other, Commit]),
        (b"SELECT \"a;b\"\"\"; ROLLBACK", vec![Other, Rollback]),
        (b"SELECT U&'d\\0061t;a', U&\"x;\"; LISTEN x", vec![Other, only(Listen)]),
        (b"/* outer /* inner */ SET x = 1; */ SELECT 1", vec![Other]),
        (b"SELECT 1 /*/ ; */; LISTEN x", vec![Other, only(Listen)]),
        (b"SELECT $1; DISCARD ALL", vec![Other, discard(Discard::All)]),
        (b"SELECT a$$b; SET x = 1", vec![Other, set("x", "1")]),
        (b"SELECT 1-- comment; BEGIN\n; COMMIT", vec![Other, Commit]),
        (b"SELECT begin FROM \"SET\"", vec![Other]),
        (b"UPDATE t SET a = 1", vec![Other]),
        (b"ALTER ROLE r SET search_path = a", vec![Other]),
        (b"SHOW search_path", vec![Other]),
        (b"(SELECT 1) UNION (SELECT 2)", vec![Other]),
        (b"((SELECT pg_advisory_lock(1)))", vec![only(AdvisoryLock)]),
        (b"VALUES (1)", vec![Other]),
        // Several statements; empty ones are skipped.
        (b"SET a=1; SELECT 1; RESET b", vec![set("a", "1"), Other, reset("b")]),
        (b";;BEGIN;;COMMIT;", vec![Begin, Commit]),
        (b"", vec![]),
        (b" ; ", vec![]),
        (b"  -- only a comment", vec![]),
        (
            b"BEGIN; SET LOCAL x = 1; SELECT pg_advisory_lock(1); COMMIT",
            vec![Begin, Other, only(AdvisoryLock), Commit],
        ),
        (b"CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b); LISTEN c", vec![Other, only(Listen)]),
        (
            b"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END; SET a = 1",
            vec![Other, set("a", "1")],
        ),
        (b"CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC SELECT 1; END; END", vec![Other, Commit]),
        (b"CREATE FUNCTION begin() RETURNS int AS 'SELECT 1' LANGUAGE sql; SET a = 1", vec![Other, set("a", "1")]),
        // A NUL ends the text, as it does for the server.
        (b"SET a = 1\0", vec![set("a", "1")]),
        (b"SELECT 1\0; SET a = 1", vec![Other]),
        (b"\0BEGIN", vec![]),
        // Not UTF-8 (a LATIN1 client, or garbage): never a panic.
        (b"SELECT '\xff\xfe'; SET a = 1", vec![Other, set("a", "1")]),
        (b"SET application_name = '\xe9t\xe9'", vec![only(OpaqueSetting)]),
        (b"SET caf\xe9 = 1", vec![only(OpaqueSetting)]),
        (b"RESET caf\xe9", vec![only(OpaqueSetting)]),
        (b"SET U&\"search_path\" = a", vec![only(OpaqueSetting)]),
        (b"\xff\xfe", vec![Other]),
        (b"\xff; LISTEN x", vec![Other, only(Listen)]),
        ("SET app.é = 1".as_bytes(), vec![set("app.é", "1")]),
        // Unterminated strings, identifiers and comments run to the end.
        (b"SELECT 'abc; SET a = 1", vec![Other]),
        (b"SET a = 'abc", vec![set("a", "'abc")]),
        (b"SET a = 1 /* unterminated", vec![set("a", "1")]),
        (b"/* SET a = 1", vec![]),
        (b"SELECT $$ ; LISTEN x", vec![Other]),
        (b"SELECT \"abc; LISTEN x", vec![Other]),
        (b"LISTEN x; SELECT 'oops", vec![only(Listen), Other]),
        (b"SELECT E'\\", vec![Other]),
        (b"SET \"abc = 1", vec![Other]),
        (b"SELECT (1; SET a = 1", vec![Other]),
        (b"SELECT $", vec![Other]),
        (b"SELECT $a", vec![Other]),
    ]
}

#[test]
fn classifies_every_case() {
    for (sql, want) in cases() {
        let got: Vec<_> = commands(sql).collect();
        assert_eq!(got, want, "{:?}", sql.escape_ascii().to_string());
    }
}

/// The fast path's promise, checked over every case and every prefix of it
/// (a prefix is also how truncated and unterminated text looks).
#[test]
fn plain_text_holds_only_other() {
    for (sql, _) in cases() {
        for cut in 0..=sql.len() {
            let text = &sql[..cut];
            let got: Vec<_> = commands(text).collect();
            if is_plain(text) {
                assert!(got.iter().all(|c| *c == Other), "{:?}: {got:?}", text.escape_ascii().to_string());
            }
        }
    }
}

#[test]
fn common_queries_take_the_fast_path() {
    let plain: &[&[u8]] = &[
        b"SELECT 1",
        b"select * from users where id = $1",
        b"INSERT INTO t (a, b) VALUES ($1, $2) RETURNING id",
        b"UPDATE t SET a = 1 WHERE id = 2",
        b"DELETE FROM t WHERE id = 2",
        b"WITH x AS (SELECT 1) SELECT * FROM x",
        b"  /* traced */ (SELECT 1) UNION (SELECT 2)",
        b"-- comment\nSELECT 'no semicolon here'",
        b"SELECT 1\0",
        b"SELECT 1\0; SET a = 1",
        b"COPY t FROM STDIN",
        b"INSERT INTO temperatures VALUES (1)",
        b"SHOW search_path",
        b"SELECT 1;",
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 5;\n",
        b"UPDATE t SET a = 1; \0",
    ];
    for sql in plain {
        assert!(is_plain(sql), "{:?}", sql.escape_ascii().to_string());
    }
    let not_plain: &[&[u8]] = &[
        b"",
        b"SET a = 1",
        b"SELECT 1; SELECT 2",
        b"SELECT ';'",
        b"SET a = 1;",
        b"SELECT pg_advisory_lock(1)",
        b"SELECT * INTO TEMP t FROM x",
        b"SELECT * FROM temperatures",
        b"(SELECT 1 INTO pg_temp.t)",
        b"BEGIN",
        b"DO $$ BEGIN END $$",
        b"EXPLAIN SELECT 1",
        b"/* unterminated SELECT 1",
        b"\0SELECT 1",
        b"\xffSELECT",
    ];
    for sql in not_plain {
        assert!(!is_plain(sql), "{:?}", sql.escape_ascii().to_string());
    }
}

#[test]
fn names_and_values_borrow_the_text_when_they_can() {
    let sql = b"SET search_path = a, b; SET \"work_mem\" = 64; SET MyApp.X = 1; SET a . b = 2";
    let got: Vec<_> = commands(sql).collect();
    let borrowed = |c: &Command<'_>| match c {
        Command::Set { name, value } => {
            let range = sql.as_ptr_range();
            assert!(range.contains(&value.as_ptr()), "value {value} is not borrowed");
            matches!(name, Cow::Borrowed(_))
        }
        other => panic!("not a SET: {other:?}"),
    };
    let want = [true, true, false, false];
    assert_eq!(got.iter().map(borrowed).collect::<Vec<_>>(), want);
}

#[test]
fn features_describe_themselves() {
    let all = [
        Listen,
        AdvisoryLock,
        TempObject,
        HoldCursor,
        SessionAuthorization,
        SessionCharacteristics,
        Load,
        OpaqueSetting,
    ];
    let mut seen = std::collections::HashSet::new();
    for f in all {
        assert!(!f.describe().is_empty());
        assert!(seen.insert(f.describe()), "{f:?}");
    }
}

/// Hostile text must not recurse, loop or panic.
#[test]
fn long_hostile_text() {
    let explains = "EXPLAIN ".repeat(50_000) + "SELECT 1";
    assert_eq!(commands(explains.as_bytes()).collect::<Vec<_>>(), vec![Other]);
    let nested = "/*".repeat(50_000) + "*/;LISTEN x";
    assert_eq!(commands(nested.as_bytes()).count(), 0);
    let parens = "(".repeat(50_000) + "; LISTEN x";
    assert_eq!(commands(parens.as_bytes()).collect::<Vec<_>>(), vec![Other]);
    let semis = ";".repeat(50_000);
    assert_eq!(commands(semis.as_bytes()).count(), 0);
    let all_bytes: Vec<u8> = (0..=255u8).rev().collect();
    for start in 0..all_bytes.len() {
        let _ = commands(&all_bytes[start..]).count();
        let _ = is_plain(&all_bytes[start..]);
    }
}

/// `is_plain`'s scan as first written, in separate scans: the
/// eight-bytes-at-a-time version must agree with it on every text.
fn is_plain_by_scans(sql: &[u8]) -> bool {
    let contains = |text: &[u8], word: &[u8], pivot: usize| {
        (0..text.len()).any(|at| {
            text[at].eq_ignore_ascii_case(&word[pivot])
                && at
                    .checked_sub(pivot)
                    .and_then(|s| text.get(s..s + word.len()))
                    .is_some_and(|w| w.eq_ignore_ascii_case(word))
        })
    };
    let text_end = sql.iter().position(|&b| b == 0).unwrap_or(sql.len());
    let sql = &sql[..text_end];
    let end = match sql.iter().position(|&b| b == b';') {
        Some(i) if !sql[i + 1..].iter().all(|c| c.is_ascii_whitespace()) => return false,
        Some(i) => i,
        None => sql.len(),
    };
    if contains(sql, b"advisory", 2) {
        return false;
    }
    plain_statement(&sql[..end], contains(sql, b"temp", 2))
}

#[test]
fn plain_check_agrees_with_separate_scans() {
    let mut texts: Vec<Vec<u8>> = cases().into_iter().map(|(sql, _)| sql.to_vec()).collect();
    texts.extend(
        [
            &b"SELECT abalance FROM pgbench_accounts WHERE aid = 5;"[..],
            b"SELECT * FROM t WHERE a = 'x' AND b = 2",
            b"INSERT INTO t VALUES (1)",
            b"UPDATE ADVISORY SET a = 1",
            b"select pg_Advisory_lock(1)",
            b"SELECT * INTO TeMp t FROM x",
            b"SELECT 1;\x1b",
            b"SELECT 1;  \t\n",
        ]
        .iter()
        .map(|s| s.to_vec()),
    );
    // Each text, and each with a marked byte put at every position: the
    // word boundaries fall everywhere.
    let marks: &[&[u8]] = &[b"\0", b";", b"v", b"M", b"temp", b"ADVISORY", b"\x01", b"\x1b"];
    let mut checked = 0;
    for text in &texts {
        for at in 0..=text.len() {
            for mark in marks {
                let mut t = text.clone();
                t.splice(at..at, mark.iter().copied());
                for cut in [t.len(), t.len().saturating_sub(1), at] {
                    let sql = &t[..cut];
                    assert_eq!(is_plain(sql), is_plain_by_scans(sql), "{:?}", sql.escape_ascii().to_string());
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10_000);
}

/// Both chunk scanners flag every byte `LOOK` marks, at every position,
/// whatever surrounds it (the portable one is what other targets run).
#[test]
fn chunk_scanners_miss_no_marked_byte() {
    fn check<const N: usize>(marked: fn(&[u8; N]) -> u64, stride: u32) {
        for byte in 0..=255u8 {
            if LOOK[usize::from(byte)] == LOOK_NONE {
                continue;
            }
            for at in 0..N {
                for fill in [b' ', b'a', 0xff, byte.wrapping_add(1), byte.wrapping_sub(1)] {
                    let mut chunk = [fill; N];
                    chunk[at] = byte;
                    // The bits of byte `at`: one (SSE2) or its eight (SWAR).
                    let bits = (marked(&chunk) >> (at as u32 * stride)) & ((1 << stride) - 1);
                    assert_ne!(bits, 0, "byte {byte:#x} at {at} in {fill:#x}");
                }
            }
        }
    }
    check(marks::swar::marked, marks::swar::STRIDE);
    #[cfg(target_arch = "x86_64")]
    check(marks::sse2::marked, marks::sse2::STRIDE);
}

/// Reading a leading keyword without the lexer decides as the lexer does,
/// on every case and on texts made to trip it.
#[test]
fn first_word_fast_path_agrees_with_the_lexer() {
    let mut texts: Vec<Vec<u8>> = cases().into_iter().map(|(sql, _)| sql.to_vec()).collect();
    for extra in [
        &b"E'select'"[..],
        b"U&'select'",
        b"U&\"select\" x",
        b"select$1",
        b"select_x from t",
        b"SELECT/**/1",
        b"select--c\n1",
        b"insert\tinto t values (1)",
        b"values(1)",
        b"\xc3\xa9select",
        b"selectx",
        b"truncatetruncatetruncate",
        b"  \n WITH a AS (SELECT 1) SELECT * FROM a",
        b"x",
        b"",
    ] {
        texts.push(extra.to_vec());
    }
    for text in &texts {
        for temp in [false, true] {
            assert_eq!(
                plain_statement(text, temp),
                plain_statement_lexed(text, temp),
                "{:?} temp={temp}",
                text.escape_ascii().to_string()
            );
        }
    }
}
