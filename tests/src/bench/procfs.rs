//! What the benchmark reads about a pooler process from `/proc`: CPU time
//! (to charge each transaction with the pooler's own work), resident memory
//! and open descriptors (for the idle-client test), plus raising this
//! process's open-file limit so thousands of sockets fit.
//!
//! CPU time is the measurement the benchmark leans on: on a shared 2-core
//! machine TPS swings with whatever else is scheduled, but the CPU a pooler
//! spends per transaction barely moves.

use std::path::PathBuf;

/// Kernel clock ticks per second, the unit of `utime`/`stime` in
/// `/proc/<pid>/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// User plus system CPU time of the whole process (all threads) so far, in
/// clock ticks; `None` if the process is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name
/// (field 2) is in parentheses and may contain spaces, so fields are counted
/// from the last `)`: field 3 (state) is the first after it, and utime and
/// stime are fields 14 and 15.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size (`VmRSS`) in KiB; `None` if the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Number of open file descriptors; `None` if the process is gone.
pub fn open_fds(pid: u32) -> Option<usize> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    Some(std::fs::read_dir(dir).ok()?.count())
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; children inherit it.
/// Returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    // rlim_t is u64 on Linux but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    soft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "4242 (pg dog) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0 12345 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(rss_kib(me).unwrap() > 0);
        assert!(open_fds(me).unwrap() > 0);
    }
}
