//! Runs the built `pgdog-config-gen` the way CI and init containers do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The binary, run from the workspace root with an empty environment (plus `env`).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgdog-config-gen"));
    cmd.current_dir(root()).env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    stdout(&out)
}

fn golden(name: &str) -> String {
    std::fs::read_to_string(root().join("configgen/tests/golden").join(name)).unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn product_invocation_renders_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("pgdog.toml");
    let out = run(
        &[
            "-template",
            "config/pgdog.toml.tmpl",
            "-output",
            s(&output),
            "-cluster-name",
            "my-cluster",
            "-namespace",
            "production",
            "-shard-count",
            "64",
        ],
        &[],
    );
    assert_eq!(ok(out), "");
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(text.contains("host = \"my-cluster-rw.production.svc.cluster.local\""), "{text}");
    assert!(text.contains("host = \"my-cluster-ro.production.svc.cluster.local\""), "{text}");
    assert!(text.contains("default_shard_count = 64"), "{text}");
    assert!(ok(run(&["--check", s(&output)], &[])).contains(": ok"));
    // Only the output file is left behind (no temporary file).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn golden_defaults_and_custom_values() {
    assert_eq!(ok(run(&["-template", "config/pgdog.toml.tmpl"], &[])), golden("pgdog.default.toml"));
    assert_eq!(ok(run(&["-template", "config/users.toml.tmpl", "-output", "-"], &[])), golden("users.default.toml"));
    let values = "configgen/tests/golden/custom.values.toml";
    let custom = ok(run(
        &["-template", "config/pgdog.toml.tmpl", "-values", values, "-replica-host", "orders-replica.example.internal"],
        &[],
    ));
    assert_eq!(custom, golden("pgdog.custom.toml"));
    assert_eq!(ok(run(&["-template", "config/users.toml.tmpl", "-values", values], &[])), golden("users.custom.toml"));
}

#[test]
fn rendered_pair_loads_in_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgdog.toml");
    let users = dir.path().join("users.toml");
    ok(run(&["-template", "config/pgdog.toml.tmpl", "-output", s(&config), "-tls-enabled"], &[]));
    ok(run(&["-template", "config/users.toml.tmpl", "-output", s(&users), "-config", s(&config)], &[]));
    let out = run(&["--check", s(&config), s(&users)], &[("PGDOG_APP_PASSWORD", "secret")]);
    assert!(ok(out).contains(": ok"));
}

#[test]
fn every_product_flag_and_go_and_gnu_forms() {
    let out = ok(run(
        &[
            "-template=config/pgdog.toml.tmpl",
            "--cluster-name",
            "c1",
            "-namespace=n1",
            "-database-name",
            "db1",
            "-shard-count",
            "7",
            "-pool-mode",
            "statement",
            "-max-pool-size",
            "9",
            "-tls-enabled=true",
        ],
        &[],
    ));
    for expect in [
        "host = \"c1-rw.n1.svc.cluster.local\"",
        "name = \"db1\"",
        "default_shard_count = 7",
        "pool_mode = \"statement\"",
        "max_pool_size = 9",
        "tls_mode = \"require\"",
    ] {
        assert!(out.contains(expect), "{expect} in {out}");
    }
}

#[test]
fn precedence_flag_env_values_default() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.json");
    std::fs::write(&values, r#"{"ClusterName": "file", "Namespace": "file-ns", "ShardCount": 3, "MaxPoolSize": 11}"#)
        .unwrap();
    let env = [("CLUSTER_NAME", "env"), ("NAMESPACE", "env-ns"), ("SHARD_COUNT", "5")];
    let out = ok(run(&["-template", "config/pgdog.toml.tmpl", "-values", s(&values), "-cluster-name", "flag"], &env));
    assert!(out.contains("host = \"flag-rw.env-ns.svc.cluster.local\""), "{out}");
    assert!(out.contains("default_shard_count = 5"), "{out}");
    assert!(out.contains("max_pool_size = 11"), "{out}");
    assert!(out.contains("min_pool_size = 0"), "{out}");
}

#[test]
fn bad_value_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("pgdog.toml");
    let out = run(&["-template", "config/pgdog.toml.tmpl", "-output", s(&output), "-shard-count", "0"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("ShardCount") && err.contains("1..=1024"), "{err}");
    assert!(!output.exists());

    let out = run(&["-template", "config/pgdog.toml.tmpl", "-output", s(&output)], &[("POOL_MODE", "bogus")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("PoolMode") && err.contains("transaction, session, statement"), "{err}");
    assert!(!output.exists());
}

#[test]
fn unknown_variable_names_template_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("broken.toml.tmpl");
    std::fs::write(&template, "[general]\nport = {{.Port}}\nlog_level = \"{{.Nope}}\"\n").unwrap();
    let output = dir.path().join("out.toml");
    let out = run(&["-template", s(&template), "-output", s(&output)], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("template {}:3: unknown variable .Nope", template.display())), "{err}");
    assert!(!output.exists());
}

#[test]
fn syntax_error_names_template_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("broken.toml.tmpl");
    std::fs::write(&template, "[general]\n{{if .TLSEnabled}}\ntls_mode = \"require\"\n").unwrap();
    let out = run(&["-template", s(&template)], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("template {}:2:", template.display())), "{err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn config_the_router_rejects_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("pgdog.toml");
    std::fs::write(&output, "previous").unwrap();
    // MetricsPrefix takes host-like names; the router wants a Prometheus name.
    let out =
        run(&["-template", "config/pgdog.toml.tmpl", "-output", s(&output), "-metrics-prefix", "edge-router"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("metrics.metric_prefix"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "previous");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // A users file naming a database the router config does not have.
    let out = run(&["-template", "config/users.toml.tmpl", "-config", "configgen/tests/golden/pgdog.custom.toml"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("users"), "{}", stderr(&out));
}

#[test]
fn output_dash_is_stdout() {
    let out = ok(run(&["-template", "config/pgdog.toml.tmpl", "-output", "-"], &[]));
    assert!(out.contains("[pools.default]"), "{out}");
}

#[test]
fn help_lists_variables_defaults_and_env() {
    let out = ok(run(&["--help"], &[]));
    for expect in ["--cluster-name", "CLUSTER_NAME", "[default: orochi-cloud]", "1..=1024", "TLS_ENABLED"] {
        assert!(out.contains(expect), "{expect} in {out}");
    }
    let out = run(&["-help"], &[]);
    assert!(out.status.success());
}

#[test]
fn replica_port_and_listen_host() {
    let out = ok(run(&["-template", "config/pgdog.toml.tmpl", "-postgres-port", "5433"], &[]));
    assert_eq!(out.matches("port = 5433\n").count(), 2, "replica follows PostgresPort: {out}");
    let out = ok(run(
        &["-template", "config/pgdog.toml.tmpl", "-postgres-port", "5433", "-listen-host", "127.0.0.1"],
        &[("PGDOG_REPLICA_PORT", "6543")],
    ));
    assert!(out.contains("host = \"127.0.0.1\"\nport = 5432\n"), "{out}");
    assert!(out.contains("port = 5433\nrole = \"primary\""), "{out}");
    assert!(out.contains("port = 6543\nrole = \"replica\""), "{out}");
    let out = run(&["-template", "config/pgdog.toml.tmpl", "-replica-port", "65536"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ReplicaPort (from flag -replica-port): \"65536\" is not an integer in 1..=65535"));
}

#[test]
fn sharded_tables_from_values_file() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.json");
    std::fs::write(
        &values,
        r#"{"ShardCount": 16, "ShardedTables": [{"Name": "users", "Column": "id"}, {"Name": "events", "Column": "user_id", "Shards": 8}]}"#,
    )
    .unwrap();
    let output = dir.path().join("pgdog.toml");
    ok(run(&["-template", "config/pgdog.toml.tmpl", "-values", s(&values), "-output", s(&output)], &[]));
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(
        text.ends_with(
            "default_shard_count = 16\nsharding_function = \"postgres_hash\"\n\n[[sharding.tables]]\nname = \"users\"\n\
             column = \"id\"\n\n[[sharding.tables]]\nname = \"events\"\ncolumn = \"user_id\"\nshards = 8\n"
        ),
        "{text}"
    );
    assert!(ok(run(&["--check", s(&output)], &[])).contains(": ok"));

    // A bad item names the item and field, and nothing is written.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "ShardedTables:\n  - Name: users\n    Column: id\n    Shards: 2048\n").unwrap();
    let output = dir.path().join("bad.toml");
    let out = run(&["-template", "config/pgdog.toml.tmpl", "-values", s(&bad), "-output", s(&output)], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ShardedTables[0].Shards: \"2048\" is not an integer in 1..=1024"),
        "{}",
        stderr(&out)
    );
    assert!(!output.exists());

    // A template using an item field that does not exist.
    let template = dir.path().join("tables.toml.tmpl");
    std::fs::write(&template, "{{range .ShardedTables}}\nname = \"{{.Table}}\"\n{{end}}\n").unwrap();
    let out = run(&["-template", s(&template), "-values", s(&values)], &[]);
    assert!(!out.status.success());
    let expect = format!("template {}:2: unknown field .Table of ShardedTables items", template.display());
    assert!(stderr(&out).contains(&expect), "{}", stderr(&out));
}

#[test]
fn admin_metrics_and_api_sections() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("pgdog.toml");
    let env = [("ADMIN_USERS", "ops, pgdog_admin"), ("PGDOG_API_PORT", "8181")];
    let args = ["-template", "config/pgdog.toml.tmpl", "-output", s(&output), "-metrics-prefix", "edge_router"];
    ok(run(&args, &env));
    let text = std::fs::read_to_string(&output).unwrap();
    for expect in [
        "[admin]\nadmin_users = [\"ops\", \"pgdog_admin\"]\n",
        "[metrics]\nmetric_prefix = \"edge_router\"\n",
        "[api]\nport = 8181\n",
    ] {
        assert!(text.contains(expect), "{expect} in {text}");
    }
    assert!(ok(run(&["--check", s(&output)], &[])).contains(": ok"));
    // The flag beats the environment.
    let out = ok(run(&["-template", "config/pgdog.toml.tmpl", "-admin-users", "root"], &env));
    assert!(out.contains("admin_users = [\"root\"]\n"), "{out}");

    // Bad lists and clashing ports fail naming the variable; nothing is written.
    for (args, expect) in [
        (["-admin-users", "ops,,x"], "AdminUsers (from flag -admin-users): \"ops,,x\" is not a comma-separated list"),
        (["-admin-users", "ops,ops"], "\"ops\" is listed twice"),
        (["-api-port", "6432"], "ApiPort: 6432 is already used by AdminPort"),
        (["-api-port", "65536"], "ApiPort (from flag -api-port): \"65536\" is not an integer in 1..=65535"),
    ] {
        let out = run(&[&["-template", "config/pgdog.toml.tmpl", "-output", s(&output)][..], &args[..]].concat(), &[]);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    }
    assert!(std::fs::read_to_string(&output).unwrap().contains("port = 8181"), "file replaced by a failed run");
}
