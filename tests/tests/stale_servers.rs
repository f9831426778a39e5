//! Idle server connections that died while idle (backend terminated,
//! server restarted) are noticed at checkout and replaced: the next
//! client's queries succeed instead of failing with 08006.

use std::time::Duration;

use pgdog_tests::{free_port, router_config, shared_cluster, wait_until, RouterProcess};
use tokio::task::JoinSet;

/// Server connections of `stale_u` PostgreSQL sees, or -1 on error.
async fn count(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'stale_u' AND {}",
                pgdog_tests::NOT_HEALTH_CHECK
            ),
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_killed_while_idle_are_replaced() {
    let cluster = shared_cluster();
    cluster.psql_admin("CREATE ROLE stale_u LOGIN PASSWORD 'stale-pass'");
    let config = router_config(
        cluster,
        "",
        "[pools.default]\npool_mode = \"transaction\"\nmax_pool_size = 3\n",
        free_port(),
        free_port(),
        free_port(),
    );
    let users = "[[users]]\nname = \"stale_u\"\npassword = \"stale-pass\"\ndatabase = \"pgdog\"\n";
    let router = RouterProcess::start(&config, users);

    // Open all three server connections at once.
    let mut warm = JoinSet::new();
    for _ in 0..3 {
        let client = router.connect("stale_u", "stale-pass", "pgdog").await;
        warm.spawn(async move { client.batch_execute("BEGIN; SELECT pg_sleep(0.2); COMMIT").await });
    }
    while let Some(done) = warm.join_next().await {
        done.expect("task").expect("warm-up transaction");
    }
    let admin = cluster.connect_direct(cluster.primary_port, "pgdog", "pgdog", "pgdog").await;
    assert_eq!(count(&admin).await, 3, "three idle server connections expected");

    // Kill them while they sit idle in the pool.
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'stale_u'", &[])
        .await
        .expect("terminate");
    assert!(wait_until(Duration::from_secs(10), || async { count(&admin).await == 0 }).await);

    // Every query of the next client succeeds.
    let client = router.connect("stale_u", "stale-pass", "pgdog").await;
    for i in 0..10 {
        let row = client
            .query_one("SELECT $1::int + 1", &[&i])
            .await
            .unwrap_or_else(|e| panic!("query {i} after idle connections died: {e:?}\n{}", router.log()));
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
}
