//! Transaction pooling that applications do not notice: named prepared
//! statements, SET, and session-only features, through transaction mode
//! with far more clients than server connections, against real PostgreSQL.
//!
//! Each test has a server role (and schema) of its own on the shared
//! cluster and a router whose only user and pool carry that name.

use std::time::Duration;

use pgdog_tests::{free_port, pgbench_summary, pgbench_transcript, router_config, shared_cluster, RouterProcess};
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const PASSWORD: &str = "txpool-pw";

struct Setup {
    router: RouterProcess,
    name: String,
}

impl Setup {
    /// Role and schema `name`, and a router with pool `name` (`pool` lines added).
    fn start(name: &str, pool: &str) -> Setup {
        let cluster = shared_cluster();
        cluster.psql_admin(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'; CREATE SCHEMA {name} AUTHORIZATION {name};"
        ));
        let pools = format!("[pools.{name}]\npool_mode = \"transaction\"\n{pool}\n");
        let config = router_config(cluster, "", &pools, free_port(), free_port(), free_port());
        let users = format!(
            "[[users]]\nname = \"{name}\"\npassword = \"{PASSWORD}\"\ndatabase = \"pgdog\"\npool = \"{name}\"\n\
             server_user = \"{name}\"\nserver_password = \"{PASSWORD}\"\n"
        );
        Setup { router: RouterProcess::start(&config, &users), name: name.to_string() }
    }

    async fn connect(&self) -> Client {
        let url = self.router.url(&self.name, PASSWORD, "pgdog");
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect: {}\n{}", show(&e), self.log()));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    fn pgbench(&self, args: &[&str]) -> std::process::Output {
        self.router.pgbench(args, &self.name, PASSWORD, "pgdog")
    }

    fn log(&self) -> String {
        let log = self.router.log();
        let mut start = log.len().saturating_sub(6000);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        format!("--- router log (tail) ---\n{}", &log[start..])
    }

    /// Server connections of this test's role.
    fn backends(&self) -> usize {
        let n = shared_cluster().psql_admin(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' AND backend_type = 'client backend' AND {}",
            self.name,
            pgdog_tests::NOT_HEALTH_CHECK
        ));
        n.parse().unwrap_or(usize::MAX)
    }
}

fn show(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => err.to_string(),
    }
}

async fn scalar(client: &Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {}", show(&e)));
    messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no rows"))
}

fn assert_pgbench_clean(out: &std::process::Output, setup: &Setup, what: &str) {
    let transcript = pgbench_transcript(out);
    assert!(out.status.success(), "{what}\n{transcript}\n{}", setup.log());
    let summary = pgbench_summary(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|| panic!("{what}: no summary\n{transcript}"));
    assert!(summary.processed > 0, "{what}: nothing processed\n{transcript}");
    assert_eq!(summary.failed, Some(0), "{what}: failed transactions\n{transcript}");
}

/// pgbench `-M prepared`: select-only, and a read-write script of
/// single-statement transactions. (pgbench 15 prepares with a blocking
/// PQprepare on its event loop thread: a client that waits for a server
/// connection stalls every client of that thread, including those holding
/// connections inside BEGIN ... END, until the checkout times out. So the
/// built-in TPC-B script cannot run with more clients than connections
/// through any transaction pooler; the write script avoids BEGIN.)
#[test]
fn pgbench_prepared_fifty_clients_on_five_connections() {
    let setup = Setup::start("txp_bench", "max_pool_size = 5");
    let init = setup.pgbench(&["-i", "-s", "1", "-q"]);
    assert!(init.status.success(), "pgbench -i\n{}\n{}", pgbench_transcript(&init), setup.log());
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("writes.sql");
    std::fs::write(
        &script,
        "\\set aid random(1, 100000)\n\\set delta random(-5000, 5000)\n\
         UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n\
         SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n\
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);\n",
    )
    .expect("write script");
    let script = script.to_str().expect("utf-8 path").to_string();
    for (what, extra) in [("select-only", vec!["-S"]), ("writes", vec!["-f", script.as_str()])] {
        let mut args = vec!["-M", "prepared", "-c", "50", "-j", "2", "-T", "4"];
        args.extend(extra);
        let out = setup.pgbench(&args);
        assert_pgbench_clean(&out, &setup, what);
    }
    assert!(setup.backends() <= 5, "pool of 5 kept");
}

/// Many tokio-postgres clients (which prepare every statement under names
/// s0, s1, ... — the same names for different queries across clients) on 3
/// server connections: statements are prepared once per client and reused
/// across transactions that land on other connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_statements_move_between_connections() {
    let setup = Setup::start("txp_prep", "max_pool_size = 3");
    let admin = setup.connect().await;
    admin
        .batch_execute("CREATE TABLE txp_prep.items (id int PRIMARY KEY, label text, price numeric)")
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    let mut tasks = JoinSet::new();
    for c in 0..20 {
        let client = setup.connect().await;
        tasks.spawn(async move {
            // Different texts under the same driver-chosen names per client.
            let insert = client.prepare("INSERT INTO txp_prep.items VALUES ($1, $2, $3::text::numeric)").await?;
            let by_id = client.prepare("SELECT label, price::text FROM txp_prep.items WHERE id = $1").await?;
            let own = client.prepare(&format!("SELECT $1::int + {c}")).await?;
            for i in 0..30 {
                let id = c * 1000 + i;
                let label = format!("item-{id}");
                client.execute(&insert, &[&id, &label, &format!("{i}.5")]).await?;
                let row = client.query_one(&by_id, &[&id]).await?;
                assert_eq!(row.get::<_, String>(0), label);
                assert_eq!(row.get::<_, String>(1), format!("{i}.5"));
                let v: i32 = client.query_one(&own, &[&i]).await?.get(0);
                assert_eq!(v, i + c);
                if i % 7 == 0 {
                    // A failing statement in a transaction, then recovery.
                    client.batch_execute("BEGIN").await?;
                    let dup = client.execute(&insert, &[&id, &label, &"0"]).await;
                    assert_eq!(dup.unwrap_err().code().map(|c| c.code()), Some("23505"));
                    client.batch_execute("ROLLBACK").await?;
                    assert_eq!(client.query_one(&by_id, &[&id]).await?.get::<_, String>(0), label);
                }
            }
            Ok::<_, tokio_postgres::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done.expect("task") {
            panic!("client failed: {}\n{}", show(&e), setup.log());
        }
    }
    assert_eq!(scalar(&admin, "SELECT count(*) FROM txp_prep.items").await, "600");
    assert!(setup.backends() <= 3);
}

/// A tiny per-connection cache: statements are closed and prepared again
/// as clients cycle through more of them than a connection keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_cache_evicts_and_reprepares() {
    let setup = Setup::start("txp_evict", "max_pool_size = 2\nmax_prepared_statements = 2");
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let client = setup.connect().await;
        tasks.spawn(async move {
            let mut statements = Vec::new();
            for k in 0..6 {
                statements.push(client.prepare(&format!("SELECT $1::int * {k}")).await?);
            }
            for round in 0..10 {
                for (k, s) in statements.iter().enumerate() {
                    let v: i32 = client.query_one(s, &[&round]).await?.get(0);
                    assert_eq!(v, round * k as i32);
                }
            }
            Ok::<_, tokio_postgres::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done.expect("task") {
            panic!("client failed: {}\n{}", show(&e), setup.log());
        }
    }
    let admin = setup.connect().await;
    let most = scalar(
        &shared_cluster().connect_direct(shared_cluster().primary_port, "pgdog", "pgdog", "pgdog").await,
        "SELECT 1",
    )
    .await;
    assert_eq!(most, "1");
    // Each connection holds at most 2 router statements at any time.
    let held = scalar(&admin, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '__pgdog_%'").await;
    assert!(held.parse::<i64>().unwrap() <= 2, "{held} statements on one connection");
}

/// Connects and forwards the connection's notifications to a channel.
async fn connect_listening(setup: &Setup) -> (Client, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    let url = setup.router.url(&setup.name, PASSWORD, "pgdog");
    let (client, mut connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

async fn backend_pid(client: &Client) -> String {
    scalar(client, "SELECT pg_backend_pid()").await
}

/// LISTEN keeps the client on its server connection, so notifications
/// reach it (and only it) between its transactions; when it leaves, the
/// connection is cleaned (UNLISTEN) before the next client gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_and_notifications_reach_the_listener() {
    let setup = Setup::start("txp_listen", "max_pool_size = 2");
    let (listener, mut notes) = connect_listening(&setup).await;
    listener.batch_execute("LISTEN txp_jobs").await.expect("listen");
    let pid = backend_pid(&listener).await;
    let other = setup.connect().await;
    for i in 0..5 {
        other.batch_execute(&format!("NOTIFY txp_jobs, 'job {i}'")).await.expect("notify");
        let got = tokio::time::timeout(Duration::from_secs(10), notes.recv()).await.expect("notification in time");
        assert_eq!(got, Some(("txp_jobs".to_string(), format!("job {i}"))));
        assert_eq!(backend_pid(&listener).await, pid, "the listener kept its connection");
    }
    drop(listener);
    // Pool of 2: once the listener is gone its connection serves others,
    // listening to nothing.
    assert!(
        pgdog_tests::wait_until(Duration::from_secs(10), || async {
            let c = setup.connect().await;
            let d = setup.connect().await;
            let a = scalar(&c, "BEGIN; SELECT count(*) FROM pg_listening_channels()").await;
            let b = scalar(&d, "BEGIN; SELECT count(*) FROM pg_listening_channels()").await;
            a == "0" && b == "0"
        })
        .await,
        "a connection still listens after its client left\n{}",
        setup.log()
    );
}

/// A session advisory lock pins the client; the lock is released when the
/// client leaves (DISCARD ALL), never held for a client that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_lock_is_held_while_the_client_stays_and_released_after() {
    let setup = Setup::start("txp_lock", "max_pool_size = 2");
    let holder = setup.connect().await;
    assert_eq!(scalar(&holder, "SELECT pg_advisory_lock(4242)::text").await, "");
    let pid = backend_pid(&holder).await;
    let other = setup.connect().await;
    for _ in 0..3 {
        assert_eq!(scalar(&other, "SELECT pg_try_advisory_lock(4242)").await, "f");
        assert_eq!(backend_pid(&holder).await, pid);
    }
    drop(holder);
    assert!(
        pgdog_tests::wait_until(Duration::from_secs(10), || async {
            scalar(&other, "SELECT pg_try_advisory_xact_lock(4242)").await == "t"
        })
        .await,
        "the lock outlived its client\n{}",
        setup.log()
    );
}

/// Temporary tables, WITH HOLD cursors and SQL PREPARE work across the
/// client's transactions (it keeps its connection), and nothing of them
/// is left for the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_tables_hold_cursors_and_sql_prepare_keep_the_connection() {
    let setup = Setup::start("txp_session_only", "max_pool_size = 1\ncheckout_timeout_ms = 20000");
    {
        let c = setup.connect().await;
        c.batch_execute("CREATE TEMP TABLE scratch (x int)").await.expect("temp table");
        c.batch_execute("INSERT INTO scratch VALUES (1), (2)").await.expect("insert");
        assert_eq!(scalar(&c, "SELECT sum(x) FROM scratch").await, "3");
        c.batch_execute("DECLARE cur CURSOR WITH HOLD FOR SELECT generate_series(1, 3)").await.expect("declare");
        for want in ["1", "2", "3"] {
            assert_eq!(scalar(&c, "FETCH 1 FROM cur").await, want);
        }
        c.batch_execute("PREPARE answer(int) AS SELECT $1 * 2").await.expect("prepare");
        assert_eq!(scalar(&c, "EXECUTE answer(21)").await, "42");
    }
    // The only server connection, cleaned for the next client.
    let next = setup.connect().await;
    assert_eq!(scalar(&next, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'answer'").await, "0");
    assert_eq!(scalar(&next, "SELECT count(*) FROM pg_cursors").await, "0");
    assert_eq!(scalar(&next, "SELECT coalesce(to_regclass('scratch')::text, 'gone')").await, "gone");
}

/// SET outside a transaction follows the client to other connections; a
/// SET in a rolled-back transaction and SET LOCAL do not stick; RESET and
/// DISCARD ALL forget. Other clients never see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_the_client_across_connections() {
    let setup = Setup::start("txp_set", "max_pool_size = 3");
    let c = setup.connect().await;
    c.batch_execute("SET search_path = txp_set, public; SET TimeZone = 'Asia/Tokyo'; SET statement_timeout = '7s'")
        .await
        .expect("set");
    c.batch_execute("BEGIN; SET TimeZone = 'UTC'; ROLLBACK").await.expect("rolled back set");
    c.batch_execute("BEGIN; SET LOCAL statement_timeout = '1s'; COMMIT").await.expect("set local");
    // Other clients keep the connections busy so this one moves around.
    let mut busy = JoinSet::new();
    for _ in 0..4 {
        let o = setup.connect().await;
        busy.spawn(async move {
            for _ in 0..20 {
                let tz = scalar(&o, "SHOW TimeZone").await;
                assert_ne!(tz, "Asia/Tokyo", "another client's SET leaked");
                o.batch_execute("SELECT pg_sleep(0.005)").await.expect("sleep");
            }
        });
    }
    while let Some(done) = busy.join_next().await {
        done.expect("busy client");
    }
    // The client's connection is terminated between its queries, so each
    // round runs on a fresh server connection that must get its settings.
    let admin = shared_cluster().connect_direct(shared_cluster().primary_port, "pgdog", "pgdog", "pgdog").await;
    let mut pids = std::collections::HashSet::new();
    for _ in 0..3 {
        assert_eq!(scalar(&c, "SHOW search_path").await, "txp_set, public");
        assert_eq!(scalar(&c, "SHOW TimeZone").await, "Asia/Tokyo");
        assert_eq!(scalar(&c, "SHOW statement_timeout").await, "7s");
        let pid = backend_pid(&c).await;
        pids.insert(pid.clone());
        admin.batch_execute(&format!("SELECT pg_terminate_backend({pid})")).await.expect("terminate");
        let gone = pgdog_tests::wait_until(Duration::from_secs(10), || async {
            let q = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
            admin.query_one(&q, &[]).await.map(|r| r.get::<_, i64>(0) == 0).unwrap_or(false)
        })
        .await;
        assert!(gone, "backend {pid} still there");
        // Give the router's event loop a moment to see the closed socket.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pids.len(), 3, "each round on a new server connection");
    c.batch_execute("RESET TimeZone").await.expect("reset");
    assert_ne!(scalar(&c, "SHOW TimeZone").await, "Asia/Tokyo");
    c.batch_execute("DISCARD ALL").await.expect("discard");
    assert_eq!(scalar(&c, "SHOW statement_timeout").await, "0");
    assert_eq!(scalar(&c, "SHOW search_path").await, "\"$user\", public");
}

/// Extended-protocol messages the client sends after an error but before
/// its Sync are discarded by the server: the router must neither answer
/// them nor believe the statements they parse exist. A later Parse of the
/// same text, then Bind and Execute, must work. (psycopg's pipeline mode
/// does exactly this; the router once answered `__pgdog_N does not exist`.)
#[test]
fn messages_after_an_error_before_sync_are_discarded_like_the_server_does() {
    use pgdog_tests::wire::{self, RawSession};
    let cluster = shared_cluster();
    cluster.psql_admin("CREATE ROLE txp_skip LOGIN PASSWORD 'skip-pw'");
    let pools = "[pools.default]\npool_mode = \"transaction\"\nmax_pool_size = 1\n";
    let config = router_config(cluster, "", pools, free_port(), free_port(), free_port());
    let users = "[[users]]\nname = \"txp_skip\"\ndatabase = \"pgdog\"\nauth = \"trust\"\nserver_user = \"txp_skip\"\nserver_password = \"skip-pw\"\n";
    let router = RouterProcess::start(&config, users);
    let mut s = RawSession::trust_login(router.port, "txp_skip", "pgdog").expect("login");

    let parse = |name: &str, sql: &str| {
        let mut b = name.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        wire::typed_message(b'P', &b)
    };
    let bind = |name: &str| {
        let mut b = vec![0];
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        wire::typed_message(b'B', &b)
    };
    let execute = wire::typed_message(b'E', &[0, 0, 0, 0, 0]);
    let flush = wire::typed_message(b'H', &[]);
    let sync = wire::typed_message(b'S', &[]);
    let tags = |s: &mut RawSession, until: u8| {
        let mut seen = Vec::new();
        loop {
            let m = wire::read_message(&mut s.stream).expect("read");
            seen.push(m.tag);
            if m.tag == until {
                return seen;
            }
        }
    };

    // A failing statement, flushed: the error comes back before any Sync.
    let mut batch = parse("bad", "SELECT * FROM no_such_table_here");
    batch.extend_from_slice(&flush);
    wire::send(&mut s.stream, &batch).expect("send");
    assert_eq!(tags(&mut s, b'E'), vec![b'E']);
    // Still before the Sync: the server discards these.
    let mut batch = parse("q", "SELECT 42");
    batch.extend_from_slice(&bind("q"));
    batch.extend_from_slice(&execute);
    batch.extend_from_slice(&sync);
    wire::send(&mut s.stream, &batch).expect("send");
    assert_eq!(tags(&mut s, b'Z'), vec![b'Z'], "nothing but ReadyForQuery for discarded messages\n{}", router.log());
    // Now for real: the same text parsed, bound and executed.
    let mut batch = parse("q", "SELECT 42");
    batch.extend_from_slice(&bind("q"));
    batch.extend_from_slice(&execute);
    batch.extend_from_slice(&sync);
    wire::send(&mut s.stream, &batch).expect("send");
    let seen = tags(&mut s, b'Z');
    assert_eq!(seen, vec![b'1', b'2', b'D', b'C', b'Z'], "{}", router.log());
}
