//! PostgreSQL v3 wire protocol: framing, encoders, SQLSTATEs and the
//! authentication state machines. Nothing here performs I/O, and nothing
//! here depends on the rest of the crate.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod md5;
pub mod scram;
pub mod sqlstate;
pub mod stream;
