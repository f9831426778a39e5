//! A throwaway PgBouncer in front of a [`PgCluster`], configured like the
//! router under test (transaction pooling, 20 server connections) so the two
//! poolers are compared on equal terms.
//!
//! PgBouncer refuses to run as root, so when the benchmark is root it runs
//! as the `postgres` OS user and its files are handed to that user.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::sys::{give_to_server, server_identity, tail_file, Watchdog};
use crate::{free_port, PgCluster};

/// Database name the idle-client test logs in to: the same server database,
/// with the server login forced to `pgdog`/`pgdog`, so the trusted
/// `bench_idle` client needs no role of its own in PostgreSQL.
pub const IDLE_DB: &str = "pgdog_idle";

/// Client user that PgBouncer lets in without a password (`trust` in its
/// HBA file), for the idle-client test.
pub const IDLE_USER: &str = "bench_idle";

/// Where the `pgbouncer` binary is: `PGBOUNCER_BIN`, then `$PATH`, then
/// Debian's `/usr/sbin/pgbouncer` (not on a normal user's `$PATH`).
pub fn find_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("PGBOUNCER_BIN") {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| candidate.is_file())
}

/// Find PgBouncer, installing the Debian package when we are root and it is
/// missing. `Err` says why it is unavailable and how to get it.
pub fn locate_or_install() -> Result<PathBuf, String> {
    if let Some(bin) = find_binary() {
        return Ok(bin);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("pgbouncer is not installed; install it with `sudo apt-get install -y pgbouncer` \
                    (or set PGBOUNCER_BIN)"
            .into());
    }
    eprintln!("pgbouncer not found; running `apt-get install -y pgbouncer`");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "pgbouncer"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !install() {
        // A fresh machine may have no package lists yet.
        let _ = Command::new("apt-get").args(["update", "-q"]).stdin(Stdio::null()).stdout(Stdio::null()).status();
        install();
    }
    find_binary().ok_or_else(|| "`apt-get install -y pgbouncer` did not provide a pgbouncer binary".into())
}

/// `pgbouncer -V` first line, for the report header.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-V")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "PgBouncer (unknown version)".into())
}

/// A running PgBouncer; dropping it kills the process and deletes its files.
pub struct PgBouncer {
    pub port: u16,
    child: Child,
    dir: TempDir,
    watchdog: Option<Watchdog>,
}

impl PgBouncer {
    /// Write `pgbouncer.ini`, the user list and the HBA file, start
    /// PgBouncer and wait until it accepts TCP connections.
    pub fn start(bin: &Path, cluster: &PgCluster) -> Result<PgBouncer, String> {
        let dir = tempfile::Builder::new()
            .prefix("pgdog-bench-pgbouncer-")
            .tempdir()
            .map_err(|e| format!("create PgBouncer temp dir: {e}"))?;
        let port = free_port();
        let path = |name: &str| dir.path().join(name);

        // Plaintext passwords let PgBouncer answer SCRAM and also log in to
        // the server with SCRAM on the client's behalf.
        let userlist = format!("\"pgdog\" \"pgdog\"\n\"{IDLE_USER}\" \"\"\n");
        // PgBouncer 1.18 has no per-user auth_type; its HBA file is how one
        // user gets `trust` while everyone else uses SCRAM.
        let hba = format!(
            "host all {IDLE_USER} 127.0.0.1/32 trust\n\
             host all all         127.0.0.1/32 scram-sha-256\n"
        );
        let pg = cluster.primary_port;
        let mut ini = String::new();
        let _ = writeln!(ini, "[databases]");
        let _ = writeln!(ini, "pgdog = host=127.0.0.1 port={pg} dbname=pgdog");
        let _ = writeln!(ini, "{IDLE_DB} = host=127.0.0.1 port={pg} dbname=pgdog user=pgdog password=pgdog");
        let _ = writeln!(ini, "\n[pgbouncer]");
        for (key, value) in [
            ("listen_addr", "127.0.0.1".to_string()),
            ("listen_port", port.to_string()),
            // Empty: no unix socket.
            ("unix_socket_dir", String::new()),
            ("auth_type", "hba".into()),
            ("auth_hba_file", path("hba.conf").display().to_string()),
            ("auth_file", path("userlist.txt").display().to_string()),
            ("pool_mode", "transaction".into()),
            ("default_pool_size", "20".into()),
            ("max_client_conn", "11000".into()),
            ("logfile", path("pgbouncer.log").display().to_string()),
            ("pidfile", path("pgbouncer.pid").display().to_string()),
            // The router does not log each login at its default level either.
            ("log_connections", "0".into()),
            ("log_disconnections", "0".into()),
            ("admin_users", "pgdog".into()),
        ] {
            let _ = writeln!(ini, "{key} = {value}");
        }
        for (name, text) in [("userlist.txt", userlist), ("hba.conf", hba), ("pgbouncer.ini", ini)] {
            std::fs::write(path(name), text).map_err(|e| format!("write {name}: {e}"))?;
        }
        // Readable (and, for the log and pid file, writable) by the user
        // PgBouncer runs as.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod PgBouncer dir: {e}"))?;
        give_to_server(dir.path());
        for name in ["userlist.txt", "hba.conf", "pgbouncer.ini"] {
            give_to_server(&path(name));
        }

        let stderr = File::create(path("stderr.log")).map_err(|e| format!("create stderr.log: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.arg(path("pgbouncer.ini"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some((uid, gid)) = server_identity() {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        // Kills PgBouncer and deletes its files if the benchmark dies
        // without running Drop.
        let pid = child.id().to_string();
        let watchdog = Watchdog::spawn("kill -9 \"$1\"; rm -rf \"$2\"", &[pid.as_ref(), dir.path().as_os_str()], None);
        let mut bouncer = PgBouncer { port, child, dir, watchdog: Some(watchdog) };
        bouncer.wait_ready(Duration::from_secs(20))?;
        Ok(bouncer)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("pgbouncer exited ({status}) before listening on {addr}\n{}", self.logs()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("pgbouncer not listening on {addr} after {timeout:?}\n{}", self.logs()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Tail of the log file and of stderr, for error messages.
    pub fn logs(&self) -> String {
        format!(
            "--- pgbouncer.log ---\n{}\n--- stderr ---\n{}",
            tail_file(&self.dir.path().join("pgbouncer.log"), 4000),
            tail_file(&self.dir.path().join("stderr.log"), 4000)
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // Retire the watchdog while the pid is still ours (not yet reaped).
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
