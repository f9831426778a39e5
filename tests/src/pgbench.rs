//! Reading the summary pgbench prints at the end of a benchmark run, so tests
//! can assert on transaction counts instead of grepping free text.

use std::process::Output;

/// The counts from the summary of one pgbench run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgbenchSummary {
    /// `number of transactions actually processed: N` (with `-t`, the `N`
    /// of `N/M`).
    pub processed: u64,
    /// `number of failed transactions: N (...)`; `None` when pgbench is older
    /// than 15 and does not print the line.
    pub failed: Option<u64>,
}

/// Parse pgbench's stdout; `None` when it has no summary (the run aborted
/// before printing one).
pub fn pgbench_summary(stdout: &str) -> Option<PgbenchSummary> {
    let mut processed = None;
    let mut failed = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            processed = leading_number(rest);
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            failed = leading_number(rest);
        }
    }
    Some(PgbenchSummary { processed: processed?, failed })
}

/// Everything pgbench printed, for assertion messages.
pub fn pgbench_transcript(out: &Output) -> String {
    format!(
        "pgbench exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 6000)
    )
}

/// The first run of digits in `s`, after leading spaces.
fn leading_number(s: &str) -> Option<u64> {
    let digits: String = s.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Last `max` bytes of `s` on a char boundary: pgbench's per-client error
/// lines can run to megabytes.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_15_summary() {
        let out = "transaction type: <builtin: TPC-B (sort of)>\n\
                   scaling factor: 1\n\
                   query mode: simple\n\
                   number of clients: 50\n\
                   duration: 5 s\n\
                   number of transactions actually processed: 12345\n\
                   number of failed transactions: 0 (0.000%)\n\
                   latency average = 20.1 ms\n";
        assert_eq!(pgbench_summary(out), Some(PgbenchSummary { processed: 12345, failed: Some(0) }));
    }

    #[test]
    fn reads_fixed_count_runs_and_old_versions() {
        let out = "number of transactions actually processed: 100/100\n";
        assert_eq!(pgbench_summary(out), Some(PgbenchSummary { processed: 100, failed: None }));
        let out = "number of transactions actually processed: 7\nnumber of failed transactions: 3 (30.000%)\n";
        assert_eq!(pgbench_summary(out), Some(PgbenchSummary { processed: 7, failed: Some(3) }));
    }

    #[test]
    fn aborted_run_has_no_summary() {
        assert_eq!(pgbench_summary("pgbench: error: client 3 aborted in command 4\n"), None);
        assert_eq!(pgbench_summary(""), None);
    }
}
