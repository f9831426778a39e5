//! Turning per-round pgbench results into the markdown tables `make bench`
//! prints: medians per target, ratios to direct PostgreSQL, failures, and
//! pooler CPU per transaction (steadier than TPS on a shared 2-core box).

use std::fmt::Write as _;

use super::pgbench::RunResult;

/// Median of `values`; `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

/// Every round's outcome for one (workload, target) pair.
#[derive(Clone, Debug)]
pub enum Cell {
    /// The target cannot run this workload (PgBouncer 1.18 and `-M prepared`).
    Unsupported,
    /// The target was not available (PgBouncer not installed).
    Skipped,
    Runs(Vec<Result<RunResult, String>>),
}

impl Cell {
    fn ok(&self) -> Vec<&RunResult> {
        match self {
            Cell::Runs(runs) => runs.iter().filter_map(|r| r.as_ref().ok()).collect(),
            _ => Vec::new(),
        }
    }

    fn errors(&self) -> usize {
        match self {
            Cell::Runs(runs) => runs.iter().filter(|r| r.is_err()).count(),
            _ => 0,
        }
    }

    pub fn median_tps(&self) -> Option<f64> {
        median(&self.ok().iter().map(|r| r.tps).collect::<Vec<_>>())
    }

    pub fn median_latency_ms(&self) -> Option<f64> {
        median(&self.ok().iter().map(|r| r.latency_ms).collect::<Vec<_>>())
    }

    pub fn median_cpu_us(&self) -> Option<f64> {
        median(&self.ok().iter().filter_map(|r| r.cpu_us_per_tx).collect::<Vec<_>>())
    }

    fn failed(&self) -> Option<u64> {
        let ok = self.ok();
        (!ok.is_empty()).then(|| ok.iter().map(|r| r.failed).sum())
    }

    /// Placeholder for cells without numbers, or `None` if there are some.
    fn placeholder(&self) -> Option<String> {
        match self {
            Cell::Unsupported => Some("unsupported".into()),
            Cell::Skipped => Some("n/a".into()),
            Cell::Runs(_) if self.ok().is_empty() => Some("error".into()),
            Cell::Runs(_) => None,
        }
    }

    /// Median TPS, with a note when some rounds failed outright.
    fn tps_text(&self) -> String {
        if let Some(p) = self.placeholder() {
            return p;
        }
        let tps = format!("{:.0}", self.median_tps().unwrap_or(0.0));
        match self.errors() {
            0 => tps,
            n => format!("{tps} ({n} err)"),
        }
    }

    fn failed_text(&self) -> String {
        match self.placeholder() {
            Some(_) if matches!(self, Cell::Runs(_)) => "err".into(),
            Some(_) => "–".into(),
            None => self.failed().unwrap_or(0).to_string(),
        }
    }

    fn cpu_text(&self) -> String {
        match (self.placeholder(), self.median_cpu_us()) {
            (Some(p), _) => p,
            (None, Some(us)) => format!("{us:.1}"),
            (None, None) => "?".into(),
        }
    }
}

/// One row of the main table: a workload and its three targets.
pub struct Row {
    pub workload: String,
    pub direct: Cell,
    pub pgbouncer: Cell,
    pub router: Cell,
}

/// The median over rounds of `a`'s figure divided by `b`'s in the same
/// round: a paired comparison, which the drift of the whole machine from
/// one round to the next (often larger than the difference between two
/// poolers) cancels out of.
pub fn paired_ratio(a: &Cell, b: &Cell, figure: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
    let (Cell::Runs(a), Cell::Runs(b)) = (a, b) else { return None };
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|pair| match pair {
            (Ok(x), Ok(y)) => Some((figure(x)?, figure(y)?)),
            _ => None,
        })
        .filter(|(_, y)| *y > 0.0)
        .map(|(x, y)| x / y)
        .collect();
    median(&ratios)
}

fn paired_text(a: &Cell, b: &Cell, figure: impl Fn(&RunResult) -> Option<f64>) -> String {
    match (a.placeholder().or(b.placeholder()), paired_ratio(a, b, figure)) {
        (Some(p), _) => p,
        (None, Some(r)) => format!("{r:.2}×"),
        (None, None) => "–".into(),
    }
}

fn ratio(pooler: &Cell, direct: &Cell) -> String {
    if let Some(p) = pooler.placeholder() {
        return p;
    }
    match (pooler.median_tps(), direct.median_tps()) {
        (Some(p), Some(d)) if d > 0.0 => format!("{:.2}×", p / d),
        _ => "–".into(),
    }
}

/// The main markdown table.
pub fn throughput_table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| workload | direct TPS | PgBouncer TPS | router TPS | PgBouncer / direct | router / direct \
         | failed tx (direct / PgBouncer / router) | PgBouncer CPU µs/tx | router CPU µs/tx \
         | router / PgBouncer TPS, paired | router / PgBouncer CPU, paired |\n",
    );
    out.push_str("|---|--:|--:|--:|--:|--:|:-:|--:|--:|--:|--:|\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {} |",
            row.workload,
            row.direct.tps_text(),
            row.pgbouncer.tps_text(),
            row.router.tps_text(),
            ratio(&row.pgbouncer, &row.direct),
            ratio(&row.router, &row.direct),
            row.direct.failed_text(),
            row.pgbouncer.failed_text(),
            row.router.failed_text(),
            row.pgbouncer.cpu_text(),
            row.router.cpu_text(),
            paired_text(&row.router, &row.pgbouncer, |r| Some(r.tps)),
            paired_text(&row.router, &row.pgbouncer, |r| r.cpu_us_per_tx),
        );
    }
    out
}

/// One line per (workload, target) whose runs failed outright, with the
/// first distinct reason, so an `error` cell in the table is explained.
pub fn error_notes(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        for (name, cell) in [("direct", &row.direct), ("PgBouncer", &row.pgbouncer), ("router", &row.router)] {
            note_errors(&mut out, name, &row.workload, cell);
        }
    }
    out
}

fn note_errors(out: &mut String, target: &str, workload: &str, cell: &Cell) {
    let Cell::Runs(runs) = cell else { return };
    let mut reasons: Vec<&str> = runs.iter().filter_map(|r| r.as_ref().err()).map(|e| first_line(e)).collect();
    reasons.dedup();
    for reason in reasons {
        let _ = writeln!(out, "- {target}, {workload}: {reason}");
    }
}

/// One workload direct, through the router and through the bare forwarder.
pub struct FloorRow {
    pub workload: String,
    pub direct: Cell,
    pub router: Cell,
    pub forwarder: Cell,
}

/// The router against the floor: both ratios to direct, both CPU costs, and
/// what the router spends beyond forwarding.
pub fn floor_table(rows: &[FloorRow]) -> String {
    let mut out = String::new();
    out.push_str(
        "| workload | forwarder / direct | router / direct | forwarder CPU µs/tx | router CPU µs/tx \
         | router − forwarder µs/tx |\n|---|--:|--:|--:|--:|--:|\n",
    );
    let us = |x: Option<f64>| x.map_or_else(|| "–".to_string(), |x| format!("{x:.1}"));
    for row in rows {
        let (f, r) = (row.forwarder.median_cpu_us(), row.router.median_cpu_us());
        let extra = match (f, r) {
            (Some(f), Some(r)) => format!("{:+.1}", r - f),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.workload,
            ratio(&row.forwarder, &row.direct),
            ratio(&row.router, &row.direct),
            us(f),
            us(r),
            extra
        );
    }
    out
}

pub fn floor_error_notes(rows: &[FloorRow]) -> String {
    let mut out = String::new();
    for row in rows {
        note_errors(&mut out, "forwarder", &row.workload, &row.forwarder);
    }
    out
}

/// One workload through the router on the primary alone and through the
/// read/write-splitting router.
pub struct SplitRow {
    pub workload: String,
    pub router: Cell,
    pub split: Cell,
}

/// The read/write-split table: TPS of both routers, their ratio against
/// `goal`, failures and CPU per transaction.
pub fn split_table(rows: &[SplitRow], goal: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | router TPS | split router TPS | split / router | goal ≥ {goal:.2}× \
         | failed tx (router / split) | router CPU µs/tx | split router CPU µs/tx |"
    );
    out.push_str("|---|--:|--:|--:|:-:|:-:|--:|--:|\n");
    for row in rows {
        let verdict = match (row.split.placeholder(), row.split.median_tps(), row.router.median_tps()) {
            (None, Some(s), Some(r)) if r > 0.0 => {
                if s / r >= goal {
                    "met"
                } else {
                    "not met"
                }
            }
            _ => "–",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {verdict} | {} / {} | {} | {} |",
            row.workload,
            row.router.tps_text(),
            row.split.tps_text(),
            ratio(&row.split, &row.router),
            row.router.failed_text(),
            row.split.failed_text(),
            row.router.cpu_text(),
            row.split.cpu_text(),
        );
    }
    out
}

/// [`error_notes`] for the split table's router and split router cells.
pub fn split_error_notes(rows: &[SplitRow]) -> String {
    let mut out = String::new();
    for row in rows {
        note_errors(&mut out, "router", &row.workload, &row.router);
        note_errors(&mut out, "split router", &row.workload, &row.split);
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Single-client latency through each pooler, and what the pooler adds over
/// connecting to PostgreSQL directly.
pub fn latency_table(row: &Row) -> String {
    let mut out = String::new();
    out.push_str("| target | mean latency, 1 client (µs) | added vs direct (µs) |\n|---|--:|--:|\n");
    let direct = row.direct.median_latency_ms();
    for (name, cell) in [("direct", &row.direct), ("PgBouncer", &row.pgbouncer), ("router", &row.router)] {
        let (lat, added) = match (cell.placeholder(), cell.median_latency_ms()) {
            (Some(p), _) => (p.clone(), p),
            (None, Some(ms)) => {
                let added = match direct {
                    Some(d) if name != "direct" => format!("{:+.0}", (ms - d) * 1000.0),
                    _ => "–".into(),
                };
                (format!("{:.0}", ms * 1000.0), added)
            }
            (None, None) => ("?".into(), "?".into()),
        };
        let _ = writeln!(out, "| {name} | {lat} | {added} |");
    }
    out
}

/// Pooler CPU per SCRAM client connection (login, one transaction,
/// logout), median over rounds.
pub fn connection_table(per_pooler: &[(&str, Vec<Result<f64, String>>)]) -> String {
    let mut out = String::new();
    out.push_str("| pooler | CPU per client connection (µs) |\n|---|--:|\n");
    for (name, runs) in per_pooler {
        let ok: Vec<f64> = runs.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        let text = match (median(&ok), runs.iter().find_map(|r| r.as_ref().err())) {
            (Some(us), _) => format!("{us:.0}"),
            (None, Some(e)) => format!("error: {}", first_line(e).replace('|', "/")),
            (None, None) => "?".into(),
        };
        let _ = writeln!(out, "| {name} | {text} |");
    }
    out
}

/// Memory of a pooler holding idle clients.
pub struct IdleResult {
    pub pooler: &'static str,
    pub outcome: Result<IdleNumbers, String>,
}

pub struct IdleNumbers {
    pub clients: usize,
    pub rss_before_kib: u64,
    pub rss_with_clients_kib: u64,
    pub fds: usize,
    pub login_seconds: f64,
}

pub fn idle_table(results: &[IdleResult]) -> String {
    let mut out = String::new();
    out.push_str(
        "| pooler | idle clients | RSS before (MiB) | RSS with clients (MiB) | per client (KiB) \
         | open fds | login time (s) |\n|---|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in results {
        match &r.outcome {
            Ok(n) => {
                let per_client = (n.rss_with_clients_kib as f64 - n.rss_before_kib as f64) / n.clients.max(1) as f64;
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.1} |",
                    r.pooler,
                    n.clients,
                    n.rss_before_kib as f64 / 1024.0,
                    n.rss_with_clients_kib as f64 / 1024.0,
                    per_client,
                    n.fds,
                    n.login_seconds
                );
            }
            Err(e) => {
                let _ = writeln!(out, "| {} | {} | | | | | |", r.pooler, e.replace('|', "/").replace('\n', " "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(tps: &[f64]) -> Cell {
        Cell::Runs(
            tps.iter()
                .map(|&tps| Ok(RunResult { tps, transactions: 100, latency_ms: 1.0, ..Default::default() }))
                .collect(),
        )
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn table_shows_ratios_and_unsupported() {
        let rows = [Row {
            workload: "w".into(),
            direct: runs(&[100.0, 200.0, 300.0]),
            pgbouncer: Cell::Unsupported,
            router: runs(&[50.0, 100.0, 150.0]),
        }];
        let table = throughput_table(&rows);
        assert!(table.contains("| w | 200 | unsupported | 100 | unsupported | 0.50× |"), "{table}");
        assert!(error_notes(&rows).is_empty());
    }

    #[test]
    fn split_table_shows_the_ratio_and_the_goal() {
        let rows = [
            SplitRow { workload: "a".into(), router: runs(&[100.0]), split: runs(&[96.0]) },
            SplitRow { workload: "b".into(), router: runs(&[100.0]), split: runs(&[90.0]) },
            SplitRow { workload: "c".into(), router: runs(&[100.0]), split: Cell::Runs(vec![Err("down".into())]) },
        ];
        let table = split_table(&rows, 0.95);
        assert!(table.contains("| a | 100 | 96 | 0.96× | met | 0 / 0 |"), "{table}");
        assert!(table.contains("| b | 100 | 90 | 0.90× | not met |"), "{table}");
        assert!(table.contains("| c | 100 | error | error | – | 0 / err |"), "{table}");
        assert_eq!(split_error_notes(&rows), "- split router, c: down\n");
    }

    #[test]
    fn paired_ratio_is_the_median_of_same_round_ratios() {
        let cpu = |v: &[f64]| {
            Cell::Runs(
                v.iter().map(|&c| Ok(RunResult { tps: 1.0, cpu_us_per_tx: Some(c), ..Default::default() })).collect(),
            )
        };
        // Round 2 is slow for both; the medians alone (20 against 19) say
        // the router costs more, the rounds say it costs less twice.
        let router = cpu(&[10.0, 30.0, 20.0]);
        let bouncer = cpu(&[12.0, 31.0, 19.0]);
        let paired = paired_ratio(&router, &bouncer, |r| r.cpu_us_per_tx).expect("three pairs");
        assert!((paired - 30.0 / 31.0).abs() < 1e-9, "{paired}");
        // A round that failed for either side pairs with nothing.
        let mut failed = router.clone();
        if let Cell::Runs(runs) = &mut failed {
            runs[1] = Err("down".into());
        }
        let paired = paired_ratio(&failed, &bouncer, |r| r.cpu_us_per_tx).expect("two pairs");
        assert!((paired - (10.0 / 12.0 + 20.0 / 19.0) / 2.0).abs() < 1e-9, "{paired}");
        assert_eq!(paired_ratio(&router, &Cell::Unsupported, |r| r.cpu_us_per_tx), None);
        let rows = [Row { workload: "w".into(), direct: cpu(&[5.0]), pgbouncer: bouncer, router }];
        assert!(throughput_table(&rows).contains("| 1.00× | 0.97× |"), "{}", throughput_table(&rows));
    }

    #[test]
    fn errors_are_explained_once() {
        let failing = Cell::Runs(vec![Err("boom\ndetail".into()), Err("boom".into())]);
        let rows = [Row { workload: "w".into(), direct: runs(&[1.0]), pgbouncer: Cell::Skipped, router: failing }];
        assert_eq!(error_notes(&rows), "- router, w: boom\n");
        assert!(throughput_table(&rows).contains("| w | 1 | n/a | error | n/a | error | 0 / – / err |"));
    }
}
