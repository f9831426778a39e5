//! Integration-test harness for `pgdog-router`.
//!
//! Tests get real PostgreSQL servers ([`PgCluster`], usually the per-binary
//! [`shared_cluster`]) and a real router binary ([`RouterProcess`]) talking
//! to them over 127.0.0.1. Nothing here listens on, or connects to, any other
//! address.
//!
//! When the tests run as root, the PostgreSQL server programs are run as the
//! `postgres` OS user, because initdb and pg_ctl refuse to run as root.
//! Everything on disk lives under [`std::env::temp_dir`] and is deleted when
//! the test binary exits, even if it is killed.
//!
//! Environment knobs:
//! * `PGDOG_ROUTER_BIN`: router binary to run instead of building one;
//! * `PGDOG_CONFIG_GEN_BIN`: the same for `pgdog-config-gen`;
//! * `PGDOG_TEST_LOG`: router log level (default `info`);
//! * `PGDOG_TEST_PG_BIN`: PostgreSQL bin directory (default: `pg_config
//!   --bindir`, then the newest `/usr/lib/postgresql/*/bin`).

pub mod bench;
mod cluster;
mod http;
mod pgbench;
mod ports;
mod router;
mod sys;
mod tls;
pub mod wire;

use std::future::Future;
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

pub use cluster::{shared_cluster, PgCluster};

/// A `pg_stat_activity` condition that leaves out the router's health-check
/// connections (one per host of a database with more than one host, outside
/// the pools), for tests that count pooled server connections.
pub const NOT_HEALTH_CHECK: &str = "application_name <> 'pgdog-router health check'";
pub use http::{http, http_get, HttpResponse};
pub use pgbench::{pgbench_summary, pgbench_transcript, PgbenchSummary};
pub use ports::free_port;
pub use router::{
    config_gen_bin, default_users, psql_tcp, router_bin, router_config, users_with_admin, workspace_dir, RouterProcess,
    ADMIN_PASSWORD, ADMIN_USER,
};
pub use sys::pg_bin_dir;
pub use tls::{self_signed_cert, TestCa};

/// Poll `f` every 50 ms until it returns true or `deadline` has passed.
/// Returns whether it succeeded; `f` is always tried at least once, and once
/// more at the deadline so a slow last poll is not wasted.
pub async fn wait_until<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain TCP connection to 127.0.0.1:`port` for hand-written protocol
/// bytes. Reads time out after 10 s so a test waiting for a reply that never
/// comes fails instead of hanging.
pub fn raw_connect(port: u16) -> TcpStream {
    let stream =
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set read timeout");
    stream.set_write_timeout(Some(Duration::from_secs(10))).expect("set write timeout");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
}

/// Open a plaintext tokio-postgres connection to 127.0.0.1 and drive it on a
/// spawned task. Must be called inside a tokio runtime.
pub async fn connect_tcp(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    // Connection errors surface through the client's own calls; fault tests
    // break connections on purpose, so the task's result is not reported.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}
