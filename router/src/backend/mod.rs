//! Server side: connections to PostgreSQL and the pools that hold them.

pub mod health;
pub mod params;
pub mod pool;
pub mod server;
pub mod statements;
pub mod tls;
pub mod topology;
