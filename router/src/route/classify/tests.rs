//! Table-driven tests of every classification and routing rule.

use super::*;
use Access::{Any, Read, Unknown, Write};
use Target::{Primary, Replica};
use TxnKind::{ReadOnly, ReadWrite};

/// Builders for expected decisions.
trait Expect {
    fn begins(self, k: TxnKind) -> Decision;
    fn ends(self) -> Decision;
    fn txn(self, k: TxnKind) -> Decision;
    fn role(self, r: RoleSetting) -> Decision;
    fn hint(self, t: Target) -> Decision;
}

impl Expect for Access {
    fn begins(self, k: TxnKind) -> Decision {
        Decision::of(self).begins(k)
    }
    fn ends(self) -> Decision {
        Decision::of(self).ends()
    }
    fn txn(self, k: TxnKind) -> Decision {
        Decision::of(self).txn(k)
    }
    fn role(self, r: RoleSetting) -> Decision {
        Decision::of(self).role(r)
    }
    fn hint(self, t: Target) -> Decision {
        Decision::of(self).hint(t)
    }
}

impl Expect for Decision {
    fn begins(self, k: TxnKind) -> Decision {
        Decision { begins: Some(k), ..self }
    }
    fn ends(self) -> Decision {
        Decision { ends_txn: true, ..self }
    }
    fn txn(self, k: TxnKind) -> Decision {
        Decision { txn_access: Some(k), ..self }
    }
    fn role(self, r: RoleSetting) -> Decision {
        Decision { role: Some(r), ..self }
    }
    fn hint(self, t: Target) -> Decision {
        Decision { hint: Some(t), ..self }
    }
}

fn classifier() -> Classifier {
    Classifier::new(100, &["app.bump_counter".to_string(), "Audit_Log".to_string()])
}

fn check(cases: &[(&str, Decision)]) {
    let mut c = classifier();
    for (sql, want) in cases {
        assert_eq!(c.classify(sql.as_bytes()), *want, "{sql}");
        // Again, now from the cache (where cacheable): the same answer.
        assert_eq!(c.classify(sql.as_bytes()), *want, "{sql} (second time)");
    }
}

#[test]
fn reads() {
    check(&[
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 1", Decision::of(Read)),
        ("select 1", Decision::of(Read)),
        ("VALUES (1, 2)", Decision::of(Read)),
        ("TABLE t", Decision::of(Read)),
        ("SELECT * FROM a JOIN b USING (id) WHERE a.x IN (SELECT y FROM c)", Decision::of(Read)),
        ("WITH x AS (SELECT 1) SELECT * FROM x", Decision::of(Read)),
        ("SELECT count(*), now(), lower(name) FROM t GROUP BY 3", Decision::of(Read)),
        ("SELECT pg_catalog.set_config('search_path', '', false)", Decision::of(Read)),
        ("SHOW search_path", Decision::of(Read)),
        ("SHOW ALL", Decision::of(Read)),
        ("EXPLAIN SELECT * FROM t", Decision::of(Read)),
        ("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t", Decision::of(Read)),
        ("COPY t TO STDOUT", Decision::of(Read)),
        ("COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)", Decision::of(Read)),
        ("DECLARE c CURSOR FOR SELECT * FROM t", Decision::of(Read)),
        ("SELECT * FROM t WHERE locked = 'FOR UPDATE'", Decision::of(Read)),
        ("SELECT 'nextval(1)' AS x, \"nextval\" FROM t", Decision::of(Read)),
    ]);
}

#[test]
fn writes() {
    check(&[
        ("INSERT INTO t VALUES (1)", Decision::of(Write)),
        ("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2", Decision::of(Write)),
        ("DELETE FROM t WHERE id = 3", Decision::of(Write)),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", Decision::of(Write)),
        ("INSERT INTO t SELECT * FROM s RETURNING id", Decision::of(Write)),
        ("CREATE TABLE t (id int)", Decision::of(Write)),
        ("ALTER TABLE t ADD COLUMN x int", Decision::of(Write)),
        ("DROP TABLE t", Decision::of(Write)),
        ("TRUNCATE t", Decision::of(Write)),
        ("CREATE TABLE t2 AS SELECT * FROM t", Decision::of(Write)),
        ("GRANT SELECT ON t TO bob", Decision::of(Write)),
        ("COPY t FROM STDIN", Decision::of(Write)),
        ("COPY t TO '/tmp/t.csv'", Decision::of(Write)),
        ("COPY t TO PROGRAM 'gzip > /tmp/t.gz'", Decision::of(Write)),
        ("COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", Decision::of(Write)),
        ("CALL do_things(1)", Decision::of(Write)),
        ("DO $$ BEGIN PERFORM 1; END $$", Decision::of(Write)),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", Decision::of(Write)),
        ("VACUUM t", Decision::of(Write)),
        ("ANALYZE t", Decision::of(Write)),
        ("CHECKPOINT", Decision::of(Write)),
        ("LISTEN chan", Decision::of(Write)),
        ("UNLISTEN *", Decision::of(Write)),
        ("NOTIFY chan, 'x'", Decision::of(Write)),
        ("REFRESH MATERIALIZED VIEW mv", Decision::of(Write)),
        ("COMMIT PREPARED 'gid'", Decision::of(Write)),
        ("ROLLBACK PREPARED 'gid'", Decision::of(Write)),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", Decision::of(Write)),
        ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", Decision::of(Write)),
    ]);
}

#[test]
fn reads_that_write() {
    check(&[
        // Locking clauses, at the top or in a subquery.
        ("SELECT * FROM t WHERE id = 1 FOR UPDATE", Decision::of(Write)),
        ("SELECT * FROM t FOR NO KEY UPDATE", Decision::of(Write)),
        ("SELECT * FROM t FOR SHARE", Decision::of(Write)),
        ("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", Decision::of(Write)),
        ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", Decision::of(Write)),
        ("SELECT * FROM t WHERE id IN (SELECT id FROM q LIMIT 1 FOR UPDATE SKIP LOCKED)", Decision::of(Write)),
        ("WITH c AS (SELECT * FROM t FOR UPDATE) SELECT * FROM c", Decision::of(Write)),
        // SELECT INTO creates a table.
        ("SELECT * INTO t2 FROM t", Decision::of(Write)),
        // Data-modifying CTEs.
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Decision::of(Write)),
        ("WITH u AS (UPDATE t SET x = 1 RETURNING *) SELECT count(*) FROM u", Decision::of(Write)),
        ("WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", Decision::of(Write)),
        // Writing functions, anywhere in the tree.
        ("SELECT nextval('s')", Decision::of(Write)),
        ("SELECT pg_catalog.nextval('s')", Decision::of(Write)),
        ("SELECT setval('s', 10)", Decision::of(Write)),
        ("SELECT currval('s')", Decision::of(Write)),
        ("SELECT lastval()", Decision::of(Write)),
        ("SELECT pg_advisory_lock(42)", Decision::of(Write)),
        ("SELECT pg_try_advisory_xact_lock(1, 2)", Decision::of(Write)),
        ("SELECT pg_advisory_unlock_all()", Decision::of(Write)),
        ("SELECT lo_create(0)", Decision::of(Write)),
        ("SELECT lowrite(0, 'x')", Decision::of(Write)),
        ("SELECT pg_notify('chan', 'x')", Decision::of(Write)),
        ("SELECT txid_current()", Decision::of(Write)),
        ("SELECT ARRAY[nextval('s')]", Decision::of(Write)),
        ("SELECT CASE WHEN x THEN nextval('s') END FROM t", Decision::of(Write)),
        ("SELECT COALESCE(nextval('s'), 0)", Decision::of(Write)),
        ("SELECT * FROM t WHERE id = (SELECT max(id) FROM u WHERE v = nextval('s'))", Decision::of(Write)),
        ("SELECT sum(x) OVER (ORDER BY nextval('s')) FROM t", Decision::of(Write)),
        ("SELECT * FROM generate_series(1, nextval('s'))", Decision::of(Write)),
        ("SELECT upper(NEXTVAL('s'))", Decision::of(Write)),
        // Functions listed as writing in the configuration.
        ("SELECT audit_log('x')", Decision::of(Write)),
        ("SELECT public.AUDIT_LOG('x')", Decision::of(Write)),
        ("SELECT app.bump_counter(1)", Decision::of(Write)),
        ("SELECT bump_counter(1)", Decision::of(Read)),
        ("SELECT other.bump_counter(1)", Decision::of(Read)),
        // EXPLAIN and COPY of writes.
        ("EXPLAIN ANALYZE UPDATE t SET x = 1", Decision::of(Write)),
        ("EXPLAIN UPDATE t SET x = 1", Decision::of(Write)),
        ("EXPLAIN ANALYZE SELECT nextval('s')", Decision::of(Write)),
        ("EXPLAIN SELECT * FROM t FOR UPDATE", Decision::of(Write)),
    ]);
}

#[test]
fn unsure_goes_to_the_primary() {
    check(&[
        ("SELEC 1", Decision::of(Unknown)),
        ("SELECT FROM WHERE", Decision::of(Unknown)),
        ("PREPARE p AS SELECT 1", Decision::of(Unknown)),
        ("EXECUTE p", Decision::of(Unknown)),
        ("EXPLAIN EXECUTE p", Decision::of(Unknown)),
        ("SELECT 'unterminated", Decision::of(Unknown)),
        ("SELECT 1; SELEC 2", Decision::of(Unknown)),
    ]);
    let mut c = classifier();
    assert_eq!(c.classify(b"SELECT \xff"), Decision::of(Unknown));
    assert_eq!(c.classify(b"SELECT 1\0"), Decision::of(Unknown));
}

#[test]
fn session_and_transaction_control() {
    check(&[
        ("BEGIN", Any.begins(ReadWrite)),
        ("begin transaction", Any.begins(ReadWrite)),
        ("START TRANSACTION", Any.begins(ReadWrite)),
        ("BEGIN READ ONLY", Any.begins(ReadOnly)),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", Any.begins(ReadOnly)),
        ("BEGIN READ WRITE", Any.begins(ReadWrite)),
        ("COMMIT", Any.ends()),
        ("END", Any.ends()),
        ("ROLLBACK", Any.ends()),
        ("ABORT", Any.ends()),
        ("PREPARE TRANSACTION 'gid'", Any.ends()),
        ("COMMIT AND CHAIN", Decision::of(Any)),
        ("ROLLBACK AND CHAIN", Decision::of(Any)),
        ("SAVEPOINT s", Decision::of(Any)),
        ("RELEASE SAVEPOINT s", Decision::of(Any)),
        ("ROLLBACK TO SAVEPOINT s", Decision::of(Any)),
        ("SET TRANSACTION READ ONLY", Any.txn(ReadOnly)),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE", Any.txn(ReadWrite)),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", Decision::of(Any)),
        ("SET transaction_read_only = on", Any.txn(ReadOnly)),
        ("SET transaction_read_only TO 'off'", Any.txn(ReadWrite)),
        ("SET LOCAL transaction_read_only = 1", Any.txn(ReadOnly)),
        ("SET search_path TO app, public", Decision::of(Any)),
        ("SET LOCAL statement_timeout = '5s'", Decision::of(Any)),
        ("RESET search_path", Decision::of(Any)),
        ("SET CONSTRAINTS ALL DEFERRED", Decision::of(Any)),
        ("DISCARD PLANS", Decision::of(Any)),
        ("DEALLOCATE ALL", Decision::of(Any)),
        ("FETCH 10 FROM c", Decision::of(Any)),
        ("MOVE NEXT IN c", Decision::of(Any)),
        ("CLOSE c", Decision::of(Any)),
        ("", Decision::of(Any)),
        ("-- nothing\n", Decision::of(Any)),
        (";", Decision::of(Any)),
    ]);
}

#[test]
fn role_setting() {
    check(&[
        ("SET pgdog.role = 'primary'", Any.role(RoleSetting::Pin(Primary))),
        ("SET pgdog.role TO replica", Any.role(RoleSetting::Pin(Replica))),
        ("set PGDOG.ROLE = 'Replica'", Any.role(RoleSetting::Pin(Replica))),
        ("SET SESSION pgdog.role = 'auto'", Any.role(RoleSetting::Auto)),
        ("SET LOCAL pgdog.role = 'primary'", Any.role(RoleSetting::Pin(Primary))),
        ("SET pgdog.role TO DEFAULT", Any.role(RoleSetting::Auto)),
        ("RESET pgdog.role", Any.role(RoleSetting::Auto)),
        ("RESET ALL", Any.role(RoleSetting::Auto)),
        ("DISCARD ALL", Any.role(RoleSetting::Auto)),
        ("SET pgdog.role = 'leader'", Any.role(RoleSetting::Invalid)),
        ("SET pgdog.role = 1", Any.role(RoleSetting::Invalid)),
        ("SET pgdog.role = 'primary', 'replica'", Any.role(RoleSetting::Invalid)),
    ]);
    // The value decides, so the same shape with another value must not hit.
    let mut c = classifier();
    assert_eq!(c.classify(b"SET pgdog.role = 'primary'").role, Some(RoleSetting::Pin(Primary)));
    assert_eq!(c.classify(b"SET pgdog.role = 'replica'").role, Some(RoleSetting::Pin(Replica)));
    assert_eq!(c.classify(b"SET transaction_read_only = 'on'").txn_access, Some(ReadOnly));
    assert_eq!(c.classify(b"SET transaction_read_only = 'off'").txn_access, Some(ReadWrite));
    assert_eq!(c.hit_rate(), (0, 4));
    assert_eq!(c.cached(), 0);
}

#[test]
fn comment_hints() {
    check(&[
        ("/* pgdog_role: replica */ SELECT 1", Read.hint(Replica)),
        ("/* pgdog_role: primary */ SELECT 1", Read.hint(Primary)),
        ("/*pgdog_role=REPLICA*/SELECT 1", Read.hint(Replica)),
        ("-- pgdog_role: primary\nSELECT 1", Read.hint(Primary)),
        ("/* app: web, PgDog_Role: 'replica' */ UPDATE t SET x = 1", Write.hint(Replica)),
        ("  /* first */ /* pgdog_role: primary */ SELECT 1", Read.hint(Primary)),
        ("/* pgdog_role: auto */ SELECT 1", Decision::of(Read)),
        ("/* pgdog_role */ SELECT 1", Decision::of(Read)),
        ("/* pgdog_role_x: replica */ SELECT 1", Decision::of(Read)),
        ("SELECT 1 /* pgdog_role: replica */", Decision::of(Read)),
        ("SELECT '/* pgdog_role: replica */'", Decision::of(Read)),
        ("/* pgdog_role: replica */ BEGIN", Any.begins(ReadWrite).hint(Replica)),
    ]);
    // A hint is read on every use, not cached with the shape.
    let mut c = classifier();
    assert_eq!(c.classify(b"/* pgdog_role: replica */ SELECT 1").hint, Some(Replica));
    assert_eq!(c.classify(b"/* pgdog_role: primary */ SELECT 2").hint, Some(Primary));
    assert_eq!(c.classify(b"SELECT 3").hint, None);
    assert_eq!(c.hit_rate(), (2, 1));
}

#[test]
fn multi_statement_strings() {
    check(&[
        ("SELECT 1; SELECT 2", Decision::of(Read)),
        ("SELECT 1; INSERT INTO t VALUES (1)", Decision::of(Write)),
        ("SET search_path = app; SELECT 1", Decision::of(Read)),
        ("BEGIN; SELECT 1", Read.begins(ReadWrite)),
        ("BEGIN; INSERT INTO t VALUES (1); COMMIT", Write.ends()),
        ("BEGIN READ ONLY; SELECT 1; COMMIT", Read.ends()),
        ("COMMIT; BEGIN READ ONLY", Any.ends().begins(ReadOnly)),
        ("BEGIN; SET TRANSACTION READ ONLY; SELECT 1", Read.begins(ReadOnly)),
        ("SELECT 1; SET TRANSACTION READ ONLY", Read.txn(ReadOnly)),
        ("SELECT 1; SET pgdog.role = 'replica'", Read.role(RoleSetting::Pin(Replica))),
        ("SHOW x; DELETE FROM t; SELECT 1", Decision::of(Write)),
    ]);
}

#[test]
fn cache_hits_on_same_shape() {
    let mut c = classifier();
    for aid in [1, 22, 333, -4, 55555] {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid}");
        assert_eq!(c.classify(sql.as_bytes()), Decision::of(Read));
    }
    assert_eq!(c.hit_rate(), (4, 1));
    // Another shape misses; its own repeats hit.
    assert_eq!(c.classify(b"UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 7"), Decision::of(Write));
    assert_eq!(
        c.classify(b"update pgbench_accounts  SET abalance = abalance + -3 WHERE aid = 8;"),
        Decision::of(Write)
    );
    assert_eq!(c.classify(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1 FOR UPDATE"), Decision::of(Write));
    assert_eq!(c.hit_rate(), (5, 3));
    assert_eq!(c.cached(), 3);
}

#[test]
fn cache_is_bounded() {
    let mut c = Classifier::new(8, &[]);
    for i in 0..100 {
        let sql = format!("SELECT c{i} FROM t WHERE id = {i}");
        assert_eq!(c.classify(sql.as_bytes()), Decision::of(Read));
        assert!(c.cached() <= 8);
    }
    assert_eq!(c.cached(), 8);
    assert_eq!(c.hit_rate(), (0, 100));
}

#[test]
fn cache_keeps_shapes_in_use() {
    let mut c = Classifier::new(4, &[]);
    let hot = b"SELECT * FROM hot WHERE id = 1";
    c.classify(hot);
    for i in 0..50 {
        // The hot shape is used between one-off shapes and so survives them.
        assert_eq!(c.classify(hot), Decision::of(Read));
        c.classify(format!("SELECT c{i} FROM t").as_bytes());
    }
    assert_eq!(c.hit_rate().0, 50);
}

#[test]
fn zero_capacity_never_caches() {
    let mut c = Classifier::new(0, &[]);
    assert_eq!(c.classify(b"SELECT 1"), Decision::of(Read));
    assert_eq!(c.classify(b"SELECT 1"), Decision::of(Read));
    assert_eq!(c.hit_rate(), (0, 2));
    assert_eq!(c.cached(), 0);
}

#[test]
fn long_shapes_are_not_cached() {
    let mut c = classifier();
    let sql = format!("SELECT {} FROM t", (0..1000).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", "));
    assert!(sql.len() > MAX_KEY_LEN);
    assert_eq!(c.classify(sql.as_bytes()), Decision::of(Read));
    assert_eq!(c.classify(sql.as_bytes()), Decision::of(Read));
    assert_eq!(c.hit_rate(), (0, 2));
}

#[test]
fn counters_outlive_a_rebuilt_classifier() {
    let block = Arc::new(CacheCounters::default());
    let mut old = Classifier::with_counters(8, &[], block.clone());
    for i in 0..3 {
        old.classify(format!("SELECT c{i} FROM t WHERE id = 1").as_bytes());
    }
    old.classify(b"SELECT c0 FROM t WHERE id = 2");
    let figures = block.figures();
    assert_eq!(figures, CacheFigures { hits: 1, misses: 3, entries: 3, capacity: 8 });
    assert_eq!(figures.hit_rate(), Some(0.25));

    // A reload's new classifier joins the block; a session may still use
    // the old one until it ends.
    let mut new = Classifier::with_counters(4, &[], block.clone());
    new.classify(b"SELECT 1");
    new.classify(b"SELECT 2");
    assert_eq!(block.figures(), CacheFigures { hits: 2, misses: 4, entries: 4, capacity: 12 });
    assert_eq!(new.hit_rate(), (2, 4));
    // The old one's shapes and room go with it; the counts stay.
    drop(old);
    assert_eq!(block.figures(), CacheFigures { hits: 2, misses: 4, entries: 1, capacity: 4 });
    // Replacing a full cache's entries does not add to them.
    for i in 0..20 {
        new.classify(format!("SELECT c{i} FROM u").as_bytes());
    }
    assert_eq!(block.figures().entries, 4);
    assert_eq!(CacheFigures::default().hit_rate(), None);
}

fn facts(txn: Option<Txn>, pinned: Option<Target>, force_replica: bool, sticky: bool) -> SessionFacts {
    SessionFacts { txn, pinned, force_replica, sticky_transactions: sticky }
}

const fn txn(kind: TxnKind, on: Option<Target>) -> Option<Txn> {
    Some(Txn { kind, on })
}

#[test]
fn routing() {
    let read = Decision::of(Read);
    let write = Decision::of(Write);
    let any = Decision::of(Any);
    let unknown = Decision::of(Unknown);
    let idle = facts(None, None, false, true);
    let cases: &[(&str, Decision, SessionFacts, Result<Target, ReadOnlyViolation>)] = &[
        // Outside a transaction, by what the statement does.
        ("read", read, idle, Ok(Replica)),
        ("write", write, idle, Ok(Primary)),
        ("unknown", unknown, idle, Ok(Primary)),
        ("session control", any, idle, Ok(Primary)),
        // Sticky read-write transaction: all on the primary.
        ("sticky read", read, facts(txn(ReadWrite, None), None, false, true), Ok(Primary)),
        ("sticky read, begun", read, facts(txn(ReadWrite, Some(Primary)), None, false, true), Ok(Primary)),
        ("BEGIN; SELECT in one string", Read.begins(ReadWrite), idle, Ok(Primary)),
        ("BEGIN READ ONLY; SELECT in one string", Read.begins(ReadOnly), idle, Ok(Replica)),
        ("BEGIN ...; COMMIT of a read in one string", Read.ends(), idle, Ok(Replica)),
        // Not sticky: statement by statement.
        ("non-sticky read", read, facts(txn(ReadWrite, Some(Primary)), None, false, false), Ok(Replica)),
        ("non-sticky write", write, facts(txn(ReadWrite, Some(Replica)), None, false, false), Ok(Primary)),
        // A read-only transaction runs whole on a replica, sticky or not.
        ("read-only txn", read, facts(txn(ReadOnly, None), None, false, true), Ok(Replica)),
        ("read-only txn, not sticky", any, facts(txn(ReadOnly, None), None, false, false), Ok(Replica)),
        ("write in read-only txn", write, facts(txn(ReadOnly, Some(Replica)), None, false, true), Ok(Replica)),
        ("COMMIT of read-only txn", Any.ends(), facts(txn(ReadOnly, Some(Replica)), None, false, true), Ok(Replica)),
        (
            "SET TRANSACTION READ ONLY first",
            Any.txn(ReadOnly),
            facts(txn(ReadWrite, None), None, false, true),
            Ok(Replica),
        ),
        (
            "SET TRANSACTION READ ONLY too late",
            Any.txn(ReadOnly),
            facts(txn(ReadWrite, Some(Primary)), None, false, true),
            Ok(Primary),
        ),
        // A running transaction cannot move: not for a hint, not for a pin.
        (
            "hint in running txn",
            Read.hint(Replica),
            facts(txn(ReadWrite, Some(Primary)), None, false, true),
            Ok(Primary),
        ),
        ("pin in running txn", read, facts(txn(ReadWrite, Some(Primary)), Some(Replica), false, true), Ok(Primary)),
        // Hints and pins.
        ("hint replica", Read.hint(Replica), idle, Ok(Replica)),
        ("hint primary", Read.hint(Primary), idle, Ok(Primary)),
        ("hint replica for a write", Write.hint(Replica), idle, Ok(Replica)),
        ("hint beats pin", Read.hint(Primary), facts(None, Some(Replica), false, true), Ok(Primary)),
        ("pin primary", read, facts(None, Some(Primary), false, true), Ok(Primary)),
        ("pin replica", write, facts(None, Some(Replica), false, true), Ok(Replica)),
        (
            "pin replica picks the txn's server",
            Any.begins(ReadWrite),
            facts(None, Some(Replica), false, true),
            Ok(Replica),
        ),
        (
            "hint picks a held-back txn's server",
            Read.hint(Replica),
            facts(txn(ReadWrite, None), None, false, true),
            Ok(Replica),
        ),
        // Replica-only users.
        ("force_replica read", read, facts(None, None, true, true), Ok(Replica)),
        ("force_replica write", write, facts(None, None, true, true), Err(ReadOnlyViolation)),
        ("force_replica write, hinted", Write.hint(Primary), facts(None, None, true, true), Err(ReadOnlyViolation)),
        ("force_replica unknown", unknown, facts(None, Some(Primary), true, true), Ok(Replica)),
        ("force_replica BEGIN", Any.begins(ReadWrite), facts(None, None, true, true), Ok(Replica)),
        ("force_replica in txn", read, facts(txn(ReadWrite, Some(Replica)), None, true, true), Ok(Replica)),
    ];
    for (name, d, s, want) in cases {
        assert_eq!(route(d, s), *want, "{name}");
    }
    assert_eq!(ReadOnlyViolation::SQLSTATE, "25006");
}

/// Name, transaction before, decision, where it was sent, transaction after.
type TxnCase = (&'static str, Option<Txn>, Decision, Option<Target>, Option<Txn>);

#[test]
fn transaction_tracking() {
    let cases: &[TxnCase] = &[
        ("BEGIN held back", None, Any.begins(ReadWrite), None, txn(ReadWrite, None)),
        ("BEGIN sent", None, Any.begins(ReadWrite), Some(Primary), txn(ReadWrite, Some(Primary))),
        ("BEGIN READ ONLY sent", None, Any.begins(ReadOnly), Some(Replica), txn(ReadOnly, Some(Replica))),
        (
            "first statement places the txn",
            txn(ReadWrite, None),
            Decision::of(Read),
            Some(Primary),
            txn(ReadWrite, Some(Primary)),
        ),
        (
            "later statements do not move it",
            txn(ReadWrite, Some(Primary)),
            Decision::of(Read),
            Some(Replica),
            txn(ReadWrite, Some(Primary)),
        ),
        (
            "SET TRANSACTION READ ONLY first",
            txn(ReadWrite, None),
            Any.txn(ReadOnly),
            Some(Replica),
            txn(ReadOnly, Some(Replica)),
        ),
        (
            "SET TRANSACTION READ ONLY late",
            txn(ReadWrite, Some(Primary)),
            Any.txn(ReadOnly),
            Some(Primary),
            txn(ReadWrite, Some(Primary)),
        ),
        (
            "BEGIN inside a txn is a no-op",
            txn(ReadOnly, Some(Replica)),
            Any.begins(ReadWrite),
            Some(Replica),
            txn(ReadOnly, Some(Replica)),
        ),
        ("COMMIT", txn(ReadWrite, Some(Primary)), Any.ends(), Some(Primary), None),
        (
            "COMMIT; BEGIN READ ONLY",
            txn(ReadWrite, Some(Primary)),
            Any.ends().begins(ReadOnly),
            Some(Primary),
            txn(ReadOnly, Some(Primary)),
        ),
        ("BEGIN; ...; COMMIT", None, Write.ends(), Some(Primary), None),
        ("statement outside a txn", None, Decision::of(Write), Some(Primary), None),
    ];
    for (name, before, d, sent, want) in cases {
        assert_eq!(next_txn(*before, d, *sent), *want, "{name}");
    }
}

/// Rough cost of a classify on a hit and on a miss; run with
/// `cargo test --release -p pgdog-router --lib classify::tests::timings -- --ignored --nocapture`.
#[test]
#[ignore]
fn timings() {
    use std::time::Instant;
    let n = 200_000u32;
    let mut c = Classifier::new(10_000, &[]);
    let queries: Vec<String> =
        (0..n).map(|i| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {}", i * 7919 % 100_000)).collect();
    let start = Instant::now();
    for q in &queries {
        std::hint::black_box(c.classify(q.as_bytes()));
    }
    let hit = start.elapsed().as_nanos() / u128::from(n);
    let mut shape = Vec::new();
    let start = Instant::now();
    for q in &queries {
        std::hint::black_box(normalize(q.as_bytes(), &mut shape));
    }
    let norm = start.elapsed().as_nanos() / u128::from(n);
    let m = 5_000u32;
    let mut c = Classifier::new(0, &[]);
    let start = Instant::now();
    for q in queries.iter().take(m as usize) {
        std::hint::black_box(c.classify(q.as_bytes()));
    }
    let miss = start.elapsed().as_nanos() / u128::from(m);
    let start = Instant::now();
    for q in queries.iter().take(m as usize) {
        std::hint::black_box(pg_query::parse(q, 0).is_ok());
    }
    let parse = start.elapsed().as_nanos() / u128::from(m);
    println!("classify hit {hit} ns (normalize alone {norm} ns), miss {miss} ns (pg_query::parse alone {parse} ns)");
}

#[test]
fn deep_nesting_is_not_a_crash() {
    let mut c = classifier();
    for depth in [50, 500, 5_000, 50_000] {
        let sql = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
        let d = c.classify(sql.as_bytes());
        assert!(matches!(d.access, Read | Unknown), "depth {depth}: {d:?}");
        let sql = format!("SELECT {}nextval('s'){}", "abs(".repeat(depth), ")".repeat(depth));
        let d = c.classify(sql.as_bytes());
        assert!(matches!(d.access, Write | Unknown), "depth {depth}: {d:?}");
    }
}

#[test]
fn recovery_probe_is_a_read() {
    let mut c = Classifier::new(10, &[]);
    assert_eq!(c.classify(b"SELECT pg_is_in_recovery()").access, Access::Read);
}

#[test]
fn nextval_in_an_expression_is_a_write() {
    let mut c = Classifier::new(10, &[]);
    assert_eq!(c.classify(b"SELECT nextval('rw_app.t_id_seq') > 0, pg_is_in_recovery()").access, Access::Write);
}
