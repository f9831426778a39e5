//! pgdog-config-gen end to end: the built binary renders the product
//! templates (`config/pgdog.toml.tmpl`, `config/users.toml.tmpl`) for the
//! shared test cluster from a values file plus flags, the router starts on
//! exactly the rendered files, and a client queries through it; the rendered
//! `[admin]`, `[metrics]` and `[api]` sections are in force. A bad value
//! writes nothing.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pgdog_tests::{config_gen_bin, free_port, shared_cluster, workspace_dir, RouterProcess};

/// The role the rendered `users.toml` names (AppUser); created on the cluster
/// with this password, which the router reads from [`PASSWORD_ENV`].
const APP_USER: &str = "configgen_app";
const APP_PASSWORD: &str = "configgen-e2e-pw";
/// AppPasswordEnv: the variable the rendered `password_env` names.
const PASSWORD_ENV: &str = "CONFIGGEN_E2E_PASSWORD";

/// Run `pgdog-config-gen` from the workspace root (templates by relative
/// path, as CI does) with an empty environment, so nothing from the test
/// process's environment leaks into the variables.
fn config_gen(args: &[&str]) -> Output {
    Command::new(config_gen_bin())
        .args(args)
        .current_dir(workspace_dir())
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("spawn pgdog-config-gen")
}

fn check(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "pgdog-config-gen ({what}) failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

#[tokio::test]
async fn rendered_config_serves_queries() {
    let cluster = shared_cluster();
    cluster.psql_admin(&format!("CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'"));

    let dir = tempfile::tempdir().expect("temp dir");
    let (port, admin_port, metrics_port, api_port) = (free_port(), free_port(), free_port(), free_port());
    let values = dir.path().join("values.toml");
    std::fs::write(
        &values,
        format!(
            "ClusterName = \"e2e\"\n\
             Namespace = \"tests\"\n\
             DatabaseName = \"pgdog\"\n\
             ListenHost = \"127.0.0.1\"\n\
             Port = {port}\n\
             AdminPort = {admin_port}\n\
             MetricsPort = {metrics_port}\n\
             ApiPort = {api_port}\n\
             MetricsPrefix = \"configgen_e2e\"\n\
             AdminUsers = \"ops, {APP_USER}\"\n\
             PrimaryHost = \"127.0.0.1\"\n\
             PostgresPort = {primary}\n\
             ReplicaHost = \"127.0.0.1\"\n\
             ReplicaPort = {replica}\n\
             PoolMode = \"statement\"\n\
             MaxPoolSize = 4\n\
             AppUser = \"{APP_USER}\"\n\
             AppPasswordEnv = \"{PASSWORD_ENV}\"\n\
             \n\
             [[ShardedTables]]\n\
             Name = \"orders\"\n\
             Column = \"customer_id\"\n\
             Shards = 4\n",
            primary = cluster.primary_port,
            replica = cluster.replica_port,
        ),
    )
    .expect("write values.toml");

    let config = dir.path().join("pgdog.toml");
    let users = dir.path().join("users.toml");
    // Flags beat the values file.
    check(
        config_gen(&[
            "-template",
            "config/pgdog.toml.tmpl",
            "-values",
            path(&values),
            "-shard-count",
            "8",
            "-output",
            path(&config),
        ]),
        "pgdog.toml",
    );
    check(
        config_gen(&[
            "-template",
            "config/users.toml.tmpl",
            "-values",
            path(&values),
            "-config",
            path(&config),
            "-output",
            path(&users),
        ]),
        "users.toml",
    );
    let config_toml = std::fs::read_to_string(&config).expect("read rendered pgdog.toml");
    let users_toml = std::fs::read_to_string(&users).expect("read rendered users.toml");
    for expect in [
        format!("host = \"127.0.0.1\"\nport = {port}\n"),
        format!("port = {}\nrole = \"primary\"", cluster.primary_port),
        format!("port = {}\nrole = \"replica\"", cluster.replica_port),
        "pool_mode = \"statement\"".to_string(),
        "default_shard_count = 8".to_string(),
        "[[sharding.tables]]\nname = \"orders\"\ncolumn = \"customer_id\"\nshards = 4".to_string(),
        format!("[admin]\nadmin_users = [\"ops\", \"{APP_USER}\"]\n"),
        format!("[api]\nport = {api_port}\n"),
    ] {
        assert!(config_toml.contains(&expect), "{expect:?} in rendered pgdog.toml:\n{config_toml}");
    }
    assert!(users_toml.contains(&format!("password_env = \"{PASSWORD_ENV}\"")), "{users_toml}");

    let router = RouterProcess::start_with_env(&config_toml, &users_toml, &[(PASSWORD_ENV, APP_PASSWORD)]);
    let client = router.connect(APP_USER, APP_PASSWORD, "pgdog").await;
    let row = client.query_one("SELECT 1::int4, current_user::text", &[]).await.expect("SELECT 1");
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, String>(1), APP_USER);

    // The rendered pool_mode is in force: statement mode refuses transaction blocks.
    let err = client.batch_execute("BEGIN; SELECT 1").await.expect_err("BEGIN in statement mode");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
    let row = client.query_one("SELECT 2::int4", &[]).await.expect("query after the refused BEGIN");
    assert_eq!(row.get::<_, i32>(0), 2);

    // [admin] admin_users lets the app user into the console, [api] port
    // and [metrics] metric_prefix are where the router serves.
    assert_eq!(router.api_port, api_port);
    let admin = pgdog_tests::psql_tcp(admin_port, APP_USER, APP_PASSWORD, "pgdog", &["-c", "SHOW VERSION"]);
    assert!(admin.status.success(), "admin console: {}", String::from_utf8_lossy(&admin.stderr));
    assert_eq!(pgdog_tests::http_get(api_port, "/healthz", &[]).status, 200);
    let metrics = pgdog_tests::http_get(metrics_port, "/metrics", &[]);
    assert!(metrics.body.contains("configgen_e2e_queries_total"), "{}", metrics.body);
}

#[test]
fn bad_value_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "ClusterName: e2e\nShardCount: 0\n").expect("write values.yaml");
    for template in ["config/pgdog.toml.tmpl", "config/users.toml.tmpl"] {
        let output = dir.path().join("out.toml");
        let out = config_gen(&["-template", template, "-values", path(&values), "-output", path(&output)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{template}: ShardCount 0 accepted");
        assert_eq!(out.status.code(), Some(1), "{template}: {stderr}");
        assert!(stderr.contains("ShardCount (from values file): \"0\" is not an integer in 1..=1024"), "{stderr}");
        assert!(!output.exists(), "{template}: output written despite the error");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read temp dir").map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("values.yaml")]);
}
