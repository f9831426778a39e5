//! pgdog-router: a PostgreSQL connection pooler and query router.
//!
//! # Layout
//! - `protocol/` the wire codec only: framing, message encoders, SQLSTATEs,
//!   SCRAM and MD5 state machines. Depends on nothing else in the crate.
//! - `config/` types, loading with file/line/key errors, env overrides, validation.
//! - `route/` pure routing decisions (which pool serves a client's statement).
//! - `backend/` server connections and pools.
//! - `frontend/` listener, client startup, TLS, authentication, session loop, cancel.
//! - `runtime` wires workers, signals and reload together.

pub mod backend;
pub mod config;
pub mod frontend;
pub mod net;
pub mod protocol;
pub mod route;
pub mod runtime;
