//! Real drivers through the router: tokio-postgres (here), psycopg 3 and
//! asyncpg (`tests/drivers/python/`) and node-postgres
//! (`tests/drivers/node/`), each with many clients running named prepared
//! statements, transactions, errors and session settings on a pool of far
//! fewer server connections, asserting every result.
//!
//! The pool mode is `transaction` (3 server connections) unless
//! `PGDOG_DRIVER_TEST_POOL_MODE=session` (then one server connection per
//! client, which proves the scripts themselves right). `tests/drivers/setup.sh`
//! installs the drivers (a virtualenv in `.venv-drivers/`, `npm ci`) the
//! first time and is a no-op afterwards.
//!
//! Every test has a role of its own, with the objects of
//! `tests/drivers/schema.sql`, and a router whose only user and pool carry
//! the same name, so the scripts never see each other's rows, statements or
//! settings.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use pgdog_tests::{free_port, router_config, shared_cluster, RouterProcess};
use tokio::task::JoinSet;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, GenericClient, NoTls, Statement};

/// Password of every driver role, on the server and at the router.
const PASSWORD: &str = "drivers-pw";
/// Server connections per pool in transaction mode.
const TRANSACTION_POOL_SIZE: usize = 3;
/// Workers and setters per driver (the scripts' defaults).
const CLIENTS: usize = 20;
const SETTERS: usize = 4;
const ITERATIONS: i32 = 50;
const SETTER_STEPS: usize = 30;
/// A script still running after this long has hung; it is killed.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests crate lives inside the workspace")
}

fn drivers_dir() -> PathBuf {
    workspace().join("tests").join("drivers")
}

/// `transaction` unless `PGDOG_DRIVER_TEST_POOL_MODE` says otherwise.
fn pool_mode() -> &'static str {
    static MODE: OnceLock<&'static str> = OnceLock::new();
    MODE.get_or_init(|| match std::env::var("PGDOG_DRIVER_TEST_POOL_MODE").as_deref() {
        Err(_) | Ok("") | Ok("transaction") => "transaction",
        Ok("session") => "session",
        Ok(other) => panic!("PGDOG_DRIVER_TEST_POOL_MODE={other:?}: expected transaction or session"),
    })
}

/// Session mode needs a server connection per client (and one spare for the
/// first connection each script makes to read the defaults).
fn pool_size() -> usize {
    if pool_mode() == "session" {
        CLIENTS + SETTERS + 2
    } else {
        TRANSACTION_POOL_SIZE
    }
}

/// A router in front of the shared cluster for one driver's role.
struct DriverRouter {
    router: RouterProcess,
    role: String,
}

impl DriverRouter {
    fn start(role: &str) -> DriverRouter {
        let cluster = shared_cluster();
        let schema = std::fs::read_to_string(drivers_dir().join("schema.sql")).expect("read tests/drivers/schema.sql");
        cluster.psql_admin(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}';\n\
             \\set role {role}\n\\set schema_a {role}_a\n\\set schema_b {role}_b\n{schema}"
        ));
        let pool = format!("[pools.{role}]\npool_mode = \"{}\"\nmax_pool_size = {}\n", pool_mode(), pool_size());
        let config = router_config(cluster, "", &pool, free_port(), free_port(), free_port());
        let users = format!(
            "[[users]]\nname = \"{role}\"\npassword = \"{PASSWORD}\"\ndatabase = \"pgdog\"\npool = \"{role}\"\n\
             server_user = \"{role}\"\nserver_password = \"{PASSWORD}\"\n"
        );
        DriverRouter { router: RouterProcess::start(&config, &users), role: role.to_string() }
    }

    /// Server connections of this role on the primary.
    fn server_connections(&self) -> usize {
        let count = shared_cluster().psql_admin(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' AND backend_type = 'client backend' AND {}",
            self.role,
            pgdog_tests::NOT_HEALTH_CHECK
        ));
        count.parse().unwrap_or_else(|e| panic!("count of backends {count:?}: {e}"))
    }

    fn assert_within_pool(&self) {
        let open = self.server_connections();
        assert!(open <= pool_size(), "{open} server connections for a pool of {}\n{}", pool_size(), self.log_tail());
    }

    /// The end of the router log without colour codes.
    fn log_tail(&self) -> String {
        self.router.log_tail(8000)
    }

    /// Run a driver script against this router with the libpq environment
    /// variables; panics with its output and the router log unless it exits 0.
    fn run_script(&self, program: &Path, script: &Path) {
        setup_drivers();
        let dir = tempfile::tempdir().expect("tempdir for script output");
        let out_path = dir.path().join("output.txt");
        let out = std::fs::File::create(&out_path).expect("create script output file");
        let mut cmd = Command::new(program);
        cmd.arg(script)
            .current_dir(script.parent().expect("script directory"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone output handle"))
            .stderr(out);
        // Inherited libpq settings would change what the scripts see.
        for var in ["PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGTZ", "PGSSLMODE", "PGAPPNAME", "PGPASSFILE"] {
            cmd.env_remove(var);
        }
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.router.port.to_string())
            .env("PGUSER", &self.role)
            .env("PGPASSWORD", PASSWORD)
            .env("PGDATABASE", "pgdog")
            .env("DRIVER_POOL_MODE", pool_mode())
            .env("DRIVER_CLIENTS", CLIENTS.to_string())
            .env("DRIVER_SETTERS", SETTERS.to_string())
            .env("DRIVER_ITERATIONS", ITERATIONS.to_string())
            .env("DRIVER_TIMEOUT", (SCRIPT_DEADLINE.as_secs() - 30).to_string());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let deadline = Instant::now() + SCRIPT_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for script") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        let name = script.file_name().unwrap_or_default().to_string_lossy();
        match status {
            // Shown with --nocapture.
            Some(status) if status.success() => println!("--- {name} ({} mode) ---\n{output}", pool_mode()),
            Some(status) => panic!("{name} failed ({status}) in {} mode:\n{output}\n{}", pool_mode(), self.log_tail()),
            None => panic!("{name} still running after {SCRIPT_DEADLINE:?}; killed\n{output}\n{}", self.log_tail()),
        }
        self.assert_within_pool();
    }
}

/// Run `tests/drivers/setup.sh` once per test process; panics with its
/// output (every later caller too) if it fails.
fn setup_drivers() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        let script = drivers_dir().join("setup.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(msg) = result {
        panic!("{msg}");
    }
}

fn venv_python() -> PathBuf {
    workspace().join(".venv-drivers").join("bin").join("python")
}

#[test]
fn psycopg_prepared_statements_and_settings() {
    let router = DriverRouter::start("drv_psycopg");
    router.run_script(&venv_python(), &drivers_dir().join("python").join("psycopg_test.py"));
}

#[test]
fn asyncpg_prepared_statements_and_settings() {
    let router = DriverRouter::start("drv_asyncpg");
    router.run_script(&venv_python(), &drivers_dir().join("python").join("asyncpg_test.py"));
}

#[test]
fn node_postgres_prepared_statements_and_settings() {
    let router = DriverRouter::start("drv_node");
    router.run_script(Path::new("node"), &drivers_dir().join("node").join("pg_test.js"));
}

// tokio-postgres, in process: the same plan as the scripts.

const Q_PID: &str = "SELECT pg_backend_pid()";
const Q_ECHO: &str =
    "SELECT $1::int, $2::text, $3::text::numeric::text, $4::timestamptz, $5::bytea, $6::int[], $7::text[], $8::text";
const Q_ADD: &str = "SELECT $1::int + $2::int";
const Q_INSERT: &str = "INSERT INTO items (client, iter, label, amount, at, payload, tags, note) \
     VALUES ($1, $2, $3, $4::text::numeric, $5, $6, $7, $8) \
     RETURNING client, iter, label, amount::text, at, payload, tags, note";
const Q_COUNT: &str = "SELECT count(*) FROM items WHERE client = $1 AND iter = $2";
const Q_COUNT_ALL: &str = "SELECT count(*), coalesce(sum(iter), 0) FROM items WHERE client = $1";
const Q_DIV: &str = "SELECT 10 / $1::int";
const Q_BAD_COLUMN: &str = "SELECT no_such_column FROM items WHERE client = $1";
const Q_SETTINGS: &str = "SELECT current_setting('TimeZone'), current_setting('search_path')";
/// The parameter is text: tokio-postgres has no `&str` to timestamptz.
const Q_RENDER: &str = "SELECT $1::text::timestamptz::text";
const Q_MARKER: &str = "SELECT v FROM marker";

const REFERENCE: &str = "2024-01-15 12:00:00+00";
const ROLLED_BACK_ZONE: &str = "Pacific/Auckland";
/// (first zone, zone SET in a committed transaction) per setter.
const SETTER_ZONES: [(&str, &str); 4] = [
    ("Asia/Tokyo", "America/New_York"),
    ("America/New_York", "Europe/Berlin"),
    ("Europe/Berlin", "Asia/Kolkata"),
    ("Asia/Kolkata", "Asia/Tokyo"),
];

/// How the server renders [`REFERENCE`] in `zone`.
fn rendered(zone: &str, default: &str) -> String {
    match zone {
        "Asia/Tokyo" => "2024-01-15 21:00:00+09",
        "America/New_York" => "2024-01-15 07:00:00-05",
        "Europe/Berlin" => "2024-01-15 13:00:00+01",
        "Asia/Kolkata" => "2024-01-15 17:30:00+05:30",
        "Pacific/Auckland" => "2024-01-16 01:00:00+13",
        _ => default,
    }
    .to_string()
}

/// One echo row: int, text, numeric (as text; NULL every third iteration),
/// timestamptz, bytea, int[], text[], NULL text.
#[derive(Debug, Clone, PartialEq)]
struct Values {
    number: i32,
    text: String,
    amount: Option<String>,
    at: SystemTime,
    payload: Vec<u8>,
    ints: Vec<i32>,
    tags: Vec<String>,
    note: Option<String>,
}

fn values(client: usize, it: i32) -> Values {
    let number = client as i32 * 1000 + it;
    let at = SystemTime::UNIX_EPOCH
        + Duration::from_secs(1_709_251_198 + client as u64 * 86_400 + it as u64 * 61)
        + Duration::from_micros(it as u64 * 7);
    let mut payload = vec![client as u8, it as u8, 0, 255, 92, 39];
    payload.extend_from_slice(b"\0tail");
    Values {
        number,
        text: format!("c{client}-i{it} 'quoted' \"double\" ünïcødé €"),
        amount: (it % 3 != 0).then(|| format!("{number}.{it:04}")),
        at,
        payload,
        ints: vec![number, -it, 0, i32::MAX],
        tags: vec![format!("c{client}"), "with,comma".into(), "with\"quote".into(), String::new(), format!("i{it}")],
        note: None,
    }
}

/// Parameters of `Q_INSERT`: the echo values but the int[], as row `iter`.
fn item_params<'a>(client: &'a i32, iter: &'a i32, want: &'a Values) -> [&'a (dyn ToSql + Sync); 8] {
    [client, iter, &want.text, &want.amount, &want.at, &want.payload, &want.tags, &want.note]
}

fn echo_of(row: &tokio_postgres::Row) -> Result<Values, tokio_postgres::Error> {
    Ok(Values {
        number: row.try_get(0)?,
        text: row.try_get(1)?,
        amount: row.try_get(2)?,
        at: row.try_get(3)?,
        payload: row.try_get(4)?,
        ints: row.try_get(5)?,
        tags: row.try_get(6)?,
        note: row.try_get(7)?,
    })
}

/// A client failure: where it happened and what was wrong.
type Outcome = Result<(), String>;

fn check<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Outcome {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// tokio-postgres' own `Display` shows only "db error".
fn show(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(err) {
            Some(cause) => format!("{err}: {cause}"),
            None => err.to_string(),
        },
    }
}

/// `result` must be an error with SQLSTATE `code`.
fn expect_error<T: Debug>(what: &str, result: Result<T, tokio_postgres::Error>, code: &str) -> Outcome {
    match result {
        Err(e) if e.code().map(|c| c.code()) == Some(code) => Ok(()),
        Err(e) => Err(format!("{what}: got {}, want SQLSTATE {code}", show(&e))),
        Ok(v) => Err(format!("{what}: succeeded with {v:?}, want SQLSTATE {code}")),
    }
}

/// Lets `?` turn a driver error into a failure message.
trait Context<T> {
    fn ctx(self) -> Result<T, String>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self) -> Result<T, String> {
        self.map_err(|e| show(&e))
    }
}

/// Server backend pids each client saw.
type Backends = Arc<Mutex<BTreeMap<String, HashSet<i32>>>>;

fn saw(backends: &Backends, who: &str, pid: i32) {
    backends.lock().expect("backends lock").entry(who.to_string()).or_default().insert(pid);
}

struct Defaults {
    zone: String,
    path: String,
    rendered: String,
}

async fn connect(port: u16, role: &str) -> Result<Client, String> {
    let (client, connection) = Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(role)
        .password(PASSWORD)
        .dbname("pgdog")
        .connect_timeout(Duration::from_secs(10))
        .connect(NoTls)
        .await
        .map_err(|e| format!("connect: {}", show(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn worker(port: u16, role: String, client_no: usize, backends: Backends, defaults: Arc<Defaults>) -> Outcome {
    let mut step = String::from("connecting");
    let result = worker_steps(port, &role, client_no, &backends, &defaults, &mut step).await;
    result.map_err(|e| format!("worker {client_no} at {step}: {e}"))
}

async fn worker_steps(
    port: u16,
    role: &str,
    c: usize,
    backends: &Backends,
    defaults: &Defaults,
    step: &mut String,
) -> Outcome {
    let mut client = connect(port, role).await?;
    let who = format!("worker {c}");
    let cid = c as i32;
    *step = "removing rows of an earlier run".into();
    client.execute("DELETE FROM items WHERE client = $1", &[&cid]).await.ctx()?;
    *step = "prepare".into();
    let mut echo = client.prepare(Q_ECHO).await.ctx()?;
    let mut add = client.prepare_typed(Q_ADD, &[Type::INT4, Type::INT4]).await.ctx()?;
    let pid = client.prepare(Q_PID).await.ctx()?;
    let insert = client.prepare(Q_INSERT).await.ctx()?;
    let count = client.prepare(Q_COUNT).await.ctx()?;
    let div = client.prepare(Q_DIV).await.ctx()?;
    for it in 0..ITERATIONS {
        let want = values(c, it);
        let params: [&(dyn ToSql + Sync); 8] =
            [&want.number, &want.text, &want.amount, &want.at, &want.payload, &want.ints, &want.tags, &want.note];
        *step = format!("iteration {it}: echo and add");
        check("echo", echo_of(&client.query_one(&echo, &params).await.ctx()?).ctx()?, want.clone())?;
        check("add", client.query_one(&add, &[&cid, &it]).await.ctx()?.get::<_, i32>(0), cid + it)?;
        *step = format!("iteration {it}: backend pid");
        saw(backends, &who, client.query_one(&pid, &[]).await.ctx()?.get(0));

        *step = format!("iteration {it}: committed transaction");
        let tx = client.transaction().await.ctx()?;
        let row = tx.query_one(&insert, &item_params(&cid, &it, &want)).await.ctx()?;
        check("inserted client, iter", (row.get::<_, i32>(0), row.get::<_, i32>(1)), (cid, it))?;
        let stored = Values {
            number: want.number,
            text: row.get(2),
            amount: row.get(3),
            at: row.get(4),
            payload: row.get(5),
            ints: want.ints.clone(),
            tags: row.get(6),
            note: row.get(7),
        };
        check("inserted row", stored, want.clone())?;
        check("count inside the transaction", tx.query_one(&count, &[&cid, &it]).await.ctx()?.get::<_, i64>(0), 1)?;
        check("echo in the transaction", echo_of(&tx.query_one(&echo, &params).await.ctx()?).ctx()?, want.clone())?;
        tx.commit().await.ctx()?;

        let gone = -1 - it;
        match it % 5 {
            1 => {
                *step = format!("iteration {it}: rolled-back transaction");
                let tx = client.transaction().await.ctx()?;
                tx.query_one(&insert, &item_params(&cid, &gone, &want)).await.ctx()?;
                check("count before rollback", tx.query_one(&count, &[&cid, &gone]).await.ctx()?.get::<_, i64>(0), 1)?;
                tx.rollback().await.ctx()?;
            }
            2 => {
                *step = format!("iteration {it}: error inside a transaction");
                let tx = client.transaction().await.ctx()?;
                tx.query_one(&insert, &item_params(&cid, &gone, &want)).await.ctx()?;
                expect_error("10 / 0 in a transaction", tx.query_one(&div, &[&0i32]).await, "22012")?;
                expect_error("statement after the error", tx.query_one(&add, &[&1i32, &1i32]).await, "25P02")?;
                tx.rollback().await.ctx()?;
                check(
                    "add after the failed transaction",
                    client.query_one(&add, &[&it, &1]).await.ctx()?.get(0),
                    it + 1,
                )?;
            }
            3 => {
                *step = format!("iteration {it}: error between pipelined successes");
                // Polled together, the four go out before the first reply;
                // each has its own Sync, so the error touches only itself.
                let (one, zero, five) = (1i32, 0i32, 5i32);
                let add_params: [&(dyn ToSql + Sync); 2] = [&it, &one];
                let zero_params: [&(dyn ToSql + Sync); 1] = [&zero];
                let five_params: [&(dyn ToSql + Sync); 1] = [&five];
                let (a, bad, good, e) = tokio::join!(
                    client.query_one(&add, &add_params),
                    client.query_one(&div, &zero_params),
                    client.query_one(&div, &five_params),
                    client.query_one(&echo, &params),
                );
                check("pipelined add", a.ctx()?.get::<_, i32>(0), it + 1)?;
                expect_error("pipelined 10 / 0", bad, "22012")?;
                check("pipelined division", good.ctx()?.get::<_, i32>(0), 2)?;
                check("pipelined echo", echo_of(&e.ctx()?).ctx()?, want.clone())?;
            }
            4 => {
                *step = format!("iteration {it}: Parse error");
                expect_error("missing column", client.prepare(Q_BAD_COLUMN).await, "42703")?;
                check(
                    "echo after the error",
                    echo_of(&client.query_one(&echo, &params).await.ctx()?).ctx()?,
                    want.clone(),
                )?;
            }
            _ => {}
        }
        *step = format!("iteration {it}: rolled-back row absent");
        check(
            "rows left by rollback or error",
            client.query_one(&count, &[&cid, &gone]).await.ctx()?.get::<_, i64>(0),
            0,
        )?;

        if it % 10 == 9 {
            *step = format!("iteration {it}: close and prepare again");
            // Dropping a Statement closes it on the server.
            echo = client.prepare(Q_ECHO).await.ctx()?;
            add = client.prepare_typed(Q_ADD, &[Type::INT4, Type::INT4]).await.ctx()?;
            check("add prepared again", client.query_one(&add, &[&it, &it]).await.ctx()?.get(0), 2 * it)?;
        }
        if it % 7 == 0 {
            *step = format!("iteration {it}: no setter's settings");
            let row = client.query_one(Q_SETTINGS, &[]).await.ctx()?;
            check(
                "worker settings",
                (row.get::<_, String>(0), row.get::<_, String>(1)),
                (defaults.zone.clone(), defaults.path.clone()),
            )?;
        }
    }
    *step = "final count of committed rows".into();
    let tx = client.transaction().await.ctx()?;
    let row = tx.query_one(Q_COUNT_ALL, &[&cid]).await.ctx()?;
    let want_sum = i64::from(ITERATIONS * (ITERATIONS - 1) / 2);
    check(
        "committed rows and sum of iter",
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (i64::from(ITERATIONS), want_sum),
    )?;
    tx.commit().await.ctx()
}

async fn setter(port: u16, role: String, index: usize, backends: Backends, defaults: Arc<Defaults>) -> Outcome {
    let mut step = String::from("connecting");
    let result = setter_steps(port, &role, index, &backends, &defaults, &mut step).await;
    result.map_err(|e| format!("setter {index} at {step}: {e}"))
}

async fn setter_steps(
    port: u16,
    role: &str,
    index: usize,
    backends: &Backends,
    defaults: &Defaults,
    step: &mut String,
) -> Outcome {
    let (mut zone, later_zone) = SETTER_ZONES[index % SETTER_ZONES.len()];
    let (letter, other) = if index.is_multiple_of(2) { ("a", "b") } else { ("b", "a") };
    let path = format!("{role}_{letter}, {role}");
    let mut client = connect(port, role).await?;
    let who = format!("setter {index}");
    *step = "SET outside a transaction".into();
    client.batch_execute(&format!("SET search_path TO {role}_{letter}, {role}")).await.ctx()?;
    client.batch_execute(&format!("SET TimeZone TO '{zone}'")).await.ctx()?;
    *step = "prepare".into();
    // `marker` exists only on the path just set.
    let statements = SetterStatements {
        pid: client.prepare(Q_PID).await.ctx()?,
        render: client.prepare(Q_RENDER).await.ctx()?,
        marker: client.prepare(Q_MARKER).await.ctx()?,
    };
    let mark = |label: &str, zone: &str, path: &str, marker: Option<&'static str>| Expected {
        label: label.to_string(),
        zone: zone.to_string(),
        path: path.to_string(),
        rendered: rendered(zone, &defaults.rendered),
        marker,
    };
    for k in 0..SETTER_STEPS {
        *step = format!("step {k}");
        let label = format!("step {k}");
        expect(&client, &statements, backends, &who, &mark(&label, zone, &path, Some(letter))).await?;
        if k == SETTER_STEPS / 3 {
            *step = format!("step {k}: SET in a rolled-back transaction");
            let tx = client.transaction().await.ctx()?;
            tx.batch_execute(&format!(
                "SET TimeZone TO '{ROLLED_BACK_ZONE}'; SET search_path TO {role}_{other}, {role}"
            ))
            .await
            .ctx()?;
            let inside =
                mark("inside the transaction", ROLLED_BACK_ZONE, &format!("{role}_{other}, {role}"), Some(other));
            expect(&tx, &statements, backends, &who, &inside).await?;
            tx.rollback().await.ctx()?;
        }
        if k == 2 * SETTER_STEPS / 3 {
            *step = format!("step {k}: SET in a committed transaction, SET LOCAL");
            let tx = client.transaction().await.ctx()?;
            tx.batch_execute(&format!("SET TimeZone TO '{later_zone}'; SET LOCAL search_path TO public"))
                .await
                .ctx()?;
            expect(&tx, &statements, backends, &who, &mark("inside the transaction", later_zone, "public", None))
                .await?;
            tx.commit().await.ctx()?;
            zone = later_zone;
        }
    }
    *step = "RESET".into();
    client.batch_execute("RESET TimeZone; RESET search_path").await.ctx()?;
    for k in 0..5 {
        *step = format!("after RESET, step {k}");
        let label = format!("after RESET, step {k}");
        expect(&client, &statements, backends, &who, &mark(&label, &defaults.zone, &defaults.path, None)).await?;
    }
    Ok(())
}

struct SetterStatements {
    pid: Statement,
    render: Statement,
    marker: Statement,
}

/// What a setter must see at one step.
struct Expected {
    label: String,
    zone: String,
    path: String,
    rendered: String,
    /// Row of the `marker` table the path picks, when it picks one.
    marker: Option<&'static str>,
}

async fn expect<C: GenericClient>(
    client: &C,
    statements: &SetterStatements,
    backends: &Backends,
    who: &str,
    want: &Expected,
) -> Outcome {
    let label = &want.label;
    saw(backends, who, client.query_one(&statements.pid, &[]).await.ctx()?.get(0));
    let shown: String = client.query_one("SHOW search_path", &[]).await.ctx()?.get(0);
    check(&format!("{label}: SHOW search_path"), shown, want.path.clone())?;
    let row = client.query_one(Q_SETTINGS, &[]).await.ctx()?;
    check(
        &format!("{label}: settings"),
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (want.zone.clone(), want.path.clone()),
    )?;
    let text: String = client.query_one(&statements.render, &[&REFERENCE]).await.ctx()?.get(0);
    check(&format!("{label}: timestamptz as text"), text, want.rendered.clone())?;
    if let Some(marker) = want.marker {
        let v: String = client.query_one(&statements.marker, &[]).await.ctx()?.get(0);
        check(&format!("{label}: marker"), v.as_str(), marker)?;
    }
    Ok(())
}

async fn read_defaults(port: u16, role: &str) -> Result<Defaults, String> {
    let client = connect(port, role).await?;
    let row = client.query_one(Q_SETTINGS, &[]).await.ctx()?;
    let rendered = client.query_one(Q_RENDER, &[&REFERENCE]).await.ctx()?.get(0);
    Ok(Defaults { zone: row.get(0), path: row.get(1), rendered })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_statements_and_settings() {
    let router = DriverRouter::start("drv_tokio");
    let port = router.router.port;
    let role = router.role.clone();
    let defaults = Arc::new(
        read_defaults(port, &role).await.unwrap_or_else(|e| panic!("first connection: {e}\n{}", router.log_tail())),
    );
    let backends: Backends = Arc::default();
    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        clients.spawn(worker(port, role.clone(), c, backends.clone(), defaults.clone()));
    }
    for s in 0..SETTERS {
        clients.spawn(setter(port, role.clone(), s, backends.clone(), defaults.clone()));
    }
    let deadline = tokio::time::Instant::now() + SCRIPT_DEADLINE;
    while let Some(done) = tokio::time::timeout_at(deadline, clients.join_next())
        .await
        .unwrap_or_else(|_| panic!("clients still running after {SCRIPT_DEADLINE:?}\n{}", router.log_tail()))
    {
        if let Err(failure) = done.expect("client task panicked") {
            clients.abort_all();
            panic!("tokio-postgres in {} mode: {failure}\n{}", pool_mode(), router.log_tail());
        }
    }

    let backends = backends.lock().expect("backends lock");
    let everyone: HashSet<i32> = backends.values().flatten().copied().collect();
    println!("tokio-postgres: {} clients saw {} distinct server backends", backends.len(), everyone.len());
    if pool_mode() == "session" {
        for (who, pids) in backends.iter() {
            assert_eq!(pids.len(), 1, "{who}: server backends in session mode");
        }
    } else {
        assert!(everyone.len() >= 2, "transaction mode, yet every client used one server backend {everyone:?}");
    }
    router.assert_within_pool();
}
