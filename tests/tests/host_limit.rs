//! `max_connections` on a `[[databases]]` entry caps server connections to
//! that host across all pools, so many users cannot push PostgreSQL past
//! its own `max_connections`.

use std::time::Duration;

use pgdog_tests::{free_port, shared_cluster, RouterProcess};
use tokio::task::JoinSet;

const CAP: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_cap_holds_across_pools() {
    let cluster = shared_cluster();
    for user in ["cap_a", "cap_b"] {
        cluster.psql_admin(&format!("CREATE ROLE {user} LOGIN PASSWORD 'cap-pass'"));
    }
    let config = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {}\nadmin_port = {}\nmetrics_port = {}\nworkers = 2\n\n\
         [pools.default]\npool_mode = \"transaction\"\nmax_pool_size = 5\ncheckout_timeout_ms = 3000\n\n\
         [[databases]]\nname = \"pgdog\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\nmax_connections = {CAP}\n",
        free_port(),
        free_port(),
        free_port(),
        cluster.primary_port
    );
    let users = "[[users]]\nname = \"cap_a\"\npassword = \"cap-pass\"\ndatabase = \"pgdog\"\n\n\
                 [[users]]\nname = \"cap_b\"\npassword = \"cap-pass\"\ndatabase = \"pgdog\"\n";
    let router = RouterProcess::start(&config, users);

    // Each pool alone may open 5; together they may hold only CAP. User
    // cap_a goes first and leaves its pool holding idle connections; cap_b's
    // clients must still get in (an idle pool gives room back), and at no
    // point may the host see more than CAP.
    let admin = cluster.connect_direct(cluster.primary_port, "pgdog", "pgdog", "pgdog").await;
    let mut most = 0usize;
    for user in ["cap_a", "cap_b"] {
        let mut clients = JoinSet::new();
        for _ in 0..8 {
            let client = router.connect(user, "cap-pass", "pgdog").await;
            clients.spawn(async move {
                for _ in 0..3 {
                    client.batch_execute("BEGIN; SELECT pg_sleep(0.05); COMMIT").await.map_err(|e| format!("{e:?}"))?;
                }
                Ok::<(), String>(())
            });
        }
        while !clients.is_empty() {
            let row = admin
                .query_one(
                    &format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename IN ('cap_a', 'cap_b') AND {}",
                        pgdog_tests::NOT_HEALTH_CHECK
                    ),
                    &[],
                )
                .await
                .expect("count server connections");
            most = most.max(row.get::<_, i64>(0) as usize);
            while let Some(done) = clients.try_join_next() {
                done.expect("client task").unwrap_or_else(|e| panic!("{user}: query failed: {e}\n{}", router.log()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(most <= CAP, "{most} server connections to a host capped at {CAP}");
    assert!(most > 0, "the sampler never saw a server connection");
}
