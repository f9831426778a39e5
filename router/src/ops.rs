//! The listeners beside the client port — admin console
//! (`general.admin_port`), metrics (`general.metrics_port`) and HTTP API
//! (`api.port`, `api.bind`) — served on the control thread.
//!
//! All three are bound at start-up, before the client port, so a port in use
//! is a start-up error rather than a router that silently lacks its probes.
//! A reload whose configuration moves one binds the new address first
//! (`Listeners::prepare`, before anything else of the reload is applied) and
//! closes the old one only once the new configuration is in force
//! (`Listeners::install`). An address that cannot be had fails the reload
//! with the running configuration and listeners left as they were.
//! Connections already accepted (an admin session that ran the RELOAD, an
//! HTTP request in flight) are tasks of their own and carry on.

use std::sync::{Arc, Weak};

use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use crate::config::RouterConfig;
use crate::runtime::Shared;

/// One of the listeners beside the client port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Admin,
    Metrics,
    Api,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Admin, Service::Metrics, Service::Api];

    pub fn name(self) -> &'static str {
        match self {
            Service::Admin => "admin console",
            Service::Metrics => "metrics",
            Service::Api => "HTTP API",
        }
    }

    /// The address `config` gives this listener.
    pub fn address(self, config: &RouterConfig) -> String {
        let general = &config.general;
        match self {
            Service::Admin => format!("{}:{}", general.host, general.admin_port),
            Service::Metrics => format!("{}:{}", general.host, general.metrics_port),
            Service::Api => format!("{}:{}", config.api.bind.as_deref().unwrap_or(&general.host), config.api.port),
        }
    }
}

/// An address a listener could not be bound to.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({}): {error}", service.name())]
pub struct ListenError {
    pub service: Service,
    pub addr: String,
    pub error: std::io::Error,
}

fn bind(service: Service, addr: String) -> Result<(Service, String, std::net::TcpListener), ListenError> {
    // No SO_REUSEPORT here (unlike the client port's per-worker sockets): a
    // second router on the same port must fail, not split the probes
    // between two processes.
    match std::net::TcpListener::bind(&addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
        Ok(l) => Ok((service, addr, l)),
        Err(error) => Err(ListenError { service, addr, error }),
    }
}

/// Whether two `host:port` texts name the same socket address
/// (`localhost:6432` and `127.0.0.1:6432` do): binding the second while the
/// first is open would fail, and is not needed.
fn same_address(a: &str, b: &str) -> bool {
    use std::net::ToSocketAddrs;
    let first = |addr: &str| addr.to_socket_addrs().ok().and_then(|mut a| a.next());
    a == b || first(a).is_some_and(|x| Some(x) == first(b))
}

/// The three listeners, bound and not serving yet (start-up).
pub struct Bound(Vec<(Service, String, std::net::TcpListener)>);

impl Bound {
    pub fn all(config: &RouterConfig) -> Result<Bound, ListenError> {
        let bound = Service::ALL.iter().map(|&s| bind(s, s.address(config))).collect::<Result<_, _>>()?;
        Ok(Bound(bound))
    }
}

/// Listeners a reload has bound, to be served once it is applied. Dropping
/// it (the reload failed later) closes them.
#[derive(Default)]
pub struct Moved(Vec<(Service, String, tokio::net::TcpListener)>);

struct Running {
    service: Service,
    addr: String,
    accept: AbortHandle,
}

/// The running listeners, kept in `Shared` for reloads.
pub struct Listeners {
    /// The control runtime, where the servers run.
    handle: Handle,
    shared: Weak<Shared>,
    running: Vec<Running>,
}

impl Listeners {
    /// Serves on the listeners bound at start-up. Runs on the control runtime.
    pub fn start(shared: &Arc<Shared>, bound: Bound) -> std::io::Result<Listeners> {
        let mut listeners =
            Listeners { handle: Handle::current(), shared: Arc::downgrade(shared), running: Vec::new() };
        for (service, addr, std) in bound.0 {
            let listener = tokio::net::TcpListener::from_std(std)?;
            listeners.serve(service, addr, listener);
        }
        Ok(listeners)
    }

    /// Binds the addresses `config` moves listeners to; nothing is served
    /// or closed yet.
    pub fn prepare(&self, config: &RouterConfig) -> Result<Moved, ListenError> {
        let _runtime = self.handle.enter();
        let mut moved = Vec::new();
        for service in Service::ALL {
            let addr = service.address(config);
            if self.running.iter().any(|r| r.service == service && same_address(&r.addr, &addr)) {
                continue;
            }
            let (service, addr, std) = bind(service, addr)?;
            let listener = tokio::net::TcpListener::from_std(std).map_err(|error| ListenError {
                service,
                addr: addr.clone(),
                error,
            })?;
            moved.push((service, addr, listener));
        }
        Ok(Moved(moved))
    }

    /// Serves on the moved listeners and closes the ones they replace.
    pub fn install(&mut self, moved: Moved) {
        for (service, addr, listener) in moved.0 {
            if let Some(old) = self.running.iter().position(|r| r.service == service) {
                let old = self.running.swap_remove(old);
                old.accept.abort();
                tracing::info!(from = %old.addr, to = %addr, "{} moved", service.name());
            }
            self.serve(service, addr, listener);
        }
    }

    fn serve(&mut self, service: Service, addr: String, listener: tokio::net::TcpListener) {
        let Some(shared) = self.shared.upgrade() else { return };
        tracing::info!(%addr, "{} listening", service.name());
        let task = match service {
            Service::Admin => self.handle.spawn(crate::admin::serve(shared, listener)),
            Service::Metrics => self.handle.spawn(crate::http::metrics::serve(shared, listener)),
            Service::Api => self.handle.spawn(crate::http::api::serve(shared, listener)),
        };
        self.running.push(Running { service, addr, accept: task.abort_handle() });
    }
}

#[cfg(test)]
mod tests {
    use super::same_address;

    #[test]
    fn same_address_compares_what_names_resolve_to() {
        assert!(same_address("127.0.0.1:6432", "127.0.0.1:6432"));
        assert!(!same_address("127.0.0.1:6432", "127.0.0.1:6433"));
        assert!(!same_address("127.0.0.1:6432", "0.0.0.0:6432"));
        // Unresolvable text is compared as text.
        assert!(!same_address("no such host:1", "127.0.0.1:1"));
    }
}
