//! TLS from the router to PostgreSQL: `server_tls` modes against a server
//! with TLS turned on, checked from the server's own view (`pg_stat_ssl`).

use pgdog_tests::{default_users, free_port, PgCluster, RouterProcess};

fn config(cluster: &PgCluster, server_tls: &str, ca: Option<&str>) -> String {
    let mut general = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {}\nadmin_port = {}\nmetrics_port = {}\nworkers = 1\n",
        free_port(),
        free_port(),
        free_port()
    );
    if let Some(ca) = ca {
        general.push_str(&format!("server_tls_ca = \"{ca}\"\n"));
    }
    format!(
        "{general}\n[[databases]]\nname = \"pgdog\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\nserver_tls = \"{server_tls}\"\n",
        cluster.primary_port
    )
}

async fn server_side_ssl(router: &RouterProcess) -> Result<bool, tokio_postgres::Error> {
    let client = router.try_connect("pgdog", "pgdog", "pgdog").await?;
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_modes() {
    let cluster = PgCluster::start_primary_only();
    let ca = cluster.enable_ssl();
    let ca = ca.to_string_lossy().to_string();

    for (mode, expect_ssl) in [("disable", false), ("prefer", true), ("require", true)] {
        let router = RouterProcess::start(&config(&cluster, mode, None), &default_users());
        let ssl = server_side_ssl(&router).await.unwrap_or_else(|e| panic!("{mode}: {e}\n{}", router.log()));
        assert_eq!(ssl, expect_ssl, "server_tls = {mode}");
    }

    // verify-full with the CA that signed the server certificate: encrypted.
    let router = RouterProcess::start(&config(&cluster, "verify-full", Some(&ca)), &default_users());
    let ssl = server_side_ssl(&router).await.unwrap_or_else(|e| panic!("verify-full: {e}\n{}", router.log()));
    assert!(ssl);

    // verify-full against the public roots: the test CA is unknown, so no
    // server connection may be opened and the client hears why.
    let router = RouterProcess::start(&config(&cluster, "verify-full", None), &default_users());
    let err = server_side_ssl(&router).await.expect_err("an unverifiable server certificate must be refused");
    let text = format!("{err:?}");
    assert!(text.contains("TLS") || text.contains("certificate"), "{text}");
}
