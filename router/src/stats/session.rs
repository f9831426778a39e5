//! What one client session records as it forwards: query and transaction
//! timings (one clock read when a request starts and one when its
//! ReadyForQuery arrives), bytes both ways, error replies, and with
//! `log_queries` the text of each query for its log line.

use crate::clock::Tick;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::backend::pool::WorkerShare;

use super::bump;
use super::clients::{Activity, ClientState};

/// Longest query text kept for a log line, in bytes.
const LOGGED_TEXT: usize = 512;
/// Query texts remembered for pipelined requests awaiting their answers.
const LOGGED_QUEUE: usize = 64;

pub struct SessionStats {
    share: Arc<WorkerShare>,
    /// When the oldest unanswered request started.
    query_start: Option<Tick>,
    /// When the current transaction's first request started.
    xact_start: Option<Tick>,
    /// Present only with `log_queries`: the pool's name and pending texts.
    log: Option<Box<QueryLog>>,
    /// The client's SHOW CLIENTS entry: state and latest request time.
    activity: Arc<Activity>,
    /// The request about to be forwarded already has its start time (it
    /// waited for a server): its first message does not restamp it.
    stamped: bool,
    /// The clock at the last ReadyForQuery.
    last_ready: Option<Tick>,
}

struct QueryLog {
    pool: String,
    texts: VecDeque<String>,
}

impl SessionStats {
    pub fn new(share: Arc<WorkerShare>, log_pool: Option<String>, activity: Arc<Activity>) -> Self {
        Self {
            share,
            query_start: None,
            xact_start: None,
            log: log_pool.map(|pool| Box::new(QueryLog { pool, texts: VecDeque::new() })),
            activity,
            stamped: false,
            last_ready: None,
        }
    }

    /// Counts from now on in `share`: the pool serving the client's next
    /// request, when read/write splitting or a failover moved it.
    #[inline]
    pub fn follow(&mut self, share: &Arc<WorkerShare>) {
        if !Arc::ptr_eq(&self.share, share) {
            self.share = share.clone();
        }
    }

    /// For SHOW CLIENTS: no server bound, no request waiting for one.
    #[inline]
    pub fn client_idle(&mut self) {
        self.stamped = false;
        self.activity.set_state(ClientState::Idle);
    }

    /// For SHOW CLIENTS: a server is bound.
    #[inline]
    pub fn client_active(&self) {
        self.activity.set_state(ClientState::Active);
    }

    /// The client's request waits for a server (the slow path): its start
    /// is stamped now, so SHOW CLIENTS can say since when it waits.
    pub fn client_waiting(&mut self) {
        self.activity.request_started(Tick::now());
        self.activity.set_state(ClientState::Waiting);
        self.stamped = true;
    }

    /// A request is about to be served on a server that was ready at once:
    /// its clocks start at `now`, the reading the checkout used.
    #[inline]
    pub fn request_starts(&mut self, now: Tick) {
        if self.query_start.is_none() {
            self.stamp(now);
        }
    }

    fn stamp(&mut self, now: Tick) {
        if !std::mem::take(&mut self.stamped) {
            self.activity.request_started(now);
        }
        self.query_start = Some(now);
        if self.xact_start.is_none() {
            self.xact_start = Some(now);
        }
    }

    /// When the last ReadyForQuery was timed: a reading of the clock for
    /// the server's check-in right after it.
    #[inline]
    pub fn last_ready(&self) -> Option<Tick> {
        self.last_ready
    }

    /// A client message starts (`bytes` is what of it is buffered, header
    /// included). Requests start the clocks; with logging on, Query and
    /// Parse texts are kept for the log line.
    #[inline]
    pub fn on_client_message(&mut self, tag: u8, bytes: &[u8]) {
        if !matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'F' | b'S') {
            return;
        }
        if self.query_start.is_none() {
            self.stamp(Tick::cached());
        }
        if let Some(log) = self.log.as_mut() {
            log.capture(tag, bytes);
        }
    }

    /// A ReadyForQuery reached the client: one query answered. `pending`
    /// is how many requests are still unanswered after it.
    #[inline]
    pub fn on_ready(&mut self, status: u8, pending: u32, server_pid: i32) {
        let now = Tick::cached();
        self.last_ready = Some(now);
        let stats = &self.share.stats;
        if let Some(start) = self.query_start.take() {
            let us = now.micros_since(start);
            stats.record_query(us);
            if let Some(log) = self.log.as_mut() {
                let text = log.texts.pop_front().unwrap_or_default();
                tracing::info!(pool = %log.pool, server_pid, duration_ms = us as f64 / 1000.0, query = %text, "query");
            }
        }
        if pending > 0 {
            self.activity.request_started(now);
            self.query_start = Some(now);
        }
        if status == b'I' {
            if let Some(start) = self.xact_start.take() {
                bump(&stats.transactions, 1);
                bump(&stats.transaction_us, now.micros_since(start));
            }
            if pending > 0 {
                self.xact_start = Some(now);
            }
        }
    }

    /// Bytes forwarded from the client to a server.
    #[inline]
    pub fn received(&self, n: usize) {
        bump(&self.share.stats.received, n as u64);
    }

    /// Bytes forwarded from a server to the client.
    #[inline]
    pub fn sent(&self, n: usize) {
        bump(&self.share.stats.sent, n as u64);
    }

    /// An error reply (from a server or the router) with this SQLSTATE.
    pub fn on_error(&self, code: &str) {
        self.share.stats.record_error(code);
    }
}

impl QueryLog {
    fn capture(&mut self, tag: u8, bytes: &[u8]) {
        let body = bytes.get(5..).unwrap_or(&[]);
        let text = match tag {
            b'Q' => body,
            b'P' => {
                // Statement name, then the query.
                let name_end = body.iter().position(|&b| b == 0).map_or(body.len(), |p| p + 1);
                &body[name_end..]
            }
            _ => return,
        };
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len()).min(LOGGED_TEXT);
        if self.texts.len() < LOGGED_QUEUE {
            self.texts.push_back(String::from_utf8_lossy(&text[..end]).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Totals;

    fn totals(share: &WorkerShare) -> Totals {
        let mut t = Totals::default();
        share.stats.add_to(&mut t);
        t
    }

    #[test]
    fn a_transaction_of_two_queries() {
        let share = Arc::new(WorkerShare::default());
        let mut s = SessionStats::new(share.clone(), None, Arc::default());
        s.on_client_message(b'Q', b"Q\0\0\0\x0aBEGIN\0");
        s.on_ready(b'T', 0, 1);
        s.on_client_message(b'Q', b"Q\0\0\0\x0bCOMMIT\0");
        s.on_ready(b'I', 0, 1);
        s.received(10);
        s.sent(20);
        let t = totals(&share);
        assert_eq!((t.queries, t.transactions, t.received, t.sent), (2, 1, 10, 20));
    }

    #[test]
    fn pipelined_requests_each_count() {
        let share = Arc::new(WorkerShare::default());
        let mut s = SessionStats::new(share.clone(), Some("p".into()), Arc::default());
        for _ in 0..3 {
            s.on_client_message(b'P', b"P\0\0\0\x0d\0SELECT 1\0");
            s.on_client_message(b'S', b"S\0\0\0\x04");
        }
        s.on_ready(b'I', 2, 1);
        s.on_ready(b'I', 1, 1);
        s.on_ready(b'I', 0, 1);
        let t = totals(&share);
        assert_eq!((t.queries, t.transactions), (3, 3));
        // A ReadyForQuery nobody asked for counts nothing.
        s.on_ready(b'I', 0, 1);
        assert_eq!(totals(&share).queries, 3);
    }
}
