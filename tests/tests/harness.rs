//! Smoke test for the harness itself: the PostgreSQL side must work before
//! any router test can mean anything. Deliberately does not start (or build)
//! the router.

use std::time::Duration;

use pgdog_tests::{
    default_users, free_port, psql_tcp, router_config, self_signed_cert, shared_cluster, wait_until, PgCluster, TestCa,
};

#[tokio::test]
async fn primary_and_replica_roles() {
    let cluster = shared_cluster();
    assert_eq!(cluster.psql_admin("SELECT pg_is_in_recovery()"), "f");
    assert_eq!(cluster.replica_psql_admin("SELECT pg_is_in_recovery()"), "t");
    let streaming = cluster.psql_admin("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'");
    assert_eq!(streaming, "1");
}

#[tokio::test]
async fn writes_reach_the_replica() {
    let cluster = shared_cluster();
    cluster.psql_admin("CREATE TABLE harness_replication (id int PRIMARY KEY, note text)");
    // Wait for the table first: a query naming a table the replica has not
    // replayed yet is an error, not an empty result.
    let table = wait_until(Duration::from_secs(20), || async {
        cluster.replica_psql_admin("SELECT to_regclass('harness_replication') IS NOT NULL") == "t"
    })
    .await;
    assert!(table, "table created on the primary never appeared on the replica");

    cluster.psql_admin("INSERT INTO harness_replication VALUES (1, 'hello')");
    let replicated = wait_until(Duration::from_secs(20), || async {
        cluster.replica_psql_admin("SELECT coalesce(string_agg(note, ','), '') FROM harness_replication") == "hello"
    })
    .await;
    assert!(replicated, "row inserted on the primary never appeared on the replica");
}

#[tokio::test]
async fn password_methods_against_primary() {
    let cluster = shared_cluster();
    let port = cluster.primary_port;

    // One role per pg_hba method the router must speak to servers.
    for (user, password) in [("pgdog", "pgdog"), ("md5user", "md5pass"), ("plainuser", "plainpass"), ("trustuser", "")]
    {
        let client = cluster.connect_direct(port, user, password, "pgdog").await;
        let row = client.query_one("SELECT current_user::text", &[]).await.expect("query");
        assert_eq!(row.get::<_, String>(0), user);
    }

    // Stored password formats decide which methods can work at all.
    let formats = cluster.psql_admin(
        "SELECT rolname || '=' || left(rolpassword, 3) FROM pg_authid \
         WHERE rolname IN ('pgdog', 'md5user', 'plainuser') ORDER BY rolname",
    );
    assert_eq!(formats, "md5user=md5\npgdog=SCR\nplainuser=SCR");

    for (user, password) in [("pgdog", "wrong"), ("md5user", "wrong"), ("plainuser", "wrong")] {
        let err = cluster
            .try_connect_direct(port, user, password, "pgdog")
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in with a wrong password"));
        let code = err.code().map(|c| c.code().to_string());
        assert_eq!(code.as_deref(), Some("28P01"), "{user}: unexpected error {err}");
    }
}

#[tokio::test]
async fn replica_accepts_logins() {
    let cluster = shared_cluster();
    let client = cluster.connect_direct(cluster.replica_port, "pgdog", "pgdog", "pgdog").await;
    let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await.expect("query");
    assert!(row.get::<_, bool>(0));
}

#[test]
fn owned_cluster_is_cleaned_up_on_drop() {
    let cluster = PgCluster::start_primary_only();
    assert!(!cluster.has_replica());
    let dir = cluster.dir.clone();
    let pid = cluster.primary_pid().expect("primary running");
    assert_eq!(cluster.psql_admin("SELECT current_database()"), "pgdog");

    cluster.restart_primary();
    assert_ne!(cluster.primary_pid(), Some(pid), "restart should start a new postmaster");
    assert_eq!(cluster.psql_admin("SELECT 1"), "1");

    let pid = cluster.primary_pid().expect("primary running after restart");
    drop(cluster);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!process_alive(pid), "postmaster {pid} still running after drop");
}

/// Whether `pid` is a live process. Zombies count as dead: the postmaster is
/// orphaned once pg_ctl exits, and in some containers nobody reaps orphans.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn free_ports_are_distinct() {
    let ports: std::collections::HashSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);
}

#[test]
fn rendered_router_config_is_valid_toml() {
    let cluster = shared_cluster();
    let config = router_config(cluster, "max_client_conn = 50", "[pools.default]\nmax_pool_size = 4", 1, 2, 3);
    let parsed: toml::Table = config.parse().expect("router config parses");
    let general = parsed["general"].as_table().expect("[general]");
    assert_eq!(general["port"].as_integer(), Some(1));
    assert_eq!(general["max_client_conn"].as_integer(), Some(50));
    assert_eq!(parsed["pools"]["default"]["max_pool_size"].as_integer(), Some(4));
    let databases = parsed["databases"].as_array().expect("[[databases]]");
    assert_eq!(databases.len(), 2);
    assert_eq!(databases[0]["port"].as_integer(), Some(i64::from(cluster.primary_port)));
    assert_eq!(databases[1]["role"].as_str(), Some("replica"));

    let users: toml::Table = default_users().parse().expect("users parse");
    assert_eq!(users["users"].as_array().map(Vec::len), Some(3));
}

#[test]
fn servers_speak_verified_tls_after_enable_ssl() {
    let cluster = shared_cluster();
    let ca = cluster.enable_ssl();
    assert_eq!(cluster.enable_ssl(), ca, "second call reuses the CA");
    for port in [cluster.primary_port, cluster.replica_port] {
        let conninfo = format!("dbname=pgdog sslmode=verify-full sslrootcert={}", ca.display());
        let out = psql_tcp(
            port,
            "pgdog",
            "pgdog",
            &conninfo,
            &["-XAtc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
        );
        assert!(out.status.success(), "port {port}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    }
}

#[test]
fn certificates_are_pem_with_private_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path());
    let pairs =
        [self_signed_cert(dir.path()), ca.server_cert(dir.path(), "router"), ca.client_cert(dir.path(), "pgdog")];
    for (cert, key) in pairs {
        let cert_text = std::fs::read_to_string(&cert).expect("read cert");
        assert!(cert_text.starts_with("-----BEGIN CERTIFICATE-----"), "{}", cert.display());
        let key_text = std::fs::read_to_string(&key).expect("read key");
        assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----"), "{}", key.display());
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).expect("stat key").permissions());
        assert_eq!(mode & 0o077, 0, "{} readable by others", key.display());
    }
}
