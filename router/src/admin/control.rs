//! The commands that steer: RELOAD, PAUSE, RESUME, RECONNECT, SHUTDOWN.
//! Each returns the CommandComplete tag or an error with its SQLSTATE.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::pool::PoolShared;
use crate::protocol::sqlstate;
use crate::runtime::{ReloadError, Shared};

/// An admin command that failed: SQLSTATE, message, optional detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
}

impl Failure {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Failure { code, message: message.into(), detail: None }
    }
}

pub fn reload(shared: &Shared) -> Result<&'static str, Failure> {
    let allowed = shared.snapshot().config.router.admin.allow_reload;
    if !allowed {
        return Err(Failure::new(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "RELOAD is disabled on the admin console (admin.allow_reload = false)",
        ));
    }
    match shared.reload() {
        Ok(()) => Ok("RELOAD"),
        Err(e @ ReloadError::NoFile) => Err(Failure::new(sqlstate::FEATURE_NOT_SUPPORTED, e.to_string())),
        Err(ReloadError::Listen(e)) => {
            let code = match e.error.kind() {
                std::io::ErrorKind::AddrInUse => sqlstate::OBJECT_IN_USE,
                std::io::ErrorKind::PermissionDenied => sqlstate::INSUFFICIENT_PRIVILEGE,
                _ => sqlstate::SYSTEM_ERROR,
            };
            Err(Failure {
                code,
                message: format!("reload failed: {e}"),
                detail: Some(format!(
                    "The running configuration stays in force; the {} keeps its current address.",
                    e.service.name()
                )),
            })
        }
        Err(e) => Err(Failure {
            code: sqlstate::CONFIG_FILE_ERROR,
            message: format!("reload failed: {e}"),
            detail: Some("The running configuration stays in force.".into()),
        }),
    }
}

/// The pools a command addresses: all, or one logical database's.
fn pools_of(shared: &Shared, database: Option<&str>) -> Result<Vec<Arc<PoolShared>>, Failure> {
    let snapshot = shared.snapshot();
    let pools: Vec<_> = snapshot
        .pools
        .iter()
        .filter(|(k, _)| database.is_none_or(|d| k.database == d))
        .map(|(_, p)| p.clone())
        .collect();
    match database {
        Some(db) if pools.is_empty() => {
            Err(Failure::new(sqlstate::INVALID_CATALOG_NAME, format!("database \"{db}\" does not exist")))
        }
        _ => Ok(pools),
    }
}

/// Holds new transactions, then waits until the ones running have
/// finished (server connections all back in the pool).
pub async fn pause(shared: &Shared, database: Option<&str>) -> Result<&'static str, Failure> {
    let pools = pools_of(shared, database)?;
    for p in &pools {
        p.pause();
    }
    while pools.iter().any(|p| p.stats().active > 0) {
        if shared.is_draining() {
            return Err(Failure::new(sqlstate::ADMIN_SHUTDOWN, "pgdog-router is shutting down"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok("PAUSE")
}

pub fn resume(shared: &Shared, database: Option<&str>) -> Result<&'static str, Failure> {
    for p in pools_of(shared, database)? {
        p.resume();
    }
    Ok("RESUME")
}

/// Recycles server connections: idle ones close now, busy ones when their
/// client is done; clients never lose a connection mid-transaction.
pub fn reconnect(shared: &Shared, database: Option<&str>) -> Result<&'static str, Failure> {
    for p in pools_of(shared, database)? {
        p.reconnect();
    }
    Ok("RECONNECT")
}

/// The same graceful shutdown as SIGTERM.
pub fn shutdown(shared: &Shared) -> Result<&'static str, Failure> {
    tracing::info!("shutdown requested on the admin console");
    shared.shutdown.cancel();
    Ok("SHUTDOWN")
}
