//! Read/write splitting against a real primary and streaming replica:
//! reads land on the replica and writes on the primary (checked with
//! `pg_is_in_recovery()`), transactions stay where they began, hints and
//! `SET pgdog.role` override, a replica-only user cannot write, and reads
//! fall back to the primary when the replica is down.
//!
//! One test function: it stops the replica at the end, which would disturb
//! any test running beside it in this binary.

use std::time::Duration;

use pgdog_tests::{free_port, router_config, shared_cluster, wait_until, RouterProcess};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const PASSWORD: &str = "rw-pass";

async fn connect(router: &RouterProcess, user: &str) -> Client {
    let url = router.url(user, PASSWORD, "pgdog");
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}\n{}", router.log()));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// "t" when the statement ran on the replica, "f" on the primary.
async fn where_simple(client: &Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .last()
        .unwrap_or_else(|| panic!("{sql}: no rows"))
}

const ON_REPLICA: &str = "SELECT pg_is_in_recovery()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_writes_to_the_primary() {
    let cluster = shared_cluster();
    assert!(cluster.has_replica(), "the shared cluster has a streaming replica");
    cluster.psql_admin(&format!(
        "CREATE ROLE rw_app LOGIN PASSWORD '{PASSWORD}'; CREATE ROLE rw_reader LOGIN PASSWORD '{PASSWORD}';
         CREATE SCHEMA rw_app AUTHORIZATION rw_app; GRANT USAGE ON SCHEMA rw_app TO rw_reader;
         CREATE TABLE rw_app.t (id serial PRIMARY KEY, v int); ALTER TABLE rw_app.t OWNER TO rw_app;
         GRANT SELECT ON rw_app.t TO rw_reader;"
    ));
    // The router's health check logs in to the replica as these roles: wait
    // until the replica has replayed them, or it is banned at the start.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            cluster.replica_psql_admin("SELECT count(*) FROM pg_roles WHERE rolname IN ('rw_app', 'rw_reader')") == "2"
                && cluster.replica_psql_admin("SELECT count(*) FROM pg_tables WHERE schemaname = 'rw_app'") == "1"
        })
        .await,
        "replica never saw the test roles"
    );
    let extra = "[query_routing]\nread_write_split = true\n";
    let mut config = router_config(
        cluster,
        "",
        "[pools.default]\npool_mode = \"transaction\"\n",
        free_port(),
        free_port(),
        free_port(),
    );
    config.push('\n');
    config.push_str(extra);
    let users = format!(
        "[[users]]\nname = \"rw_app\"\npassword = \"{PASSWORD}\"\ndatabase = \"pgdog\"\n\n\
         [[users]]\nname = \"rw_reader\"\npassword = \"{PASSWORD}\"\ndatabase = \"pgdog\"\nforce_replica = true\n"
    );
    let router = RouterProcess::start(&config, &users);
    let app = connect(&router, "rw_app").await;

    // Reads on the replica, simple and extended protocol.
    assert_eq!(where_simple(&app, ON_REPLICA).await, "t", "{}", router.log());
    let row = app.query_one("SELECT pg_is_in_recovery(), $1::int + 1", &[&41]).await.expect("extended read");
    assert!(row.get::<_, bool>(0), "extended read on the replica");
    assert_eq!(row.get::<_, i32>(1), 42);
    // A prepared read stays a read; a prepared write goes to the primary.
    let read = app.prepare("SELECT pg_is_in_recovery() FROM generate_series(1, $1)").await.expect("prepare read");
    let write =
        app.prepare("INSERT INTO rw_app.t (v) VALUES ($1) RETURNING pg_is_in_recovery()").await.expect("prepare write");
    for i in 0..5 {
        let rows = app.query(&read, &[&2i32]).await.expect("prepared read");
        assert!(rows.iter().all(|r| r.get::<_, bool>(0)), "prepared read on the replica");
        let w = app.query_one(&write, &[&i]).await.expect("prepared write");
        assert!(!w.get::<_, bool>(0), "prepared write on the primary");
    }

    // The replica's pool counts the reads it served (not the login pool).
    let metrics = pgdog_tests::http_get(router.metrics_port, "/metrics", &[]).body;
    let replica_queries: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("orochi_pgdog_queries_total{") && l.contains("role=\"replica\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(replica_queries >= 7.0, "replica queries_total {replica_queries}\n{metrics}");

    // Writes and transactions on the primary.
    assert_eq!(where_simple(&app, "INSERT INTO rw_app.t (v) VALUES (1) RETURNING pg_is_in_recovery()").await, "f");
    assert_eq!(
        where_simple(&app, "SELECT pg_is_in_recovery(), nextval('rw_app.t_id_seq') > 0").await,
        "f",
        "{}",
        router.log()
    );
    assert_eq!(where_simple(&app, "SELECT pg_is_in_recovery(), v FROM rw_app.t FOR UPDATE LIMIT 1").await, "f");
    app.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(where_simple(&app, ON_REPLICA).await, "f", "a read inside a transaction stays on the primary");
    app.batch_execute("COMMIT").await.expect("commit");
    app.batch_execute("BEGIN READ ONLY").await.expect("begin read only");
    assert_eq!(where_simple(&app, ON_REPLICA).await, "t", "a read-only transaction runs on a replica");
    app.batch_execute("COMMIT").await.expect("commit");

    // Overrides: a comment hint for one statement, SET pgdog.role for the session.
    assert_eq!(where_simple(&app, "/* pgdog_role: primary */ SELECT pg_is_in_recovery()").await, "f");
    app.batch_execute("SET pgdog.role = 'primary'").await.expect("pin");
    assert_eq!(where_simple(&app, ON_REPLICA).await, "f", "pinned to the primary");
    app.batch_execute("SET pgdog.role = 'auto'").await.expect("unpin");
    assert_eq!(where_simple(&app, ON_REPLICA).await, "t");
    let bad = app.batch_execute("SET pgdog.role = 'sideways'").await.expect_err("invalid role");
    assert_eq!(bad.code().map(|c| c.code()), Some("22023"));

    // Pipelined: a write sent behind a read before its answer waits for the
    // replica's replies, then goes to the primary (reads behind a write may
    // follow it there).
    let (r, w) = tokio::join!(
        app.simple_query("SELECT pg_is_in_recovery()"),
        app.simple_query("INSERT INTO rw_app.t (v) VALUES (7) RETURNING pg_is_in_recovery()"),
    );
    let first = |m: Vec<SimpleQueryMessage>| {
        m.into_iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
    };
    assert_eq!(first(r.expect("pipelined read")).as_deref(), Some("t"));
    assert_eq!(first(w.expect("pipelined write")).as_deref(), Some("f"), "{}", router.log());

    // A replica-only user reads from the replica and cannot write.
    let reader = connect(&router, "rw_reader").await;
    assert_eq!(where_simple(&reader, "SELECT pg_is_in_recovery(), count(*) FROM rw_app.t").await, "t");
    let refused = reader.batch_execute("INSERT INTO rw_app.t (v) VALUES (2)").await.expect_err("write refused");
    assert_eq!(refused.code().map(|c| c.code()), Some("25006"), "{refused:?}");
    assert_eq!(where_simple(&reader, ON_REPLICA).await, "t", "the session goes on after a refusal");

    // Replica down: reads move to the primary without an error.
    cluster.stop_replica();
    for _ in 0..5 {
        assert_eq!(where_simple(&app, ON_REPLICA).await, "f", "{}", router.log());
    }
    // A replica-only user never reaches the primary: no replica, an error.
    let r = reader.simple_query(ON_REPLICA).await;
    assert!(r.is_err(), "a force_replica read went to the primary: {r:?}");
    cluster.start_replica();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            cluster.try_connect_direct(cluster.replica_port, "pgdog", "pgdog", "pgdog").await.is_ok()
        })
        .await,
        "replica back"
    );
}
