//! Operating-system plumbing shared by the cluster and router helpers:
//! locating the PostgreSQL binaries, dropping root privileges for them,
//! running commands with useful failure messages, and the watchdog that
//! cleans up after a test process that dies without running its exit hooks.

use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;

/// Directory holding `initdb`, `pg_ctl`, `psql`, ... .
///
/// `PGDOG_TEST_PG_BIN` wins so a developer can point at a specific build;
/// then `pg_config --bindir`; then the newest Debian-style
/// `/usr/lib/postgresql/<major>/bin`.
pub fn pg_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PGDOG_TEST_PG_BIN") {
            return PathBuf::from(dir);
        }
        let from_pg_config = Command::new("pg_config")
            .arg("--bindir")
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            .filter(|dir| dir.join("initdb").exists());
        if let Some(dir) = from_pg_config {
            return dir;
        }
        newest_debian_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found: no initdb under `pg_config --bindir` \
                 or /usr/lib/postgresql/*/bin; set PGDOG_TEST_PG_BIN"
            )
        })
    })
}

fn newest_debian_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            // Compare numerically so that 10 sorts after 9.6.
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Vec<u32> = name.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// Path of one PostgreSQL program, e.g. `pg_bin("pg_ctl")`.
pub fn pg_bin(name: &str) -> PathBuf {
    pg_bin_dir().join(name)
}

/// uid/gid that PostgreSQL server programs must run as: `None` when the test
/// process is not root, because initdb and pg_ctl refuse to run as root.
pub fn server_identity() -> Option<(u32, u32)> {
    static IDENTITY: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *IDENTITY.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        Some(
            lookup_user("postgres")
                .unwrap_or_else(|| panic!("tests run as root but there is no `postgres` OS user to run PostgreSQL as")),
        )
    })
}

/// uid and primary gid of a named OS user.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // The reentrant variant, because other test threads may be using the
    // libc passwd buffer at the same time.
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; an all-zero value is a valid placeholder.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage owned by
    // this frame, and `buf.len()` is the real buffer size.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}

/// A command for a PostgreSQL server program, run as the server identity and
/// from `cwd`. The working directory matters when we are root: the checkout
/// may sit under a directory the `postgres` user cannot enter, and initdb and
/// pg_ctl fail if they cannot resolve their current directory.
pub fn server_command(program: &str, cwd: &Path) -> Command {
    let mut cmd = Command::new(pg_bin(program));
    cmd.current_dir(cwd).stdin(Stdio::null());
    if let Some((uid, gid)) = server_identity() {
        // std drops supplementary groups when a root parent sets a uid.
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Hand a file or directory to the server identity (no-op unless root).
pub fn give_to_server(path: &Path) {
    if let Some((uid, gid)) = server_identity() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
    }
}

/// Run to completion and panic with everything we know if it fails.
pub fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot spawn {:?}: {e}", cmd.get_program()));
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Last `max` bytes of a log file, for panic messages.
pub fn tail_file(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// A detached `sh` that runs a cleanup action when this process goes away.
///
/// It blocks reading a pipe whose only writer is this process. Normal
/// shutdown writes `disarm`, and the shell exits without doing anything. If
/// the test process dies any other way (SIGKILL, abort, a hung test killed by
/// CI) the kernel closes the pipe, `read` sees EOF and the action runs. This
/// needs no polling and, unlike watching a pid, cannot be fooled by pid reuse
/// or by `kill -0` lacking permission on a root-owned process. The pipe is
/// close-on-exec on our side, so no other child keeps it open by accident.
pub struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// `action` is a shell snippet that sees `args` as `$1`, `$2`, ...
    pub fn spawn(action: &str, args: &[&OsStr], identity: Option<(u32, u32)>) -> Watchdog {
        let script = format!("read line; [ \"$line\" = disarm ] && exit 0; {action}");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .arg("pgdog-tests-watchdog")
            .args(args)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C aimed at `cargo test` must not take
            // the watchdog down before it has cleaned up.
            .process_group(0);
        if let Some((uid, gid)) = identity {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn watchdog shell: {e}"));
        let stdin = child.stdin.take();
        Watchdog { child, stdin }
    }

    /// Send one line to the watchdog script without closing the pipe.
    pub fn send(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(format!("{line}\n").as_bytes());
        }
    }

    /// Tell the watchdog its job is done and reap it.
    pub fn disarm(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            // If the shell is already gone there is nothing left to stop.
            let _ = stdin.write_all(b"disarm\n");
        }
        let _ = self.child.wait();
    }
}
