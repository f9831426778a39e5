//! Operations against a running router and real PostgreSQL: the admin
//! console (every command, PgBouncer's column names), Prometheus metrics
//! (parsed by `promtool check metrics`), the HTTP API (auth, reload, probes),
//! PAUSE/RESUME/RECONNECT with transactions in flight, SHOW CLIENTS states,
//! reloads that move the console, metrics and API listeners or change the
//! log level, shutdown letting go of paused clients, and the health-check
//! script's exit codes.
//!
//! Each test starts its own router on free ports in front of the shared
//! cluster, with `default_users()` plus the admin user `pgdog_admin`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use pgdog_tests::{
    free_port, http, http_get, pgbench_summary, pgbench_transcript, psql_tcp, router_config, shared_cluster,
    wait_until, RouterProcess,
};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const DEADLINE: Duration = Duration::from_secs(30);
use pgdog_tests::{users_with_admin, ADMIN_PASSWORD, ADMIN_USER as ADMIN};
const TOKEN: &str = "s3cret-token";

/// The PgBouncer 1.18 column lists (shared/reference/pgbouncer-admin-columns.md).
const POOLS: [&str; 16] = [
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
];
const CLIENTS: [&str; 18] = [
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
];
const STATS: [&str; 15] = [
    "database",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
];
const DATABASES: [&str; 13] = [
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool",
    "pool_mode",
    "max_connections",
    "current_connections",
    "paused",
    "disabled",
];

/// `pgdog.toml` for the shared cluster: `general` lines in `[general]`,
/// `tables` (pools, `[admin]`, `[metrics]`, ...) after it.
fn config(general: &str, tables: &str) -> String {
    router_config(shared_cluster(), general, tables, free_port(), free_port(), free_port())
}

fn start(general: &str, tables: &str) -> RouterProcess {
    RouterProcess::start(&config(general, tables), &users_with_admin())
}

async fn connect(port: u16, user: &str, password: &str, db: &str) -> Result<Client, tokio_postgres::Error> {
    pgdog_tests::connect_tcp(port, user, password, db).await
}

async fn admin(router: &RouterProcess) -> Client {
    connect(router.admin_port, ADMIN, ADMIN_PASSWORD, "pgdog_admin")
        .await
        .unwrap_or_else(|e| panic!("admin login: {e:?}\n{}", router.log()))
}

async fn app(router: &RouterProcess) -> Client {
    router.connect("pgdog", "pgdog", "pgdog").await
}

/// Column names and rows (as text) of one admin command.
async fn show(client: &Client, sql: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => columns = cols.iter().map(|c| c.name().to_string()).collect(),
            SimpleQueryMessage::Row(row) => rows.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()),
            _ => {}
        }
    }
    (columns, rows)
}

fn cell<'a>(columns: &[String], row: &'a [Option<String>], name: &str) -> &'a str {
    let i = columns.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name} in {columns:?}"));
    row[i].as_deref().unwrap_or("")
}

fn db_error(e: &tokio_postgres::Error) -> (String, String, String) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e:?}"));
    (db.code().code().to_string(), db.message().to_string(), db.detail().unwrap_or("").to_string())
}

async fn scalar(client: &Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

/// The value of one sample line `name{labels} value` whose labels contain
/// every `label=value` given; summed over matching lines.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name || !labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))) {
            continue;
        }
        *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
    }
    found
}

fn scrape(router: &RouterProcess) -> String {
    let resp = http_get(router.metrics_port, "/metrics", &[]);
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body
}

/// Runs `promtool check metrics` on the text; returns its complaints.
fn promtool(text: &str) -> std::process::Output {
    let bin = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (install promtool from Debian's prometheus package; .ci/run does)"));
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    child.wait_with_output().expect("promtool output")
}

// ---------------------------------------------------------------------------
// Metrics

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_with_promtool_and_count_queries() {
    let router = start("log_queries = true", "");
    let client = app(&router).await;
    scalar(&client, "SELECT 1").await;
    let before = scrape(&router);
    let out = promtool(&before);
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{before}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = [("database", "pgdog"), ("user", "pgdog"), ("pool", "default"), ("role", "primary")];
    for name in [
        "orochi_pgdog_connections_active",
        "orochi_pgdog_connections_idle",
        "orochi_pgdog_queries_total",
        "orochi_pgdog_query_duration_seconds_bucket",
        "orochi_pgdog_query_duration_seconds_count",
        "orochi_pgdog_pool_size",
        "orochi_pgdog_pool_available",
        "orochi_pgdog_clients_waiting",
        "orochi_pgdog_client_wait_seconds_total",
        "orochi_pgdog_server_connections_opened_total",
        "orochi_pgdog_server_connections_closed_total",
        "orochi_pgdog_bytes_received_total",
        "orochi_pgdog_bytes_sent_total",
        "orochi_pgdog_transactions_total",
    ] {
        assert!(sample(&before, name, &pool).is_some(), "{name} missing for the pgdog pool:\n{before}");
    }
    assert!(sample(&before, "orochi_pgdog_reloads_total", &[("outcome", "success")]).is_some(), "{before}");
    assert_eq!(sample(&before, "orochi_pgdog_pool_size", &pool), Some(20.0));

    let queries = sample(&before, "orochi_pgdog_queries_total", &pool).unwrap_or(0.0);
    let received = sample(&before, "orochi_pgdog_bytes_received_total", &pool).unwrap_or(0.0);
    for i in 0..10 {
        scalar(&client, &format!("SELECT {i}")).await;
    }
    let _ = client.simple_query("SELECT * FROM no_such_table").await.expect_err("missing table");
    // The client has the error as soon as the ErrorResponse arrives, which
    // may be before the router saw the ReadyForQuery that counts the query:
    // one more query on the same session orders the two.
    scalar(&client, "SELECT 'after the error'").await;
    let after = scrape(&router);
    let q = sample(&after, "orochi_pgdog_queries_total", &pool).unwrap_or(0.0);
    assert!(q >= queries + 12.0, "queries_total {queries} -> {q}");
    assert!(sample(&after, "orochi_pgdog_bytes_received_total", &pool).unwrap_or(0.0) > received);
    let count = sample(&after, "orochi_pgdog_query_duration_seconds_count", &pool).unwrap_or(0.0);
    assert!(count >= q, "histogram count {count} < queries {q}");
    // 42P01 undefined_table is class 42.
    assert!(sample(&after, "orochi_pgdog_errors_total", &[("class", "42")]).unwrap_or(0.0) >= 1.0, "{after}");
    // log_queries: one line per query, with duration and pool.
    assert!(router.wait_for_log("SELECT 9", DEADLINE), "query not logged:\n{}", router.log());
    let line = router.log().lines().find(|l| l.contains("SELECT 9")).unwrap_or_default().to_string();
    assert!(line.contains("duration_ms") && line.contains("pgdog@pgdog"), "{line}");

    // Counters survive a reload (they live in the pools a reload keeps).
    let admin = admin(&router).await;
    admin.simple_query("RELOAD").await.expect("RELOAD");
    let reloaded = scrape(&router);
    assert!(sample(&reloaded, "orochi_pgdog_queries_total", &pool).unwrap_or(0.0) >= q, "counter reset by reload");
    assert_eq!(sample(&reloaded, "orochi_pgdog_reloads_total", &[("outcome", "success")]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn metric_prefix_comes_from_config() {
    let router = start("", "[metrics]\nmetric_prefix = \"edge_router\"\n");
    let text = scrape(&router);
    assert!(text.contains("edge_router_queries_total"), "{text}");
    assert!(!text.contains("orochi_pgdog_"), "{text}");
    assert!(promtool(&text).status.success());
}

/// The read/write classifier's cache, as `/metrics`, SHOW QUERY_CACHE and
/// the API report it: repeated reads through a split router are hits, and
/// a reload that rebuilds the classifier does not reset the counters.
#[tokio::test(flavor = "multi_thread")]
async fn query_cache_hits_grow_with_repeated_reads() {
    let base = config("", "[query_routing]\nread_write_split = true\nquery_cache_size = 500\n");
    let router = RouterProcess::start_with_env(&base, &users_with_admin(), &[("PGDOG_API_TOKEN", TOKEN)]);
    let admin = admin(&router).await;
    let cache = |text: &str, what: &str| sample(text, &format!("orochi_pgdog_query_cache_{what}"), &[]);

    // Before any split session: every worker's row, nothing built yet.
    let (cols, rows) = show(&admin, "SHOW QUERY_CACHE").await;
    assert_eq!(cols, ["worker", "hits", "misses", "hit_rate", "entries", "capacity"]);
    assert_eq!(rows.len(), 2, "one row per worker (workers = 2): {rows:?}");
    for row in &rows {
        assert_eq!((cell(&cols, row, "hits"), cell(&cols, row, "capacity")), ("0", "0"), "{rows:?}");
        assert_eq!(row[3], None, "hit_rate is NULL before the first lookup: {rows:?}");
    }
    let before = scrape(&router);
    assert_eq!(cache(&before, "hits_total"), Some(0.0), "{before}");
    assert_eq!(cache(&before, "capacity"), Some(0.0), "{before}");

    // One shape in simple protocol, one in extended: a miss each, then hits.
    let client = app(&router).await;
    for i in 0..20 {
        scalar(&client, &format!("SELECT pg_is_in_recovery(), {i}")).await;
    }
    let simple = scrape(&router);
    let hits = cache(&simple, "hits_total").unwrap_or(0.0);
    assert!(hits >= 19.0, "20 reads of one shape, {hits} hits:\n{simple}");
    assert!(cache(&simple, "misses_total").unwrap_or(0.0) >= 1.0, "{simple}");
    for i in 0..20i32 {
        let row = client.query_one("SELECT $1::int + 1", &[&i]).await.expect("extended read");
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    let extended = scrape(&router);
    let out = promtool(&extended);
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let hits_ext = cache(&extended, "hits_total").unwrap_or(0.0);
    assert!(hits_ext >= hits + 19.0, "extended reads: hits {hits} -> {hits_ext}");
    assert!(cache(&extended, "entries").unwrap_or(0.0) >= 2.0, "{extended}");
    // The client's worker built one classifier of query_cache_size shapes.
    assert_eq!(cache(&extended, "capacity"), Some(500.0), "{extended}");

    // The console agrees, per worker.
    let (cols, rows) = show(&admin, "SHOW QUERY_CACHE").await;
    let used = rows.iter().find(|r| cell(&cols, r, "capacity") == "500").expect("the client's worker");
    let hits_row: u64 = cell(&cols, used, "hits").parse().unwrap();
    assert!(hits_row as f64 >= hits_ext, "{rows:?}");
    let rate: f64 = cell(&cols, used, "hit_rate").parse().unwrap();
    assert!(rate > 0.8, "hit rate {rate}: {rows:?}");
    // And the API.
    let auth = format!("Bearer {TOKEN}");
    let api = http_get(router.api_port, "/api/v1/query_cache", &[("Authorization", &auth)]).json();
    let total: u64 = api.as_array().expect("array").iter().map(|w| w["hits"].as_u64().unwrap_or(0)).sum();
    assert!(total >= hits_row, "{api}");
    assert!(api.as_array().unwrap().iter().any(|w| w["hit_rate"].as_f64().is_some_and(|r| r > 0.8)), "{api}");

    // A reload that changes the cache size rebuilds the classifier for new
    // sessions; the counters carry on.
    router.write_config(&base.replace("query_cache_size = 500", "query_cache_size = 300"));
    admin.simple_query("RELOAD").await.expect("RELOAD");
    let later = app(&router).await;
    for i in 0..5 {
        scalar(&later, &format!("SELECT pg_is_in_recovery(), {i}")).await;
    }
    let reloaded = scrape(&router);
    assert!(cache(&reloaded, "hits_total").unwrap_or(0.0) >= hits_ext + 4.0, "counter went back:\n{reloaded}");
    // The first session keeps the classifier it logged in with (and its
    // worker keeps it until a session logs in there after the reload):
    // whichever worker the new session landed on, both are alive.
    assert_eq!(cache(&reloaded, "capacity"), Some(800.0), "{reloaded}");
    drop(client);
}

// ---------------------------------------------------------------------------
// Admin console

#[tokio::test(flavor = "multi_thread")]
async fn psql_works_as_documented() {
    let router = start("", "");
    // No database named: libpq asks for one called like the user.
    let out = Command::new(pgdog_tests::pg_bin_dir().join("psql"))
        .args(["-X", "-h", "127.0.0.1", "-p", &router.admin_port.to_string(), "-U", ADMIN, "-c", "SHOW POOLS"])
        .env("PGPASSWORD", ADMIN_PASSWORD)
        .env_remove("PGDATABASE")
        .stdin(Stdio::null())
        .output()
        .expect("psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cl_active") && stdout.contains("pgdog"), "{stdout}");
    // Other database names are as good; several commands in one string.
    let out = psql_tcp(router.admin_port, ADMIN, ADMIN_PASSWORD, "pgbouncer", &["-c", "show version; show stats;"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("total_xact_count"));
}

#[tokio::test(flavor = "multi_thread")]
async fn show_commands_start_with_pgbouncer_columns() {
    let router = start("", "");
    let client = app(&router).await;
    client.simple_query("BEGIN").await.expect("BEGIN");
    scalar(&client, "SELECT 1").await;
    let admin = admin(&router).await;

    let (cols, rows) = show(&admin, "SHOW POOLS").await;
    assert_eq!(&cols[..16], POOLS, "SHOW POOLS");
    assert_eq!(&cols[16..19], ["role", "host", "port"]);
    let row = rows
        .iter()
        .find(|r| cell(&cols, r, "user") == "pgdog" && cell(&cols, r, "role") == "primary")
        .expect("pgdog primary pool");
    assert_eq!(cell(&cols, row, "sv_active"), "1", "a transaction holds one server");
    assert_eq!(cell(&cols, row, "cl_active"), "1");
    assert_eq!(cell(&cols, row, "pool_mode"), "transaction");

    let (cols, rows) = show(&admin, "show clients;").await;
    assert_eq!(&cols[..18], CLIENTS, "SHOW CLIENTS");
    assert_eq!(rows.len(), 1, "one client: {rows:?}");
    assert_eq!(cell(&cols, &rows[0], "type"), "C");

    let (cols, rows) = show(&admin, "SHOW SERVERS").await;
    assert_eq!(&cols[..18], CLIENTS, "SHOW SERVERS");
    let active: Vec<_> = rows.iter().filter(|r| cell(&cols, r, "state") == "active").collect();
    assert_eq!(active.len(), 1, "{rows:?}");
    let pid = scalar(&client, "SELECT pg_backend_pid()").await;
    assert_eq!(cell(&cols, active[0], "remote_pid"), pid);

    client.simple_query("COMMIT").await.expect("COMMIT");
    let (cols, rows) = show(&admin, "SHOW STATS").await;
    assert_eq!(&cols[..15], STATS, "SHOW STATS");
    let row = rows.iter().find(|r| cell(&cols, r, "database") == "pgdog").expect("pgdog stats");
    assert!(cell(&cols, row, "total_query_count").parse::<u64>().unwrap() >= 4);
    assert!(cell(&cols, row, "total_xact_count").parse::<u64>().unwrap() >= 1);

    let (cols, rows) = show(&admin, "SHOW DATABASES").await;
    assert_eq!(&cols[..13], DATABASES, "SHOW DATABASES");
    assert_eq!(rows.len(), 2, "primary and replica: {rows:?}");

    let (cols, rows) = show(&admin, "SHOW CONFIG").await;
    assert_eq!(cols, ["key", "value", "default", "changeable"]);
    assert!(rows.iter().any(|r| cell(&cols, r, "key") == "pools.default.max_pool_size"));

    let (cols, rows) = show(&admin, "SHOW VERSION").await;
    assert_eq!(cols, ["version"]);
    assert!(cell(&cols, &rows[0], "version").starts_with("pgdog-router "));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_refusals_have_sqlstates() {
    let router = start("", "");
    // A users.toml user that is not an admin: 28000.
    let err = connect(router.admin_port, "pgdog", "pgdog", "pgdog").await.expect_err("non-admin");
    assert_eq!(db_error(&err).0, "28000", "{err:?}");
    // An admin with a wrong password: 28P01.
    let err = connect(router.admin_port, ADMIN, "wrong", "x").await.expect_err("wrong password");
    assert_eq!(db_error(&err).0, "28P01");

    let admin = admin(&router).await;
    let err = admin.simple_query("SHOW FOO").await.expect_err("unknown command");
    let (code, message, detail) = db_error(&err);
    assert_eq!(code, "42601");
    assert!(message.contains("SHOW FOO"), "{message}");
    assert!(detail.contains("SHOW POOLS") && detail.contains("RECONNECT"), "{detail}");
    let err = admin.simple_query("PAUSE no_such_db").await.expect_err("unknown database");
    assert_eq!(db_error(&err).0, "3D000");
    // The extended protocol is refused cleanly, and the session goes on.
    let err = admin.query("SHOW POOLS", &[]).await.expect_err("extended protocol");
    assert_eq!(db_error(&err).0, "0A000");
    assert!(!show(&admin, "SHOW VERSION").await.1.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_reload_keeps_old_config_on_error() {
    let base = config("", "");
    let router = RouterProcess::start(&base, &users_with_admin());
    let admin = admin(&router).await;
    router.write_users(&format!("{}\n[[users]]\nname = \"broken\"\n", users_with_admin()));
    let err = admin.simple_query("RELOAD").await.expect_err("broken users.toml");
    let (code, message, _) = db_error(&err);
    assert_eq!(code, "F0000");
    assert!(message.contains("users.toml") && message.contains("users[4]"), "{message}");
    // The running configuration serves.
    assert_eq!(scalar(&app(&router).await, "SELECT 7").await, "7");

    router.write_users(&format!(
        "{}\n[[users]]\nname = \"newuser\"\npassword = \"newpass\"\ndatabase = \"pgdog\"\n\
         server_user = \"pgdog\"\nserver_password = \"pgdog\"\n",
        users_with_admin()
    ));
    admin.simple_query("reload;").await.expect("RELOAD");
    let new = router.connect("newuser", "newpass", "pgdog").await;
    assert_eq!(scalar(&new, "SELECT 8").await, "8");

    // admin.allow_reload = false refuses with 42501.
    router.write_config(&format!("{base}\n[admin]\nallow_reload = false\n"));
    admin.simple_query("RELOAD").await.expect("RELOAD applying allow_reload = false");
    let err = admin.simple_query("RELOAD").await.expect_err("reload disabled");
    assert_eq!(db_error(&err).0, "42501");
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_waits_for_transactions_and_holds_new_ones() {
    let router = start("", "");
    let admin_port = router.admin_port;
    let busy = app(&router).await;
    busy.simple_query("BEGIN").await.expect("BEGIN");
    scalar(&busy, "SELECT 1").await;

    let pausing = tokio::spawn(async move {
        let admin = connect(admin_port, ADMIN, ADMIN_PASSWORD, "pgdog").await.expect("admin");
        admin.simple_query("PAUSE pgdog").await.map(|_| ())
    });
    // PAUSE waits for the open transaction; it must not return meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pausing.is_finished(), "PAUSE returned while a transaction was open");
    // The transaction itself goes on.
    assert_eq!(scalar(&busy, "SELECT 2").await, "2");
    busy.simple_query("COMMIT").await.expect("COMMIT");
    tokio::time::timeout(DEADLINE, pausing).await.expect("PAUSE returns once idle").unwrap().expect("PAUSE");

    // A new transaction is held while paused...
    let waiter = app(&router).await;
    let held = tokio::spawn(async move { scalar(&waiter, "SELECT 42").await });
    let admin = admin(&router).await;
    let (cols, rows) = show(&admin, "SHOW POOLS").await;
    let paused = rows.iter().any(|r| cell(&cols, r, "user") == "pgdog" && cell(&cols, r, "paused") == "1");
    assert!(paused, "{rows:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "a query ran while the pool was paused");
    // ...and runs on RESUME.
    admin.simple_query("RESUME").await.expect("RESUME");
    let answer = tokio::time::timeout(DEADLINE, held).await.expect("query after RESUME").unwrap();
    assert_eq!(answer, "42");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_recycles_server_connections() {
    let router = start("", "");
    let client = app(&router).await;
    let first = scalar(&client, "SELECT pg_backend_pid()").await;
    // A transaction open across RECONNECT keeps its server until it ends.
    client.simple_query("BEGIN").await.expect("BEGIN");
    assert_eq!(scalar(&client, "SELECT pg_backend_pid()").await, first);
    let admin = admin(&router).await;
    admin.simple_query("RECONNECT").await.expect("RECONNECT");
    assert_eq!(scalar(&client, "SELECT pg_backend_pid()").await, first, "server changed mid-transaction");
    client.simple_query("COMMIT").await.expect("COMMIT");
    let second = scalar(&client, "SELECT pg_backend_pid()").await;
    assert_ne!(second, first, "RECONNECT did not recycle the server connection");
    // The old backend is gone from the server.
    let cluster = shared_cluster();
    let gone = wait_until(DEADLINE, || async {
        cluster.psql_admin(&format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {first}")) == "0"
    })
    .await;
    assert!(gone, "backend {first} still connected");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_command_stops_the_router() {
    let mut router = start("", "");
    let admin = admin(&router).await;
    let _ = admin.simple_query("SHUTDOWN").await;
    let status = router.wait_exit(DEADLINE).expect("router exits after SHUTDOWN");
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------------------
// HTTP API

#[tokio::test(flavor = "multi_thread")]
async fn api_endpoints_need_the_token() {
    // No token configured: probes work, the rest is disabled (404), not open.
    let router = start("", "");
    assert_eq!(http_get(router.api_port, "/healthz", &[]).status, 200);
    assert_eq!(http_get(router.api_port, "/readyz", &[]).status, 200);
    let resp = http_get(router.api_port, "/api/v1/pools", &[("Authorization", "Bearer anything")]);
    assert_eq!(resp.status, 404, "{}", resp.body);
    assert!(resp.json()["error"].as_str().unwrap_or("").contains("disabled"));
    drop(router);

    // Read/write splitting over the shared cluster's primary and replica,
    // plus a replica nobody listens on, so the pool listing has health to show.
    let dead = free_port();
    let split = "[query_routing]\nread_write_split = true\nhealth_check_interval_ms = 200\n";
    let cfg = format!(
        "{}\n[[databases]]\nname = \"pgdog\"\nhost = \"127.0.0.1\"\nport = {dead}\nrole = \"replica\"\n",
        config("", split)
    );
    let router = RouterProcess::start_with_env(&cfg, &users_with_admin(), &[("PGDOG_API_TOKEN", TOKEN)]);
    let port = router.api_port;
    for path in ["/api/v1/pools", "/api/v1/clients", "/api/v1/servers", "/api/v1/config", "/api/v1/openapi.json"] {
        assert_eq!(http_get(port, path, &[]).status, 401, "{path} without a token");
        assert_eq!(http_get(port, path, &[("Authorization", "Bearer wrong")]).status, 401, "{path} wrong token");
        let ok = http_get(port, path, &[("Authorization", &format!("Bearer {TOKEN}"))]);
        assert_eq!(ok.status, 200, "{path}: {}", ok.body);
        ok.json();
    }
    let resp = http(port, "POST", "/api/v1/reload", &[], "").expect("POST");
    assert_eq!(resp.status, 401);
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));

    let auth = format!("Bearer {TOKEN}");
    let pools = http_get(port, "/api/v1/pools", &[("Authorization", &auth)]).json();
    let pool = pools.as_array().unwrap().iter().find(|p| p["user"] == "pgdog").expect("pgdog pool").clone();
    assert_eq!(pool["pool_mode"], "transaction");
    assert!(pool["sv_idle"].is_number());
    // Every SHOW POOLS column, health ones included, is a field of each pool.
    let admin = admin(&router).await;
    let (cols, _) = show(&admin, "SHOW POOLS").await;
    let mut fields: Vec<&String> = pool.as_object().expect("object").keys().collect();
    let mut wanted: Vec<&String> = cols.iter().collect();
    fields.sort();
    wanted.sort();
    assert_eq!(fields, wanted);
    // Health as the monitor sees it: the live replica measured and readable,
    // the dead one banned with its error, the primary never lagging.
    let pool_at = |pools: &serde_json::Value, port: u16| {
        pools.as_array().unwrap().iter().find(|p| p["user"] == "pgdog" && p["port"] == port).cloned().unwrap()
    };
    let cluster = shared_cluster();
    let measured = wait_until(DEADLINE, || async {
        let pools = http_get(port, "/api/v1/pools", &[("Authorization", &auth)]).json();
        pool_at(&pools, cluster.replica_port)["replica_lag_ms"].is_u64() && pool_at(&pools, dead)["banned"] == 1
    })
    .await;
    let pools = http_get(port, "/api/v1/pools", &[("Authorization", &auth)]).json();
    assert!(measured, "health never reported: {pools:#}");
    let (primary, replica, gone) =
        (pool_at(&pools, cluster.primary_port), pool_at(&pools, cluster.replica_port), pool_at(&pools, dead));
    assert_eq!((primary["role"].as_str(), primary["banned"].as_u64()), (Some("primary"), Some(0)), "{primary}");
    assert!(primary["replica_lag_ms"].is_null() && primary["last_error"].is_null(), "{primary}");
    assert_eq!((replica["role"].as_str(), replica["banned"].as_u64()), (Some("replica"), Some(0)), "{replica}");
    assert!(replica["last_error"].is_null(), "{replica}");
    assert!(gone["replica_lag_ms"].is_null(), "{gone}");
    assert!(gone["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{gone}");
    let config = http_get(port, "/api/v1/config", &[("Authorization", &auth)]);
    assert!(!config.body.contains(ADMIN_PASSWORD) && !config.body.contains(TOKEN), "secret in {}", config.body);
    assert!(config.body.contains("<redacted>"));
    let doc = http_get(port, "/api/v1/openapi.json", &[("Authorization", &auth)]).json();
    assert_eq!(doc["openapi"], "3.0.3");
    for field in ["banned", "replica_lag_ms", "last_error"] {
        assert!(
            doc["components"]["schemas"]["Pool"]["properties"][field].is_object(),
            "{field} not in the Pool schema"
        );
    }
    assert_eq!(http_get(port, "/nowhere", &[]).status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_reload_rejects_a_broken_file_with_its_location() {
    let base = config("", "");
    let router = RouterProcess::start_with_env(&base, &users_with_admin(), &[("PGDOG_API_TOKEN", TOKEN)]);
    let auth = format!("Bearer {TOKEN}");
    router.write_config(&format!("{base}\n[pools.default]\nmax_pool_size = 0\n"));
    let resp = http(router.api_port, "POST", "/api/v1/reload", &[("Authorization", &auth)], "").expect("POST");
    assert_eq!(resp.status, 400, "{}", resp.body);
    let body = resp.json();
    assert_eq!(body["key"], "pools.default.max_pool_size", "{body}");
    assert!(body["file"].as_str().unwrap_or("").ends_with("pgdog.toml"), "{body}");
    assert!(body["line"].as_u64().unwrap_or(0) > 1, "{body}");
    assert_eq!(scalar(&app(&router).await, "SELECT 3").await, "3", "old config no longer serves");
    let metrics = scrape(&router);
    assert_eq!(sample(&metrics, "orochi_pgdog_reloads_total", &[("outcome", "failure")]), Some(1.0));
}

/// A reload that raises the pool size and adds a user while pgbench runs:
/// zero failed transactions, the new size in force, the new user in.
#[tokio::test(flavor = "multi_thread")]
async fn api_reload_under_pgbench_fails_no_transaction() {
    let pools = "[pools.default]\nmax_pool_size = 2\n";
    let base = config("", pools);
    let router = RouterProcess::start_with_env(&base, &users_with_admin(), &[("PGDOG_API_TOKEN", TOKEN)]);
    let script = router.dir.path().join("txn.sql");
    std::fs::write(&script, "BEGIN;\nSELECT 1;\nSELECT pg_sleep(0.002);\nCOMMIT;\n").expect("script");
    let port = router.port;
    let script_arg = script.display().to_string();
    let bench = std::thread::spawn(move || {
        Command::new(pgdog_tests::pg_bin_dir().join("pgbench"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "pgdog", "-n", "-c", "10", "-T", "6"])
            .args(["-f", &script_arg, "pgdog"])
            .env("PGPASSWORD", "pgdog")
            .stdin(Stdio::null())
            .output()
            .expect("pgbench")
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    router.write_config(&base.replace("max_pool_size = 2", "max_pool_size = 4"));
    router.write_users(&format!(
        "{}\n[[users]]\nname = \"added\"\npassword = \"addedpw\"\ndatabase = \"pgdog\"\n\
         server_user = \"pgdog\"\nserver_password = \"pgdog\"\n",
        users_with_admin()
    ));
    let auth = format!("Bearer {TOKEN}");
    let resp = http(router.api_port, "POST", "/api/v1/reload", &[("Authorization", &auth)], "").expect("POST");
    assert_eq!(resp.status, 200, "{}", resp.body);
    let added = router.connect("added", "addedpw", "pgdog").await;
    assert_eq!(scalar(&added, "SELECT 5").await, "5");
    let out = tokio::task::spawn_blocking(move || bench.join().expect("pgbench thread")).await.unwrap();
    let summary = pgbench_summary(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{}", pgbench_transcript(&out));
    let summary = summary.unwrap_or_else(|| panic!("{}", pgbench_transcript(&out)));
    assert!(summary.processed > 0);
    assert_eq!(summary.failed.unwrap_or(0), 0, "{}", pgbench_transcript(&out));
    let pools = http_get(router.api_port, "/api/v1/pools", &[("Authorization", &auth)]).json();
    let pool = pools.as_array().unwrap().iter().find(|p| p["user"] == "pgdog" && p["role"] == "primary").cloned();
    assert_eq!(pool.expect("pool")["pool_size"], 4);
}

/// Adding and removing a replica by reload drops no client connection, and
/// the primary pool (kept by the reload) keeps its counters.
#[tokio::test(flavor = "multi_thread")]
async fn reload_adding_and_removing_a_replica_keeps_clients() {
    let cluster = shared_cluster();
    let full = config("", "");
    let replica = format!(
        "\n[[databases]]\nname = \"pgdog\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"replica\"\n",
        cluster.replica_port
    );
    assert!(full.contains(&replica), "{full}");
    let primary_only = full.replace(&replica, "");
    let router = RouterProcess::start(&primary_only, &users_with_admin());
    let admin = admin(&router).await;
    let clients: Vec<Client> = connect_many(&router, 5).await;
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(scalar(c, &format!("SELECT {i}")).await, i.to_string());
    }
    let pool = [("user", "pgdog"), ("role", "primary")];
    let before = sample(&scrape(&router), "orochi_pgdog_queries_total", &pool).unwrap_or(0.0);

    router.write_config(&full);
    admin.simple_query("RELOAD").await.expect("RELOAD adding a replica");
    let (cols, rows) = show(&admin, "SHOW DATABASES").await;
    assert!(rows.iter().any(|r| cell(&cols, r, "role") == "replica"), "{rows:?}");
    for c in &clients {
        assert_eq!(scalar(c, "SELECT 1").await, "1", "client dropped by adding a replica");
    }
    router.write_config(&primary_only);
    admin.simple_query("RELOAD").await.expect("RELOAD removing the replica");
    for c in &clients {
        assert_eq!(scalar(c, "SELECT 2").await, "2", "client dropped by removing a replica");
    }
    let after = sample(&scrape(&router), "orochi_pgdog_queries_total", &pool).unwrap_or(0.0);
    assert!(after >= before + 10.0, "primary counters reset: {before} -> {after}");
}

async fn connect_many(router: &RouterProcess, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(app(router).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_reports_unreachable_primary_and_draining() {
    // A primary nobody listens on.
    let dead = free_port();
    let cfg = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {}\nadmin_port = {}\nmetrics_port = {}\nworkers = 1\n\n\
         [[databases]]\nname = \"pgdog\"\nhost = \"127.0.0.1\"\nport = {dead}\n",
        free_port(),
        free_port(),
        free_port()
    );
    let router = RouterProcess::start(&cfg, &users_with_admin());
    let resp = http_get(router.api_port, "/readyz", &[]);
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert!(resp.json()["reason"].as_str().unwrap_or("").contains(&dead.to_string()), "{}", resp.body);
    assert_eq!(http_get(router.api_port, "/healthz", &[]).status, 200);
    drop(router);

    // Draining: a transaction keeps the router up after SIGTERM.
    let router = start("", "");
    let client = app(&router).await;
    client.simple_query("BEGIN").await.expect("BEGIN");
    router.signal(libc::SIGTERM);
    let draining = wait_until(DEADLINE, || async { http_get(router.api_port, "/readyz", &[]).status == 503 }).await;
    assert!(draining, "readyz still 200 while draining");
    let body = http_get(router.api_port, "/readyz", &[]).json();
    assert!(body["reason"].as_str().unwrap_or("").contains("draining"), "{body}");
    client.simple_query("COMMIT").await.expect("COMMIT");
}

// ---------------------------------------------------------------------------
// Health-check script

fn health_check(router_port: u16, admin_port: u16, metrics_port: u16, verbose: bool) -> std::process::Output {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/health-check.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    if verbose {
        cmd.arg("-v");
    }
    cmd.env("PGDOG_HOST", "127.0.0.1")
        .env("PGDOG_PORT", router_port.to_string())
        .env("PGDOG_ADMIN_PORT", admin_port.to_string())
        .env("PGDOG_METRICS_PORT", metrics_port.to_string())
        .env("PGDOG_HEALTH_USER", "pgdog")
        .env("PGDOG_HEALTH_PASSWORD", "pgdog")
        .env("PGDOG_HEALTH_DATABASE", "pgdog")
        .env("PGDOG_ADMIN_USER", ADMIN)
        .env("PGDOG_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("PATH", format!("{}:{}", pgdog_tests::pg_bin_dir().display(), std::env::var("PATH").unwrap_or_default()))
        .stdin(Stdio::null())
        .output()
        .expect("run health-check.sh")
}

#[tokio::test(flavor = "multi_thread")]
async fn health_check_script_exit_codes() {
    let router = start("", "");
    let out = health_check(router.port, router.admin_port, router.metrics_port, true);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "healthy router judged unhealthy:\n{text}");
    for check in ["pg_isready", "SELECT 1", "SHOW POOLS", "/metrics"] {
        assert!(text.contains(check), "-v does not report {check}:\n{text}");
    }
    // Optional checks failing (wrong admin and metrics ports) do not fail it.
    let out = health_check(router.port, free_port(), free_port(), false);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (port, admin, metrics) = (router.port, router.admin_port, router.metrics_port);
    drop(router);
    let out = health_check(port, admin, metrics, true);
    assert_eq!(out.status.code(), Some(1), "router down judged healthy:\n{}", String::from_utf8_lossy(&out.stdout));
}

// ---------------------------------------------------------------------------
// SHOW CLIENTS states

/// An app client that names itself, to find its SHOW CLIENTS row.
async fn app_named(router: &RouterProcess, name: &str) -> Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(router.port)
        .user("pgdog")
        .password("pgdog")
        .dbname("pgdog")
        .application_name(name)
        .connect_timeout(Duration::from_secs(10))
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("app login: {e:?}\n{}", router.log()));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `column` of the SHOW CLIENTS row whose application_name is `name`.
async fn client_field(admin: &Client, name: &str, column: &str) -> String {
    let (cols, rows) = show(admin, "SHOW CLIENTS").await;
    rows.iter()
        .find(|r| cell(&cols, r, "application_name") == name)
        .map(|r| cell(&cols, r, column).to_string())
        .unwrap_or_else(|| panic!("no client {name} in {rows:?}"))
}

async fn wait_for_state(admin: &Client, name: &str, state: &str) {
    let reached = wait_until(DEADLINE, || async { client_field(admin, name, "state").await == state }).await;
    assert!(reached, "{name} never {state}: {:?}", show(admin, "SHOW CLIENTS").await.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn show_clients_reports_idle_active_and_waiting() {
    let router = start("", "");
    let admin = admin(&router).await;
    let idle = app_named(&router, "idle-one").await;
    let busy = app_named(&router, "busy-one").await;

    // Between transactions a client holds no server: idle. Inside one: active.
    scalar(&idle, "SELECT 1").await;
    wait_for_state(&admin, "idle-one", "idle").await;
    busy.simple_query("BEGIN").await.expect("BEGIN");
    wait_for_state(&admin, "busy-one", "active").await;
    assert_eq!(client_field(&admin, "idle-one", "state").await, "idle");
    assert_eq!(client_field(&admin, "busy-one", "wait_us").await, "0");
    busy.simple_query("COMMIT").await.expect("COMMIT");
    wait_for_state(&admin, "busy-one", "idle").await;

    // request_time is the start of the latest request, not the login.
    let connect_time = client_field(&admin, "idle-one", "connect_time").await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    scalar(&idle, "SELECT 2").await;
    let request_time = client_field(&admin, "idle-one", "request_time").await;
    assert!(request_time > connect_time, "request_time {request_time} not after connect_time {connect_time}");

    // A request held by PAUSE is waiting, and says since when.
    admin.simple_query("PAUSE pgdog").await.expect("PAUSE");
    let held = tokio::spawn(async move {
        let answer = scalar(&idle, "SELECT 42").await;
        (idle, answer)
    });
    wait_for_state(&admin, "idle-one", "waiting").await;
    let waited =
        wait_until(DEADLINE, || async { client_field(&admin, "idle-one", "wait").await.parse::<u64>().unwrap() >= 1 })
            .await;
    assert!(waited, "wait never counted: {:?}", show(&admin, "SHOW CLIENTS").await.1);
    assert!(client_field(&admin, "idle-one", "request_time").await >= request_time);
    admin.simple_query("RESUME pgdog").await.expect("RESUME");
    let (_idle, answer) = tokio::time::timeout(DEADLINE, held).await.expect("query after RESUME").unwrap();
    assert_eq!(answer, "42");
    wait_for_state(&admin, "idle-one", "idle").await;
    assert_eq!(client_field(&admin, "idle-one", "wait").await, "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn show_clients_session_mode_client_is_active() {
    let router = start("", "[pools.default]\npool_mode = \"session\"\n");
    let admin = admin(&router).await;
    let client = app_named(&router, "session-one").await;
    scalar(&client, "SELECT 1").await;
    // Session mode binds a server for the whole session, as PgBouncer shows it.
    wait_for_state(&admin, "session-one", "active").await;
}

// ---------------------------------------------------------------------------
// Shutdown and PAUSE

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_go_of_clients_held_by_pause() {
    // A shutdown timeout far beyond the deadline: only a prompt wake-up passes.
    let mut router = start("shutdown_timeout_ms = 600000", "");
    let admin = admin(&router).await;
    let client = app_named(&router, "held").await;
    scalar(&client, "SELECT 1").await;
    admin.simple_query("PAUSE").await.expect("PAUSE");
    let held = tokio::spawn(async move { client.simple_query("SELECT 42").await.map(|_| ()) });
    wait_for_state(&admin, "held", "waiting").await;

    router.signal(libc::SIGTERM);
    let result = tokio::time::timeout(DEADLINE, held).await.expect("paused client let go at shutdown").unwrap();
    let err = result.expect_err("the held query must fail");
    assert_eq!(db_error(&err).0, "57P01", "{err:?}");
    let status = router.wait_exit(DEADLINE).expect("router exits once the held client is gone");
    assert!(status.success(), "{status}");
    assert!(!router.log().contains("shutdown timeout reached"), "{}", router.log());
}

// ---------------------------------------------------------------------------
// Reload: listeners and log level

fn closed(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_err()
}

fn config_value(rows: &[Vec<Option<String>>], cols: &[String], key: &str) -> (String, String) {
    let row = rows.iter().find(|r| cell(cols, r, "key") == key).unwrap_or_else(|| panic!("no {key}"));
    (cell(cols, row, "value").to_string(), cell(cols, row, "changeable").to_string())
}

/// A config with every listener port given, the API's in `[api]`.
fn config_with_ports(admin: u16, metrics: u16, api: u16, general: &str) -> String {
    router_config(shared_cluster(), general, &format!("[api]\nport = {api}\n"), free_port(), admin, metrics)
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_moves_admin_metrics_and_api_listeners() {
    let (admin1, metrics1, api1) = (free_port(), free_port(), free_port());
    let base = config_with_ports(admin1, metrics1, api1, "");
    let router = RouterProcess::start_with_env(&base, &users_with_admin(), &[("PGDOG_API_TOKEN", TOKEN)]);
    assert_eq!((router.admin_port, router.api_port), (admin1, api1));
    let admin = admin(&router).await;

    // The admin console and metrics move by RELOAD on the console itself.
    let (admin2, metrics2) = (free_port(), free_port());
    router.write_config(&config_with_ports(admin2, metrics2, api1, ""));
    admin.simple_query("RELOAD").await.expect("RELOAD moving the console and metrics");
    // The session that ran it carries on; the new ports serve; the old close.
    let (cols, rows) = show(&admin, "SHOW CONFIG").await;
    assert_eq!(config_value(&rows, &cols, "general.admin_port"), (admin2.to_string(), "yes".into()));
    assert_eq!(config_value(&rows, &cols, "general.metrics_port").0, metrics2.to_string());
    let moved = connect(admin2, ADMIN, ADMIN_PASSWORD, "pgdog").await.expect("admin login on the new port");
    assert!(!show(&moved, "SHOW POOLS").await.1.is_empty());
    assert_eq!(http_get(metrics2, "/metrics", &[]).status, 200);
    assert!(wait_until(DEADLINE, || async { closed(admin1) && closed(metrics1) }).await, "old ports still open");

    // The API moves by its own reload endpoint; the request that moves it is answered.
    let api2 = free_port();
    router.write_config(&config_with_ports(admin2, metrics2, api2, ""));
    let auth = format!("Bearer {TOKEN}");
    let resp = http(api1, "POST", "/api/v1/reload", &[("Authorization", &auth)], "").expect("POST reload");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(http_get(api2, "/healthz", &[]).status, 200);
    assert_eq!(http_get(api2, "/api/v1/pools", &[("Authorization", &auth)]).status, 200);
    assert!(wait_until(DEADLINE, || async { closed(api1) }).await, "old API port still open");
    // Clients were never disturbed.
    assert_eq!(scalar(&app(&router).await, "SELECT 6").await, "6");
    let metrics = http_get(metrics2, "/metrics", &[]).body;
    assert_eq!(sample(&metrics, "orochi_pgdog_reloads_total", &[("outcome", "success")]), Some(2.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_to_a_taken_port_keeps_the_old_listener_and_config() {
    let (admin1, metrics1, api1) = (free_port(), free_port(), free_port());
    let base = config_with_ports(admin1, metrics1, api1, "");
    let router = RouterProcess::start_with_env(&base, &users_with_admin(), &[("PGDOG_API_TOKEN", TOKEN)]);
    let admin = admin(&router).await;
    // Someone else holds the port the new configuration asks for.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a blocker");
    let taken = blocker.local_addr().expect("blocker address").port();
    let (free_metrics, free_api) = (free_port(), free_port());
    let moved = config_with_ports(taken, free_metrics, free_api, "")
        .replace("[api]", "[pools.default]\nmax_pool_size = 7\n\n[api]");
    router.write_config(&moved);

    let err = admin.simple_query("RELOAD").await.expect_err("RELOAD onto a taken port");
    let (code, message, detail) = db_error(&err);
    assert_eq!(code, "55006", "{message}");
    assert!(message.contains(&format!("cannot listen on 127.0.0.1:{taken} (admin console)")), "{message}");
    assert!(detail.contains("stays in force"), "{detail}");
    // Nothing of that reload applied: not the other listeners, not the pool size.
    let (cols, rows) = show(&admin, "SHOW CONFIG").await;
    assert_eq!(config_value(&rows, &cols, "general.admin_port").0, admin1.to_string());
    assert_eq!(config_value(&rows, &cols, "pools.default.max_pool_size").0, "20");
    assert!(closed(free_metrics) && closed(free_api), "listeners of a failed reload left open");
    connect(admin1, ADMIN, ADMIN_PASSWORD, "pgdog").await.expect("the old console still serves");
    assert_eq!(http_get(metrics1, "/metrics", &[]).status, 200);

    // The API reports the same failure: 409 naming the listener and address.
    let auth = format!("Bearer {TOKEN}");
    let resp = http(api1, "POST", "/api/v1/reload", &[("Authorization", &auth)], "").expect("POST reload");
    assert_eq!(resp.status, 409, "{}", resp.body);
    let body = resp.json();
    assert_eq!(body["listener"], "admin console", "{body}");
    assert_eq!(body["address"], format!("127.0.0.1:{taken}"), "{body}");
    let metrics = http_get(metrics1, "/metrics", &[]).body;
    assert_eq!(sample(&metrics, "orochi_pgdog_reloads_total", &[("outcome", "failure")]), Some(2.0));

    // Once the port is free, the same file applies.
    drop(blocker);
    admin.simple_query("RELOAD").await.expect("RELOAD once the port is free");
    connect(taken, ADMIN, ADMIN_PASSWORD, "pgdog").await.expect("console on the freed port");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_changes_the_log_level() {
    let (admin1, metrics1, api1) = (free_port(), free_port(), free_port());
    let at = |level: &str| config_with_ports(admin1, metrics1, api1, &format!("log_level = \"{level}\""));
    // An empty PGDOG_LOG_LEVEL leaves the level to the file.
    let router = RouterProcess::start_with_env(&at("info"), &users_with_admin(), &[("PGDOG_LOG_LEVEL", "")]);
    let admin = admin(&router).await;
    scalar(&app(&router).await, "SELECT 1").await;
    // "client logged in" is a debug event.
    assert!(!router.log().contains("client logged in"), "debug logged at info:\n{}", router.log());

    router.write_config(&at("debug"));
    admin.simple_query("RELOAD").await.expect("RELOAD to debug");
    let (cols, rows) = show(&admin, "SHOW CONFIG").await;
    assert_eq!(config_value(&rows, &cols, "general.log_level"), ("debug".into(), "yes".into()));
    scalar(&app(&router).await, "SELECT 2").await;
    assert!(router.wait_for_log("client logged in", DEADLINE), "debug not logged after reload:\n{}", router.log());

    // Directives work too, and back to warn silences info and debug.
    router.write_config(&at("warn,pgdog_router::frontend=debug"));
    admin.simple_query("RELOAD").await.expect("RELOAD to a directive");
    let before = router.log().matches("client logged in").count();
    scalar(&app(&router).await, "SELECT 3").await;
    let more = wait_until(DEADLINE, || async { router.log().matches("client logged in").count() > before }).await;
    assert!(more, "frontend debug not logged under a directive:\n{}", router.log());

    router.write_config(&at("warn"));
    admin.simple_query("RELOAD").await.expect("RELOAD to warn");
    let before = router.log().matches("client logged in").count();
    let admin_lines = router.log().matches("admin command").count();
    scalar(&app(&router).await, "SELECT 4").await;
    show(&admin, "SHOW VERSION").await;
    assert_eq!(router.log().matches("client logged in").count(), before, "{}", router.log());
    assert_eq!(router.log().matches("admin command").count(), admin_lines, "info logged at warn");

    // A bad directive fails the reload with the key named; the level stays.
    router.write_config(&at("warn,pgdog_router=loud"));
    let err = admin.simple_query("RELOAD").await.expect_err("bad log_level");
    let (code, message, _) = db_error(&err);
    assert_eq!(code, "F0000");
    assert!(message.contains("log_level"), "{message}");
}
