//! `pgdog-router`: command line, logging, then `runtime::run`.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "pgdog-router", version, about = "PostgreSQL connection pooler and query router")]
struct Args {
    /// Router configuration (pgdog.toml).
    #[arg(long, env = "PGDOG_CONFIG", default_value = "/etc/pgdog/pgdog.toml")]
    config: PathBuf,
    /// Users file (users.toml).
    #[arg(long, env = "PGDOG_USERS_CONFIG", default_value = "/etc/pgdog/users.toml")]
    users: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() {
    let args = Args::parse();
    let config = match pgdog_router::config::load_files(&args.config, Some(&args.users)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgdog-router: {e}");
            std::process::exit(1);
        }
    };
    if args.check {
        println!("{}: ok", args.config.display());
        return;
    }
    raise_open_file_limit();
    // Reloads change the level through this handle (see `logging`).
    let log_level = pgdog_router::logging::init(&config.router.general.log_level);
    let code = pgdog_router::runtime::run(config, Some(args.config), Some(args.users), Some(log_level));
    std::process::exit(code);
}

/// Every client and server connection is a file descriptor: lift the soft
/// limit to the hard one so `max_client_conn` is not capped by a default 1024.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
