//! pgdog-router: a PostgreSQL connection pooler and query router.
//!
//! # Layout
//! - `protocol/` the wire codec only: framing, message encoders, SQLSTATEs,
//!   SCRAM and MD5 state machines. Depends on nothing else in the crate.
//! - `config/` types, loading with file/line/key errors, env overrides, validation.
//! - `route/` pure routing decisions (which pool serves a client's statement).
//! - `backend/` server connections and pools.
//! - `frontend/` listener, client startup, TLS, authentication, session loop, cancel.
//! - `stats/` counters the query path records worker-locally, summed when read.
//! - `admin/` the admin console (PgBouncer-style SHOW views, RELOAD, PAUSE, ...).
//! - `http/` Prometheus metrics and the HTTP control API.
//! - `ops` the admin console, metrics and API listeners, moved by reloads.
//! - `logging` the log subscriber, whose level reloads change.
//! - `rt` the workers' event loop: executor, epoll reactor, timers.
//! - `runtime` wires workers, signals and reload together.

pub mod admin;
pub mod backend;
pub mod clock;
pub mod config;
pub mod fasthash;
pub mod frontend;
pub mod http;
pub mod logging;
pub mod net;
pub mod ops;
pub mod protocol;
pub mod route;
pub mod rt;
pub mod runtime;
pub mod stats;
