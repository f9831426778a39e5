//! A client session after login: binds server connections as the pool mode
//! says and forwards bytes both ways.
//!
//! The forwarding pump is a hand-written poll loop over both sockets (the
//! message walk that decides what goes through is in `session/scan.rs`): it
//! reads whatever is available, classifies message boundaries without
//! parsing bodies, and writes the same bytes on in one call — no copy, no
//! allocation per message. Both directions progress independently, so a
//! client that pipelines without reading cannot deadlock against a server
//! that writes without reading.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::backend::params::StartupParams;
use crate::backend::pool::{Pool, PoolError};
use crate::backend::server::Server;
use crate::clock::Tick;
use crate::config::PoolMode;
use crate::net::Stream;
use crate::protocol::backend::{self as be, ErrorFields, Severity};
use crate::protocol::frame::{self, FrameError, HEADER_LEN};
use crate::protocol::sqlstate;
use crate::protocol::stream::{Scanner, TagSet};
use crate::rt;
use crate::runtime::StopSignal;

mod scan;

use super::cancel::{self, CancelHandle, ServerKey};
use super::pipeline::Pipeline;
use super::prepared::ClientStatements;
use super::read_write::{Choice, Splitter};
use super::session_state::SessionState;
use crate::route::classify::ReadOnlyViolation;

/// Client messages the pump must see whole in session mode: Terminate is
/// not forwarded.
const CLIENT_INSPECT: TagSet = TagSet::new(b"X");
/// Transaction mode also reads query texts (SET, LISTEN, ...) ...
const CLIENT_INSPECT_QUERIES: TagSet = TagSet::new(b"XQP");
/// ... and rewrites statement names in Parse, Bind, Describe and Close.
const CLIENT_INSPECT_STATEMENTS: TagSet = TagSet::new(b"XQPBDC");
/// Server messages the pump must see whole: ReadyForQuery ends a request,
/// a FATAL ErrorResponse announces the server is going away, and
/// ParseComplete / CloseComplete of the router's own requests are dropped.
const SERVER_INSPECT: TagSet = TagSet::new(b"ZE13");
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;
/// Passes through the pump's loop before it lets the other tasks of its
/// worker run (a pass makes up to four socket operations; the worker's
/// loop has no budget of its own).
const PUMP_BUDGET: u32 = 32;
/// Idle read buffers a worker keeps for reuse: enough for the requests in
/// flight at once on one thread, not so many that they pin much memory.
const SPARE_BUFFERS: usize = 64;

thread_local! {
    /// Client read buffers not in use. An idle plaintext client holds no
    /// buffer at all (10,000 idle clients must fit in a few MB); it takes
    /// one from here when its socket becomes readable and gives it back
    /// when its request is done — a pop and a push, no allocation.
    static BUFFERS: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_buffer() -> BytesMut {
    BUFFERS.with(|b| b.borrow_mut().pop()).unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
}

fn give_buffer(mut buf: BytesMut) {
    buf.clear();
    // Forwarding advances the buffer's start through its allocation, which
    // shrinks `capacity()`; an empty buffer that is the only owner of its
    // allocation gets all of it back here without copying or allocating.
    // Without this, every request would free one buffer and allocate another.
    buf.reserve(READ_CHUNK);
    if buf.capacity() < READ_CHUNK || buf.capacity() > 4 * READ_CHUNK {
        return;
    }
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < SPARE_BUFFERS {
            b.push(buf);
        }
    });
}

/// Why the pump stopped.
#[derive(Debug)]
enum Outcome {
    /// The server is idle and everything was forwarded: it can go back.
    Released,
    ClientGone,
    /// The server closed or failed. `fatal` is the FATAL error it sent first.
    ServerGone {
        fatal: Option<ErrorFields>,
        error: Option<String>,
    },
    ClientProtocol(FrameError),
    ServerProtocol(FrameError),
    /// Statement mode: the server reported an open transaction.
    TransactionInStatementMode,
    IdleInTransactionTimeout,
}

/// Settings a session runs with, fixed at login.
pub struct SessionSettings {
    pub mode: PoolMode,
    pub idle_in_transaction_timeout: Option<Duration>,
    pub user: String,
    pub database: String,
    /// `max_prepared_statements` of the pool; 0: names pass through.
    pub max_prepared_statements: usize,
    /// `general.log_queries`: log each query with its duration (ops).
    pub log_queries: bool,
    /// The client's SHOW CLIENTS entry (ops: `stats::clients`).
    pub activity: std::sync::Arc<crate::stats::clients::Activity>,
}

pub struct Session {
    client: Stream,
    cbuf: BytesMut,
    cscan: Scanner,
    /// The client messages this session reads whole (by pool mode).
    client_inspect: TagSet,
    /// Scanned client bytes at the front of `cbuf` not yet written to the server.
    c_ready: usize,
    /// Client → server bytes the router assembled (rewritten messages and
    /// the ones around them), written instead of `cbuf` while not empty.
    c_out: BytesMut,
    c_out_pos: usize,
    /// Bytes at the front of `cbuf` that `c_out` stands for, dropped from
    /// `cbuf` once `c_out` is written. Non-zero means assembling.
    c_consumed: usize,
    /// One rewritten message, before it joins `c_out`.
    scratch: BytesMut,
    /// Bytes of a whole client message to drop once `c_ready` is written.
    c_drop: usize,
    client_done: bool,
    sscan: Scanner,
    s_ready: usize,
    s_drop: usize,
    /// Server → client counterparts of `c_out` / `c_consumed`: replies
    /// with the router's own dropped and its local answers added.
    s_out: BytesMut,
    s_out_pos: usize,
    s_consumed: usize,
    /// The server side goes through `s_out` until it is written.
    s_assembling: bool,
    /// The server message in progress is the reply to the router's request.
    s_dropping: bool,
    /// Transaction mode with statement tracking: names are rewritten and
    /// replies accounted in `pipeline`.
    track_statements: bool,
    statements: ClientStatements,
    pipeline: Pipeline,
    /// The client's settings and pinning (transaction and statement mode).
    state: SessionState,
    /// Read/write splitting and failover: chooses the pool (`self.pool`)
    /// per request, for databases with more than one host.
    split: Option<Splitter>,
    /// The bound server is a replica's.
    on_replica: bool,
    /// On a replica, the client's next request must go elsewhere: it is
    /// held until the replica's replies are through, then routed afresh.
    reroute: bool,
    /// The request at the front was routed to a replica by
    /// `route_request`, so its first message needs no second look.
    just_routed: bool,
    /// `sticky_transactions = false`: the client's `BEGIN`, answered by the
    /// router and not yet sent; it goes ahead of the transaction's first
    /// statement, on the server that statement is routed to.
    deferred_begin: Option<Vec<u8>>,
    /// ReadyForQuery messages still owed to the client.
    pending: u32,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: bool,
    /// Set when a ReadyForQuery completes the last request and the server is idle.
    release: bool,
    fatal: Option<ErrorFields>,
    statement_txn: bool,
    idle_timer: Option<rt::time::Sleep>,
    stop: Rc<StopSignal>,
    /// Session mode waits on this inside the pump, to end at the next idle point.
    stop_wait: Option<crate::runtime::StopWait>,
    shutting_down: bool,
    /// The client believes it is in a failed transaction whose server was
    /// lost; the router answers until the client ends it.
    orphaned_txn: bool,
    /// After a refused request, drop extended-protocol messages until Sync.
    skip_to_sync: bool,
    pool: Rc<Pool>,
    params: StartupParams,
    settings: SessionSettings,
    cancel: CancelHandle,
    out: BytesMut,
    /// The client's span: session events name it as their parent.
    span: tracing::Span,
    /// The server address last published in the cancel slot.
    cancel_addr: Option<std::net::SocketAddr>,
    /// Query, transaction and byte counters (ops: `stats`).
    stats: crate::stats::SessionStats,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Stream,
        leftover: BytesMut,
        pool: Rc<Pool>,
        params: StartupParams,
        settings: SessionSettings,
        cancel: CancelHandle,
        stop: Rc<StopSignal>,
    ) -> Self {
        // Bytes already sent after the startup packet are kept; an empty
        // leftover would pin the whole startup buffer, so it is dropped.
        let cbuf = if leftover.is_empty() { BytesMut::new() } else { leftover };
        let pooled = settings.mode != PoolMode::Session;
        let track_statements = pooled && settings.max_prepared_statements > 0;
        let inspect = match (pooled, track_statements) {
            (false, _) => CLIENT_INSPECT,
            (true, false) => CLIENT_INSPECT_QUERIES,
            (true, true) => CLIENT_INSPECT_STATEMENTS,
        };
        let log_pool = settings.log_queries.then(|| pool.shared.key.to_string());
        let stats = crate::stats::SessionStats::new(pool.share().clone(), log_pool, settings.activity.clone());
        Self {
            client,
            cbuf,
            cscan: Scanner::new(inspect),
            client_inspect: inspect,
            c_ready: 0,
            c_out: BytesMut::new(),
            c_out_pos: 0,
            c_consumed: 0,
            scratch: BytesMut::new(),
            c_drop: 0,
            client_done: false,
            sscan: Scanner::new(SERVER_INSPECT),
            s_ready: 0,
            s_drop: 0,
            s_out: BytesMut::new(),
            s_out_pos: 0,
            s_consumed: 0,
            s_assembling: false,
            s_dropping: false,
            track_statements,
            statements: ClientStatements::default(),
            pipeline: Pipeline::default(),
            state: SessionState::new(params.clone()),
            split: None,
            on_replica: false,
            just_routed: false,
            deferred_begin: None,
            reroute: false,
            pending: 0,
            unsynced: false,
            release: false,
            fatal: None,
            statement_txn: false,
            idle_timer: None,
            stop,
            stop_wait: None,
            shutting_down: false,
            orphaned_txn: false,
            skip_to_sync: false,
            pool,
            params,
            settings,
            cancel,
            out: BytesMut::new(),
            span: tracing::Span::none(),
            cancel_addr: None,
            stats,
        }
    }

    pub fn set_splitter(&mut self, split: Splitter) {
        self.split = Some(split);
    }

    pub fn set_span(&mut self, span: tracing::Span) {
        self.span = span;
    }

    /// Runs the session to its end. `bound` is the server already bound in
    /// session mode.
    ///
    /// What an idle client costs is the size of this future while it waits
    /// in `wait_for_request`. The common request — a server idle on this
    /// worker, already carrying the client's settings — is served inline
    /// (`serve` holds little more than the `Server`), so it costs no
    /// allocation; the rest of the work of a request (waiting for a
    /// checkout, applying settings, refusals) runs in a boxed future that
    /// exists only while needed, keeping idle clients at a few hundred bytes.
    pub async fn run(&mut self, bound: Option<Server>) {
        if let Some(server) = bound {
            if !Box::pin(self.serve(server)).await {
                return;
            }
        }
        while self.wait_for_request().await {
            if self.defer_transaction() {
                if !Box::pin(self.write_out()).await {
                    return;
                }
                continue;
            }
            let alive = match self.route() {
                Err((code, message)) => {
                    Box::pin(self.refuse_request(code, message)).await;
                    true
                }
                Ok(()) if self.deferred_begin.is_some() => {
                    let ready = self.pool.checkout_now();
                    Box::pin(self.begin_and_serve(ready)).await
                }
                Ok(()) => {
                    // The loop's reading of this turn times the request
                    // and checks the idle connection.
                    let now = Tick::cached();
                    match self.pool.checkout_now_at(now) {
                        Some(server) if server.applied == self.params => {
                            self.stats.request_starts(now);
                            self.serve(server).await
                        }
                        ready => Box::pin(self.bind_and_serve(ready)).await,
                    }
                }
            };
            if !alive {
                return;
            }
        }
    }

    /// `sticky_transactions = false`: answers a lone `BEGIN` (remembering
    /// it), or the `COMMIT`/`ROLLBACK` of a transaction that ran nothing,
    /// without a server. The reply is in `self.out`; true when answered.
    fn defer_transaction(&mut self) -> bool {
        let Some(split) = self.split.as_mut() else { return false };
        if !split.defers_begin() || self.settings.mode != PoolMode::Transaction {
            return false;
        }
        let Ok(Some((b'Q', total))) = frame::header(&self.cbuf) else { return false };
        let Some(body) = self.cbuf.get(frame::HEADER_LEN..total) else { return false };
        let text = body.strip_suffix(b"\0").unwrap_or(body);
        self.out.clear();
        if self.deferred_begin.is_none() {
            if !split.is_lone_begin(text) {
                return false;
            }
            self.deferred_begin = Some(text.to_vec());
            be::command_complete(&mut self.out, "BEGIN");
            be::ready_for_query(&mut self.out, b'T');
        } else if ends_transaction(text) {
            // Nothing ran: PostgreSQL's answer to ending an empty transaction.
            let rollback = matches!(text.trim_ascii_start().first(), Some(b'r' | b'R' | b'a' | b'A'));
            self.deferred_begin = None;
            be::command_complete(&mut self.out, if rollback { "ROLLBACK" } else { "COMMIT" });
            be::ready_for_query(&mut self.out, b'I');
        } else {
            return false;
        }
        self.cbuf.advance(total);
        true
    }

    /// Writes `self.out` to the client; false when it is gone.
    async fn write_out(&mut self) -> bool {
        self.client.write_all(&self.out).await.is_ok()
    }

    /// The first statement of a deferred transaction: its `BEGIN` runs on
    /// the server it was routed to, then the statement as usual. If that
    /// fails, the client's transaction is aborted as PostgreSQL would abort
    /// it: the error, then 25P02 until it ends the transaction.
    async fn begin_and_serve(&mut self, ready: Option<Server>) -> bool {
        let begin = self.deferred_begin.take().unwrap_or_default();
        let Some(mut server) = self.bind(ready).await else {
            self.orphaned_txn = true;
            return true;
        };
        if let Err(e) = server.execute(&String::from_utf8_lossy(&begin)).await {
            let code = e.code().to_string();
            self.pool.checkin(server);
            self.orphaned_txn = true;
            self.refuse_request(&code, &format!("could not begin the transaction: {e}")).await;
            return true;
        }
        self.serve(server).await
    }

    /// The slow path of a request: a checkout that may wait, or a server
    /// that needs the client's settings applied first.
    async fn bind_and_serve(&mut self, ready: Option<Server>) -> bool {
        match self.bind(ready).await {
            Some(server) => self.serve(server).await,
            None => true,
        }
    }

    /// Waits, with no server bound, until the client sends a request that
    /// needs one. Returns false when the session is over.
    async fn wait_for_request(&mut self) -> bool {
        self.stats.client_idle(); // ops: SHOW CLIENTS
        loop {
            // Whole messages the router answers itself.
            match frame::header(&self.cbuf) {
                Err(e) => {
                    Box::pin(self.fatal_and_close(sqlstate::PROTOCOL_VIOLATION, &e.to_string())).await;
                    return false;
                }
                Ok(Some((b'X', _))) => return false,
                Ok(Some((tag, total))) if self.cbuf.len() >= total && (self.orphaned_txn || self.skip_to_sync) => {
                    let msg = self.cbuf.split_to(total);
                    if !Box::pin(self.answer_locally(tag, &msg[frame::HEADER_LEN..])).await {
                        return false;
                    }
                    continue;
                }
                Ok(Some(_)) if !(self.orphaned_txn || self.skip_to_sync) => return true,
                _ => {}
            }
            if self.shutting_down || self.stop.is_stopped() {
                let message = "terminating connection: pgdog-router is shutting down";
                Box::pin(self.fatal_and_close(sqlstate::ADMIN_SHUTDOWN, message)).await;
                return false;
            }
            if self.cbuf.is_empty() && !self.client.is_tls() {
                // Idle: hand the buffer back and wait for readability
                // without one. (TLS may hold decrypted bytes the socket no
                // longer shows, so TLS sessions keep theirs.)
                give_buffer(std::mem::take(&mut self.cbuf));
                let ready = std::future::poll_fn(|cx| {
                    let ready = self.client.tcp().poll_read_ready(cx);
                    self.unless_stopped(ready, cx)
                })
                .await;
                match ready {
                    None => {
                        self.shutting_down = true;
                        continue;
                    }
                    Some(Err(_)) => return false,
                    Some(Ok(())) => {}
                }
                self.cbuf = take_buffer();
            }
            // The read first: it is usually ready, and then the stop wait
            // is not even looked at.
            let read = std::future::poll_fn(|cx| {
                let read = poll_read_into(&mut self.client, &mut self.cbuf, cx);
                self.unless_stopped(read, cx)
            })
            .await;
            match read {
                None => self.shutting_down = true,
                Some(Ok(0) | Err(_)) => return false,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Read/write splitting and failover: points `self.pool` at the pool
    /// that serves the request at the front of the client's buffer. Err:
    /// the request is refused (SQLSTATE and message), e.g. a write by a
    /// replica-only user. Without a Splitter (one host) there is nothing
    /// to decide.
    fn route(&mut self) -> Result<(), (&'static str, &'static str)> {
        let Session { split, cbuf, statements, pool, on_replica, just_routed, .. } = self;
        let Some(split) = split.as_mut() else { return Ok(()) };
        if !split.splits_reads() {
            // Only failover matters: one atomic load while the writer
            // stays where it was.
            if !pool.shared.is_writer() {
                *pool = split.primary().clone();
            }
            *on_replica = false;
            return Ok(());
        }
        let texts = request_texts(cbuf, statements);
        let decision = split.decide(texts.as_slice().iter().copied());
        match split.choose(decision.as_ref()) {
            Choice::Primary => {
                *pool = split.primary().clone();
                *on_replica = false;
                Ok(())
            }
            Choice::Replica(replica) => {
                *pool = replica;
                *on_replica = true;
                // Its first message was just classified: scanning it must
                // not ask again.
                *just_routed = true;
                Ok(())
            }
            Choice::ReadOnly => Err((ReadOnlyViolation::SQLSTATE, ReadOnlyViolation::MESSAGE)),
            Choice::NoReplica => Err((sqlstate::CONNECTION_FAILURE, super::read_write::NO_REPLICA)),
            Choice::InvalidRole => Err((
                sqlstate::INVALID_PARAMETER_VALUE,
                "invalid value for pgdog.role: expected primary, replica or auto",
            )),
        }
    }

    /// Checks out a server and prepares it for this client. On failure the
    /// client's request is answered with the error and None is returned.
    async fn bind(&mut self, ready: Option<Server>) -> Option<Server> {
        let pool = self.pool.clone();
        let mut checked_out = match ready {
            Some(server) => Ok(server),
            None => {
                self.stats.client_waiting(); // ops: SHOW CLIENTS
                pool.checkout().await
            }
        };
        // A replica-only user never reaches the primary either.
        let fallback_error = self.split.as_ref().is_some_and(|s| s.fallback_error() || s.force_replica());
        if let (Err(PoolError::Server(e)), true) = (&checked_out, self.on_replica) {
            // Nothing was sent yet: the replica gets no reads for a while,
            // and the request moves to the primary (unless reads must not).
            if let Some(split) = &self.split {
                pool.shared.ban(split.ban_time());
            }
            pool.shared.set_last_error(Some(e.to_string()));
            if !fallback_error {
                tracing::warn!(parent: &self.span, pool = %pool.shared.key, error = %e, "replica unreachable, reading from the primary");
                if let Some(split) = &self.split {
                    self.pool = split.primary().clone();
                }
                self.on_replica = false;
                let primary = self.pool.clone();
                checked_out = primary.checkout().await;
            } else {
                tracing::warn!(parent: &self.span, pool = %pool.shared.key, error = %e, "replica unreachable");
            }
        }
        match checked_out {
            Ok(mut server) => {
                if let Err(e) = server.apply_params(&self.params).await {
                    let code = e.code().to_string();
                    let message = format!("could not apply startup parameters: {e}");
                    self.pool.checkin(server);
                    self.refuse_request(&code, &message).await;
                    return None;
                }
                Some(server)
            }
            Err(e) => {
                let code = match &e {
                    PoolError::Timeout { .. } => sqlstate::TOO_MANY_CONNECTIONS,
                    PoolError::Server(s) => s.code(),
                    PoolError::Retired(_) | PoolError::ShuttingDown => sqlstate::ADMIN_SHUTDOWN,
                }
                .to_string();
                self.refuse_request(&code, &e.to_string()).await;
                None
            }
        }
    }

    /// Serves requests on a bound server until it can be released (session
    /// mode: until the session ends). Returns whether the session goes on.
    async fn serve(&mut self, mut server: Server) -> bool {
        // A request served by a replica (or a promoted host) counts there.
        self.stats.follow(self.pool.share());
        self.stats.client_active(); // ops: SHOW CLIENTS
        if let Some(addr) = server.peer() {
            let changed = self.cancel_addr != Some(addr);
            self.cancel_addr = Some(addr);
            self.cancel.slot.set(ServerKey { addr, pid: server.pid, secret: server.secret }, changed);
        }
        self.sscan = Scanner::new(SERVER_INSPECT);
        self.release = false;
        self.pipeline.clear();
        self.s_out.clear();
        self.s_out_pos = 0;
        self.s_consumed = 0;
        self.s_assembling = false;
        self.s_dropping = false;
        self.reroute = false;
        let outcome = std::future::poll_fn(|cx| self.poll_pump(&mut server, cx)).await;
        if matches!(outcome, Outcome::Released) && !self.holds_server() {
            self.cancel.slot.clear();
            if self.state.needs_sync() {
                Box::pin(self.sync_state(&mut server)).await;
                self.pool.checkin(server);
            } else {
                // The ReadyForQuery that released it was just timed.
                let now = self.stats.last_ready().unwrap_or_else(Tick::now);
                self.pool.checkin_at(server, now);
            }
            return true;
        }
        Box::pin(self.conclude(outcome, server)).await
    }

    /// After a request that touched settings: learns from the server what
    /// is in force now, so the next connection gets the same.
    async fn sync_state(&mut self, server: &mut Server) {
        let sql = self.state.sync_sql();
        match server.query_rows(&sql).await {
            Ok(rows) => {
                server.applied = self.state.apply_sync(&rows, &server.applied);
                self.params = self.state.params();
            }
            Err(e) => {
                tracing::warn!(parent: &self.span, error = %e, "reading back session settings failed");
                server.broken = true;
                self.state.abandon();
            }
        }
    }

    /// Everything but a plain release: faults, shutdown, refusals.
    async fn conclude(&mut self, outcome: Outcome, mut server: Server) -> bool {
        self.cancel.slot.clear();
        match outcome {
            Outcome::Released => {
                if self.holds_server() {
                    // Only reached when shutting down: reset and close.
                    self.reset_and_checkin(server).await;
                    self.fatal_and_close(
                        sqlstate::ADMIN_SHUTDOWN,
                        "terminating connection: pgdog-router is shutting down",
                    )
                    .await;
                    return false;
                }
                self.pool.checkin(server);
                true
            }
            Outcome::ClientGone => {
                self.client_left(server).await;
                false
            }
            Outcome::ServerGone { fatal, error } => {
                server.broken = true;
                if self.on_replica && fatal.is_none() {
                    // An error seen in traffic (the connection died without
                    // a FATAL, which a live server would send): the replica
                    // gets no reads until the ban runs out, so only the
                    // query in flight sees it; the monitor keeps checking.
                    if let Some(split) = &self.split {
                        self.pool.shared.ban(split.ban_time());
                    }
                    let text = error.clone().unwrap_or_else(|| "replica server connection lost".into());
                    self.pool.shared.set_last_error(Some(text));
                }
                let was_in_txn = server.status != b'I';
                self.pool.checkin(server);
                self.server_lost(fatal, error, was_in_txn).await
            }
            Outcome::ClientProtocol(e) => {
                self.client_left(server).await;
                self.fatal_and_close(sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
                false
            }
            Outcome::ServerProtocol(e) => {
                server.broken = true;
                self.pool.checkin(server);
                tracing::error!(parent: &self.span, error = %e, "server sent an invalid message");
                self.fatal_and_close(sqlstate::PROTOCOL_VIOLATION, &format!("invalid message from server: {e}")).await;
                false
            }
            Outcome::TransactionInStatementMode => {
                let _ = server.execute("ROLLBACK").await;
                self.pool.checkin(server);
                self.out.clear();
                be::error_response(
                    &mut self.out,
                    Severity::Error,
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "transaction blocks are not allowed in statement pooling mode",
                    Some("The transaction was rolled back. Use transaction or session pool_mode for multi-statement transactions."),
                );
                be::ready_for_query(&mut self.out, b'I');
                if self.client.write_all(&self.out).await.is_err() {
                    return false;
                }
                true
            }
            Outcome::IdleInTransactionTimeout => {
                self.client_left(server).await;
                self.fatal_and_close(
                    sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                    "terminating connection due to idle-in-transaction timeout",
                )
                .await;
                false
            }
        }
    }

    /// The client is gone (or being closed) with a server bound: make the
    /// server clean for the next client, or close it.
    async fn client_left(&mut self, mut server: Server) {
        if self.pending > 0 || self.unsynced || !self.sscan.at_boundary() {
            // A request is in flight: stop it on the server, then drop the
            // connection rather than wait for results nobody will read.
            if let Some(addr) = server.peer() {
                let key = ServerKey { addr, pid: server.pid, secret: server.secret };
                rt::spawn_local(async move {
                    let _ = cancel::send_cancel(key).await;
                });
            }
            server.broken = true;
            self.pool.checkin(server);
            return;
        }
        self.reset_and_checkin(server).await;
    }

    /// Rolls back an open transaction and, in session mode, discards session
    /// state, so the next client gets a clean connection.
    async fn reset_and_checkin(&mut self, mut server: Server) {
        if server.status != b'I' && server.execute("ROLLBACK").await.is_err() {
            server.broken = true;
        }
        if self.holds_server() && !server.broken {
            // Also ends what pinned a transaction-mode client: LISTEN,
            // advisory locks, temporary tables, cursors, statements.
            if server.execute("DISCARD ALL").await.is_err() {
                server.broken = true;
            }
            server.applied = StartupParams::default();
            server.statements.clear();
        } else if self.state.needs_sync() && !server.broken {
            // A SET that went through before the client left must not
            // reach the next client unnoticed.
            self.sync_state(&mut server).await;
        }
        self.pool.checkin(server);
    }

    /// The server died under this client. Transaction mode: the client gets
    /// an error and keeps its session. Session mode: FATAL, as PostgreSQL.
    async fn server_lost(&mut self, fatal: Option<ErrorFields>, error: Option<String>, in_txn: bool) -> bool {
        let detail = match (&fatal, &error) {
            (Some(f), _) => format!("{} (SQLSTATE {})", f.message, f.code),
            (None, Some(e)) => e.clone(),
            (None, None) => "server closed the connection unexpectedly".into(),
        };
        tracing::warn!(parent: &self.span, detail = %detail, "server connection lost mid-request");
        self.state.abandon();
        self.pipeline.clear();
        if self.holds_server() && fatal.is_some() {
            // The server's own FATAL already reached the client, as it
            // would have without a pooler in between.
            let _ = self.client.shutdown().await;
            return false;
        }
        if self.holds_server() || !self.sscan.at_boundary() {
            // Session state is gone, or part of a message was already
            // forwarded: the client's stream cannot be repaired.
            self.out.clear();
            be::error_response(
                &mut self.out,
                Severity::Fatal,
                sqlstate::CONNECTION_FAILURE,
                "server connection lost",
                Some(&detail),
            );
            if self.sscan.at_boundary() {
                let _ = self.client.write_all(&self.out).await;
            }
            let _ = self.client.shutdown().await;
            return false;
        }
        // Complete messages already read are still the client's.
        self.out.clear();
        be::error_response(
            &mut self.out,
            Severity::Error,
            sqlstate::CONNECTION_FAILURE,
            "server connection lost",
            Some(&detail),
        );
        let status = if in_txn { b'E' } else { b'I' };
        let owed = self.pending.max(1);
        for _ in 0..owed {
            be::ready_for_query(&mut self.out, status);
        }
        self.pending = 0;
        self.unsynced = false;
        self.orphaned_txn = in_txn;
        // Client bytes that were read but not sent belong to requests that
        // were answered above.
        self.cbuf.advance(self.c_ready + self.c_consumed + self.c_drop);
        self.c_ready = 0;
        self.c_consumed = 0;
        self.c_out.clear();
        self.c_out_pos = 0;
        self.c_drop = 0;
        self.cscan = Scanner::new(self.client_inspect);
        if self.client.write_all(&self.out).await.is_err() {
            return false;
        }
        true
    }

    /// Answers a request that could not get a server: the error, then
    /// ReadyForQuery when the request (simple query or extended batch up to
    /// Sync) is complete.
    async fn refuse_request(&mut self, code: &str, message: &str) {
        self.stats.on_error(code);
        self.out.clear();
        be::error_response(&mut self.out, Severity::Error, code, message, None);
        let _ = self.client.write_all(&self.out).await;
        self.skip_to_sync = true;
    }

    /// Handles one whole client message without a server: skipping a
    /// refused batch, or answering inside an orphaned transaction.
    async fn answer_locally(&mut self, tag: u8, body: &[u8]) -> bool {
        self.out.clear();
        if self.skip_to_sync {
            match tag {
                b'Q' | b'S' | b'F' => {
                    self.skip_to_sync = false;
                    let status = if self.orphaned_txn { b'E' } else { b'I' };
                    be::ready_for_query(&mut self.out, status);
                }
                _ => return true,
            }
        } else if self.orphaned_txn {
            match tag {
                b'Q' if ends_transaction(body) => {
                    self.orphaned_txn = false;
                    be::command_complete(&mut self.out, "ROLLBACK");
                    be::ready_for_query(&mut self.out, b'I');
                }
                b'P' if ends_transaction(parse_query(body)) => self.out.extend_from_slice(be::PARSE_COMPLETE),
                b'B' => self.out.extend_from_slice(be::BIND_COMPLETE),
                b'D' => {
                    // Describe of a statement answers its parameters first.
                    if body.first() == Some(&b'S') {
                        self.out.extend_from_slice(be::NO_PARAMETERS);
                    }
                    self.out.extend_from_slice(be::NO_DATA);
                }
                b'C' => self.out.extend_from_slice(be::CLOSE_COMPLETE),
                b'H' => {}
                b'E' => {
                    self.orphaned_txn = false;
                    be::command_complete(&mut self.out, "ROLLBACK");
                }
                b'S' => be::ready_for_query(&mut self.out, if self.orphaned_txn { b'E' } else { b'I' }),
                _ => {
                    be::error_response(
                        &mut self.out,
                        Severity::Error,
                        sqlstate::IN_FAILED_SQL_TRANSACTION,
                        "current transaction is aborted, commands ignored until end of transaction block",
                        Some("The server connection serving this transaction was lost."),
                    );
                    if tag == b'Q' || tag == b'F' {
                        be::ready_for_query(&mut self.out, b'E');
                    } else {
                        self.skip_to_sync = true;
                    }
                }
            }
        }
        self.out.is_empty() || self.client.write_all(&self.out).await.is_ok()
    }

    async fn fatal_and_close(&mut self, code: &str, message: &str) {
        self.out.clear();
        be::error_response(&mut self.out, Severity::Fatal, code, message, None);
        let _ = self.client.write_all(&self.out).await;
        let _ = self.client.shutdown().await;
    }

    #[inline]
    fn note_client_message(&mut self, tag: u8) {
        match tag {
            b'S' => {
                self.pending += 1;
                self.unsynced = false;
            }
            b'Q' | b'F' => self.pending += 1,
            b'P' | b'B' | b'E' | b'D' | b'C' | b'H' => self.unsynced = true,
            _ => {}
        }
    }

    /// The forwarding loop. Returns when the server can be released or
    /// something ends the binding.
    fn poll_pump(&mut self, server: &mut Server, cx: &mut Context<'_>) -> Poll<Outcome> {
        // A socket that said Pending stays so until this task yields (the
        // event loop records readiness only between polls), and its waker
        // is registered: asking it again in this poll would only cost.
        let mut blocked = Blocked::default();
        let mut turns = 0;
        loop {
            // Sockets never yield on their own: a pump that always finds
            // data (a long COPY, a big result) yields here, so the other
            // sessions on this worker keep being served.
            turns += 1;
            if turns > PUMP_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut progress = false;

            // Client → server.
            if self.client_idle_to_scan() {
                if let Err(e) = self.scan_client(server) {
                    return Poll::Ready(Outcome::ClientProtocol(e));
                }
            }
            if self.c_out_pos < self.c_out.len() && !blocked.server_write {
                match server.stream.poll_send(cx, &self.c_out[self.c_out_pos..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(self.server_gone(Some("server closed the connection".into())))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.stats.received(n);
                        self.c_out_pos += n;
                        progress = true;
                        self.idle_timer = None;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(self.server_gone(Some(e.to_string()))),
                    Poll::Pending => blocked.server_write = true,
                }
            }
            if self.c_out_pos == self.c_out.len() && self.c_consumed > 0 {
                // Everything the assembled bytes stand for is through
                // (or was answered by the router).
                self.c_out.clear();
                self.c_out_pos = 0;
                self.cbuf.advance(self.c_consumed);
                self.c_consumed = 0;
            }
            if self.c_ready > 0 && !blocked.server_write {
                match server.stream.poll_send(cx, &self.cbuf[..self.c_ready]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(self.server_gone(Some("server closed the connection".into())))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.stats.received(n);
                        self.cbuf.advance(n);
                        self.c_ready -= n;
                        progress = true;
                        self.idle_timer = None;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(self.server_gone(Some(e.to_string()))),
                    Poll::Pending => blocked.server_write = true,
                }
            }
            if self.c_ready == 0 && self.c_consumed == 0 && self.c_drop > 0 {
                self.cbuf.advance(self.c_drop);
                self.c_drop = 0;
            }
            if self.client_done && self.c_ready == 0 && self.c_consumed == 0 {
                return Poll::Ready(Outcome::ClientGone);
            }

            // Server → client.
            if self.server_idle_to_scan() && !self.release && !self.statement_txn {
                match self.scan_server(server) {
                    Ok(()) => {}
                    Err(e) => return Poll::Ready(Outcome::ServerProtocol(e)),
                }
            }
            if self.s_out_pos < self.s_out.len() && !blocked.client_write {
                match self.client.poll_send(cx, &self.s_out[self.s_out_pos..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Outcome::ClientGone),
                    Poll::Ready(Ok(n)) => {
                        self.stats.sent(n);
                        self.s_out_pos += n;
                        progress = true;
                    }
                    Poll::Pending => blocked.client_write = true,
                }
            }
            if self.s_assembling && self.s_out_pos == self.s_out.len() {
                self.s_out.clear();
                self.s_out_pos = 0;
                server.buf.advance(self.s_consumed);
                self.s_consumed = 0;
                self.s_assembling = false;
            }
            if self.s_ready > 0 && !blocked.client_write {
                match self.client.poll_send(cx, &server.buf[..self.s_ready]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Outcome::ClientGone),
                    Poll::Ready(Ok(n)) => {
                        self.stats.sent(n);
                        server.buf.advance(n);
                        self.s_ready -= n;
                        progress = true;
                    }
                    Poll::Pending => blocked.client_write = true,
                }
            }
            if self.s_ready == 0 && !self.s_assembling && self.s_drop > 0 {
                server.buf.advance(self.s_drop);
                self.s_drop = 0;
                if self.statement_txn {
                    self.statement_txn = false;
                    return Poll::Ready(Outcome::TransactionInStatementMode);
                }
            }
            if self.release && self.s_ready == 0 && !self.s_assembling {
                self.release = false;
                if self.c_ready == 0 && self.c_consumed == 0 && (self.cbuf.is_empty() || self.reroute) {
                    return Poll::Ready(Outcome::Released);
                }
                // The client already sent its next request: keep the server.
                continue;
            }

            // Reads, the server's first: a woken pump is usually woken by a
            // reply, and a reply that completes the request releases the
            // server before the client's socket needs asking.
            if self.server_idle_to_scan() && !blocked.server_read {
                match poll_read_into(&mut server.stream, &mut server.buf, cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(self.server_gone(None)),
                    Poll::Ready(Err(e)) => return Poll::Ready(self.server_gone(Some(e.to_string()))),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Pending => blocked.server_read = true,
                }
            }
            if self.client_idle_to_scan() && !blocked.client_read {
                match poll_read_into(&mut self.client, &mut self.cbuf, cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Outcome::ClientGone),
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        self.idle_timer = None;
                    }
                    Poll::Pending => blocked.client_read = true,
                }
            }
            if progress {
                continue;
            }

            // Nothing moves: timers and shutdown.
            let idle_in_txn = self.pending == 0 && !self.unsynced && server.status != b'I' && self.c_ready == 0;
            if let (true, Some(limit)) = (idle_in_txn, self.settings.idle_in_transaction_timeout) {
                let timer = self.idle_timer.get_or_insert_with(|| rt::time::sleep(limit));
                if Pin::new(timer).poll(cx).is_ready() {
                    return Poll::Ready(Outcome::IdleInTransactionTimeout);
                }
            }
            if !self.shutting_down && self.holds_server() && self.poll_stop(cx) {
                self.shutting_down = true;
                if self.pending == 0
                    && !self.unsynced
                    && server.status == b'I'
                    && self.s_ready == 0
                    && self.c_ready == 0
                {
                    return Poll::Ready(Outcome::Released);
                }
            }
            return Poll::Pending;
        }
    }

    /// `polled`, unless it is Pending and the router is shutting down
    /// (then `Ready(None)`): a wait of the idle session that shutdown ends.
    fn unless_stopped<T>(&mut self, polled: Poll<T>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match polled {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending if self.poll_stop(cx) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether the router is shutting down, registering for the wake-up
    /// when it is not yet. The registration lasts as long as the session
    /// (re-registering at every idle wait costs on every request).
    fn poll_stop(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stop.is_stopped() {
            return true;
        }
        let stop = &self.stop;
        let wait = self.stop_wait.get_or_insert_with(|| stop.wait());
        Pin::new(wait).poll(cx).is_ready()
    }

    fn server_gone(&mut self, error: Option<String>) -> Outcome {
        Outcome::ServerGone { fatal: self.fatal.take(), error }
    }
}

/// Which directions of a pump said Pending during one poll.
#[derive(Default)]
struct Blocked {
    client_read: bool,
    client_write: bool,
    server_read: bool,
    server_write: bool,
}

/// Reads what the socket has into the spare capacity of `buf`.
#[inline]
fn poll_read_into(stream: &mut Stream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    stream.poll_recv(cx, buf)
}

/// Whether a simple query ends a transaction (ROLLBACK, ABORT, COMMIT, END):
/// inside an aborted transaction PostgreSQL answers all of them with ROLLBACK.
fn ends_transaction(sql: &[u8]) -> bool {
    let text = String::from_utf8_lossy(sql);
    let first = text.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("").to_ascii_lowercase();
    let rest_ok = text.trim().trim_end_matches('\0').trim_end_matches(';').split_whitespace().count() <= 2;
    matches!(first.as_str(), "rollback" | "abort" | "commit" | "end") && rest_ok
}

/// The statement texts of the request at the front of `cbuf`, as far as it
/// is buffered whole: a simple query's, or the Parse (and named-statement
/// Bind) texts of an extended batch up to its Sync. At most eight.
fn request_texts<'a>(cbuf: &'a [u8], statements: &'a ClientStatements) -> RequestTexts<'a> {
    let mut texts = RequestTexts::default();
    let mut pos = 0;
    while !texts.is_full() {
        let Ok(Some((tag, total))) = frame::header(&cbuf[pos..]) else { break };
        let Some(body) = cbuf.get(pos + HEADER_LEN..pos + total) else { break };
        match tag {
            b'Q' => {
                texts.push(body.strip_suffix(b"\0").unwrap_or(body));
                break;
            }
            b'P' => texts.push(parse_query(body)),
            b'B' => {
                let mut r = frame::Reader::new(body);
                let _portal = r.cstr();
                if let Some(statement) = r.cstr().filter(|n| !n.is_empty()).and_then(|n| statements.get(n)) {
                    let definition = statement.definition();
                    let end = definition.iter().position(|&b| b == 0).unwrap_or(definition.len());
                    texts.push(&definition[..end]);
                }
            }
            b'S' => break,
            _ => {}
        }
        pos += total;
    }
    texts
}

/// The statement texts of one request: at most eight, on the stack (this
/// runs for every request a splitting router routes).
#[derive(Default)]
pub(super) struct RequestTexts<'a> {
    items: [&'a [u8]; 8],
    len: usize,
}

impl<'a> RequestTexts<'a> {
    fn push(&mut self, text: &'a [u8]) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = text;
            self.len += 1;
        }
    }

    fn is_full(&self) -> bool {
        self.len == self.items.len()
    }

    pub(super) fn as_slice(&self) -> &[&'a [u8]] {
        &self.items[..self.len]
    }
}

/// The query text of a Parse body (statement name, then query).
fn parse_query(body: &[u8]) -> &[u8] {
    let mut r = frame::Reader::new(body);
    let _ = r.cstr();
    r.cstr().unwrap_or(&[])
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cancel.slot.clear();
        give_buffer(std::mem::take(&mut self.cbuf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_enders() {
        for sql in ["ROLLBACK", "rollback;", "  abort", "COMMIT", "end transaction", "ROLLBACK WORK\0"] {
            assert!(ends_transaction(sql.as_bytes()), "{sql}");
        }
        for sql in ["SELECT 1", "rollback to savepoint a", "", "commitx"] {
            assert!(!ends_transaction(sql.as_bytes()), "{sql}");
        }
    }
}
