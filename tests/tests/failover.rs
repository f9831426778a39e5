//! Host failures and failover against a real primary with two streaming
//! replicas (a cluster per test: each stops, promotes or restarts servers).
//!
//! - A replica stopped during a pgbench select-only run: the run finishes,
//!   at most the transactions in flight fail, reads continue on the other
//!   replica.
//! - The primary stopped: writes fail fast with a connection error (no hang),
//!   reads keep working, and writes resume by themselves when it is back.
//! - The primary stopped and a replica promoted: writes reach the new
//!   primary without a router restart, with and without read/write
//!   splitting; the old primary, started again while still a primary, is
//!   fenced and gets neither writes nor reads.
//!
//! Timing is only ever polled for, with generous deadlines. The tests run
//! one at a time: each starts three servers, and under that much load on two
//! cores health checks time out and ban replicas for reasons of their own.

use std::time::{Duration, Instant};

use pgdog_tests::{
    free_port, pgbench_summary, pgbench_transcript, router_config, wait_until, PgCluster, RouterProcess,
};
use tokio_postgres::{Client, SimpleQueryMessage};

const DEADLINE: Duration = Duration::from_secs(30);

/// Held by each test for its whole run (see the module comment).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
use pgdog_tests::{users_with_admin, ADMIN_PASSWORD, ADMIN_USER as ADMIN};

/// A transaction-mode router over `cluster`'s three hosts, checking them
/// every 200 ms.
fn start_router(cluster: &PgCluster, split: bool) -> RouterProcess {
    let mut config = router_config(
        cluster,
        "connect_timeout_ms = 2000\n",
        "[pools.default]\npool_mode = \"transaction\"\nmax_pool_size = 8\ncheckout_timeout_ms = 5000\n",
        free_port(),
        free_port(),
        free_port(),
    );
    config.push_str(&format!(
        "\n[query_routing]\nread_write_split = {split}\nhealth_check_interval_ms = 200\n\
         health_check_timeout_ms = 3000\nban_time_ms = 1000\nmax_replica_lag = 60000\n"
    ));
    RouterProcess::start(&config, &users_with_admin())
}

async fn connect(port: u16) -> Client {
    pgdog_tests::connect_tcp(port, "pgdog", "pgdog", "pgdog").await.unwrap_or_else(|e| panic!("connect {port}: {e:?}"))
}

/// The first column of the first row of a simple query.
async fn value(client: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default())
}

/// A write through the router; the port of the server that took it.
async fn write(client: &Client) -> Result<u16, tokio_postgres::Error> {
    let port = value(client, "INSERT INTO failover_log (at) VALUES (now()) RETURNING inet_server_port()").await?;
    Ok(port.parse().unwrap_or(0))
}

/// The port of the server a read ran on.
async fn read_port(client: &Client) -> Result<u16, tokio_postgres::Error> {
    Ok(value(client, "SELECT inet_server_port()").await?.parse().unwrap_or(0))
}

/// SHOW POOLS rows for user `pgdog`: (port, role, banned).
async fn pool_roles(admin: &Client) -> Vec<(u16, String, String)> {
    let messages = admin.simple_query("SHOW POOLS").await.expect("SHOW POOLS");
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => columns = cols.iter().map(|c| c.name().to_string()).collect(),
            SimpleQueryMessage::Row(row) => {
                let get = |name: &str| {
                    columns.iter().position(|c| c == name).and_then(|i| row.get(i)).unwrap_or_default().to_string()
                };
                if get("user") == "pgdog" {
                    rows.push((get("port").parse().unwrap_or(0), get("role"), get("banned")));
                }
            }
            _ => {}
        }
    }
    rows
}

fn create_table(cluster: &PgCluster) {
    cluster.psql_admin("CREATE TABLE failover_log (id bigserial PRIMARY KEY, at timestamptz)");
}

#[test]
fn replica_stopped_during_select_only_run() {
    let _serial = one_at_a_time();
    let cluster = PgCluster::start_with_replicas(2);
    let init = std::process::Command::new(pgdog_tests::pg_bin_dir().join("pgbench"))
        .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", &cluster.primary_port.to_string(), "-U", "pgdog"])
        .arg("pgdog")
        .env("PGPASSWORD", "pgdog")
        .output()
        .expect("spawn pgbench -i");
    assert!(init.status.success(), "pgbench -i: {}", pgbench_transcript(&init));
    let router = start_router(&cluster, true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(connect(router.port));
    // Both replicas serve reads before the fault.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(rt.block_on(read_port(&client)).expect("read"));
    }
    let replicas: std::collections::BTreeSet<u16> = cluster.replica_ports.iter().copied().collect();
    assert_eq!(seen, replicas, "reads spread over both replicas");

    const CLIENTS: u64 = 4;
    let run = std::thread::scope(|s| {
        let bench = s.spawn(|| {
            router.pgbench(&["-S", "-n", "-T", "8", "-c", &CLIENTS.to_string(), "-j", "2"], "pgdog", "pgdog", "pgdog")
        });
        std::thread::sleep(Duration::from_secs(3));
        cluster.stop_replica_at(0);
        bench.join().expect("pgbench thread")
    });
    let transcript = pgbench_transcript(&run);
    let summary = pgbench_summary(&String::from_utf8_lossy(&run.stdout))
        .unwrap_or_else(|| panic!("no pgbench summary\n{transcript}\n{}", router.log_tail(4000)));
    // Only queries sent to the stopped replica before the router learned
    // it was down may fail (in flight, or routed in the moment before the
    // first failure banned it): pgbench ends a client at its first error,
    // so at most every client once; the run itself finishes.
    let aborted = String::from_utf8_lossy(&run.stderr).matches("aborted in command").count() as u64;
    eprintln!("pgbench: {} transactions, {aborted} of {CLIENTS} clients ended by an error", summary.processed);
    assert!(aborted <= CLIENTS, "{transcript}");
    assert!(summary.processed > 100, "{transcript}");
    // New queries see no error: a fresh run right after has zero failures.
    let again =
        router.pgbench(&["-S", "-n", "-T", "3", "-c", &CLIENTS.to_string(), "-j", "2"], "pgdog", "pgdog", "pgdog");
    let again_transcript = pgbench_transcript(&again);
    assert!(again.status.success(), "{again_transcript}\n{}", router.log_tail(4000));
    let again_summary = pgbench_summary(&String::from_utf8_lossy(&again.stdout)).expect("summary");
    assert_eq!(again_summary.failed.unwrap_or(0), 0, "{again_transcript}");
    // Reads now land on the remaining replica only.
    for _ in 0..10 {
        let port = rt.block_on(read_port(&client)).expect("read after the replica stopped");
        assert_eq!(port, cluster.replica_ports[1], "reads avoid the stopped replica");
    }
}

#[test]
fn primary_down_then_back_then_promotion() {
    let _serial = one_at_a_time();
    let cluster = PgCluster::start_with_replicas(2);
    create_table(&cluster);
    let split = start_router(&cluster, true);
    let plain = start_router(&cluster, false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c_split = connect(split.port).await;
        let c_plain = connect(plain.port).await;
        assert_eq!(write(&c_split).await.expect("write"), cluster.primary_port);
        assert_eq!(write(&c_plain).await.expect("write"), cluster.primary_port);

        // Primary down: writes fail fast with a connection error; reads go on.
        cluster.stop_primary();
        for client in [&c_split, &c_plain] {
            let started = Instant::now();
            let err = write(client).await.expect_err("a write with the primary down");
            let code = err.code().map(|c| c.code().to_string()).unwrap_or_default();
            assert!(code.starts_with("08") || code == "57P01", "connection error class, got {err:?}");
            assert!(started.elapsed() < Duration::from_secs(10), "write failed only after {:?}", started.elapsed());
        }
        // (This failed while a replica's first health round could mark it
        // lagging and ban it: the first read then went to the dead primary.)
        let port = read_port(&c_split)
            .await
            .unwrap_or_else(|e| panic!("reads keep working with the primary down: {e:?}\n{}", split.log_tail(6000)));
        assert!(cluster.replica_ports.contains(&port), "read on a replica, got {port}");
        // A client logging in now, with settings no server has seen, is
        // greeted from a replica and can read.
        let (fresh, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(split.port)
            .user("pgdog")
            .password("pgdog")
            .dbname("pgdog")
            .application_name("logged-in-while-primary-down")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("login with the primary down: {e:?}\n{}", split.log_tail(3000)));
        tokio::spawn(connection);
        let port = read_port(&fresh).await.expect("read by a client that logged in with the primary down");
        assert!(cluster.replica_ports.contains(&port), "read on a replica, got {port}");
        assert_eq!(value(&fresh, "SHOW application_name").await.unwrap(), "logged-in-while-primary-down");

        // Back: writes resume by themselves, on the same client.
        cluster.start_primary();
        for client in [&c_split, &c_plain] {
            assert!(
                wait_until(DEADLINE, || async { write(client).await.ok() == Some(cluster.primary_port) }).await,
                "writes did not resume after the primary came back\n{}",
                split.log_tail(4000)
            );
        }

        // Primary gone for good, replica 0 promoted: writes follow it.
        cluster.stop_primary();
        cluster.promote_replica_at(0);
        let new_primary = cluster.replica_ports[0];
        for (router, client) in [(&split, &c_split), (&plain, &c_plain)] {
            assert!(
                wait_until(DEADLINE, || async { write(client).await.ok() == Some(new_primary) }).await,
                "writes did not move to the promoted replica\n{}",
                router.log_tail(4000)
            );
            assert!(router.log().contains("failover"), "the failover is logged");
            // A client that logs in now lands there too.
            let fresh = connect(router.port).await;
            assert_eq!(write(&fresh).await.expect("write from a new client"), new_primary);
        }
        let admin = pgdog_tests::connect_tcp(split.admin_port, ADMIN, ADMIN_PASSWORD, "pgdog_admin")
            .await
            .expect("admin console");
        let roles = pool_roles(&admin).await;
        assert!(roles.contains(&(new_primary, "primary".into(), "0".into())), "{roles:?}");
        let metrics = pgdog_tests::http_get(split.metrics_port, "/metrics", &[]).body;
        let line = |needle: &str| metrics.lines().find(|l| l.contains(needle)).unwrap_or_default().to_string();
        assert!(line("failovers_total{").ends_with(" 1"), "{}", line("failovers_total{"));
        let promoted = format!("server=\"127.0.0.1:{new_primary}\"");
        assert!(
            metrics.lines().any(|l| l.contains("pool_primary{") && l.contains(&promoted) && l.ends_with(" 1")),
            "pool_primary of the promoted host\n{metrics}"
        );

        // The old primary comes back still believing it is primary: fenced,
        // never a second writer, and no reads either.
        cluster.start_primary();
        assert!(
            wait_until(DEADLINE, || async {
                pool_roles(&admin).await.iter().any(|r| r.0 == cluster.primary_port && r.1 == "fenced")
            })
            .await,
            "old primary not fenced: {:?}\n{}",
            pool_roles(&admin).await,
            split.log_tail(4000)
        );
        for _ in 0..10 {
            assert_eq!(write(&c_split).await.expect("write"), new_primary);
            assert_eq!(write(&c_plain).await.expect("write"), new_primary);
            let port = read_port(&c_split).await.expect("read");
            assert_ne!(port, cluster.primary_port, "a read reached the fenced old primary");
        }
        let fresh = connect(plain.port).await;
        assert_eq!(write(&fresh).await.expect("write"), new_primary);
    });
}

/// `sticky_transactions = false`: a transaction runs where its first
/// statement belongs. The router answers a lone BEGIN itself and sends it
/// ahead of that statement; a transaction that ran nothing ends without a
/// server; a write after a read in a replica transaction is refused by the
/// replica (25006) and nothing of it is left behind.
#[test]
fn transactions_follow_their_first_statement_without_sticky_transactions() {
    let _serial = one_at_a_time();
    let cluster = PgCluster::start_with_replicas(1);
    create_table(&cluster);
    // The replica must have the table before the router reads from it.
    let replayed = || {
        cluster.psql_admin_on(
            cluster.replica_port,
            "pgdog",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'failover_log'",
        ) == "1"
    };
    let deadline = Instant::now() + DEADLINE;
    while !replayed() {
        assert!(Instant::now() < deadline, "replica never replayed the table");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut config = router_config(
        &cluster,
        "",
        "[pools.default]\npool_mode = \"transaction\"\nmax_pool_size = 4\n",
        free_port(),
        free_port(),
        free_port(),
    );
    config.push_str("\n[query_routing]\nread_write_split = true\nsticky_transactions = false\n");
    let router = RouterProcess::start(&config, &users_with_admin());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(router.port).await;
        let primary = cluster.primary_port;
        let replica = cluster.replica_port;

        // A transaction that starts with a read runs whole on the replica.
        client.batch_execute("BEGIN").await.expect("begin");
        assert_eq!(read_port(&client).await.expect("read"), replica);
        assert_eq!(read_port(&client).await.expect("read"), replica, "the transaction stays there");
        client.batch_execute("COMMIT").await.expect("commit");

        // One that starts with a write runs on the primary, reads included,
        // and its write is there after COMMIT.
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.expect("begin");
        assert_eq!(write(&client).await.expect("write"), primary);
        assert_eq!(read_port(&client).await.expect("read"), primary);
        assert_eq!(value(&client, "SHOW transaction_isolation").await.unwrap(), "repeatable read");
        client.batch_execute("COMMIT").await.expect("commit");
        assert_eq!(cluster.psql_admin("SELECT count(*) FROM failover_log"), "1");

        // A write after a read on the replica: the replica refuses it, the
        // transaction is aborted, ROLLBACK ends it, nothing was written.
        client.batch_execute("BEGIN").await.expect("begin");
        assert_eq!(read_port(&client).await.expect("read"), replica);
        let err = write(&client).await.expect_err("a write in a replica transaction");
        assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{err:?}");
        let aborted = read_port(&client).await.expect_err("aborted transaction");
        assert_eq!(aborted.code().map(|c| c.code()), Some("25P02"));
        client.batch_execute("ROLLBACK").await.expect("rollback");
        assert_eq!(cluster.psql_admin("SELECT count(*) FROM failover_log"), "1");

        // Transactions that ran nothing end without a server; the session
        // is out of the transaction after each.
        for end in ["COMMIT", "ROLLBACK", "END", "ABORT"] {
            client.batch_execute("BEGIN").await.expect("begin");
            client.batch_execute(end).await.unwrap_or_else(|e| panic!("{end}: {e:?}"));
        }
        assert_eq!(value(&client, "SELECT now() = statement_timestamp()").await.unwrap(), "t", "not in a transaction");

        // BEGIN with its first statement in one string is routed by that statement.
        let port = value(&client, "BEGIN; SELECT inet_server_port()").await.expect("begin and read");
        assert_eq!(port, replica.to_string());
        client.batch_execute("COMMIT").await.expect("commit");

        // tokio-postgres's transaction API (simple-query BEGIN) works as well.
        let mut client = client;
        let tx = client.transaction().await.expect("transaction");
        let row = tx.query_one("SELECT inet_server_port()", &[]).await.expect("read in transaction");
        assert_eq!(row.get::<_, i32>(0), i32::from(replica));
        tx.commit().await.expect("commit");
    });
}
