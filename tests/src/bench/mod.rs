//! Building blocks of `make bench` (the `bench` binary): pgbench runs with
//! the pooler's CPU time charged per transaction, a throwaway PgBouncer to
//! compare against, a bare forwarder as the floor, thousands of idle clients for the memory test, a
//! read/write-splitting router over a streaming replica, and the markdown
//! report.
//!
//! CPU time per transaction is the headline next to TPS because the bench
//! runs on a shared 2-core machine where pgbench, PostgreSQL and the pooler
//! compete for the same cores: TPS moves with scheduling noise, while the CPU
//! a pooler burns for each transaction it forwards is much steadier.

pub mod forwarder;
pub mod idle;
pub mod pgbench;
pub mod pgbouncer;
pub mod procfs;
pub mod report;
pub mod split;
