//! Running one pgbench measurement against one target and reading its
//! summary: throughput, transactions processed, failures and mean latency,
//! together with the CPU time the pooler in front of PostgreSQL (if any)
//! used while pgbench ran.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::procfs;
use crate::sys::pg_bin;

/// Database, user and password every target accepts.
pub const DB: &str = "pgdog";
pub const USER: &str = "pgdog";
pub const PASSWORD: &str = "pgdog";

/// What pgbench sends, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// `-S`: one primary-key SELECT per transaction.
    SelectOnly,
    /// The built-in TPC-B-like script: three UPDATEs, a SELECT and an
    /// INSERT in a transaction.
    TpcbLike,
}

/// `-M`: how statements go over the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryMode {
    Simple,
    Extended,
    Prepared,
}

impl QueryMode {
    pub fn flag(self) -> &'static str {
        match self {
            QueryMode::Simple => "simple",
            QueryMode::Extended => "extended",
            QueryMode::Prepared => "prepared",
        }
    }
}

/// One pgbench invocation, minus the target.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub script: Script,
    pub mode: QueryMode,
    pub clients: u32,
}

impl Workload {
    /// Short label for tables, e.g. `select-only extended, 100 clients`.
    pub fn label(&self) -> String {
        let script = match self.script {
            Script::SelectOnly => "select-only",
            Script::TpcbLike => "TPC-B-like",
        };
        format!("{script} {}, -c{}", self.mode.flag(), self.clients)
    }
}

/// Where pgbench connects, and which process (if any) to charge CPU to.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: &'static str,
    pub port: u16,
    /// The pooler process; `None` for direct PostgreSQL.
    pub pooler_pid: Option<u32>,
}

/// Summary of one finished pgbench run.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    pub tps: f64,
    pub transactions: u64,
    pub failed: u64,
    pub latency_ms: f64,
    /// Pooler CPU time over the run per processed transaction, in µs.
    pub cpu_us_per_tx: Option<f64>,
}

/// Run `workload` for `seconds` against `target`. An `Err` carries the
/// reason pgbench did not produce a clean summary (it exited non-zero, hung,
/// or printed something unexpected); that is a result to report, not a
/// reason to stop the benchmark.
pub fn run(target: &Target, workload: &Workload, seconds: u32, work_dir: &Path) -> Result<RunResult, String> {
    let mut args: Vec<String> = vec![
        "-n".into(), // no VACUUM before the run: the bench vacuums between rounds
        "-T".into(),
        seconds.to_string(),
        "-c".into(),
        workload.clients.to_string(),
        "-j".into(),
        workload.clients.min(2).to_string(),
        "-M".into(),
        workload.mode.flag().into(),
    ];
    if workload.script == Script::SelectOnly {
        args.push("-S".into());
    }
    let before = target.pooler_pid.and_then(procfs::cpu_ticks);
    let out = pgbench(target.port, &args, work_dir, Duration::from_secs(u64::from(seconds) + 90))?;
    let after = target.pooler_pid.and_then(procfs::cpu_ticks);

    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.success {
        return Err(format!("pgbench {}: {}", out.status, first_error(&out.stderr)));
    }
    let mut result = parse_summary(&stdout).ok_or_else(|| format!("unexpected pgbench output:\n{stdout}"))?;
    if let (Some(before), Some(after)) = (before, after) {
        if result.transactions > 0 {
            let seconds = (after - before) as f64 / procfs::clock_ticks_per_second() as f64;
            result.cpu_us_per_tx = Some(seconds * 1e6 / result.transactions as f64);
        }
    }
    Ok(result)
}

/// Pooler CPU per client connection, in µs: `clients` pgbench clients each
/// log in with SCRAM, run one select-only transaction and disconnect. Runs
/// charge these logins to their transactions too; this shows how much that
/// is (a short -c100 run pays it 100 times).
pub fn connection_cpu_us(target: &Target, clients: u32, work_dir: &Path) -> Result<f64, String> {
    let pid = target.pooler_pid.ok_or("not a pooler")?;
    let args: Vec<String> = vec![
        "-n".into(),
        "-S".into(),
        "-t".into(),
        "1".into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        "2".into(),
    ];
    let before = procfs::cpu_ticks(pid).ok_or("pooler process is gone")?;
    let out = pgbench(target.port, &args, work_dir, Duration::from_secs(120))?;
    let after = procfs::cpu_ticks(pid).ok_or("pooler process is gone")?;
    if !out.success {
        return Err(format!("pgbench {}: {}", out.status, first_error(&out.stderr)));
    }
    let seconds = (after - before) as f64 / procfs::clock_ticks_per_second() as f64;
    Ok(seconds * 1e6 / f64::from(clients.max(1)))
}

/// `pgbench -i -s scale` straight against PostgreSQL.
pub fn initialize(port: u16, scale: u32, work_dir: &Path) -> Result<(), String> {
    let args = vec!["-i".to_string(), "-q".into(), "-s".into(), scale.to_string()];
    let out = pgbench(port, &args, work_dir, Duration::from_secs(600))?;
    if out.success {
        Ok(())
    } else {
        Err(format!("pgbench -i failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// First line of pgbench's stderr that says what went wrong.
fn first_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .find(|l| l.contains("error") || l.contains("FATAL") || l.contains("ERROR"))
        .or_else(|| text.lines().next())
        .unwrap_or("")
        .trim()
        .to_string()
}

struct Finished {
    success: bool,
    status: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Run pgbench against 127.0.0.1:`port`, killing it after `limit`.
fn pgbench(port: u16, args: &[String], work_dir: &Path, limit: Duration) -> Result<Finished, String> {
    let program: PathBuf = pg_bin("pgbench");
    let child = Command::new(&program)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER])
        .args(args)
        .arg(DB)
        .env("PGPASSWORD", PASSWORD)
        // Every target answers SSLRequest with 'N'; skip the round trip.
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10")
        // pgbench -i writes nothing here, but keep stray files out of the
        // caller's directory.
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", program.display()))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(limit) {
        Ok(result) => result.map_err(|e| format!("wait for pgbench: {e}"))?,
        Err(_) => {
            // The waiting thread has not reaped it, so the pid is still ours.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv();
            return Err(format!("pgbench still running after {limit:?}; killed"));
        }
    };
    Ok(Finished {
        success: output.status.success(),
        status: output.status.to_string(),
        stdout: output.stdout,
        stderr: output.stderr,
    })
}

/// Read the summary pgbench prints at the end of a run: the counts through
/// the harness's own reader, plus throughput and latency. `tps` and the
/// transaction count are required; latency defaults to zero.
fn parse_summary(stdout: &str) -> Option<RunResult> {
    let counts = crate::pgbench::pgbench_summary(stdout)?;
    let mut result =
        RunResult { transactions: counts.processed, failed: counts.failed.unwrap_or(0), ..RunResult::default() };
    let mut have_tps = false;
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("tps = ") {
            if rest.contains("without initial connection time") {
                result.tps = first_number(rest)?;
                have_tps = true;
            }
        } else if let Some(rest) = line.strip_prefix("latency average =") {
            result.latency_ms = first_number(rest)?;
        }
    }
    have_tps.then_some(result)
}

/// The leading number of `s` (after whitespace), up to the first character
/// that cannot be part of it.
fn first_number(s: &str) -> Option<f64> {
    let s = s.trim_start();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    s[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: simple
number of clients: 10
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 61234
number of failed transactions: 7 (0.011%)
latency average = 0.489 ms
initial connection time = 21.003 ms
tps = 20445.123456 (without initial connection time)
";

    #[test]
    fn parses_the_summary() {
        let r = parse_summary(SAMPLE).unwrap();
        assert_eq!(r.transactions, 61234);
        assert_eq!(r.failed, 7);
        assert!((r.tps - 20445.123456).abs() < 1e-6);
        assert!((r.latency_ms - 0.489).abs() < 1e-9);
    }

    #[test]
    fn missing_tps_is_not_a_result() {
        assert!(parse_summary("number of transactions actually processed: 5\n").is_none());
    }
}
