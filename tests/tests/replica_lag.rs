//! Replica health and lag checks against a real primary and streaming
//! replica: a replica whose replay is paused while the primary takes writes
//! leaves the read set within a few check intervals and comes back after
//! replay resumes; a stopped replica's reads move to the primary (or fail
//! with 08006 under `replica_fallback = "error"`), SHOW POOLS and the
//! metrics show why, and reads return once it is started again.
//!
//! A binary of its own: it pauses replay and stops the replica, which would
//! disturb tests of other binaries sharing a cluster with it. Timing is
//! only ever polled for, with generous deadlines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgdog_tests::{free_port, http_get, router_config, shared_cluster, wait_until, RouterProcess};
use tokio_postgres::{Client, SimpleQueryMessage};

const DEADLINE: Duration = Duration::from_secs(20);
use pgdog_tests::{users_with_admin, ADMIN_PASSWORD, ADMIN_USER as ADMIN};
const ON_REPLICA: &str = "SELECT pg_is_in_recovery()";

fn start(fallback: &str) -> RouterProcess {
    let mut config = router_config(
        shared_cluster(),
        "",
        "[pools.default]\npool_mode = \"transaction\"\n",
        free_port(),
        free_port(),
        free_port(),
    );
    config.push_str(&format!(
        "\n[query_routing]\nread_write_split = true\nhealth_check_interval_ms = 200\n\
         health_check_timeout_ms = 1000\nmax_replica_lag = 500\nban_time_ms = 1000\n\
         replica_fallback = \"{fallback}\"\n"
    ));
    RouterProcess::start(&config, &users_with_admin())
}

async fn connect(port: u16, user: &str, password: &str, db: &str) -> Client {
    pgdog_tests::connect_tcp(port, user, password, db).await.unwrap_or_else(|e| panic!("connect {user}@{port}: {e:?}"))
}

/// "t" when the read ran on the replica, "f" on the primary.
async fn read_on(client: &Client) -> Result<String, tokio_postgres::Error> {
    let messages = client.simple_query(ON_REPLICA).await?;
    Ok(messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default())
}

/// Polls until reads land where `want` says ("t" replica, "f" primary).
async fn reads_land(client: &Client, want: &str) -> bool {
    wait_until(DEADLINE, || async { read_on(client).await.ok().as_deref() == Some(want) }).await
}

/// The replica's row of SHOW POOLS for user `pgdog`, by column name.
async fn replica_pool(admin: &Client, replica_port: u16) -> Vec<(String, Option<String>)> {
    let messages = admin.simple_query("SHOW POOLS").await.expect("SHOW POOLS");
    let mut columns = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => columns = cols.iter().map(|c| c.name().to_string()).collect(),
            SimpleQueryMessage::Row(row) => {
                let cells: Vec<(String, Option<String>)> =
                    columns.iter().cloned().zip((0..row.len()).map(|i| row.get(i).map(str::to_string))).collect();
                let get = |name: &str| cells.iter().find(|(c, _)| c == name).and_then(|(_, v)| v.clone());
                if get("user").as_deref() == Some("pgdog") && get("port") == Some(replica_port.to_string()) {
                    return cells;
                }
            }
            _ => {}
        }
    }
    panic!("no SHOW POOLS row for the replica (port {replica_port})");
}

fn cell<'a>(row: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    row.iter().find(|(c, _)| c == name).unwrap_or_else(|| panic!("no column {name}")).1.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_or_stopped_replica_leaves_the_read_set_and_returns() {
    let cluster = shared_cluster();
    assert!(cluster.has_replica(), "the shared cluster has a streaming replica");
    cluster.psql_admin("CREATE TABLE lag_t (v int); GRANT ALL ON lag_t TO pgdog;");
    let router = start("primary");
    let app = connect(router.port, "pgdog", "pgdog", "pgdog").await;
    let admin = connect(router.admin_port, ADMIN, ADMIN_PASSWORD, "pgdog_admin").await;

    assert!(reads_land(&app, "t").await, "reads on the replica\n{}", router.log());
    assert!(
        wait_until(DEADLINE, || async {
            cell(&replica_pool(&admin, cluster.replica_port).await, "replica_lag_ms").is_some()
        })
        .await,
        "the monitor measures the replica's lag"
    );
    let row = replica_pool(&admin, cluster.replica_port).await;
    assert_eq!(cell(&row, "banned"), Some("0"), "{row:?}");

    // Replay paused while the primary takes writes: the replica lags.
    cluster.replica_psql_admin("SELECT pg_wal_replay_pause()");
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let primary = connect(cluster.primary_port, "pgdog", "pgdog", "pgdog").await;
        let writing = writing.clone();
        tokio::spawn(async move {
            while writing.load(Ordering::Relaxed) {
                let _ = primary.batch_execute("INSERT INTO lag_t VALUES (1)").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let left = reads_land(&app, "f").await;
    let row = replica_pool(&admin, cluster.replica_port).await;
    if !left {
        cluster.replica_psql_admin("SELECT pg_wal_replay_resume()");
        panic!("a lagging replica leaves the read set: {row:?}\n{}", router.log());
    }
    let lagging = |row: &[(String, Option<String>)]| {
        let lag: u64 = cell(row, "replica_lag_ms").and_then(|l| l.parse().ok()).unwrap_or(0);
        cell(row, "banned") == Some("1") && lag > 500
    };
    assert!(
        lagging(&row)
            || wait_until(DEADLINE, || async { lagging(&replica_pool(&admin, cluster.replica_port).await) }).await,
        "SHOW POOLS shows the replica banned with its lag above max_replica_lag: {:?}",
        replica_pool(&admin, cluster.replica_port).await
    );
    let metrics = http_get(router.metrics_port, "/metrics", &[]).body;
    for name in ["_pool_banned{", "_replica_lag_seconds{", "_bans_total{"] {
        assert!(metrics.contains(name), "metrics have {name}:\n{metrics}");
    }
    assert!(
        metrics.lines().any(|l| l.contains("_pool_banned{") && l.contains("role=\"replica\"") && l.ends_with(" 1")),
        "the replica is banned in the metrics:\n{metrics}"
    );

    // Replay resumed: the replica catches up and gets reads again.
    cluster.replica_psql_admin("SELECT pg_wal_replay_resume()");
    assert!(reads_land(&app, "t").await, "reads back on the replica\n{}", router.log());
    writing.store(false, Ordering::Relaxed);
    let _ = writer.await;
    assert!(
        wait_until(DEADLINE, || async {
            cell(&replica_pool(&admin, cluster.replica_port).await, "banned") == Some("0")
        })
        .await,
        "SHOW POOLS shows the replica unbanned: {:?}",
        replica_pool(&admin, cluster.replica_port).await
    );

    // Replica stopped: reads go to the primary without errors, and with
    // replica_fallback = "error" fail with 08006; SHOW POOLS says why.
    let strict = start("error");
    let strict_app = connect(strict.port, "pgdog", "pgdog", "pgdog").await;
    assert!(reads_land(&strict_app, "t").await, "reads on the replica\n{}", strict.log());
    cluster.stop_replica();
    assert!(reads_land(&app, "f").await, "reads on the primary\n{}", router.log());
    for _ in 0..5 {
        assert_eq!(read_on(&app).await.expect("no error for new reads"), "f");
    }
    assert!(
        wait_until(DEADLINE, || async {
            let row = replica_pool(&admin, cluster.replica_port).await;
            cell(&row, "banned") == Some("1") && cell(&row, "last_error").is_some_and(|e| !e.is_empty())
        })
        .await,
        "SHOW POOLS shows the ban and the error: {:?}",
        replica_pool(&admin, cluster.replica_port).await
    );
    assert!(
        wait_until(DEADLINE, || async {
            matches!(read_on(&strict_app).await, Err(e) if e.code().map(|c| c.code()) == Some("08006"))
        })
        .await,
        "replica_fallback = \"error\": reads fail with 08006\n{}",
        strict.log()
    );

    // Replica started: reads return, the error is cleared.
    cluster.start_replica();
    assert!(
        wait_until(Duration::from_secs(30), || async { read_on(&app).await.ok().as_deref() == Some("t") }).await,
        "reads back on the replica after restart\n{}",
        router.log()
    );
    assert!(reads_land(&strict_app, "t").await, "strict router reads on the replica again\n{}", strict.log());
    assert!(
        wait_until(DEADLINE, || async {
            cell(&replica_pool(&admin, cluster.replica_port).await, "last_error").is_none()
        })
        .await,
        "a successful check clears last_error: {:?}",
        replica_pool(&admin, cluster.replica_port).await
    );
}
