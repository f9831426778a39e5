//! HTTP endpoints: Prometheus metrics (`metrics`, on `general.metrics_port`)
//! and the control API (`api`, on `api.port`). Both run on the control
//! thread with axum and read the same handles as the admin console.

pub mod api;
pub mod metrics;
