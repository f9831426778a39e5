//! Which reply belongs to which request, while the router rewrites the
//! client's extended-protocol stream in transaction mode.
//!
//! The router adds messages (a Parse for a statement the server connection
//! lacks, a Close to evict one) and answers some itself (ParseComplete for
//! a statement the connection already has, CloseComplete for a client's
//! Close). Replies come back in request order, so one queue entry per
//! request says what to do with its reply: forward it, drop it (the
//! router's own request), or write the router's answer at that point.
//! After an ErrorResponse the server skips everything up to Sync, and so
//! does the queue: the skipped requests get no reply, injected or not.

use std::collections::VecDeque;

use crate::backend::statements::ServerStatements;

/// What completes a request's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// ParseComplete; the statement id the Parse prepares, if tracked.
    Parse(Option<u64>),
    Bind,
    Close,
    /// ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// RowDescription or NoData.
    DescribePortal,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// ReadyForQuery ends Sync, a simple Query and a FunctionCall.
    ReadyForQuery,
}

/// A reply the router writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    ParseComplete,
    CloseComplete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The client's request, forwarded: its reply goes to the client.
    Forward(Reply),
    /// The router's own request: its reply is dropped.
    Injected(Reply),
    /// The router answers here, in order.
    Local(Local),
}

/// What to do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Forward,
    Drop,
}

/// The replies owed for requests sent on one server connection.
///
/// Simple queries sent while nothing else is owed are only counted, not
/// queued: their replies end at ReadyForQuery and need no accounting
/// unless a request the router rewrites comes after them, and then they
/// are queued first. So a client that never prepares pays nothing here.
#[derive(Debug, Default)]
pub struct Pipeline {
    queue: VecDeque<Expect>,
    /// Simple queries (and function calls) owed a reply, all before
    /// anything in `queue`.
    counted: u32,
    /// The server reported an error and the client has not sent the Sync
    /// that ends the batch yet: the server discards everything until then,
    /// so those messages owe no reply and must not be rewritten.
    skipping: bool,
}

impl Pipeline {
    #[inline]
    pub fn push(&mut self, expect: Expect) {
        if self.skipping {
            // Only the Sync counts; it ends the skipping.
            if expect != Expect::Forward(Reply::ReadyForQuery) {
                return;
            }
            self.skipping = false;
        }
        if self.queue.is_empty() {
            for _ in 0..std::mem::take(&mut self.counted) {
                self.queue.push_back(Expect::Forward(Reply::ReadyForQuery));
            }
        }
        self.queue.push_back(expect);
    }

    /// A simple Query or FunctionCall, forwarded as it is.
    #[inline]
    pub fn push_query(&mut self) {
        if self.skipping {
            return;
        }
        if self.queue.is_empty() {
            self.counted += 1;
        } else {
            self.queue.push_back(Expect::Forward(Reply::ReadyForQuery));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.counted == 0
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.counted = 0;
        self.skipping = false;
    }

    /// Whether the server is discarding the client's messages until Sync.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// Whether some owed reply is not a plain forward: while none is, the
    /// server's bytes can go to the client untouched.
    pub fn needs_rewrite(&self) -> bool {
        self.queue.iter().any(|e| !matches!(e, Expect::Forward(_)))
    }

    /// The router's answer that is due now (everything before it was
    /// answered), taken off the queue.
    #[inline]
    pub fn take_local(&mut self) -> Option<Local> {
        match self.queue.front() {
            Some(Expect::Local(l)) => {
                let l = *l;
                self.queue.pop_front();
                Some(l)
            }
            _ => None,
        }
    }

    /// Accounts for one server message by its tag and says whether the
    /// client gets it. Parse outcomes update `statements`.
    #[inline(always)]
    pub fn on_server(&mut self, tag: u8, statements: &mut ServerStatements) -> Step {
        if self.queue.is_empty() {
            if tag == b'Z' {
                self.counted = self.counted.saturating_sub(1);
            }
            return Step::Forward;
        }
        // Rows and COPY data never end a reply and are never the router's;
        // notices, notifications and parameter changes are asynchronous.
        if matches!(tag, b'D' | b'd' | b'N' | b'A' | b'S') {
            return Step::Forward;
        }
        self.on_server_queued(tag, statements)
    }

    #[inline(never)]
    fn on_server_queued(&mut self, tag: u8, statements: &mut ServerStatements) -> Step {
        if tag == b'E' {
            // The failed request and everything up to Sync get no
            // reply; the error itself is the client's.
            let mut synced = false;
            while let Some(e) = self.queue.front() {
                match e {
                    Expect::Forward(Reply::ReadyForQuery) | Expect::Injected(Reply::ReadyForQuery) => {
                        synced = true;
                        break;
                    }
                    Expect::Forward(Reply::Parse(Some(id))) | Expect::Injected(Reply::Parse(Some(id))) => {
                        statements.forget(*id);
                    }
                    _ => {}
                }
                self.queue.pop_front();
            }
            // No Sync sent yet: what the client sends until it is
            // discarded by the server too.
            self.skipping = !synced;
            return Step::Forward;
        }
        let (reply, step) = match self.queue.front() {
            Some(Expect::Forward(r)) => (*r, Step::Forward),
            Some(Expect::Injected(r)) => (*r, Step::Drop),
            // A reply nobody asked for (or a Local not yet written): pass
            // it on rather than lose it.
            _ => return Step::Forward,
        };
        let done = match reply {
            Reply::Parse(id) => {
                if let (b'1', Some(id)) = (tag, id) {
                    statements.confirm(id);
                }
                tag == b'1'
            }
            Reply::Bind => tag == b'2',
            Reply::Close => tag == b'3',
            Reply::DescribeStatement | Reply::DescribePortal => matches!(tag, b'T' | b'n'),
            Reply::Execute => matches!(tag, b'C' | b'I' | b's'),
            Reply::ReadyForQuery => tag == b'Z',
        };
        if done {
            self.queue.pop_front();
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &mut Pipeline, s: &mut ServerStatements, tags: &[u8]) -> Vec<(u8, Step)> {
        tags.iter().map(|t| (*t, p.on_server(*t, s))).collect()
    }

    #[test]
    fn injected_parse_reply_is_dropped_and_confirms() {
        let mut p = Pipeline::default();
        let mut s = ServerStatements::default();
        s.begin(7);
        p.push(Expect::Injected(Reply::Parse(Some(7))));
        p.push(Expect::Forward(Reply::Bind));
        p.push(Expect::Forward(Reply::Execute));
        p.push(Expect::Forward(Reply::ReadyForQuery));
        assert!(p.needs_rewrite());
        let steps = run(&mut p, &mut s, b"12DDCZ");
        assert_eq!(steps[0], (b'1', Step::Drop));
        assert!(steps[1..].iter().all(|(_, st)| *st == Step::Forward));
        assert!(p.is_empty());
        assert_eq!(s.evict(1), Some(7), "confirmed, so evictable");
    }

    #[test]
    fn local_answers_wait_for_earlier_replies() {
        let mut p = Pipeline::default();
        let mut s = ServerStatements::default();
        p.push(Expect::Forward(Reply::Bind));
        p.push(Expect::Local(Local::ParseComplete));
        p.push(Expect::Forward(Reply::ReadyForQuery));
        assert_eq!(p.take_local(), None);
        assert_eq!(p.on_server(b'2', &mut s), Step::Forward);
        assert_eq!(p.take_local(), Some(Local::ParseComplete));
        assert_eq!(p.take_local(), None);
        assert_eq!(p.on_server(b'Z', &mut s), Step::Forward);
        assert!(p.is_empty());
    }

    #[test]
    fn error_skips_to_sync_including_locals_and_pending_parses() {
        let mut p = Pipeline::default();
        let mut s = ServerStatements::default();
        s.begin(3);
        p.push(Expect::Forward(Reply::Bind));
        p.push(Expect::Injected(Reply::Parse(Some(3))));
        p.push(Expect::Local(Local::ParseComplete));
        p.push(Expect::Forward(Reply::Execute));
        p.push(Expect::Forward(Reply::ReadyForQuery));
        assert_eq!(p.on_server(b'E', &mut s), Step::Forward);
        assert_eq!(p.take_local(), None, "skipped requests get no reply");
        assert_eq!(s.touch(3), crate::backend::statements::Has::No, "the parse never ran");
        assert_eq!(p.on_server(b'Z', &mut s), Step::Forward);
        assert!(p.is_empty());
    }

    #[test]
    fn error_in_a_simple_query_waits_for_its_ready_for_query() {
        let mut p = Pipeline::default();
        let mut s = ServerStatements::default();
        p.push(Expect::Forward(Reply::ReadyForQuery));
        p.push(Expect::Local(Local::CloseComplete));
        assert_eq!(
            run(&mut p, &mut s, b"TDE"),
            vec![(b'T', Step::Forward), (b'D', Step::Forward), (b'E', Step::Forward)]
        );
        assert_eq!(p.on_server(b'Z', &mut s), Step::Forward);
        assert_eq!(p.take_local(), Some(Local::CloseComplete));
    }

    #[test]
    fn describe_statement_ends_at_row_description_or_no_data() {
        let mut p = Pipeline::default();
        let mut s = ServerStatements::default();
        p.push(Expect::Forward(Reply::DescribeStatement));
        p.push(Expect::Injected(Reply::Close));
        p.push(Expect::Forward(Reply::DescribePortal));
        let steps = run(&mut p, &mut s, b"tn3T");
        assert_eq!(
            steps,
            vec![(b't', Step::Forward), (b'n', Step::Forward), (b'3', Step::Drop), (b'T', Step::Forward)]
        );
        assert!(p.is_empty());
    }

    #[test]
    fn counted_queries_are_queued_before_a_rewritten_request() {
        let mut p = Pipeline::default();
        let mut s = ServerStatements::default();
        p.push_query();
        p.push_query();
        assert!(!p.is_empty());
        // The first query's reply passes without queueing anything.
        assert_eq!(
            run(&mut p, &mut s, b"TDCZ"),
            vec![(b'T', Step::Forward), (b'D', Step::Forward), (b'C', Step::Forward), (b'Z', Step::Forward)]
        );
        // A rewritten request arrives while the second is still owed.
        s.begin(9);
        p.push(Expect::Injected(Reply::Parse(Some(9))));
        p.push(Expect::Forward(Reply::Bind));
        p.push(Expect::Forward(Reply::ReadyForQuery));
        p.push_query();
        // The second query's reply, then the injected Parse's is dropped.
        assert_eq!(run(&mut p, &mut s, b"CZ"), vec![(b'C', Step::Forward), (b'Z', Step::Forward)]);
        assert_eq!(p.on_server(b'1', &mut s), Step::Drop);
        assert_eq!(run(&mut p, &mut s, b"2ZCZ").len(), 4);
        assert!(p.is_empty());
    }

    #[test]
    fn messages_after_an_error_before_sync_owe_nothing() {
        let mut p = Pipeline::default();
        let mut s = ServerStatements::default();
        // Bind/Execute then Flush: no Sync yet when the error comes back.
        p.push(Expect::Forward(Reply::Bind));
        p.push(Expect::Forward(Reply::Execute));
        assert_eq!(p.on_server(b'E', &mut s), Step::Forward);
        assert!(p.skipping());
        // The client goes on before it has read the error.
        p.push(Expect::Local(Local::ParseComplete));
        p.push(Expect::Forward(Reply::Bind));
        assert_eq!(p.take_local(), None, "the server skips that Parse: no ParseComplete");
        p.push(Expect::Forward(Reply::ReadyForQuery));
        assert!(!p.skipping());
        assert_eq!(p.on_server(b'Z', &mut s), Step::Forward);
        assert!(p.is_empty());
    }

    #[test]
    fn async_messages_do_not_advance() {
        let mut p = Pipeline::default();
        let mut s = ServerStatements::default();
        p.push(Expect::Injected(Reply::Parse(None)));
        assert_eq!(p.on_server(b'N', &mut s), Step::Forward);
        assert_eq!(p.on_server(b'S', &mut s), Step::Forward);
        assert_eq!(p.on_server(b'1', &mut s), Step::Drop);
        assert!(p.is_empty());
    }
}
