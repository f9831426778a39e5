//! Running the real `pgdog-router` binary against test clusters.
//!
//! The binary is rebuilt once per test process (cargo makes that a no-op when
//! nothing changed) so a test never exercises a stale build; set
//! `PGDOG_ROUTER_BIN` to skip the build and use a given binary. The same goes
//! for `pgdog-config-gen` ([`config_gen_bin`], `PGDOG_CONFIG_GEN_BIN`).

use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::cluster::PgCluster;
use crate::sys::{pg_bin, Watchdog};

/// How long [`RouterProcess::start`] waits for the listener.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The router binary, built on first use.
///
/// Runs `$CARGO build -p pgdog-router` in the workspace (once per process)
/// unless `PGDOG_ROUTER_BIN` is set; panics with cargo's output if the build
/// fails.
pub fn router_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PGDOG_ROUTER_BIN") {
        return PathBuf::from(bin);
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(|| build_package("pgdog-router", "pgdog-router")) {
        Ok(path) => path.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

/// The `pgdog-config-gen` binary, built on first use like [`router_bin`];
/// `PGDOG_CONFIG_GEN_BIN` skips the build.
pub fn config_gen_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PGDOG_CONFIG_GEN_BIN") {
        return PathBuf::from(bin);
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(|| build_package("pgdog-config-gen", "pgdog-config-gen")) {
        Ok(path) => path.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

/// The workspace root (where `config/` and the templates are).
pub fn workspace_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests crate lives inside the workspace")
}

/// `cargo build -p package` in the workspace; the path of binary `bin`.
fn build_package(package: &str, bin: &str) -> Result<PathBuf, String> {
    let workspace = workspace_dir();
    // `cargo test` sets CARGO to the cargo that is running us, so the nested
    // build uses the same toolchain.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "-p", package])
        .current_dir(workspace)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cargo:?} to build {package}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo build -p {package}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Honour a relocated target directory the same way cargo does.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .or_else(|| std::env::var_os("CARGO_BUILD_TARGET_DIR"))
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { workspace.join(dir) })
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target.join("debug").join(bin);
    if !bin.exists() {
        return Err(format!("cargo build succeeded but {} does not exist", bin.display()));
    }
    Ok(bin)
}

/// A running router with its config files and log in a temporary directory.
/// Dropping it kills the process (SIGKILL) and deletes the directory.
pub struct RouterProcess {
    pub port: u16,
    pub admin_port: u16,
    pub metrics_port: u16,
    /// The HTTP API's port: `[api] port` of the config, else a free port
    /// passed as `PGDOG_API_PORT` (so routers of parallel tests never
    /// collide on the default 8080).
    pub api_port: u16,
    pub child: Child,
    /// Holds `pgdog.toml`, `users.toml` and `router.log`.
    pub dir: TempDir,
    /// Kills the router if the test process dies without dropping us.
    watchdog: Option<Watchdog>,
    /// Whether the watchdog has been told the pid is gone.
    reaped: bool,
}

impl RouterProcess {
    /// Write the config files, start the router and wait (up to 30 s) until
    /// its client port accepts TCP connections. Panics with the router's log
    /// if it exits or never listens.
    pub fn start(config_toml: &str, users_toml: &str) -> RouterProcess {
        let mut router = RouterProcess::spawn(config_toml, users_toml);
        if let Err(msg) = router.wait_ready(START_TIMEOUT) {
            panic!("{msg}");
        }
        router
    }

    /// Start the router without waiting for it to listen, for tests that
    /// expect it to reject its configuration; see [`RouterProcess::wait_exit`].
    ///
    /// The ports are read from `[general]` of `config_toml`, falling back to
    /// the router's defaults when absent or unparseable.
    pub fn spawn(config_toml: &str, users_toml: &str) -> RouterProcess {
        RouterProcess::spawn_with_env(config_toml, users_toml, &[])
    }

    /// [`RouterProcess::start`] with extra environment variables for the
    /// router, e.g. the one a `password_env` key names.
    pub fn start_with_env(config_toml: &str, users_toml: &str, env: &[(&str, &str)]) -> RouterProcess {
        let mut router = RouterProcess::spawn_with_env(config_toml, users_toml, env);
        if let Err(msg) = router.wait_ready(START_TIMEOUT) {
            panic!("{msg}");
        }
        router
    }

    /// [`RouterProcess::spawn`] with extra environment variables for the router.
    pub fn spawn_with_env(config_toml: &str, users_toml: &str, env: &[(&str, &str)]) -> RouterProcess {
        let (port, admin_port, metrics_port) = configured_ports(config_toml);
        let configured_api = configured_api_port(config_toml);
        let api_port = configured_api.unwrap_or_else(crate::free_port);
        let bin = router_bin();
        let dir = tempfile::Builder::new().prefix("pgdog-router-").tempdir().expect("create router temp dir");
        std::fs::write(dir.path().join("pgdog.toml"), config_toml).expect("write pgdog.toml");
        std::fs::write(dir.path().join("users.toml"), users_toml).expect("write users.toml");
        let log = File::create(dir.path().join("router.log")).expect("create router.log");
        let log_err = log.try_clone().expect("clone router.log handle");
        let level = std::env::var("PGDOG_TEST_LOG").unwrap_or_else(|_| "info".into());

        let mut command = Command::new(&bin);
        // The router must see only what the test gives it.
        command.env_remove("PGDOG_API_TOKEN");
        if configured_api.is_none() {
            command.env("PGDOG_API_PORT", api_port.to_string());
        }
        command.envs(env.iter().copied());
        let child = command
            .arg("--config")
            .arg(dir.path().join("pgdog.toml"))
            .arg("--users")
            .arg(dir.path().join("users.toml"))
            .env("PGDOG_LOG_LEVEL", level)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let pid = child.id().to_string();
        // Two stages: until told `reaped`, a dead test process means a live
        // router to kill; after that only the directory is left to delete.
        let action = "[ \"$line\" = reaped ] || kill -9 \"$1\"; \
                      read line; [ \"$line\" = disarm ] && exit 0; rm -rf \"$2\"";
        let watchdog = Watchdog::spawn(action, &[pid.as_ref(), dir.path().as_os_str()], None);
        RouterProcess { port, admin_port, metrics_port, api_port, child, dir, watchdog: Some(watchdog), reaped: false }
    }

    /// Wait until the client port accepts TCP connections. Errors (with the
    /// log) if the router exits first or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.note_reaped();
                return Err(format!(
                    "router exited ({status}) before listening on {addr}\n--- router log ---\n{}",
                    self.log()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "router not listening on {addr} after {timeout:?}\n--- router log ---\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send a signal (`libc::SIGHUP`, `libc::SIGTERM`, ...) to the router.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child, which stays a zombie (so the pid is not reused) until
        // we reap it.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}): {}", self.child.id(), std::io::Error::last_os_error());
    }

    /// Everything the router has logged so far (stdout and stderr).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// The last `max` bytes (about) of the log without colour codes, headed
    /// for assertion messages.
    pub fn log_tail(&self, max: usize) -> String {
        let mut log = String::new();
        let mut in_escape = false;
        for c in self.log().chars() {
            match (in_escape, c) {
                (false, '\u{1b}') => in_escape = true,
                (false, c) => log.push(c),
                (true, 'm') => in_escape = false,
                (true, _) => {}
            }
        }
        let mut start = log.len().saturating_sub(max);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        format!("--- router log (tail) ---\n{}", &log[start..])
    }

    /// Path of the log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("router.log")
    }

    /// Poll the log until it contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Path of `pgdog.toml`, for tests that rewrite it and signal a reload.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("pgdog.toml")
    }

    /// Path of `users.toml`.
    pub fn users_path(&self) -> PathBuf {
        self.dir.path().join("users.toml")
    }

    /// Replace `pgdog.toml` (the router only notices when told to reload).
    pub fn write_config(&self, config_toml: &str) {
        std::fs::write(self.config_path(), config_toml).expect("rewrite pgdog.toml");
    }

    /// Replace `users.toml`.
    pub fn write_users(&self, users_toml: &str) {
        std::fs::write(self.users_path(), users_toml).expect("rewrite users.toml");
    }

    /// Wait up to `timeout` for the router to exit; `None` if it is still
    /// running. Prefer this over waiting on `child` directly: it also retires
    /// the kill-on-crash watchdog, which must not outlive the pid.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.note_reaped();
                    return Some(status);
                }
                Ok(None) => {}
                Err(e) => panic!("waiting for router: {e}"),
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid is gone (and may be reused): the watchdog must not kill it.
    fn note_reaped(&mut self) {
        // Exactly once: the script reads any second line as its next stage.
        if self.reaped {
            return;
        }
        self.reaped = true;
        if let Some(watchdog) = self.watchdog.as_mut() {
            watchdog.send("reaped");
        }
    }

    fn disarm_watchdog(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
    }

    /// `postgres://user:password@127.0.0.1:port/db`, percent-encoded.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.port,
            percent_encode(db)
        )
    }

    /// Plaintext client connection through the router; panics on failure.
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        match self.try_connect(user, password, db).await {
            Ok(client) => client,
            Err(e) => panic!(
                "connection through router on port {} as {user}/{db} failed: {e}\n--- router log ---\n{}",
                self.port,
                tail(&self.log(), 8000)
            ),
        }
    }

    /// [`RouterProcess::connect`] that returns the error instead of panicking.
    pub async fn try_connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        crate::connect_tcp(self.port, user, password, db).await
    }

    /// Run `psql -X -h 127.0.0.1 -p <port> -U user -d db <args>` against the
    /// router, e.g. `router.psql("pgdog", "pgdog", "pgdog", &["-c", "SELECT 1"])`.
    pub fn psql(&self, user: &str, password: &str, db: &str, args: &[&str]) -> Output {
        psql_tcp(self.port, user, password, db, args)
    }

    /// Run `pgbench -h 127.0.0.1 -p <port> -U user <args> db` against the router.
    pub fn pgbench(&self, args: &[&str], user: &str, password: &str, db: &str) -> Output {
        Command::new(pg_bin("pgbench"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", user])
            .args(args)
            .arg(db)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .expect("spawn pgbench")
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        // Retire the watchdog before reaping: after `wait` the pid may be
        // reused, and the watchdog must never kill a stranger.
        self.disarm_watchdog();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `psql -X -h 127.0.0.1 -p port -U user -d db <args>` with the password
/// in `PGPASSWORD`; works against the router or a server directly.
pub fn psql_tcp(port: u16, user: &str, password: &str, db: &str, args: &[&str]) -> Output {
    Command::new(pg_bin("psql"))
        .args(["-X", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", db])
        .args(args)
        .env("PGPASSWORD", password)
        // A router bug must fail the test, not hang it.
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .expect("spawn psql")
}

/// `(port, admin_port, metrics_port)` from `[general]`, with the router's
/// own defaults for anything missing.
fn configured_ports(config_toml: &str) -> (u16, u16, u16) {
    let general = config_toml.parse::<toml::Table>().ok().and_then(|t| t.get("general").cloned());
    let get = |key: &str, default: u16| {
        general
            .as_ref()
            .and_then(|g| g.get(key))
            .and_then(|v| v.as_integer())
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(default)
    };
    (get("port", 5432), get("admin_port", 6432), get("metrics_port", 9090))
}

/// `[api] port` of a config, when it sets one.
fn configured_api_port(config_toml: &str) -> Option<u16> {
    let table = config_toml.parse::<toml::Table>().ok()?;
    let port = table.get("api")?.get("port")?.as_integer()?;
    u16::try_from(port).ok()
}

/// A typical `pgdog.toml` for `cluster`: `[general]` on 127.0.0.1 with the
/// given ports and two workers, then `extra_general` lines (still inside
/// `[general]`), then `pools` verbatim (e.g. `[pools.default]` tables), then
/// database `pgdog` on the primary and, if the cluster has one, the replica.
pub fn router_config(
    cluster: &PgCluster,
    extra_general: &str,
    pools: &str,
    port: u16,
    admin_port: u16,
    metrics_port: u16,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "[general]");
    let _ = writeln!(out, "host = \"127.0.0.1\"");
    let _ = writeln!(out, "port = {port}");
    let _ = writeln!(out, "admin_port = {admin_port}");
    let _ = writeln!(out, "metrics_port = {metrics_port}");
    let _ = writeln!(out, "workers = 2");
    push_block(&mut out, extra_general);
    out.push('\n');
    push_block(&mut out, pools);
    let mut servers = vec![(cluster.primary_port, "primary")];
    servers.extend(cluster.replica_ports.iter().map(|&p| (p, "replica")));
    for (server_port, role) in servers {
        let _ = write!(
            out,
            "\n[[databases]]\nname = \"pgdog\"\nhost = \"127.0.0.1\"\nport = {server_port}\nrole = \"{role}\"\n"
        );
    }
    out
}

/// Append a caller-supplied block, making sure it ends its last line.
fn push_block(out: &mut String, block: &str) {
    if !block.trim().is_empty() {
        out.push_str(block);
        if !block.ends_with('\n') {
            out.push('\n');
        }
    }
}

/// `users.toml` matching the roles [`PgCluster`] creates, all for database
/// `pgdog`:
/// * `pgdog` / `pgdog`, SCRAM, server user `pgdog`;
/// * `md5client` / `md5pass`, MD5, server user `md5user` / `md5pass`;
/// * `trustclient`, trust (no password), server user `pgdog` / `pgdog`.
pub fn default_users() -> String {
    r#"[[users]]
name = "pgdog"
password = "pgdog"
database = "pgdog"
auth = "scram"

[[users]]
name = "md5client"
password = "md5pass"
database = "pgdog"
auth = "md5"
server_user = "md5user"
server_password = "md5pass"

[[users]]
name = "trustclient"
database = "pgdog"
auth = "trust"
server_user = "pgdog"
server_password = "pgdog"
"#
    .to_string()
}

/// The admin-console user of [`users_with_admin`]: the router's default
/// `[admin] admin_users`, logging in to database `pgdog_admin`.
pub const ADMIN_USER: &str = "pgdog_admin";
pub const ADMIN_PASSWORD: &str = "admin-secret";

/// [`default_users`] plus [`ADMIN_USER`] (server user `pgdog`), for tests
/// that use the admin console.
pub fn users_with_admin() -> String {
    format!(
        "{}\n[[users]]\nname = \"{ADMIN_USER}\"\npassword = \"{ADMIN_PASSWORD}\"\ndatabase = \"pgdog\"\n\
         server_user = \"pgdog\"\nserver_password = \"pgdog\"\n",
        default_users()
    )
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Last `max` bytes of `s` (on a char boundary), for panic messages.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
