//! Throwaway PostgreSQL clusters: a primary and, optionally, a streaming
//! replica, each on its own loopback port, with the roles the router tests
//! authenticate as.
//!
//! Lifetime rules, because a leaked postmaster outlives the test run and
//! holds ports and shared memory:
//! * every cluster is recorded in a process-wide registry and an `atexit`
//!   hook stops and deletes whatever is left when the test binary exits
//!   (libtest leaves through `exit`, which runs the hook; statics such as
//!   [`shared_cluster`] are never dropped, so the hook is what stops them);
//! * an owned cluster ([`PgCluster::start`]) also stops on `Drop`, including
//!   during a panic half-way through start-up;
//! * each cluster has a [`Watchdog`] that stops it if the test process is
//!   killed before either of the above can run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::sys::{give_to_server, pg_bin, run_checked, server_command, server_identity, tail_file, Watchdog};
use crate::tls::TestCa;

/// Superuser the clusters are initialised with; authenticated over the unix
/// socket by `trust`, so helpers never need its password.
const SUPERUSER: &str = "postgres";

/// Database the router tests use; created owned by the `pgdog` role.
const TEST_DB: &str = "pgdog";

/// How long to wait for a fresh replica to report streaming.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(60);

/// One PostgreSQL primary and optionally a streaming replica.
///
/// Both listen on 127.0.0.1 only, and on a unix socket in [`PgCluster::dir`].
/// Roles available over TCP (all can log into database `pgdog`):
///
/// | role        | password    | pg_hba method   |
/// |-------------|-------------|-----------------|
/// | `pgdog`     | `pgdog`     | `scram-sha-256` (superuser) |
/// | `md5user`   | `md5pass`   | `md5`           |
/// | `plainuser` | `plainpass` | `password`      |
/// | `trustuser` | none        | `trust`         |
///
/// Server logs are `primary.log` and `replica.log` in `dir`.
pub struct PgCluster {
    pub primary_port: u16,
    /// 0 when the cluster was started without a replica.
    pub replica_port: u16,
    /// Every replica's port, `replica_port` first (see
    /// [`PgCluster::start_with_replicas`]).
    pub replica_ports: Vec<u16>,
    /// Root of everything on disk: data directories, logs, unix sockets.
    pub dir: PathBuf,
    /// Key into the cleanup registry.
    id: u64,
    /// CA certificate once [`PgCluster::enable_ssl`] has run.
    ssl_ca: Mutex<Option<PathBuf>>,
}

/// What the exit hook needs to stop and delete one cluster.
struct Registered {
    id: u64,
    root: PathBuf,
    data_dirs: Vec<PathBuf>,
    watchdog: Option<Watchdog>,
}

fn registry() -> &'static Mutex<Vec<Registered>> {
    static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
    &REGISTRY
}

/// Install the exit hook the first time a cluster is created.
fn install_exit_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `stop_all_at_exit` is an `extern "C" fn()` that never
        // unwinds (it catches panics), as atexit requires.
        let rc = unsafe { libc::atexit(stop_all_at_exit) };
        assert_eq!(rc, 0, "atexit registration failed");
    });
}

extern "C" fn stop_all_at_exit() {
    // Unwinding out of an extern "C" function aborts, and an abort during
    // exit would hide the real test result, so swallow any panic here.
    let _ = std::panic::catch_unwind(|| {
        let entries: Vec<Registered> = {
            let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
            reg.drain(..).collect()
        };
        for entry in entries {
            teardown(entry);
        }
    });
}

/// Stop every server of a cluster and remove its files.
fn teardown(entry: Registered) {
    for data in &entry.data_dirs {
        if data.join("postmaster.pid").exists() {
            let _ = server_command("pg_ctl", &entry.root)
                .args(["stop", "-m", "immediate", "-D"])
                .arg(data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    // Only after the servers are gone: a disarmed watchdog no longer guards them.
    if let Some(watchdog) = entry.watchdog {
        watchdog.disarm();
    }
    let _ = std::fs::remove_dir_all(&entry.root);
}

/// The cluster shared by every test in this test binary: a primary plus a
/// streaming replica, started on first use.
///
/// If start-up fails, every later call fails with the same message instead of
/// retrying a slow start that is bound to fail again.
pub fn shared_cluster() -> &'static PgCluster {
    static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    let result = SHARED.get_or_init(|| {
        std::panic::catch_unwind(|| PgCluster::start(true)).map_err(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into())
        })
    });
    match result {
        Ok(cluster) => cluster,
        Err(msg) => panic!("shared PostgreSQL cluster failed to start: {msg}"),
    }
}

impl PgCluster {
    /// A cluster of its own, without a replica, for tests that stop, kill or
    /// reconfigure servers. Stopped and deleted on drop.
    pub fn start_primary_only() -> PgCluster {
        PgCluster::start(false)
    }

    /// Start a new cluster; see the type docs for what it contains.
    pub fn start(with_replica: bool) -> PgCluster {
        PgCluster::start_with_replicas(usize::from(with_replica))
    }

    /// A cluster of its own with `replicas` streaming replicas, for
    /// failover tests. Replica `i` (0-based) has data directory `replica`
    /// (i = 0) or `replica<i+1>`, and the log of the same name.
    pub fn start_with_replicas(replicas: usize) -> PgCluster {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let id = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pgdog-tests-{}-{id}", std::process::id()));
        // A leftover from an earlier process that had our pid and was killed
        // before cleaning up; nothing can be using it any more.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        give_to_server(&dir);

        install_exit_hook();
        let primary_port = free_port();
        let replica_ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
        let replica_port = replica_ports.first().copied().unwrap_or(0);
        let cluster = PgCluster { primary_port, replica_port, replica_ports, dir, ssl_ca: Mutex::new(None), id };

        let mut data_dirs = vec![cluster.primary_data()];
        data_dirs.extend((0..replicas).map(|i| cluster.replica_data_at(i)));
        let watchdog = cluster.spawn_watchdog(&data_dirs);
        registry().lock().unwrap_or_else(|e| e.into_inner()).push(Registered {
            id,
            root: cluster.dir.clone(),
            data_dirs,
            watchdog: Some(watchdog),
        });
        // From here on a panic drops `cluster`, which tears down whatever
        // has been started so far.

        cluster.init_primary();
        cluster.start_primary();
        cluster.create_roles();
        for i in 0..replicas {
            cluster.clone_replica(i);
            cluster.start_replica_at(i);
        }
        cluster
    }

    /// Watchdog that stops the servers and deletes `dir` if this process
    /// dies without running its exit hook. It runs as the server identity
    /// because pg_ctl refuses to run as root.
    fn spawn_watchdog(&self, data_dirs: &[PathBuf]) -> Watchdog {
        let action = "pg_ctl=$1; root=$2; shift 2; \
                      for d in \"$@\"; do \"$pg_ctl\" stop -m immediate -D \"$d\"; done; \
                      rm -rf \"$root\"";
        let pg_ctl = pg_bin("pg_ctl");
        let mut args = vec![pg_ctl.as_os_str(), self.dir.as_os_str()];
        args.extend(data_dirs.iter().map(|d| d.as_os_str()));
        Watchdog::spawn(action, &args, server_identity())
    }

    fn primary_data(&self) -> PathBuf {
        self.dir.join("primary")
    }

    fn replica_data(&self) -> PathBuf {
        self.replica_data_at(0)
    }

    fn replica_name(i: usize) -> String {
        if i == 0 {
            "replica".into()
        } else {
            format!("replica{}", i + 1)
        }
    }

    fn replica_data_at(&self, i: usize) -> PathBuf {
        self.dir.join(Self::replica_name(i))
    }

    /// Whether the cluster was started with a replica.
    pub fn has_replica(&self) -> bool {
        self.replica_port != 0
    }

    fn require_replica(&self) {
        assert!(self.has_replica(), "this cluster was started without a replica");
    }

    fn init_primary(&self) {
        let data = self.primary_data();
        run_checked(
            server_command("initdb", &self.dir)
                .arg("-D")
                .arg(&data)
                .args(["--no-sync", "-U", SUPERUSER, "--auth-local=trust", "--auth-host=scram-sha-256"])
                // C locale: identical behaviour on every machine, and
                // initdb skips locale work.
                .args(["-E", "UTF8", "--locale=C"]),
            "initdb",
        );

        let mut conf = String::from("\n# pgdog-tests\n");
        let settings = [
            ("listen_addresses", "'127.0.0.1'".to_string()),
            ("port", self.primary_port.to_string()),
            ("unix_socket_directories", quote_conf(&self.dir)),
            ("max_connections", "300".into()),
            ("shared_buffers", "'32MB'".into()),
            // Durability is worthless for throwaway data and costs seconds.
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("wal_level", "replica".into()),
            ("max_wal_senders", "5".into()),
            ("hot_standby", "on".into()),
            // pg_ctl -l captures stderr into the log file.
            ("logging_collector", "off".into()),
        ];
        for (key, value) in settings {
            let _ = writeln!(conf, "{key} = {value}");
        }
        append_file(&data.join("postgresql.conf"), &conf);

        // First match wins: the per-user lines must precede the catch-all.
        let hba = "\
local all         all                    trust
host  replication all       127.0.0.1/32 trust
host  all         md5user   127.0.0.1/32 md5
host  all         plainuser 127.0.0.1/32 password
host  all         trustuser 127.0.0.1/32 trust
host  all         all       127.0.0.1/32 scram-sha-256
";
        // Overwrite in place so the file keeps its postgres ownership.
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
    }

    fn create_roles(&self) {
        // Grants go into template1 before CREATE DATABASE so that the new
        // database's public schema inherits them.
        let grant = "GRANT ALL ON SCHEMA public TO pgdog, md5user, plainuser, trustuser;";
        let script = format!(
            "CREATE ROLE pgdog SUPERUSER LOGIN PASSWORD 'pgdog';
             SET password_encryption = 'md5';
             CREATE ROLE md5user LOGIN PASSWORD 'md5pass';
             RESET password_encryption;
             CREATE ROLE plainuser LOGIN PASSWORD 'plainpass';
             CREATE ROLE trustuser LOGIN;
             {grant}
             \\c template1
             {grant}
             CREATE DATABASE {TEST_DB} OWNER pgdog;
             GRANT ALL ON DATABASE {TEST_DB} TO md5user, plainuser, trustuser;"
        );
        self.psql_admin_on(self.primary_port, "postgres", &script);
    }

    fn clone_replica(&self, i: usize) {
        let data = self.replica_data_at(i);
        run_checked(
            server_command("pg_basebackup", &self.dir)
                .args(["-h", "127.0.0.1", "-p", &self.primary_port.to_string(), "-U", SUPERUSER])
                .arg("-D")
                .arg(&data)
                // -R: write standby.signal and primary_conninfo;
                // -c fast: do not wait for a spread checkpoint, which can take minutes.
                .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]),
            "pg_basebackup",
        );
        // The copied postgresql.conf still names the primary's port; the
        // last setting in the file wins.
        append_file(&data.join("postgresql.conf"), &format!("port = {}\n", self.replica_ports[i]));
    }

    fn pg_ctl_start(&self, data: &Path, log: &Path) {
        let out = server_command("pg_ctl", &self.dir)
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(data)
            .arg("-l")
            .arg(log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("spawn pg_ctl start");
        if !out.status.success() {
            panic!(
                "pg_ctl start {} failed ({}): {}{}\n--- server log ---\n{}",
                data.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail_file(log, 8000)
            );
        }
    }

    /// Stop one server with `-m immediate` (a crash, as far as clients
    /// can tell). Stopping a server that is not running is not an error.
    fn pg_ctl_stop(&self, data: &Path) {
        if !data.join("postmaster.pid").exists() {
            return;
        }
        let out = server_command("pg_ctl", &self.dir)
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(data)
            .output()
            .expect("spawn pg_ctl stop");
        if out.status.success() {
            return;
        }
        // A test may have killed the postmaster itself, leaving a stale pid
        // file; `pg_ctl status` exits with 3 when no server is running.
        let status = server_command("pg_ctl", &self.dir)
            .args(["status", "-D"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn pg_ctl status");
        if status.code() != Some(3) {
            panic!(
                "pg_ctl stop {} failed ({}): {}{}",
                data.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Start the primary (after [`PgCluster::stop_primary`]); returns when it
    /// accepts connections.
    pub fn start_primary(&self) {
        self.pg_ctl_start(&self.primary_data(), &self.primary_log_path());
    }

    /// Stop the primary immediately, like a crash: clients see their
    /// connections drop with no orderly goodbye.
    pub fn stop_primary(&self) {
        self.pg_ctl_stop(&self.primary_data());
    }

    /// Alias of [`PgCluster::stop_primary`] for fault-injection tests.
    pub fn kill_primary(&self) {
        self.stop_primary();
    }

    /// Crash and restart the primary; existing connections are lost.
    pub fn restart_primary(&self) {
        self.stop_primary();
        self.start_primary();
    }

    /// Start the replica and wait until it is streaming from the primary.
    pub fn start_replica(&self) {
        self.start_replica_at(0);
    }

    /// Start replica `i` and wait until it is streaming.
    pub fn start_replica_at(&self, i: usize) {
        self.require_replica();
        self.pg_ctl_start(&self.replica_data_at(i), &self.replica_log_path_at(i));
        self.wait_streaming(i);
    }

    /// Stop the replica immediately.
    pub fn stop_replica(&self) {
        self.stop_replica_at(0);
    }

    /// Stop replica `i` immediately.
    pub fn stop_replica_at(&self, i: usize) {
        self.require_replica();
        self.pg_ctl_stop(&self.replica_data_at(i));
    }

    /// Promote the replica to a primary; it stops following the old primary.
    pub fn promote_replica(&self) {
        self.promote_replica_at(0);
    }

    /// Promote replica `i`; returns once it accepts writes.
    pub fn promote_replica_at(&self, i: usize) {
        self.require_replica();
        run_checked(
            server_command("pg_ctl", &self.dir).args(["promote", "-w", "-D"]).arg(self.replica_data_at(i)),
            "pg_ctl promote",
        );
    }

    /// Stop every server of the cluster immediately. Files are kept, so
    /// [`PgCluster::restart`] can bring it back.
    pub fn stop(&self) {
        for i in 0..self.replica_ports.len() {
            self.stop_replica_at(i);
        }
        self.stop_primary();
    }

    /// Crash and restart every server; returns once the replicas (if any)
    /// are streaming again.
    pub fn restart(&self) {
        self.stop();
        self.start_primary();
        for i in 0..self.replica_ports.len() {
            self.start_replica_at(i);
        }
    }

    /// Turn on TLS on every server of the cluster (plaintext keeps working)
    /// and return the path of the CA certificate that signed the servers'
    /// certificate, valid for `localhost` and `127.0.0.1`, for tests of
    /// `server_tls = "verify-full"`. Later calls return the same CA.
    pub fn enable_ssl(&self) -> PathBuf {
        let mut ssl_ca = self.ssl_ca.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ca) = ssl_ca.as_ref() {
            return ca.clone();
        }
        let ca = TestCa::new(&self.dir);
        let (cert, key) = ca.server_cert(&self.dir, "pg-server");
        // The server reads these as the postgres user and insists that the
        // key is private to it.
        for path in [&ca.cert_path, &cert, &key] {
            give_to_server(path);
        }
        let mut ports = vec![self.primary_port];
        ports.extend(&self.replica_ports);
        for port in ports {
            // ALTER SYSTEM writes postgresql.auto.conf, which is allowed on a
            // standby too, and survives restarts.
            self.psql_admin_on(
                port,
                "postgres",
                &format!(
                    "ALTER SYSTEM SET ssl_cert_file = {};
                     ALTER SYSTEM SET ssl_key_file = {};
                     ALTER SYSTEM SET ssl = on;
                     SELECT pg_reload_conf();",
                    quote_conf(&cert),
                    quote_conf(&key)
                ),
            );
            // The reload is asynchronous; new sessions see it once the
            // postmaster has processed SIGHUP.
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.try_psql(port, "postgres", "SHOW ssl").as_deref() != Ok("on") {
                assert!(Instant::now() < deadline, "ssl not on after reload on port {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        *ssl_ca = Some(ca.cert_path.clone());
        ca.cert_path
    }

    /// Postmaster pid of the primary, if it is running.
    pub fn primary_pid(&self) -> Option<i32> {
        read_postmaster_pid(&self.primary_data())
    }

    /// Postmaster pid of the replica, if it is running.
    pub fn replica_pid(&self) -> Option<i32> {
        read_postmaster_pid(&self.replica_data())
    }

    fn primary_log_path(&self) -> PathBuf {
        self.dir.join("primary.log")
    }

    fn replica_log_path(&self) -> PathBuf {
        self.replica_log_path_at(0)
    }

    fn replica_log_path_at(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", Self::replica_name(i)))
    }

    /// The primary's server log so far.
    pub fn primary_log(&self) -> String {
        std::fs::read_to_string(self.primary_log_path()).unwrap_or_default()
    }

    /// The replica's server log so far.
    pub fn replica_log(&self) -> String {
        std::fs::read_to_string(self.replica_log_path()).unwrap_or_default()
    }

    /// Block until replica `i` reports that it is in recovery and its WAL
    /// receiver is streaming.
    fn wait_streaming(&self, i: usize) {
        let deadline = Instant::now() + REPLICA_TIMEOUT;
        let port = self.replica_ports[i];
        loop {
            let streaming = self.try_psql(
                port,
                "postgres",
                "SELECT pg_is_in_recovery() AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')",
            );
            if streaming.as_deref() == Ok("t") {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "replica on port {port} not streaming after {:?}\n--- primary log ---\n{}\n--- replica log ---\n{}",
                    REPLICA_TIMEOUT,
                    tail_file(&self.primary_log_path(), 4000),
                    tail_file(&self.replica_log_path_at(i), 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run SQL on the primary, in database `pgdog`, as the `postgres`
    /// superuser over the unix socket. Statements run one at a time (so
    /// `CREATE DATABASE` and `VACUUM` work) and the first error aborts.
    /// Returns unaligned, tuples-only output (`|` between columns) without
    /// the final newline; panics with psql's stderr on failure.
    pub fn psql_admin(&self, sql: &str) -> String {
        self.psql_admin_on(self.primary_port, TEST_DB, sql)
    }

    /// [`PgCluster::psql_admin`] against the replica.
    pub fn replica_psql_admin(&self, sql: &str) -> String {
        self.require_replica();
        self.psql_admin_on(self.replica_port, TEST_DB, sql)
    }

    /// [`PgCluster::psql_admin`] against any database of any server of this
    /// cluster (`port` is [`PgCluster::primary_port`] or
    /// [`PgCluster::replica_port`]).
    pub fn psql_admin_on(&self, port: u16, db: &str, sql: &str) -> String {
        self.try_psql(port, db, sql)
            .unwrap_or_else(|err| panic!("psql on port {port} failed: {err}\n--- sql ---\n{sql}"))
    }

    fn try_psql(&self, port: u16, db: &str, sql: &str) -> Result<String, String> {
        // Runs as the test user: the socket accepts anyone (`local all all
        // trust`), and root can enter the postgres-owned directory.
        let mut child = std::process::Command::new(pg_bin("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-p", &port.to_string(), "-U", SUPERUSER, "-d", db, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn psql: {e}"))?;
        // Feeding the script on stdin (rather than -c) makes psql send each
        // statement separately, outside an implicit transaction block.
        let mut stdin = child.stdin.take().expect("piped stdin");
        let written = stdin.write_all(sql.as_bytes());
        drop(stdin);
        let out = child.wait_with_output().map_err(|e| format!("wait for psql: {e}"))?;
        written.map_err(|e| format!("write SQL to psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.strip_suffix('\n').unwrap_or(&stdout).to_string())
    }

    /// Connect straight to a server of this cluster (bypassing the router)
    /// over TCP; panics if the connection fails.
    pub async fn connect_direct(&self, port: u16, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        match self.try_connect_direct(port, user, password, db).await {
            Ok(client) => client,
            Err(e) => panic!("direct connection to 127.0.0.1:{port} as {user}/{db} failed: {e}"),
        }
    }

    /// [`PgCluster::connect_direct`] that returns the error, for tests that
    /// expect authentication to fail.
    pub async fn try_connect_direct(
        &self,
        port: u16,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        crate::connect_tcp(port, user, password, db).await
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let entry = {
            let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
            reg.iter().position(|e| e.id == self.id).map(|i| reg.remove(i))
        };
        if let Some(entry) = entry {
            teardown(entry);
        }
    }
}

fn read_postmaster_pid(data: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// A path as a single-quoted string, valid both in postgresql.conf and as
/// an SQL literal.
fn quote_conf(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "''"))
}

fn append_file(path: &Path, text: &str) {
    let mut file =
        std::fs::OpenOptions::new().append(true).open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}
