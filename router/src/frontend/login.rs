//! From accepted socket to running session: negotiation, authentication,
//! choosing the pool, and the greeting (ParameterStatus, BackendKeyData,
//! ReadyForQuery) a client expects from PostgreSQL.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use crate::backend::params::StartupParams;
use crate::backend::pool::PoolError;
use crate::backend::server::{Server, ServerError};
use crate::config::PoolMode;
use crate::net::{self, Keepalive, Tcp};
use crate::protocol::backend as be;
use crate::protocol::sqlstate;
use crate::route;
use crate::rt;
use crate::runtime::Worker;
use crate::stats::clients::{Activity, ClientGuard, ClientInfo};

use super::auth::{self, AuthError};
use super::cancel;
use super::read_write::{SplitSettings, Splitter};
use super::session::{Session, SessionSettings};
use super::startup::{self, Opening, Refusal, StartupError};

/// Counts a client against `max_client_conn` for as long as it is held.
struct ClientSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn handle_client(worker: Rc<Worker>, tcp: Tcp, peer: SocketAddr) {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("client", id, %peer, user = tracing::field::Empty, database = tracing::field::Empty);
    let shared = worker.shared.clone();
    let _slot = ClientSlot(&shared.clients);
    let count = shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
    // Login runs in its own allocation, freed once the session starts: its
    // state (TLS handshake, SCRAM exchange) is large, and a session future
    // sized for it would cost every idle client that much memory.
    let login = Box::pin(login(&worker, tcp, count, id, peer).instrument(span.clone()));
    let Some((mut session, bound, _listed)) = login.await else { return };
    // The session logs with the span as explicit parent rather than entering
    // it on every poll: enter/exit on each wake-up is measurable per
    // transaction.
    session.set_span(span);
    // `run` borrows the session: an async fn taking it by value would store
    // it twice in its state (rust-lang/rust#62958).
    session.run(bound).await;
}

/// Negotiation, authentication, pool choice and greeting. Returns the
/// session to run, with its server when one is already bound (session mode).
async fn login(
    worker: &Worker,
    tcp: Tcp,
    count: usize,
    id: u64,
    peer: SocketAddr,
) -> Option<(Session, Option<Server>, ClientGuard)> {
    let shared = worker.shared.clone();
    let snapshot = shared.snapshot();
    let general = &snapshot.config.router.general;
    net::tune(
        &tcp,
        general.tcp_keepalive.then_some(Keepalive {
            idle: Duration::from_millis(general.tcp_keepalive_idle_ms),
            interval: Duration::from_millis(general.tcp_keepalive_interval_ms),
            count: general.tcp_keepalive_count,
        }),
    );
    let login_timeout = Duration::from_millis(general.client_login_timeout_ms);

    let opening = rt::time::timeout(
        login_timeout,
        startup::negotiate(tcp, snapshot.tls.as_ref(), general.tls_mode, general.tls_ca.is_some()),
    )
    .await;
    let login = match opening {
        Err(_) => return None,
        Ok(Err(StartupError::Io(_))) => return None,
        Ok(Err(StartupError::Refused(stream, refusal))) => {
            tracing::info!(code = refusal.code, message = %refusal.message, "startup refused");
            startup::refuse(stream, &refusal).await;
            return None;
        }
        Ok(Ok(Opening::Cancel { pid, secret })) => {
            if let Some(key) = shared.cancels.lookup(pid, secret) {
                tracing::debug!(server_pid = key.pid, "forwarding cancel request");
                if let Err(e) = cancel::send_cancel(key).await {
                    tracing::warn!(error = %e, "cancel request could not reach the server");
                }
            }
            return None;
        }
        Ok(Ok(Opening::Login(login))) => login,
    };
    let span = tracing::Span::current();
    span.record("user", login.user.as_str());
    span.record("database", login.database.as_str());

    let startup::Login { mut stream, user, database, params, leftover } = login;
    let mut buf = leftover;

    if shared.shutdown.is_cancelled() {
        let r = Refusal::new(sqlstate::CANNOT_CONNECT_NOW, "pgdog-router is shutting down");
        {
            startup::refuse(stream, &r).await;
            return None;
        }
    }
    if count > general.max_client_conn {
        let r = Refusal::new(sqlstate::TOO_MANY_CONNECTIONS, "sorry, too many clients already");
        {
            startup::refuse(stream, &r).await;
            return None;
        }
    }

    // Authenticate first, as PostgreSQL does: an unknown database is only
    // revealed to a client that proved who it is.
    let databases = &snapshot.config.router.databases;
    let credential = snapshot.credentials.get(&(user.clone(), database.clone())).or_else(|| {
        if route::database_exists(databases, &database) {
            None
        } else {
            snapshot.credentials.iter().find(|((u, _), _)| *u == user).map(|(_, c)| c)
        }
    });
    let authed = rt::time::timeout(login_timeout, auth::authenticate(&mut stream, &mut buf, &user, credential)).await;
    match authed {
        Err(_) => return None,
        Ok(Err(AuthError::Io(_))) => return None,
        Ok(Err(AuthError::Refused(r))) => {
            tracing::info!(code = r.code, message = %r.message, "authentication failed");
            {
                startup::refuse(stream, &r).await;
                return None;
            }
        }
        Ok(Ok(())) => {}
    }

    let Some(entry) = route::primary(databases, &database) else {
        let r = if route::database_exists(databases, &database) {
            Refusal::new(sqlstate::CONNECTION_FAILURE, format!("no primary is configured for database \"{database}\""))
        } else {
            Refusal::new(sqlstate::INVALID_CATALOG_NAME, format!("database \"{database}\" does not exist"))
        };
        {
            startup::refuse(stream, &r).await;
            return None;
        }
    };
    let key = crate::backend::pool::PoolKey {
        user: user.clone(),
        database: database.clone(),
        host: entry.host.clone(),
        port: entry.port,
    };
    let Some(shared_pool) = snapshot.pools.get(&key) else {
        let r = Refusal::new(sqlstate::INVALID_CATALOG_NAME, format!("database \"{database}\" does not exist"));
        {
            startup::refuse(stream, &r).await;
            return None;
        }
    };
    let pool = worker.pool(&writer_pool(&snapshot, shared_pool));
    let mode = pool.shared.mode();

    let startup_params = match StartupParams::from_startup(&params) {
        Ok(p) => p,
        Err(e) => {
            startup::refuse(stream, &Refusal::new(sqlstate::FEATURE_NOT_SUPPORTED, e.0)).await;
            return None;
        }
    };

    // Session mode binds now, so the client learns its real backend pid.
    // Other modes bind once when the pool has never reported its server
    // parameters, so the greeting carries real values.
    // Settings no server of this pool has accepted yet are tried now, so a
    // bad value is refused at login as PostgreSQL would, not at every query.
    let need_server = mode == PoolMode::Session
        || pool.shared.server_params().is_none()
        || !pool.shared.params_accepted(startup_params.id());
    let mut bound = None;
    // The pool `bound` came from: the primary's, or a replica's when the
    // primary cannot be reached and reads may go to replicas.
    let mut bound_pool = pool.clone();
    if need_server {
        let mut checked_out = pool.checkout().await;
        if matches!(checked_out, Err(PoolError::Server(_)))
            && mode != PoolMode::Session
            && snapshot.config.router.query_routing.read_write_split
        {
            // The primary is down: a client that only reads can still log
            // in and be served by a replica; its writes get the error.
            for other in readable_replicas(worker, &snapshot, &pool) {
                if let Ok(server) = other.checkout().await {
                    tracing::info!(pool = %other.shared.key, "primary unreachable at login, greeting from a replica");
                    checked_out = Ok(server);
                    bound_pool = other;
                    break;
                }
            }
        }
        match checked_out {
            Ok(mut server) => {
                if let Err(e) = server.apply_params(&startup_params).await {
                    bound_pool.checkin(server);
                    let message = match &e {
                        ServerError::Query(fields) => fields.message.clone(),
                        other => other.to_string(),
                    };
                    {
                        startup::refuse(stream, &Refusal::new(e.code(), message)).await;
                        return None;
                    }
                }
                bound_pool.shared.accept_params(startup_params.id());
                bound = Some(server);
            }
            Err(e) => {
                let code = match &e {
                    PoolError::Timeout { .. } => sqlstate::TOO_MANY_CONNECTIONS,
                    PoolError::Server(_) => sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                    PoolError::Retired(_) | PoolError::ShuttingDown => sqlstate::ADMIN_SHUTDOWN,
                };
                {
                    startup::refuse(stream, &Refusal::new(code, e.to_string())).await;
                    return None;
                }
            }
        }
    }
    let cancel = shared.cancels.register(if mode == PoolMode::Session { bound.as_ref().map(|s| s.pid) } else { None });

    let server_params: Vec<(String, String)> = match &bound {
        Some(s) => s.params.clone(),
        None => pool.shared.server_params().map(|p| p.as_ref().clone()).unwrap_or_default(),
    };
    if mode != PoolMode::Session {
        if let Some(server) = bound.take() {
            bound_pool.checkin(server);
        }
    }

    let mut out = BytesMut::with_capacity(512);
    be::authentication_ok(&mut out);
    for (name, value) in &server_params {
        // What the client set at startup is what it will see in force.
        let value = startup_params.get(name).unwrap_or(value);
        be::parameter_status(&mut out, name, value);
    }
    be::backend_key_data(&mut out, cancel.pid, cancel.secret);
    be::ready_for_query(&mut out, b'I');
    if stream.write_all(&out).await.is_err() {
        if let Some(server) = bound {
            pool.checkin(server);
        }
        return None;
    }
    tracing::debug!(?mode, "client logged in");
    let connected = std::time::SystemTime::now();
    let activity = Arc::new(Activity::new(connected));
    let listed = shared.client_list.register(ClientInfo {
        id,
        pool: pool.shared.clone(),
        addr: peer,
        local_addr: stream.tcp().local_addr().ok(),
        connected,
        tls: stream.is_tls(),
        application_name: startup_params.get("application_name").unwrap_or_default().into(),
        activity: activity.clone(),
    });

    let split = splitter(worker, &snapshot, &pool, &user, &database, mode);
    let settings = SessionSettings {
        mode,
        idle_in_transaction_timeout: match general.idle_in_transaction_timeout_ms {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
        user,
        database,
        max_prepared_statements: pool.shared.settings().max_prepared_statements,
        log_queries: general.log_queries,
        activity,
    };
    let mut session = Session::new(stream, buf, pool, startup_params, settings, cancel, worker.stop.clone());
    if let Some(split) = split {
        session.set_splitter(split);
    }
    Some((session, bound, listed))
}

/// Read/write splitting and failover for this client: for a database with
/// more than one host (or with `read_write_split`, which also refuses a
/// replica-only user's writes on one host), when the pool mode lets each
/// request choose its server.
fn splitter(
    worker: &Worker,
    snapshot: &crate::runtime::Snapshot,
    primary: &Rc<crate::backend::pool::Pool>,
    user: &str,
    database: &str,
    mode: PoolMode,
) -> Option<Splitter> {
    let routing = &snapshot.config.router.query_routing;
    let topology = &primary.shared.topology;
    if mode == PoolMode::Session || (!routing.read_write_split && topology.member_count() < 2) {
        return None;
    }
    let force_replica =
        snapshot.config.users.iter().any(|u| u.name == user && u.database == database && u.force_replica);
    let hosts: Vec<_> = same_database(snapshot, &primary.shared)
        .map(|p| if Arc::ptr_eq(p, &primary.shared) { primary.clone() } else { worker.pool(p) })
        .collect();
    let at = hosts.iter().position(|p| Rc::ptr_eq(p, primary))?;
    let settings = SplitSettings {
        split_reads: routing.read_write_split,
        primary_reads: routing.primary_reads,
        balancing: routing.load_balancing,
        read_your_writes: (routing.read_your_writes_ms > 0)
            .then(|| std::time::Duration::from_millis(routing.read_your_writes_ms)),
        force_replica,
        sticky_transactions: routing.sticky_transactions,
        ban_time: std::time::Duration::from_millis(routing.ban_time_ms),
        fallback_error: routing.replica_fallback == crate::config::ReplicaFallback::Error,
    };
    let classifier = routing.read_write_split.then(|| worker.classifier(routing));
    Some(Splitter::new(hosts, at, classifier, settings))
}

/// This user's pools of the database's other hosts that may serve reads now.
fn readable_replicas(
    worker: &Worker,
    snapshot: &crate::runtime::Snapshot,
    primary: &Rc<crate::backend::pool::Pool>,
) -> Vec<Rc<crate::backend::pool::Pool>> {
    same_database(snapshot, &primary.shared)
        .filter(|p| !p.is_writer() && p.readable())
        .map(|p| worker.pool(p))
        .collect()
}

/// The pool of the host that takes the database's writes now: the
/// configured primary's unless a failover moved them (`backend::topology`).
fn writer_pool(
    snapshot: &crate::runtime::Snapshot,
    configured: &Arc<crate::backend::pool::PoolShared>,
) -> Arc<crate::backend::pool::PoolShared> {
    if configured.is_writer() {
        return configured.clone();
    }
    same_database(snapshot, configured).find(|p| p.is_writer()).unwrap_or(configured).clone()
}

/// The pools of `pool`'s user on every host of its database (and shard),
/// `pool` included.
fn same_database<'a>(
    snapshot: &'a crate::runtime::Snapshot,
    pool: &'a Arc<crate::backend::pool::PoolShared>,
) -> impl Iterator<Item = &'a Arc<crate::backend::pool::PoolShared>> {
    snapshot.pools.values().filter(move |p| {
        p.key.user == pool.key.user && p.key.database == pool.key.database && Arc::ptr_eq(&p.topology, &pool.topology)
    })
}
