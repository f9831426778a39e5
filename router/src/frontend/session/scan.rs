//! The session pump's message walk: which client messages go through as
//! they are (zero-copy), rewritten or answered by the router, and which
//! server messages reach the client, in order, with the router's own
//! replies dropped and its local answers written in their place.

use crate::backend::server::Server;
use crate::config::PoolMode;
use crate::protocol::backend as be;
use crate::protocol::frame::{self, FrameError, HEADER_LEN};
use crate::protocol::frontend as fe;
use crate::protocol::stream::{Event, INSPECT_LIMIT};

use super::super::pipeline::{Expect, Local, Reply, Step};
use super::super::prepared::{self, Rewrite, Rewriter};
use super::{parse_query, request_texts, Session};

/// How much of a Bind too large to inspect whole must be buffered to read
/// its portal and statement names.
const BIND_HEAD_LIMIT: usize = 1024;

impl Session {
    /// Whether the client side has written out everything scanned, so more
    /// can be scanned (and read).
    #[inline]
    pub(super) fn client_idle_to_scan(&self) -> bool {
        self.c_ready == 0 && self.c_drop == 0 && self.c_consumed == 0 && !self.client_done && !self.reroute
    }

    /// On a replica: whether the client message starting a new request at
    /// `pos` must go to the primary instead.
    pub(super) fn needs_primary(&mut self, tag: u8, pos: usize, len: usize) -> bool {
        if !matches!(tag, b'Q' | b'P' | b'B') {
            return false;
        }
        let Session { split, cbuf, statements, .. } = self;
        let Some(split) = split.as_mut() else { return false };
        match request_texts(&cbuf[pos..pos + len], statements).as_slice().first() {
            Some(text) => split.needs_primary(text),
            // A Bind of a statement the router does not know: the primary.
            None => tag == b'B',
        }
    }

    #[inline]
    pub(super) fn server_idle_to_scan(&self) -> bool {
        self.s_ready == 0 && self.s_drop == 0 && !self.s_assembling
    }

    /// The client keeps its server connection: session mode, or a
    /// session-only feature pinned it.
    #[inline]
    pub(super) fn holds_server(&self) -> bool {
        self.settings.mode == PoolMode::Session || self.state.pinned.is_some()
    }

    /// Walks the client's buffered messages, deciding for each whether it
    /// goes through as it is (zero-copy), rewritten, or not at all.
    pub(super) fn scan_client(&mut self, server: &mut Server) -> Result<(), FrameError> {
        loop {
            let pos = self.c_ready + self.c_consumed;
            if self.track_statements && self.cscan.at_boundary() {
                match self.streamed_bind(server, pos)? {
                    Some(true) => continue,
                    Some(false) => return Ok(()),
                    None => {}
                }
            }
            match self.cscan.next(&self.cbuf[pos..])? {
                Event::Start { tag, available, .. } => {
                    self.note_client_message(tag);
                    self.stats.on_client_message(tag, &self.cbuf[pos..pos + available]);
                    if self.track_statements {
                        prepared::note(&mut self.pipeline, tag);
                    }
                    self.pass_client(available);
                }
                Event::Body(n) => self.pass_client(n),
                Event::Whole { tag: b'X', len } => {
                    // Terminate: the client is leaving.
                    self.c_drop = len;
                    self.client_done = true;
                    return Ok(());
                }
                Event::Whole { tag, len } => {
                    // Inside a transaction on the replica, everything goes
                    // there (the replica refuses writes in it itself).
                    let in_txn = self.pending == 0 && server.status != b'I';
                    let routed = std::mem::take(&mut self.just_routed);
                    if self.on_replica && !self.unsynced && !in_txn && !routed && self.needs_primary(tag, pos, len) {
                        // Held back until the replica's replies are through,
                        // then routed afresh (the release below).
                        self.reroute = true;
                        if self.pending == 0 {
                            self.release = true;
                        }
                        return Ok(());
                    }
                    self.note_client_message(tag);
                    self.stats.on_client_message(tag, &self.cbuf[pos..pos + len]);
                    self.client_message(server, tag, pos, len);
                }
                Event::NeedMore => return Ok(()),
            }
        }
    }

    /// One whole Query, Parse, Bind, Describe or Close (transaction mode).
    pub(super) fn client_message(&mut self, server: &mut Server, tag: u8, pos: usize, len: usize) {
        let msg = &self.cbuf[pos..pos + len];
        let mut rewrite = None;
        if tag == b'Q' || tag == b'P' {
            let text = if tag == b'Q' { &msg[HEADER_LEN..] } else { parse_query(&msg[HEADER_LEN..]) };
            let before = self.state.pinned;
            let effects = self.state.observe(text);
            if before.is_none() {
                if let Some(p) = self.state.pinned {
                    tracing::info!(parent: &self.span, feature = p.describe(), "client keeps its server connection until it disconnects");
                }
            }
            if effects.forget_statements {
                self.statements.clear();
                server.statements.clear();
            }
            if let (Some(name), true, b'Q', false) =
                (&effects.deallocate, self.track_statements, tag, self.pipeline.skipping())
            {
                // DEALLOCATE of a protocol-level statement: the server knows
                // it by the router's name, and the reply keeps its tag.
                if let Some(statement) = self.statements.remove(name.as_bytes()) {
                    self.scratch.clear();
                    self.rewriter_into_scratch(server).ensure(&statement);
                    let sql = format!("DEALLOCATE {}", String::from_utf8_lossy(&statement.name));
                    fe::query(&mut self.scratch, &sql);
                    self.pipeline.push(Expect::Forward(Reply::ReadyForQuery));
                    server.statements.forget(statement.id);
                    rewrite = Some(Rewrite::Replaced);
                }
            }
        }
        let rewrite = match rewrite {
            Some(r) => r,
            None if self.track_statements => {
                self.scratch.clear();
                // Lent out while the rewriter borrows the session: a swap of
                // pointers, not a copy.
                let cbuf = std::mem::take(&mut self.cbuf);
                let rewrite = self.rewriter_into_scratch(server).message(&cbuf[pos..pos + len]);
                self.cbuf = cbuf;
                rewrite
            }
            None => Rewrite::Forward,
        };
        match rewrite {
            Rewrite::Forward => self.pass_client(len),
            Rewrite::Replaced => {
                self.assemble_client();
                self.c_out.extend_from_slice(&self.scratch);
                self.c_consumed += len;
            }
            Rewrite::Answered => {
                self.assemble_client();
                self.c_consumed += len;
            }
        }
    }

    /// A Bind too large to inspect whole that names a tracked statement:
    /// its head is rewritten and the rest streams through. Some(true): done,
    /// scan on; Some(false): the head is not all here yet; None: not such a Bind.
    pub(super) fn streamed_bind(&mut self, server: &mut Server, pos: usize) -> Result<Option<bool>, FrameError> {
        let buf = &self.cbuf[pos..];
        let Some((b'B', total)) = frame::header(buf)? else { return Ok(None) };
        if total <= INSPECT_LIMIT || self.pipeline.skipping() {
            return Ok(None);
        }
        let want = (HEADER_LEN + BIND_HEAD_LIMIT).min(total);
        if buf.len() < want {
            return Ok(Some(false));
        }
        let Some((old_head, statement, head)) = prepared::streamed_bind_head(&buf[..want], total, &self.statements)
        else {
            return Ok(None);
        };
        self.note_client_message(b'B');
        self.stats.on_client_message(b'B', &self.cbuf[pos..pos + want]);
        self.scratch.clear();
        self.rewriter_into_scratch(server).ensure(&statement);
        self.pipeline.push(Expect::Forward(Reply::Bind));
        self.assemble_client();
        self.c_out.extend_from_slice(&self.scratch);
        self.c_out.extend_from_slice(&head);
        self.c_consumed += old_head;
        self.cscan.stream_rest(total - old_head);
        Ok(Some(true))
    }

    pub(super) fn rewriter_into_scratch<'a>(&'a mut self, server: &'a mut Server) -> Rewriter<'a> {
        Rewriter {
            registry: &self.pool.shared.statements,
            client: &mut self.statements,
            server: &mut server.statements,
            pipeline: &mut self.pipeline,
            capacity: self.settings.max_prepared_statements,
            out: &mut self.scratch,
        }
    }

    /// Forwards the next `n` scanned client bytes: zero-copy, or appended to
    /// the assembled output once the router rewrote something before them.
    #[inline]
    pub(super) fn pass_client(&mut self, n: usize) {
        if self.c_consumed > 0 {
            self.c_out.extend_from_slice(&self.cbuf[self.c_consumed..self.c_consumed + n]);
            self.c_consumed += n;
        } else {
            self.c_ready += n;
        }
    }

    /// Switches the client side to assembling: what was scanned so far is
    /// copied first, so order is kept.
    pub(super) fn assemble_client(&mut self) {
        if self.c_consumed == 0 {
            self.c_out.extend_from_slice(&self.cbuf[..self.c_ready]);
            self.c_consumed = self.c_ready;
            self.c_ready = 0;
        }
    }

    /// Walks the server's buffered messages: ReadyForQuery ends requests,
    /// FATAL errors are held back, replies to the router's own requests
    /// are dropped and its local answers written in their place.
    pub(super) fn scan_server(&mut self, server: &mut Server) -> Result<(), FrameError> {
        loop {
            if self.track_statements {
                while let Some(local) = self.pipeline.take_local() {
                    self.assemble_server(server);
                    self.s_out.extend_from_slice(match local {
                        Local::ParseComplete => be::PARSE_COMPLETE,
                        Local::CloseComplete => be::CLOSE_COMPLETE,
                    });
                }
            }
            let pos = self.s_ready + self.s_consumed;
            match self.sscan.next(&server.buf[pos..])? {
                Event::Start { tag, available, .. } => {
                    self.s_dropping =
                        self.track_statements && self.pipeline.on_server(tag, &mut server.statements) == Step::Drop;
                    self.pass_server(server, available);
                }
                Event::Body(n) => self.pass_server(server, n),
                Event::Whole { tag: b'Z', len } => {
                    if self.track_statements {
                        self.pipeline.on_server(b'Z', &mut server.statements);
                    }
                    self.s_dropping = false;
                    let status = server.buf.get(pos + HEADER_LEN).copied().unwrap_or(b'I');
                    server.status = status;
                    self.pending = self.pending.saturating_sub(1);
                    self.stats.on_ready(status, self.pending, server.pid);
                    if self.reroute && self.pending == 0 && status != b'I' {
                        // A transaction is open on the replica: the held
                        // request belongs to it, and the replica answers it.
                        self.reroute = false;
                    }
                    if self.pending == 0 && !self.unsynced {
                        if self.settings.mode == PoolMode::Statement && status != b'I' {
                            self.s_drop = len;
                            self.statement_txn = true;
                            return Ok(());
                        }
                        self.pass_server(server, len);
                        if status == b'I' && (!self.holds_server() || self.shutting_down) {
                            self.release = true;
                            return Ok(());
                        }
                    } else {
                        self.pass_server(server, len);
                    }
                }
                Event::Whole { tag: b'E', len } => {
                    if self.track_statements {
                        self.pipeline.on_server(b'E', &mut server.statements);
                    }
                    self.s_dropping = false;
                    // FATAL means the server is leaving.
                    let fields = be::parse_error_fields(server.buf.get(pos + HEADER_LEN..pos + len).unwrap_or(&[]));
                    self.stats.on_error(&fields.code);
                    if fields.is_fatal() {
                        self.fatal = Some(fields);
                        if !self.holds_server() {
                            // Replaced by an ordinary error when the connection closes.
                            self.s_drop = len;
                            return Ok(());
                        }
                    }
                    self.pass_server(server, len);
                }
                Event::Whole { tag, len } => {
                    // ParseComplete or CloseComplete.
                    self.s_dropping =
                        self.track_statements && self.pipeline.on_server(tag, &mut server.statements) == Step::Drop;
                    self.pass_server(server, len);
                    self.s_dropping = false;
                }
                Event::NeedMore => return Ok(()),
            }
        }
    }

    #[inline]
    pub(super) fn pass_server(&mut self, server: &Server, n: usize) {
        if self.s_dropping {
            self.assemble_server(server);
            self.s_consumed += n;
        } else if self.s_assembling {
            self.s_out.extend_from_slice(&server.buf[self.s_consumed..self.s_consumed + n]);
            self.s_consumed += n;
        } else {
            self.s_ready += n;
        }
    }

    /// Switches the server side to assembling, keeping order.
    pub(super) fn assemble_server(&mut self, server: &Server) {
        if !self.s_assembling {
            self.s_out.extend_from_slice(&server.buf[..self.s_ready]);
            self.s_consumed = self.s_ready;
            self.s_ready = 0;
            self.s_assembling = true;
        }
    }
}
