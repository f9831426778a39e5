//! `make bench`: pgdog-router against PgBouncer and against PostgreSQL with
//! no pooler, side by side, on this machine's loopback.
//!
//! It starts a throwaway PostgreSQL primary (`pgbench -i -s 10`), a
//! PgBouncer and the release router, both in transaction mode with 20 server
//! connections, and runs pgbench workloads (select-only in simple, extended
//! and prepared protocol at 10 and 100 clients, a single-client select-only
//! run for latency, and TPC-B-like at 10 clients) against all three, round
//! by round so slow drift on the machine hits every target alike. It prints
//! every run, then markdown tables: median TPS and its ratio to direct,
//! failed transactions, each pooler's CPU time per transaction, the latency
//! a pooler adds to a single client, and the memory each pooler needs to
//! hold 10,000 idle clients.
//!
//! The floor: a bare 1:1 TCP forwarder (no parsing, no pooling, one thread;
//! `bench::forwarder`) runs every workload too, and a table sets the router
//! against it. What even the forwarder cannot reach is the machine's limit.
//!
//! Read/write splitting: the primary has a streaming replica, and a second
//! router with `read_write_split = true` over both runs the select-only
//! -c10 workloads (simple and extended) in the same rounds; a table compares
//! it with the router on the primary alone, and its parse-cache hit rate
//! and the share of queries its replica served are read from its metrics.
//!
//! CPU time per transaction is reported next to TPS because this runs on a
//! shared 2-core box where pgbench, PostgreSQL and the pooler fight over the
//! cores: TPS moves with scheduling noise, while the CPU a pooler spends per
//! forwarded transaction is much steadier and is what a faster pooler saves.
//! It covers the whole pgbench run, so it includes the pooler's side of
//! pgbench's SCRAM logins (one per client, a small share at -c100).
//!
//! Exits non-zero only when setup fails; slow or failing runs are reported
//! in the tables.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pgdog_tests::bench::forwarder::{self, Forwarder};
use pgdog_tests::bench::idle;
use pgdog_tests::bench::pgbench::{self, QueryMode, Script, Target, Workload};
use pgdog_tests::bench::pgbouncer::{self, PgBouncer};
use pgdog_tests::bench::procfs;
use pgdog_tests::bench::report::{self, Cell, FloorRow, IdleNumbers, IdleResult, Row, SplitRow};
use pgdog_tests::bench::split;
use pgdog_tests::{free_port, pg_bin_dir, PgCluster, RouterProcess};

/// `pgbench -i` scale factor: 1,000,000 accounts, about 150 MB.
const SCALE: u32 = 10;

/// Client user the router lets in without a password, for the idle test.
const IDLE_USER: &str = "bench_idle";

/// Clients of the per-round connection-cost measurement: enough that even
/// a cheap login adds up to many 10 ms clock ticks of pooler CPU.
const CONNECTION_CLIENTS: u32 = 500;

/// Logins in flight at once while opening idle clients.
const IDLE_CONCURRENCY: usize = 32;

const USAGE: &str = "\
usage: bench [--quick] [--rounds N] [--duration SECONDS] [--idle-clients N]

  --quick             smoke run: 1 round of 3 s runs (about a minute and a half)
  --rounds N          rounds of every workload on every target (default 3)
  --duration SECONDS  length of each pgbench run (default 6)
  --idle-clients N    idle clients held open for the memory test (default 10000)

environment:
  PGDOG_ROUTER_BIN    router binary (default: build/bin/pgdog-router, from `make build`)
  PGBOUNCER_BIN       pgbouncer binary (default: from $PATH or /usr/sbin)
  PGDOG_TEST_PG_BIN   PostgreSQL bin directory";

struct Options {
    rounds: u32,
    duration: u32,
    warmup: u32,
    idle_clients: usize,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut opts = Options { rounds: 3, duration: 6, warmup: 2, idle_clients: 10_000 };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> Result<u64, String> {
                let v = args.next().ok_or_else(|| format!("{name} needs a value"))?;
                v.parse::<u64>().map_err(|_| format!("{name}: not a number: {v}"))
            };
            match arg.as_str() {
                "--quick" => {
                    opts.rounds = 1;
                    opts.duration = 3;
                    opts.warmup = 1;
                }
                "--rounds" => opts.rounds = value("--rounds")?.clamp(1, 100) as u32,
                "--duration" => opts.duration = value("--duration")?.clamp(1, 3600) as u32,
                "--idle-clients" => opts.idle_clients = value("--idle-clients")? as usize,
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument: {other}")),
            }
        }
        Ok(opts)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(forwarder::FLAG) {
        return serve_forwarder(&args[1..]);
    }
    let opts = match Options::parse(args.into_iter()) {
        Ok(opts) => opts,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("bench: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if msg.is_empty() { 0 } else { 2 });
        }
    };
    // Before any thread exists: RouterProcess reads this variable.
    let router_bin = match release_router_bin() {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    std::env::set_var("PGDOG_ROUTER_BIN", &router_bin);
    // Setup helpers of the test harness panic on failure; the guards below
    // still stop every process while the panic unwinds.
    match run(&opts, &router_bin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: setup failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The release router: `PGDOG_ROUTER_BIN`, else `build/bin/pgdog-router`
/// in the workspace (what `make build` produces). Never a debug build.
fn release_router_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("PGDOG_ROUTER_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() { Ok(bin) } else { Err(format!("PGDOG_ROUTER_BIN={} does not exist", bin.display())) };
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests crate lives inside the workspace");
    let bin = workspace.join("build/bin/pgdog-router");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} not found: run `make build` first (or `make bench`, which does)", bin.display()))
    }
}

/// The workloads, in the order they run within a round and appear in the
/// table. The first one (one client) also gives the latency table.
fn workloads() -> Vec<Workload> {
    let select = |mode, clients| Workload { script: Script::SelectOnly, mode, clients };
    vec![
        select(QueryMode::Simple, 1),
        select(QueryMode::Simple, 10),
        select(QueryMode::Simple, 100),
        select(QueryMode::Extended, 10),
        select(QueryMode::Extended, 100),
        select(QueryMode::Prepared, 10),
        select(QueryMode::Prepared, 100),
        Workload { script: Script::TpcbLike, mode: QueryMode::Simple, clients: 10 },
    ]
}

/// Indexes in the target list (direct, PgBouncer, router, split router,
/// forwarder).
const PGBOUNCER: usize = 1;
const SPLIT: usize = 3;
const TARGETS: usize = 5;

/// How long the replica may take to replay `pgbench -i`'s load.
const REPLICA_CATCH_UP: Duration = Duration::from_secs(300);

fn run(opts: &Options, router_bin: &Path) -> Result<(), String> {
    let started = Instant::now();
    // Other work on the box skews every number; the report says how busy it was.
    let load_at_start = load_average();
    let nofile = procfs::raise_nofile_limit();
    let idle_clients = if nofile < opts.idle_clients as u64 + 200 {
        let n = nofile.saturating_sub(200) as usize;
        eprintln!("bench: open-file limit is {nofile}; holding {n} idle clients instead of {}", opts.idle_clients);
        n
    } else {
        opts.idle_clients
    };
    let pgbench_bin = pg_bin_dir().join("pgbench");
    if !pgbench_bin.is_file() {
        return Err(format!("{} not found (Debian: apt-get install postgresql-contrib)", pgbench_bin.display()));
    }
    let bouncer_bin = match pgbouncer::locate_or_install() {
        Ok(bin) => Some(bin),
        Err(e) => {
            eprintln!("bench: skipping PgBouncer: {e}");
            None
        }
    };
    let work_dir = tempfile::Builder::new().prefix("pgdog-bench-").tempdir().map_err(|e| e.to_string())?;

    progress("starting PostgreSQL (primary and streaming replica)");
    let cluster = PgCluster::start(true);
    progress(&format!("pgbench -i -s {SCALE}"));
    pgbench::initialize(cluster.primary_port, SCALE, work_dir.path())?;
    progress("waiting for the replica to replay the load");
    split::wait_caught_up(&cluster, REPLICA_CATCH_UP)?;
    let pg_version = cluster.psql_admin("SHOW server_version");

    let bouncer = match &bouncer_bin {
        Some(bin) => {
            progress("starting PgBouncer");
            Some(PgBouncer::start(bin, &cluster)?)
        }
        None => None,
    };
    progress("starting the router");
    let router = RouterProcess::start(&router_config(&cluster), &router_users());
    progress("starting the read/write-splitting router");
    let split_router = RouterProcess::start(&split::router_config(&cluster), &router_users());
    progress("starting the bare forwarder");
    let forwarder = Forwarder::start(cluster.primary_port)?;

    let mut targets: Vec<Option<Target>> =
        vec![Some(Target { name: "direct", port: cluster.primary_port, pooler_pid: None })];
    targets.push(bouncer.as_ref().map(|b| Target { name: "PgBouncer", port: b.port, pooler_pid: Some(b.pid()) }));
    targets.push(Some(Target { name: "router", port: router.port, pooler_pid: Some(router.child.id()) }));
    targets.push(Some(Target {
        name: "split router",
        port: split_router.port,
        pooler_pid: Some(split_router.child.id()),
    }));
    targets.push(Some(Target { name: "forwarder", port: forwarder.port, pooler_pid: Some(forwarder.pid()) }));
    assert_eq!(targets.len(), TARGETS);

    println!("# pgdog-router benchmark");
    println!();
    println!("- machine: {} CPU cores, all on 127.0.0.1", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("- PostgreSQL {pg_version}, pgbench -i -s {SCALE}, max_connections 300, fsync off");
    match &bouncer_bin {
        Some(bin) => println!("- {}: transaction mode, default_pool_size 20, SCRAM", pgbouncer::version(bin)),
        None => println!("- PgBouncer: not available, skipped"),
    }
    println!("- router: {} (release), workers = 1, transaction mode, max_pool_size 20, SCRAM", router_bin.display());
    println!(
        "- split router: the same binary and settings plus [query_routing] read_write_split = true over the primary \
         and a streaming replica (max_pool_size 20 per host); select-only -c10 simple and extended only. The replica \
         runs for the whole bench, replaying what the other targets' TPC-B runs write"
    );
    println!(
        "- {} round(s) x {} s per run, pgbench -j 2 (-j 1 at one client), targets interleaved; tables show medians",
        opts.rounds, opts.duration
    );
    println!(
        "- forwarder: a bare 1:1 TCP forwarder (one PostgreSQL connection per client, bytes copied both ways, no \
         parsing, no pooling; tokio current-thread runtime, TCP_NODELAY), the floor for any proxy here"
    );
    println!("- pooler CPU/tx = utime+stime from /proc/<pid>/stat over the whole run (its pgbench logins included) / transactions processed");
    println!();

    // Open the pools, fill caches, and prove every target works before
    // measuring anything; a target that cannot serve a SELECT is a setup
    // failure.
    for target in targets.iter().flatten() {
        progress(&format!("warm-up: {}", target.name));
        let warm = Workload { script: Script::SelectOnly, mode: QueryMode::Simple, clients: 20 };
        pgbench::run(target, &warm, opts.warmup, work_dir.path())
            .map_err(|e| format!("warm-up through {} failed: {e}", target.name))?;
    }

    let workloads = workloads();
    let mut cells: Vec<[Cell; TARGETS]> = workloads
        .iter()
        .map(|w| {
            std::array::from_fn(|t| {
                if targets[t].is_none() || (t == SPLIT && !split::runs(w)) {
                    Cell::Skipped
                } else if t == PGBOUNCER && w.mode == QueryMode::Prepared {
                    // PgBouncer 1.18 keeps no track of prepared statements
                    // in transaction mode: they fail on the next server.
                    Cell::Unsupported
                } else {
                    Cell::Runs(Vec::new())
                }
            })
        })
        .collect();

    // CPU each pooler spends on one SCRAM client connection, measured once
    // per round; pgbench runs pay it once per client.
    // (Not the split router: its logins are the router's.)
    let mut connection_cpu: Vec<(&str, Vec<Result<f64, String>>)> =
        targets[..SPLIT].iter().flatten().filter(|t| t.pooler_pid.is_some()).map(|t| (t.name, Vec::new())).collect();

    println!("## Raw runs");
    println!();
    println!("```");
    for round in 0..opts.rounds {
        // pgbench's own VACUUM, done once per round instead of before each run.
        cluster.psql_admin("VACUUM pgbench_branches; VACUUM pgbench_tellers; TRUNCATE pgbench_history");
        for (name, results) in &mut connection_cpu {
            let Some(target) = targets.iter().flatten().find(|t| t.name == *name) else { continue };
            let result = pgbench::connection_cpu_us(target, CONNECTION_CLIENTS, work_dir.path());
            match &result {
                Ok(us) => println!(
                    "round {}  {CONNECTION_CLIENTS} connections (login, 1 tx, logout) {name:<10} pooler cpu {us:.0} µs/connection",
                    round + 1
                ),
                Err(e) => println!("round {}  connections {name:<10} ERROR {e}", round + 1),
            }
            results.push(result);
        }
        for (w, workload) in workloads.iter().enumerate() {
            // Rotate which target goes first so none always follows the
            // same neighbour.
            for k in 0..targets.len() {
                let t = (k + round as usize + w) % targets.len();
                let (Some(target), Cell::Runs(runs)) = (&targets[t], &mut cells[w][t]) else { continue };
                let result = pgbench::run(target, workload, opts.duration, work_dir.path());
                println!("{}", raw_line(round + 1, workload, target.name, &result));
                runs.push(result);
            }
        }
    }
    println!("```");
    println!();

    let mut idle_results = Vec::new();
    progress(&format!("idle clients: router ({idle_clients})"));
    idle_results.push(IdleResult {
        pooler: "router",
        outcome: idle_test(router.child.id(), router.port, IDLE_USER, "pgdog", idle_clients),
    });
    if let Some(b) = &bouncer {
        progress(&format!("idle clients: PgBouncer ({idle_clients})"));
        idle_results.push(IdleResult {
            pooler: "PgBouncer",
            outcome: idle_test(b.pid(), b.port, pgbouncer::IDLE_USER, pgbouncer::IDLE_DB, idle_clients),
        });
    }

    let split_figures = split::read_figures(split_router.metrics_port);
    let mut split_rows = Vec::new();
    let mut rows = Vec::new();
    let mut floor_rows = Vec::new();
    for (w, [direct, pgbouncer, router, split, forwarder]) in workloads.iter().zip(cells) {
        if split::runs(w) {
            split_rows.push(SplitRow { workload: w.label(), router: router.clone(), split });
        }
        floor_rows.push(FloorRow { workload: w.label(), direct: direct.clone(), router: router.clone(), forwarder });
        rows.push(Row { workload: w.label(), direct, pgbouncer, router });
    }

    println!("## Throughput (median of {} round(s), {} s each)", opts.rounds, opts.duration);
    println!();
    print!("{}", report::throughput_table(&rows));
    println!();
    print_errors(&report::error_notes(&rows));
    println!("## The floor: a bare forwarder (same runs)");
    println!();
    print!("{}", report::floor_table(&floor_rows));
    println!();
    print_errors(&report::floor_error_notes(&floor_rows));
    println!("## Read/write splitting (select-only, -c10; split router over primary + replica)");
    println!();
    print!("{}", report::split_table(&split_rows, split::GOAL));
    println!();
    print_errors(&report::split_error_notes(&split_rows));
    match &split_figures {
        Ok(f) => {
            let percent = |x: Option<f64>| x.map_or_else(|| "–".to_string(), |x| format!("{:.2}%", x * 100.0));
            println!(
                "Split router, whole bench (warm-up included): parse cache {:.0} hits, {:.0} misses, hit rate {}, \
                 {:.0} shapes cached; transactions served by the replica {} ({:.0} of {:.0} checkouts).",
                f.cache_hits,
                f.cache_misses,
                percent(f.hit_rate()),
                f.cache_entries,
                percent(f.replica_share()),
                f.replica_checkouts,
                f.primary_checkouts + f.replica_checkouts
            );
        }
        Err(e) => println!("Split router figures unavailable: {e}"),
    }
    println!();
    println!("## Single-client latency (select-only simple, -c1)");
    println!();
    print!("{}", report::latency_table(&rows[0]));
    println!();
    println!("## Connection cost (SCRAM login, one transaction, logout; pgbench -c{CONNECTION_CLIENTS} -t1)");
    println!();
    print!("{}", report::connection_table(&connection_cpu));
    println!();
    println!("## Idle clients (logged in, idle; trust auth)");
    println!();
    print!("{}", report::idle_table(&idle_results));
    println!();
    println!(
        "_total bench time: {:.0} s; load average at start {load_at_start}, at end {}_",
        started.elapsed().as_secs_f64(),
        load_average()
    );

    // Stop the poolers before the cluster they point at.
    drop(forwarder);
    drop(split_router);
    drop(router);
    drop(bouncer);
    drop(cluster);
    Ok(())
}

/// The runs that failed under a table, if any.
fn print_errors(notes: &str) {
    if !notes.is_empty() {
        println!("Errors:");
        println!();
        print!("{notes}");
        println!();
    }
}

/// `bench --forward LISTEN_PORT UPSTREAM_PORT`: the forwarder target's process.
fn serve_forwarder(args: &[String]) -> ExitCode {
    let port = |i: usize| args.get(i).and_then(|a| a.parse::<u16>().ok());
    let (Some(listen), Some(upstream)) = (port(0), port(1)) else {
        eprintln!("usage: bench {} LISTEN_PORT UPSTREAM_PORT", forwarder::FLAG);
        return ExitCode::from(2);
    };
    match forwarder::serve(listen, upstream) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: forwarder: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

fn raw_line(round: u32, workload: &Workload, target: &str, result: &Result<pgbench::RunResult, String>) -> String {
    let head = format!("round {round}  {:<28} {:<12}", workload.label(), target);
    match result {
        Ok(r) => {
            let cpu = r.cpu_us_per_tx.map_or_else(|| "-".to_string(), |us| format!("{us:.1} µs/tx"));
            format!(
                "{head} tps {:>9.1}  tx {:>8}  failed {:>3}  latency {:>7.3} ms  pooler cpu {cpu}",
                r.tps, r.transactions, r.failed, r.latency_ms
            )
        }
        Err(e) => format!("{head} ERROR {}", e.lines().next().unwrap_or("")),
    }
}

/// Hold `count` idle clients on a pooler and read its memory.
fn idle_test(pid: u32, port: u16, user: &str, db: &str, count: usize) -> Result<IdleNumbers, String> {
    let rss_before_kib = procfs::rss_kib(pid).ok_or("pooler process is gone")?;
    let start = Instant::now();
    let clients = idle::open(port, user, db, count, IDLE_CONCURRENCY)?;
    let login_seconds = start.elapsed().as_secs_f64();
    // Let the pooler settle (buffers allocated during login, lazy frees).
    std::thread::sleep(Duration::from_secs(1));
    let rss_with_clients_kib = procfs::rss_kib(pid).ok_or("pooler process is gone")?;
    let fds = procfs::open_fds(pid).unwrap_or(0);
    drop(clients);
    // Give the pooler a moment to notice the disconnects before the next test.
    std::thread::sleep(Duration::from_millis(500));
    Ok(IdleNumbers { clients: count, rss_before_kib, rss_with_clients_kib, fds, login_seconds })
}

/// Router configuration: transaction pooling with 20 server connections,
/// one worker thread, room for the idle clients, defaults otherwise.
fn router_config(cluster: &PgCluster) -> String {
    format!(
        "[general]
host = \"127.0.0.1\"
port = {port}
admin_port = {admin}
metrics_port = {metrics}
workers = 1
max_client_conn = 11000

[pools.default]
pool_mode = \"transaction\"
max_pool_size = 20

[[databases]]
name = \"pgdog\"
host = \"127.0.0.1\"
port = {pg}
role = \"primary\"
",
        port = free_port(),
        admin = free_port(),
        metrics = free_port(),
        pg = cluster.primary_port
    )
}

/// `pgdog`/`pgdog` with SCRAM for pgbench, and a trusted user for the idle
/// clients (10,000 SCRAM logins would take most of a minute of CPU).
fn router_users() -> String {
    format!(
        "[[users]]
name = \"pgdog\"
password = \"pgdog\"
database = \"pgdog\"
auth = \"scram\"

[[users]]
name = \"{IDLE_USER}\"
database = \"pgdog\"
auth = \"trust\"
server_user = \"pgdog\"
server_password = \"pgdog\"
"
    )
}
