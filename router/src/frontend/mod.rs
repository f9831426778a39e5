//! Client side: accepting connections, startup and TLS, authentication,
//! cancel requests, and the session loop that forwards to servers.

pub mod auth;
pub mod cancel;
pub mod listener;
pub mod login;
pub mod pipeline;
pub mod prepared;
pub mod read_write;
pub mod session;
pub mod session_state;
pub mod startup;
pub mod tls;
