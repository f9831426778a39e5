//! Pooling behaviour of pgdog-router against a real PostgreSQL: pool limits
//! under pgbench load, the three pool modes, checkout timeouts, clean-up after
//! a client or a server dies mid-transaction, startup parameters on shared
//! server connections, COPY, large results and pipelining.
//!
//! Every test has a server role of its own (with a schema of the same name)
//! on the shared cluster, and a router whose only user and pool carry that
//! name too. Tests therefore count their server connections in
//! `pg_stat_activity` by user name without seeing each other's, and their
//! tables (pgbench's included, through the default `"$user", public`
//! search path) never collide.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pgdog_tests::{
    free_port, pgbench_summary, pgbench_transcript, raw_connect, router_config, shared_cluster, wait_until, PgCluster,
    RouterProcess,
};
use tokio::task::JoinSet;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

/// Password of every per-test server role.
const SERVER_PASSWORD: &str = "pooling-server-pw";
/// Password clients give the router (md5 users).
const CLIENT_PASSWORD: &str = "pooling-client-pw";
/// Generous bound for things that should happen at once; only a broken router
/// gets near it.
const DEADLINE: Duration = Duration::from_secs(20);

/// A router in front of the shared cluster with one user, `name`, which is
/// also the name of its pool and of the server role (and schema) it uses.
struct Pooler {
    router: RouterProcess,
    name: String,
}

impl Pooler {
    /// Create server role and schema `name`, then start a router whose user
    /// `name` authenticates with `auth` ("md5" or "trust") and whose pool
    /// `name` has the `pool` settings (TOML lines).
    fn start(name: &str, auth: &str, pool: &str) -> Pooler {
        let cluster = shared_cluster();
        cluster.psql_admin(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{SERVER_PASSWORD}';
             CREATE SCHEMA {name} AUTHORIZATION {name};"
        ));
        let config =
            router_config(cluster, "", &format!("[pools.{name}]\n{pool}\n"), free_port(), free_port(), free_port());
        let password = if auth == "trust" { String::new() } else { format!("password = \"{CLIENT_PASSWORD}\"\n") };
        let users = format!(
            "[[users]]\nname = \"{name}\"\n{password}database = \"pgdog\"\nauth = \"{auth}\"\npool = \"{name}\"\n\
             server_user = \"{name}\"\nserver_password = \"{SERVER_PASSWORD}\"\n"
        );
        Pooler { router: RouterProcess::start(&config, &users), name: name.to_string() }
    }

    /// Client settings for this router's user; add options before connecting.
    fn config(&self) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.router.port)
            .user(&self.name)
            .password(CLIENT_PASSWORD)
            .dbname("pgdog")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Connect with `config`; the connection is driven by the returned task,
    /// which a test may abort to drop the socket without a goodbye.
    async fn connect_with(&self, config: &Config) -> (Client, tokio::task::JoinHandle<()>) {
        match config.connect(NoTls).await {
            Ok((client, connection)) => {
                let task = tokio::spawn(async move {
                    let _ = connection.await;
                });
                (client, task)
            }
            Err(e) => panic!("connect through router as {} failed: {}\n{}", self.name, show(&e), self.log_tail()),
        }
    }

    async fn connect(&self) -> Client {
        self.connect_with(&self.config()).await.0
    }

    /// Run pgbench through the router as this user.
    fn pgbench(&self, args: &[&str]) -> std::process::Output {
        self.router.pgbench(args, &self.name, CLIENT_PASSWORD, "pgdog")
    }

    /// Run psql through the router as this user.
    fn psql(&self, args: &[&str]) -> std::process::Output {
        self.router.psql(&self.name, CLIENT_PASSWORD, "pgdog", args)
    }

    /// Server connections of this test's role, by state.
    fn server_connections(&self, state: Option<&str>) -> usize {
        count_backends(shared_cluster(), &self.name, state)
    }

    /// The end of the router log without colour codes, for assertion messages.
    fn log_tail(&self) -> String {
        self.router.log_tail(6000)
    }
}

/// Client backends logged in as `role`, optionally only those in `state`.
///
/// Counted by user name alone: the router opens its connections with
/// `application_name = pgdog-router`, but while one serves a client that set
/// its own (pgbench, psql), the router has SET the client's name on it.
fn count_backends(cluster: &PgCluster, role: &str, state: Option<&str>) -> usize {
    let filter = state.map(|s| format!(" AND state = '{s}'")).unwrap_or_default();
    let count = cluster.psql_admin(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' AND backend_type = 'client backend' AND {}{filter}",
        pgdog_tests::NOT_HEALTH_CHECK
    ));
    count.parse().unwrap_or_else(|e| panic!("count of backends {count:?}: {e}"))
}

/// Counts `role`'s server connections every few milliseconds on a thread of
/// its own, so a limit can be checked while a load runs, not only after.
struct ConnectionSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(usize, usize)>>,
}

impl ConnectionSampler {
    fn start(role: &str) -> ConnectionSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let role = role.to_string();
        let thread = std::thread::spawn(move || {
            let cluster = shared_cluster();
            let (mut max, mut samples) = (0, 0);
            loop {
                let done = flag.load(Ordering::Relaxed);
                max = max.max(count_backends(cluster, &role, None));
                samples += 1;
                if done {
                    return (max, samples);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        ConnectionSampler { stop, thread: Some(thread) }
    }

    /// Stop sampling; returns the largest count seen and how many samples
    /// were taken (at least one, after the load finished).
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("sampler thread").join().expect("sampler thread panicked")
    }
}

impl Drop for ConnectionSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sqlstate(err: &tokio_postgres::Error) -> Option<&str> {
    err.code().map(|c| c.code())
}

/// An error with what the server (or router) said; tokio-postgres' own
/// `Display` shows only "db error".
fn show(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(err) {
            Some(cause) => format!("{err}: {cause}"),
            None => err.to_string(),
        },
    }
}

/// The first row of a simple query, as text (NULL is `None`).
async fn first_row(client: &Client, sql: &str) -> Vec<Option<String>> {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {}", show(&e)));
    messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no rows"))
}

/// The single value of a one-row, one-column simple query.
async fn scalar(client: &Client, sql: &str) -> String {
    first_row(client, sql).await.remove(0).unwrap_or_else(|| panic!("{sql}: NULL"))
}

/// Whether the server connection serving `client` right now is outside any
/// transaction: no transaction id assigned and the statement started its own
/// transaction (inside an older one, `now()` is the older start time).
async fn assert_clean_connection(client: &Client, what: &str) {
    let row = first_row(client, "SELECT txid_current_if_assigned() IS NULL, now() = statement_timestamp()").await;
    assert_eq!(
        row,
        vec![Some("t".to_string()), Some("t".to_string())],
        "{what}: server connection was still inside an earlier transaction"
    );
}

fn assert_pgbench_clean(out: &std::process::Output, pooler: &Pooler) {
    let transcript = pgbench_transcript(out);
    assert!(out.status.success(), "{transcript}\n{}", pooler.log_tail());
    let summary = pgbench_summary(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|| panic!("no pgbench summary\n{transcript}"));
    assert!(summary.processed > 0, "no transactions processed\n{transcript}");
    assert_eq!(summary.failed, Some(0), "expected `number of failed transactions: 0`\n{transcript}");
}

// 1. pgbench load stays within the pool size.

#[test]
fn pgbench_transaction_mode_stays_within_pool_size() {
    let pooler = Pooler::start("pool_bench_tx", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 5");
    let init = pooler.pgbench(&["-i", "-s", "1", "-q"]);
    assert!(
        init.status.success(),
        "pgbench -i through the router\n{}\n{}",
        pgbench_transcript(&init),
        pooler.log_tail()
    );

    for mode in ["simple", "extended"] {
        let sampler = ConnectionSampler::start(&pooler.name);
        let out = pooler.pgbench(&["-c", "50", "-j", "2", "-T", "5", "-M", mode]);
        let (max_seen, samples) = sampler.finish();
        assert_pgbench_clean(&out, &pooler);
        assert!(
            (1..=5).contains(&max_seen),
            "-M {mode}: up to {max_seen} server connections in {samples} samples for a pool of 5"
        );
        let after = pooler.server_connections(None);
        assert!(after <= 5, "-M {mode}: {after} server connections after the run for a pool of 5");
    }
}

#[test]
fn pgbench_prepared_statements_in_session_mode() {
    let pooler = Pooler::start("pool_bench_sess", "md5", "pool_mode = \"session\"\nmax_pool_size = 5");
    let init = pooler.pgbench(&["-i", "-s", "1", "-q"]);
    assert!(
        init.status.success(),
        "pgbench -i through the router\n{}\n{}",
        pgbench_transcript(&init),
        pooler.log_tail()
    );

    let sampler = ConnectionSampler::start(&pooler.name);
    let out = pooler.pgbench(&["-c", "5", "-j", "2", "-T", "5", "-M", "prepared"]);
    let (max_seen, samples) = sampler.finish();
    assert_pgbench_clean(&out, &pooler);
    assert!((1..=5).contains(&max_seen), "up to {max_seen} server connections in {samples} samples for a pool of 5");
}

// 2. Pool mode basics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_transactions_work_on_any_server() {
    let pooler = Pooler::start("pool_mode_tx", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 2");
    shared_cluster().psql_admin(
        "CREATE TABLE pool_mode_tx.log (client int, n int, pid int, xid bigint);
         ALTER TABLE pool_mode_tx.log OWNER TO pool_mode_tx;",
    );

    // Three clients share two server connections, so transactions move
    // between servers; inside one transaction the server must not change.
    let sampler = ConnectionSampler::start(&pooler.name);
    let mut tasks = JoinSet::new();
    for client_no in 0..3 {
        let (mut client, _task) = pooler.connect_with(&pooler.config()).await;
        tasks.spawn(async move {
            let mut pids = Vec::new();
            for n in 0..15 {
                let tx = client.transaction().await.expect("BEGIN");
                let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
                let xid: i64 = tx.query_one("SELECT txid_current()", &[]).await.expect("xid").get(0);
                tx.execute(
                    "INSERT INTO pool_mode_tx.log VALUES ($1, $2, pg_backend_pid(), txid_current())",
                    &[&client_no, &n],
                )
                .await
                .expect("INSERT");
                let again: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
                assert_eq!(pid, again, "client {client_no}: transaction {n} moved from backend {pid} to {again}");
                let rows = tx
                    .query_one("SELECT count(*) FROM pool_mode_tx.log WHERE client = $1", &[&client_no])
                    .await
                    .expect("count");
                assert_eq!(
                    rows.get::<_, i64>(0),
                    i64::from(n) + 1,
                    "own rows (earlier ones and this transaction's) not all visible"
                );
                tx.commit().await.expect("COMMIT");
                pids.push((pid, xid));
            }
            // Outside a transaction, and with the unnamed statement, too.
            let row = client.query_typed_one("SELECT $1::int + 1", &[(&41i32, tokio_postgres::types::Type::INT4)]);
            assert_eq!(row.await.expect("query_typed").get::<_, i32>(0), 42);
            pids
        });
    }
    let mut seen = Vec::new();
    while let Some(result) = tasks.join_next().await {
        seen.extend(result.unwrap_or_else(|e| panic!("client task failed: {e}\n{}", pooler.log_tail())));
    }
    let (max_seen, samples) = sampler.finish();
    assert!(max_seen <= 2, "{max_seen} server connections at once (in {samples} samples) with max_pool_size = 2");

    // Every transaction committed exactly once, on the backend and with the
    // transaction id it saw.
    let summary = shared_cluster()
        .psql_admin("SELECT count(*), count(DISTINCT xid), count(DISTINCT (client, n)) FROM pool_mode_tx.log");
    assert_eq!(summary, "45|45|45", "rows, distinct xids, distinct (client, n)");
    let pairs: Vec<String> = seen.iter().map(|(pid, xid)| format!("({pid}, {xid})")).collect();
    let matched = shared_cluster().psql_admin(&format!(
        "SELECT count(*) FROM (VALUES {}) AS seen (pid, xid) JOIN pool_mode_tx.log USING (pid, xid)",
        pairs.join(", ")
    ));
    assert_eq!(matched, "45", "committed rows whose backend and xid match what the transaction saw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_one_server_per_client() {
    let pooler = Pooler::start("pool_mode_sess", "trust", "pool_mode = \"session\"\nmax_pool_size = 3");
    let first = pooler.connect().await;
    let other = pooler.connect().await;

    let pid = scalar(&first, "SELECT pg_backend_pid()").await;
    first.batch_execute("SET application_name = 'sess_app'").await.expect("SET");
    for round in 0..3 {
        // Another client's traffic and whole transactions in between must not
        // move the first client to another server.
        other.batch_execute("BEGIN; SELECT 1; COMMIT").await.expect("other client");
        first.batch_execute("BEGIN; SELECT 1; COMMIT").await.expect("transaction");
        assert_eq!(scalar(&first, "SELECT pg_backend_pid()").await, pid, "round {round}: backend changed");
        assert_eq!(scalar(&first, "SHOW application_name").await, "sess_app", "round {round}: SET lost");
    }
    assert_ne!(scalar(&other, "SELECT pg_backend_pid()").await, pid, "two session clients share a backend");
    let seen = shared_cluster().psql_admin(&format!("SELECT application_name FROM pg_stat_activity WHERE pid = {pid}"));
    assert_eq!(seen, "sess_app");

    // The BackendKeyData pid a session client is told is its real backend.
    let port = pooler.router.port;
    let name = pooler.name.clone();
    let (key_pid, backend_pid) =
        tokio::task::spawn_blocking(move || raw_session_pids(port, &name)).await.expect("raw client");
    assert_eq!(key_pid, backend_pid, "BackendKeyData pid differs from pg_backend_pid() in session mode");
}

/// Log in with the raw protocol (trust, no password) and return the pid from
/// BackendKeyData and what `SELECT pg_backend_pid()` answers.
fn raw_session_pids(port: u16, user: &str) -> (i32, i32) {
    let mut stream = raw_connect(port);
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for (key, value) in [("user", user), ("database", "pgdog")] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = (body.len() as i32 + 4).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    stream.write_all(&packet).expect("send startup");

    let mut key_pid = None;
    loop {
        match read_message(&mut stream) {
            (b'K', body) => key_pid = Some(i32::from_be_bytes(body[..4].try_into().expect("pid"))),
            (b'Z', _) => break,
            (b'E', body) => panic!("login refused: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
    let sql = b"SELECT pg_backend_pid()\0";
    let mut query = vec![b'Q'];
    query.extend_from_slice(&(sql.len() as i32 + 4).to_be_bytes());
    query.extend_from_slice(sql);
    stream.write_all(&query).expect("send query");
    let mut backend_pid = None;
    loop {
        match read_message(&mut stream) {
            // DataRow: column count (2 bytes), length (4 bytes), text.
            (b'D', body) => {
                let text = std::str::from_utf8(&body[6..]).expect("utf8 pid");
                backend_pid = Some(text.parse().expect("numeric pid"));
            }
            (b'Z', _) => break,
            (b'E', body) => panic!("query failed: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
    let _ = stream.write_all(b"X\0\0\0\x04");
    (key_pid.expect("no BackendKeyData"), backend_pid.expect("no DataRow"))
}

/// One backend message: tag and body.
fn read_message(stream: &mut impl Read) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).expect("read message header");
    let len = i32::from_be_bytes(header[1..].try_into().expect("length")) as usize;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).expect("read message body");
    (header[0], body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transaction_blocks() {
    // One server connection, so every statement below runs on the backend
    // the refused BEGIN ran on.
    let pooler = Pooler::start("pool_mode_stmt", "md5", "pool_mode = \"statement\"\nmax_pool_size = 1");
    let client = pooler.connect().await;

    let err = client.batch_execute("BEGIN").await.expect_err("BEGIN accepted in statement mode");
    assert_eq!(sqlstate(&err), Some("0A000"), "simple BEGIN: {}", show(&err));
    assert_eq!(scalar(&client, "SELECT 1").await, "1", "connection unusable after the refusal");
    assert_clean_connection(&client, "after simple BEGIN").await;

    // The same through the extended protocol (unnamed statement).
    let err = client.execute_typed("BEGIN", &[]).await.expect_err("extended BEGIN accepted in statement mode");
    assert_eq!(sqlstate(&err), Some("0A000"), "extended BEGIN: {}", show(&err));
    let one = client.query_typed_one("SELECT 1", &[]).await.expect("SELECT 1 after extended BEGIN");
    assert_eq!(one.get::<_, i32>(0), 1);
    assert_clean_connection(&client, "after extended BEGIN").await;

    assert_eq!(pooler.server_connections(Some("idle in transaction")), 0, "server left inside a transaction");
}

// 3. Burst of new clients on a cold pool.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_new_clients_on_cold_pool() {
    let pooler = Pooler::start(
        "pool_burst",
        "md5",
        "pool_mode = \"transaction\"\nmax_pool_size = 10\ncheckout_timeout_ms = 5000",
    );
    let sampler = ConnectionSampler::start(&pooler.name);
    let mut tasks = JoinSet::new();
    for n in 0..100 {
        let config = pooler.config();
        tasks.spawn(async move {
            let (client, connection) =
                config.connect(NoTls).await.map_err(|e| format!("client {n} connect: {}", show(&e)))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
                .simple_query("SELECT pg_sleep(0.05)")
                .await
                .map_err(|e| format!("client {n} query: {}", show(&e)))?;
            Ok::<_, String>(())
        });
    }
    let mut failures = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result.expect("client task panicked") {
            failures.push(e);
        }
    }
    let (max_seen, samples) = sampler.finish();
    assert!(failures.is_empty(), "{} of 100 clients failed: {failures:#?}\n{}", failures.len(), pooler.log_tail());
    assert!(max_seen <= 10, "{max_seen} server connections (in {samples} samples) for max_pool_size = 10");
}

/// The router's workers each accept about half the clients, and each holds
/// its own share of a pool. With one server connection and a queue that never
/// empties, the worker holding the connection must still let the other
/// worker's clients have turns: with fair turns everyone waits for about one
/// query of each other client (20 × 2 ms), nowhere near the checkout timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_pool_is_shared_between_workers() {
    const CLIENTS: usize = 20;
    let pooler =
        Pooler::start("pool_fair", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 1\ncheckout_timeout_ms = 1500");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(pooler.connect().await);
    }
    // Keep every client busy for longer than the checkout timeout, so a
    // starved client times out instead of being served after the others.
    // Each query holds the server for 2 ms, time enough for every other
    // client to queue again: the queue never runs dry by chance.
    let load_until = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut tasks = JoinSet::new();
    for (n, client) in clients.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut done = 0u32;
            while tokio::time::Instant::now() < load_until {
                if let Err(e) = client.simple_query("SELECT pg_sleep(0.002)").await {
                    return Err(format!("client {n} after {done} queries: {}", show(&e)));
                }
                done += 1;
            }
            Ok(done)
        });
    }
    let mut failures = Vec::new();
    let mut served = Vec::new();
    while let Some(result) = tasks.join_next().await {
        match result.expect("client task panicked") {
            Ok(done) => served.push(done),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} busy clients starved (others served {served:?} queries): {failures:#?}\n{}",
        failures.len(),
        pooler.log_tail()
    );
}

// 4. Checkout timeout.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_timeout_names_the_pool() {
    let pooler = Pooler::start(
        "pool_timeout",
        "md5",
        "pool_mode = \"transaction\"\nmax_pool_size = 1\ncheckout_timeout_ms = 300",
    );
    let holder = pooler.connect().await;
    holder.batch_execute("BEGIN").await.expect("BEGIN");
    assert_eq!(scalar(&holder, "SELECT 1").await, "1");
    let waiter = pooler.connect().await;

    let err = waiter.simple_query("SELECT 1").await.expect_err("query got a server the holder owns");
    assert_eq!(sqlstate(&err), Some("53300"), "simple query: {}", show(&err));
    let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(message.contains("pool_timeout@pgdog"), "error does not name the pool: {message:?}");

    // The extended protocol is refused the same way, up to its Sync.
    let err = waiter.query_typed("SELECT 2", &[]).await.expect_err("extended query got a server");
    assert_eq!(sqlstate(&err), Some("53300"), "extended query: {}", show(&err));

    // The holder's transaction was not disturbed.
    assert_eq!(scalar(&holder, "SELECT txid_current_if_assigned() IS NULL").await, "t");
    holder.batch_execute("COMMIT").await.expect("COMMIT");

    // The server is free now. Checkin follows the holder's ReadyForQuery by
    // microseconds, so only a further timeout (never another error) is
    // tolerated while it lands.
    let mut attempts = 0;
    let worked = wait_until(DEADLINE, || {
        attempts += 1;
        let waiter = &waiter;
        async move {
            match waiter.simple_query("SELECT 42").await {
                Ok(_) => true,
                Err(e) if sqlstate(&e) == Some("53300") => false,
                Err(e) => panic!("query after the holder committed: {}", show(&e)),
            }
        }
    })
    .await;
    assert!(worked, "still timing out after the holder committed ({attempts} attempts)\n{}", pooler.log_tail());
    assert_eq!(scalar(&waiter, "SELECT 7").await, "7");
}

// 5. Client killed mid-transaction.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_transaction_is_rolled_back() {
    let pooler = Pooler::start("pool_client_kill", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 1");
    let cluster = shared_cluster();
    cluster.psql_admin(
        "CREATE TABLE pool_client_kill.items (id int, note text);
         ALTER TABLE pool_client_kill.items OWNER TO pool_client_kill;",
    );
    let visible = |id: i32| cluster.psql_admin(&format!("SELECT count(*) FROM pool_client_kill.items WHERE id = {id}"));

    // Idle inside the transaction when the socket goes.
    let (client, task) = pooler.connect_with(&pooler.config()).await;
    client.batch_execute("BEGIN").await.expect("BEGIN");
    client.batch_execute("INSERT INTO pool_client_kill.items VALUES (1, 'idle in transaction')").await.expect("INSERT");
    assert_eq!(pooler.server_connections(Some("idle in transaction")), 1, "precondition: open transaction");
    task.abort();
    let _ = task.await;
    drop(client);
    let cleaned = wait_until(DEADLINE, || async { pooler.server_connections(Some("idle in transaction")) == 0 }).await;
    assert!(cleaned, "server still idle in transaction after its client vanished\n{}", pooler.log_tail());
    assert_eq!(visible(1), "0", "the dead client's insert was committed");

    let next = pooler.connect().await;
    assert_clean_connection(&next, "client after an idle-in-transaction kill").await;
    assert_eq!(scalar(&next, "SELECT count(*) FROM pool_client_kill.items").await, "0");
    drop(next);

    // Killed while a statement of the transaction is still running.
    let (client, task) = pooler.connect_with(&pooler.config()).await;
    let client = Arc::new(client);
    client.batch_execute("BEGIN").await.expect("BEGIN");
    client.batch_execute("INSERT INTO pool_client_kill.items VALUES (2, 'mid-query')").await.expect("INSERT");
    let sleeper = {
        let client = client.clone();
        tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) })
    };
    let running = wait_until(DEADLINE, || async { sleeping_backend(cluster, &pooler.name).is_some() }).await;
    assert!(running, "pg_sleep never started on the server");
    task.abort();
    let _ = task.await;
    // Fails at once, locally: its connection is gone.
    let _ = sleeper.await;
    drop(client);
    let cleaned = wait_until(DEADLINE, || async {
        sleeping_backend(cluster, &pooler.name).is_none() && pooler.server_connections(Some("idle in transaction")) == 0
    })
    .await;
    assert!(cleaned, "server still busy for a vanished client (no cancel?)\n{}", pooler.log_tail());
    assert_eq!(visible(2), "0", "the dead client's insert was committed");

    let next = pooler.connect().await;
    assert_clean_connection(&next, "client after a mid-query kill").await;
    assert_eq!(scalar(&next, "SELECT count(*) FROM pool_client_kill.items").await, "0");
}

/// Pid of `role`'s backend running `SELECT pg_sleep(30)`, if any.
fn sleeping_backend(cluster: &PgCluster, role: &str) -> Option<i32> {
    let pid = cluster.psql_admin(&format!(
        "SELECT pid FROM pg_stat_activity WHERE usename = '{role}' AND state = 'active' \
         AND query LIKE 'SELECT pg_sleep(30)%' LIMIT 1"
    ));
    pid.parse().ok()
}

// 6. Startup parameters follow the client from server to server.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_follow_the_client() {
    let pooler = Pooler::start("pool_params", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 2");
    let server_timezone = shared_cluster().psql_admin("SHOW TimeZone");
    assert_ne!(server_timezone, "Asia/Tokyo", "pick another zone for this test");
    let default_path = "\"$user\", public";

    // (application_name, options, expected search_path, expected TimeZone)
    let kinds = [
        ("alpha", Some("-c search_path=a_schema"), "a_schema", None),
        ("beta", None, default_path, None),
        ("alpha", Some("-c search_path=a_schema"), "a_schema", None),
        ("beta", None, default_path, None),
        ("tokyo", Some("-c TimeZone=Asia/Tokyo"), default_path, Some("Asia/Tokyo")),
    ];
    let sampler = ConnectionSampler::start(&pooler.name);
    let mut tasks = JoinSet::new();
    for (app, options, path, zone) in kinds {
        let mut config = pooler.config();
        config.application_name(app);
        if let Some(options) = options {
            config.options(options);
        }
        let (client, _task) = pooler.connect_with(&config).await;
        let zone = zone.map(str::to_string).unwrap_or_else(|| server_timezone.clone());
        tasks.spawn(async move {
            let mut pids = Vec::new();
            for n in 0..40 {
                let row = first_row(
                    &client,
                    "SELECT current_setting('application_name'), current_setting('search_path'), \
                     current_setting('TimeZone'), pg_backend_pid()",
                )
                .await;
                let got: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
                assert_eq!(&got[..3], &[app, path, zone.as_str()], "client {app}, query {n}");
                pids.push(got[3].to_string());
            }
            assert_eq!(scalar(&client, "SHOW TimeZone").await, zone, "client {app}: SHOW TimeZone");
            (app, pids)
        });
    }
    let mut served: std::collections::HashMap<String, std::collections::HashSet<&str>> = Default::default();
    while let Some(result) = tasks.join_next().await {
        let (app, pids) = result.unwrap_or_else(|e| panic!("client failed: {e}\n{}", pooler.log_tail()));
        for pid in pids {
            served.entry(pid).or_default().insert(app);
        }
    }
    let (max_seen, samples) = sampler.finish();
    assert!(max_seen <= 2, "{max_seen} server connections at once (in {samples} samples) with max_pool_size = 2");
    // Five clients on two servers: unless servers switched between clients
    // with different settings, the test proved nothing.
    assert!(served.values().any(|apps| apps.len() > 1), "no server ever served two kinds of client: {served:?}");
}

// 7. COPY in both directions.

#[test]
fn copy_in_and_out_through_transaction_mode() {
    const ROWS: usize = 100_000;
    let pooler = Pooler::start("pool_copy", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 2");
    shared_cluster().psql_admin(
        "CREATE TABLE pool_copy.copy_rows (id int, payload text);
         ALTER TABLE pool_copy.copy_rows OWNER TO pool_copy;",
    );
    let lines: Vec<String> = (0..ROWS).map(|i| format!("{i}\tpayload-{i}-{}", (i * 7919) % 100_003)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("rows.tsv");
    std::fs::write(&data, lines.join("\n") + "\n").expect("write COPY data");

    let copy_in = format!("\\copy pool_copy.copy_rows FROM '{}'", data.display());
    let out = pooler.psql(&["-v", "ON_ERROR_STOP=1", "-c", &copy_in]);
    assert!(out.status.success(), "COPY FROM STDIN: {}\n{}", String::from_utf8_lossy(&out.stderr), pooler.log_tail());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("COPY {ROWS}"));
    let direct = shared_cluster().psql_admin("SELECT count(*), sum(id) FROM pool_copy.copy_rows");
    assert_eq!(direct, format!("{ROWS}|{}", ROWS * (ROWS - 1) / 2), "rows on the server after COPY FROM");

    let out = pooler.psql(&["-v", "ON_ERROR_STOP=1", "-c", "COPY pool_copy.copy_rows TO STDOUT"]);
    assert!(out.status.success(), "COPY TO STDOUT: {}\n{}", String::from_utf8_lossy(&out.stderr), pooler.log_tail());
    let text = String::from_utf8(out.stdout).expect("utf8 COPY output");
    let mut got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), ROWS, "COPY TO STDOUT row count");
    let mut expected: Vec<&str> = lines.iter().map(String::as_str).collect();
    got.sort_unstable();
    expected.sort_unstable();
    assert!(got == expected, "COPY TO STDOUT returned different rows than were copied in");

    // The connection is usable for ordinary queries afterwards.
    let out = pooler.psql(&["-XAtc", "SELECT count(*) FROM pool_copy.copy_rows"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ROWS.to_string());
}

// 8. Large results.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabyte_results() {
    const MB: usize = 1024 * 1024;
    let pooler = Pooler::start("pool_big", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 2");
    let client = pooler.connect().await;

    let rows = client
        .query_typed("SELECT repeat('x', 1024*1024) FROM generate_series(1,50)", &[])
        .await
        .unwrap_or_else(|e| panic!("50 rows of 1 MB: {}\n{}", show(&e), pooler.log_tail()));
    assert_eq!(rows.len(), 50);
    let mut total = 0;
    for row in &rows {
        let value: &str = row.get(0);
        assert_eq!(value.len(), MB);
        assert!(value.bytes().all(|b| b == b'x'), "corrupted row");
        total += value.len();
    }
    assert_eq!(total, 50 * MB);

    let row = client
        .query_typed_one("SELECT repeat('y', 50*1024*1024)", &[])
        .await
        .unwrap_or_else(|e| panic!("one 50 MB value: {}\n{}", show(&e), pooler.log_tail()));
    let value: &str = row.get(0);
    assert_eq!(value.len(), 50 * MB);
    assert!(value.bytes().all(|b| b == b'y'), "corrupted 50 MB value");

    // The same session carries on with small queries.
    assert_eq!(scalar(&client, "SELECT 'after'").await, "after");
}

// 9. Server killed mid-query.

/// Start `SELECT pg_sleep(30)` on `client`, terminate its backend from an
/// admin connection and return the error the client got.
async fn terminate_sleeping_query(pooler: &Pooler, client: &Arc<Client>) -> tokio_postgres::Error {
    let cluster = shared_cluster();
    let sleeper = {
        let client = client.clone();
        tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) })
    };
    let mut pid = None;
    let found = wait_until(DEADLINE, || {
        pid = sleeping_backend(cluster, &pooler.name);
        std::future::ready(pid.is_some())
    })
    .await;
    assert!(found, "pg_sleep(30) never showed up in pg_stat_activity\n{}", pooler.log_tail());
    let pid = pid.expect("pid");
    assert_eq!(cluster.psql_admin(&format!("SELECT pg_terminate_backend({pid})")), "t");
    // pg_sleep(30) would end by itself after 30 s: well before that, the
    // client must have heard about the dead server.
    match tokio::time::timeout(Duration::from_secs(25), sleeper).await {
        Ok(joined) => joined.expect("sleeper task").expect_err("pg_sleep survived pg_terminate_backend"),
        Err(_) => panic!("no answer 25 s after the server was terminated\n{}", pooler.log_tail()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_query_in_transaction_mode() {
    let pooler = Pooler::start("pool_srv_kill", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 2");
    let client = Arc::new(pooler.connect().await);
    let err = terminate_sleeping_query(&pooler, &client).await;
    assert_eq!(sqlstate(&err), Some("08006"), "error for the terminated query: {}", show(&err));
    assert!(!client.is_closed(), "the router closed the client's connection");
    assert_eq!(scalar(&client, "SELECT 1").await, "1", "same client after the server was replaced");
    assert_clean_connection(&client, "replacement server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_inside_transaction_needs_rollback() {
    let pooler = Pooler::start("pool_srv_kill_tx", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 2");
    let client = Arc::new(pooler.connect().await);
    client.batch_execute("BEGIN").await.expect("BEGIN");
    let err = terminate_sleeping_query(&pooler, &client).await;
    assert_eq!(sqlstate(&err), Some("08006"), "error for the terminated query: {}", show(&err));

    // Like PostgreSQL after an error: the transaction is aborted until ended.
    let err = client.simple_query("SELECT 1").await.expect_err("query inside the lost transaction");
    assert_eq!(sqlstate(&err), Some("25P02"), "query inside the lost transaction: {}", show(&err));
    client.batch_execute("ROLLBACK").await.unwrap_or_else(|e| panic!("ROLLBACK: {}\n{}", show(&e), pooler.log_tail()));
    assert_eq!(scalar(&client, "SELECT 1").await, "1", "same client after ROLLBACK");
    assert_clean_connection(&client, "after ROLLBACK of the lost transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_inside_transaction_extended_rollback() {
    // Drivers that use the extended protocol for everything (tokio-postgres'
    // `execute`, JDBC, pgx) end the lost transaction with Parse/Describe/Sync
    // and Bind/Execute/Sync.
    let pooler = Pooler::start("pool_srv_kill_ext", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 2");
    let client = Arc::new(pooler.connect().await);
    client.batch_execute("BEGIN").await.expect("BEGIN");
    let err = terminate_sleeping_query(&pooler, &client).await;
    assert_eq!(sqlstate(&err), Some("08006"), "error for the terminated query: {}", show(&err));

    let err = client.query_typed("SELECT 1", &[]).await.expect_err("extended query inside the lost transaction");
    assert_eq!(sqlstate(&err), Some("25P02"), "extended query inside the lost transaction: {}", show(&err));
    client
        .execute("ROLLBACK", &[])
        .await
        .unwrap_or_else(|e| panic!("extended ROLLBACK: {}\n{}", show(&e), pooler.log_tail()));
    let one = client.query_typed_one("SELECT 1", &[]).await.expect("SELECT 1 after extended ROLLBACK");
    assert_eq!(one.get::<_, i32>(0), 1);
    assert_clean_connection(&client, "after extended ROLLBACK of the lost transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_query_in_session_mode_closes_client() {
    let pooler = Pooler::start("pool_srv_kill_sess", "md5", "pool_mode = \"session\"\nmax_pool_size = 2");
    let client = Arc::new(pooler.connect().await);
    let err = terminate_sleeping_query(&pooler, &client).await;
    if let Some(db) = err.as_db_error() {
        // The server's own FATAL (57P01) or the router's (08006): either way
        // the session is over, so it must not be a plain ERROR.
        assert_eq!(db.severity(), "FATAL", "session-mode client got a non-fatal error: {}", show(&err));
    }
    let closed = wait_until(DEADLINE, || async { client.is_closed() }).await;
    assert!(closed, "session-mode client still connected after its server died\n{}", pooler.log_tail());
    assert!(client.simple_query("SELECT 1").await.is_err(), "query on the closed connection succeeded");

    // The pool recovers for new clients.
    let next = pooler.connect().await;
    assert_eq!(scalar(&next, "SELECT 1").await, "1");
}

// 10. Pipelining.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_on_one_connection() {
    // This client is the pool's only user, so it only ever has the one server
    // connection, and tokio-postgres' named statements (Parse in one request,
    // Bind in the next) find their statement.
    let pooler = Pooler::start("pool_pipeline", "md5", "pool_mode = \"transaction\"\nmax_pool_size = 2");
    let client = Arc::new(pooler.connect().await);

    let mut tasks = JoinSet::new();
    for i in 0..200i32 {
        let client = client.clone();
        tasks.spawn(async move {
            let rows = client.query("SELECT $1::int", &[&i]).await.map_err(|e| format!("query {i}: {}", show(&e)))?;
            let got: i32 = rows.first().ok_or(format!("query {i}: no row"))?.get(0);
            if got == i {
                Ok(())
            } else {
                Err(format!("query {i} answered {got}"))
            }
        });
    }
    collect_pipeline(&pooler, &mut tasks, "named statements").await;

    // Unnamed statements: one Parse/Bind/Describe/Execute/Sync per query.
    for i in 0..200i32 {
        let client = client.clone();
        tasks.spawn(async move {
            let row = client
                .query_typed_one("SELECT $1::int * 2", &[(&i, tokio_postgres::types::Type::INT4)])
                .await
                .map_err(|e| format!("query_typed {i}: {}", show(&e)))?;
            let got: i32 = row.get(0);
            if got == i * 2 {
                Ok(())
            } else {
                Err(format!("query_typed {i} answered {got}"))
            }
        });
    }
    collect_pipeline(&pooler, &mut tasks, "unnamed statements").await;

    // Big answers while requests keep coming: the router must keep reading
    // the client while the client is slow to read the server's output.
    for i in 0..64i32 {
        let client = client.clone();
        tasks.spawn(async move {
            let row = client
                .query_typed_one("SELECT $1::int, repeat('p', 256 * 1024)", &[(&i, tokio_postgres::types::Type::INT4)])
                .await
                .map_err(|e| format!("big {i}: {}", show(&e)))?;
            let (got, text): (i32, &str) = (row.get(0), row.get(1));
            if got == i && text.len() == 256 * 1024 {
                Ok(())
            } else {
                Err(format!("big {i} answered {got} with {} bytes", text.len()))
            }
        });
    }
    collect_pipeline(&pooler, &mut tasks, "large results").await;
}

async fn collect_pipeline(pooler: &Pooler, tasks: &mut JoinSet<Result<(), String>>, what: &str) {
    let mut failures = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result.expect("query task panicked") {
                failures.push(e);
            }
        }
    })
    .await;
    assert!(all.is_ok(), "{what}: pipelined queries still unanswered after 60 s (deadlock?)\n{}", pooler.log_tail());
    assert!(failures.is_empty(), "{what}: {} failed: {failures:#?}\n{}", failures.len(), pooler.log_tail());
}
