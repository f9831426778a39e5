//! A client's named prepared statements in transaction mode, and the
//! rewriting of its extended-protocol messages onto router-chosen names.
//!
//! The client's name maps to the pool's shared statement (see
//! `backend::statements`). Parse of a statement the server connection
//! already has is answered by the router; Bind and Describe of one it lacks
//! are preceded by the router's own Parse; Close of a statement only drops
//! the client's name (other clients may share the server's statement).
//! Every decision pushes what its reply needs onto the `Pipeline`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::backend::statements::{self, Has, ServerStatements, Statement, StatementRegistry};
use crate::protocol::frame::{self, HEADER_LEN};

use super::pipeline::{Expect, Local, Pipeline, Reply};

/// The client's statement names, each bound to a pool statement.
#[derive(Debug, Default)]
pub struct ClientStatements {
    /// Looked up on every Bind: the fast hash (`crate::fasthash`).
    by_name: HashMap<Box<[u8]>, Arc<Statement>, crate::fasthash::FastState>,
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.by_name.get(name)
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.by_name.remove(name)
    }

    /// DEALLOCATE ALL / DISCARD ALL from the client.
    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// What became of one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Send the original bytes unchanged.
    Forward,
    /// Send what was appended to `out` instead of the original.
    Replaced,
    /// Send nothing: the router answers (a `Local` is queued).
    Answered,
}

/// Everything one rewrite decision reads and updates.
pub struct Rewriter<'a> {
    pub registry: &'a StatementRegistry,
    pub client: &'a mut ClientStatements,
    pub server: &'a mut ServerStatements,
    pub pipeline: &'a mut Pipeline,
    /// `max_prepared_statements` of the pool.
    pub capacity: usize,
    pub out: &'a mut BytesMut,
}

impl Rewriter<'_> {
    /// Handles one whole client message (tag and length included). A
    /// malformed message is forwarded as it is: the server's protocol
    /// error is the right answer to it.
    pub fn message(&mut self, msg: &[u8]) -> Rewrite {
        let Some(&tag) = msg.first() else { return Rewrite::Forward };
        if self.pipeline.skipping() {
            // The server discards it (an error came before the Sync): it
            // neither creates nor closes anything, and owes no reply.
            note(self.pipeline, tag);
            return Rewrite::Forward;
        }
        let body = msg.get(HEADER_LEN..).unwrap_or(&[]);
        match tag {
            b'P' => self.parse(body),
            b'B' => self.bind(body),
            b'D' => self.describe(body),
            b'C' => self.close(body),
            _ => {
                note(self.pipeline, tag);
                Rewrite::Forward
            }
        }
    }

    fn parse(&mut self, body: &[u8]) -> Rewrite {
        let mut r = frame::Reader::new(body);
        let Some(name) = r.cstr() else { return self.forward(Reply::Parse(None)) };
        if name.is_empty() {
            return self.forward(Reply::Parse(None));
        }
        let definition = &body[name.len() + 1..];
        let statement = self.registry.intern(definition);
        let id = statement.id;
        // A name the client reuses without Close is rebound, where the
        // server would refuse it (42P05): drivers do not rely on the error.
        self.client.by_name.insert(name.into(), statement.clone());
        if self.server.touch(id) == Has::Yes {
            self.pipeline.push(Expect::Local(Local::ParseComplete));
            return Rewrite::Answered;
        }
        self.make_room();
        self.out.extend_from_slice(&statement.parse);
        self.server.begin(id);
        self.pipeline.push(Expect::Forward(Reply::Parse(Some(id))));
        Rewrite::Replaced
    }

    fn bind(&mut self, body: &[u8]) -> Rewrite {
        let mut r = frame::Reader::new(body);
        let (Some(portal), Some(name)) = (r.cstr(), r.cstr()) else { return self.forward(Reply::Bind) };
        let Some(statement) = self.lookup(name) else { return self.forward(Reply::Bind) };
        self.ensure(&statement);
        let rest = &body[portal.len() + 1 + name.len() + 1..];
        write_message(self.out, b'B', &[portal, b"\0", &statement.name, b"\0", rest]);
        self.pipeline.push(Expect::Forward(Reply::Bind));
        Rewrite::Replaced
    }

    fn describe(&mut self, body: &[u8]) -> Rewrite {
        let kind = body.first().copied();
        if kind != Some(b'S') {
            return self.forward(Reply::DescribePortal);
        }
        let mut r = frame::Reader::new(&body[1..]);
        let Some(name) = r.cstr() else { return self.forward(Reply::DescribeStatement) };
        let Some(statement) = self.lookup(name) else { return self.forward(Reply::DescribeStatement) };
        self.ensure(&statement);
        write_message(self.out, b'D', &[b"S", &statement.name, b"\0"]);
        self.pipeline.push(Expect::Forward(Reply::DescribeStatement));
        Rewrite::Replaced
    }

    fn close(&mut self, body: &[u8]) -> Rewrite {
        if body.first() != Some(&b'S') {
            return self.forward(Reply::Close);
        }
        let mut r = frame::Reader::new(&body[1..]);
        let Some(name) = r.cstr() else { return self.forward(Reply::Close) };
        if name.is_empty() || self.client.by_name.remove(name).is_none() {
            // The unnamed statement, or a name the router does not track
            // (SQL PREPARE on a pinned connection): the server's to close.
            return self.forward(Reply::Close);
        }
        // The server's statement stays for other clients and later reuse.
        self.pipeline.push(Expect::Local(Local::CloseComplete));
        Rewrite::Answered
    }

    fn lookup(&self, name: &[u8]) -> Option<Arc<Statement>> {
        if name.is_empty() {
            return None;
        }
        self.client.by_name.get(name).cloned()
    }

    /// Prepares `statement` on the connection first when it lacks it.
    pub fn ensure(&mut self, statement: &Statement) {
        if self.server.touch(statement.id) == Has::Yes {
            return;
        }
        self.make_room();
        self.out.extend_from_slice(&statement.parse);
        self.server.begin(statement.id);
        self.pipeline.push(Expect::Injected(Reply::Parse(Some(statement.id))));
    }

    /// Closes the least recently used statement when the connection is full.
    fn make_room(&mut self) {
        if let Some(victim) = self.server.evict(self.capacity.max(1)) {
            let name = statements::server_name(victim);
            write_message(self.out, b'C', &[b"S", name.as_bytes(), b"\0"]);
            self.pipeline.push(Expect::Injected(Reply::Close));
        }
    }

    fn forward(&mut self, reply: Reply) -> Rewrite {
        self.pipeline.push(Expect::Forward(reply));
        Rewrite::Forward
    }
}

/// Queues the reply of a message forwarded without a look at its body
/// (Execute, Sync, Query, or one streamed past the inspection limit).
#[inline]
pub fn note(pipeline: &mut Pipeline, tag: u8) {
    let reply = match tag {
        b'E' => Reply::Execute,
        b'Q' | b'F' => return pipeline.push_query(),
        b'S' => Reply::ReadyForQuery,
        b'P' => Reply::Parse(None),
        b'B' => Reply::Bind,
        b'C' => Reply::Close,
        // A Describe too large to inspect: both kinds end the same way.
        b'D' => Reply::DescribePortal,
        // Flush, COPY data: no reply of their own.
        _ => return,
    };
    pipeline.push(Expect::Forward(reply));
}

/// The start of a Bind too large to inspect whole (a big bytea parameter):
/// its portal and statement names, from the first bytes of the message.
/// Returns the length of that head in the original (header included), and
/// the head to send instead, with the statement renamed and the length fixed.
/// None when the head is not all here yet or names a statement the client
/// has not prepared.
pub fn streamed_bind_head(
    prefix: &[u8],
    total: usize,
    client: &ClientStatements,
) -> Option<(usize, Arc<Statement>, Vec<u8>)> {
    let body = prefix.get(HEADER_LEN..)?;
    let mut r = frame::Reader::new(body);
    let portal = r.cstr()?;
    let name = r.cstr()?;
    let statement = client.get(name).filter(|_| !name.is_empty())?.clone();
    let old_head = HEADER_LEN + portal.len() + 1 + name.len() + 1;
    let new_total = total - old_head + HEADER_LEN + portal.len() + 1 + statement.name.len() + 1;
    let mut head = Vec::with_capacity(new_total.min(HEADER_LEN + 256));
    head.push(b'B');
    head.extend_from_slice(&((new_total - 1) as u32).to_be_bytes());
    head.extend_from_slice(portal);
    head.push(0);
    head.extend_from_slice(&statement.name);
    head.push(0);
    Some((old_head, statement, head))
}

/// Appends one message built from `parts`.
fn write_message(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(1 + 4 + len);
    out.put_u8(tag);
    out.put_u32((4 + len) as u32);
    for p in parts {
        out.extend_from_slice(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frontend as fe;

    struct Fixture {
        registry: StatementRegistry,
        client: ClientStatements,
        server: ServerStatements,
        pipeline: Pipeline,
        out: BytesMut,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                registry: StatementRegistry::default(),
                client: ClientStatements::default(),
                server: ServerStatements::default(),
                pipeline: Pipeline::default(),
                out: BytesMut::new(),
            }
        }

        fn send(&mut self, msg: &[u8], capacity: usize) -> Rewrite {
            Rewriter {
                registry: &self.registry,
                client: &mut self.client,
                server: &mut self.server,
                pipeline: &mut self.pipeline,
                capacity,
                out: &mut self.out,
            }
            .message(msg)
        }

        /// Messages in `out` as (tag, body), and `out` emptied.
        fn sent(&mut self) -> Vec<(u8, Vec<u8>)> {
            let mut v = Vec::new();
            let mut buf = &self.out[..];
            while let Ok(Some((tag, total))) = frame::header(buf) {
                v.push((tag, buf[HEADER_LEN..total].to_vec()));
                buf = &buf[total..];
            }
            assert!(buf.is_empty(), "out holds whole messages");
            self.out.clear();
            v
        }

        /// Completes the pipeline as a server would answer every request.
        fn answer_all(&mut self) {
            let mut s = std::mem::take(&mut self.server);
            while !self.pipeline.is_empty() {
                if self.pipeline.take_local().is_some() {
                    continue;
                }
                for tag in [b'1', b'2', b'3', b'T', b'C', b'Z'] {
                    self.pipeline.on_server(tag, &mut s);
                }
            }
            self.server = s;
        }
    }

    fn parse(name: &str, query: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        fe::parse(&mut b, name, query, &[]);
        b.to_vec()
    }

    fn bind(portal: &str, name: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(portal.as_bytes());
        body.push(0);
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]);
        let mut m = vec![b'B'];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    fn close_or_describe(tag: u8, kind: u8, name: &str) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((name.len() + 6) as u32).to_be_bytes());
        m.push(kind);
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        m
    }

    #[test]
    fn first_parse_goes_out_renamed_then_is_answered_locally() {
        let mut f = Fixture::new();
        assert_eq!(f.send(&parse("s1", "SELECT 1"), 10), Rewrite::Replaced);
        let sent = f.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, b'P');
        assert!(sent[0].1.starts_with(b"__pgdog_1\0SELECT 1\0"));
        f.answer_all();
        // Another client name for the same text: the server has it.
        assert_eq!(f.send(&parse("other", "SELECT 1"), 10), Rewrite::Answered);
        assert_eq!(f.pipeline.take_local(), Some(Local::ParseComplete));
        assert!(f.sent().is_empty());
    }

    #[test]
    fn bind_on_a_connection_without_the_statement_prepares_it_first() {
        let mut f = Fixture::new();
        f.send(&parse("s1", "SELECT $1"), 10);
        f.sent();
        f.answer_all();
        // The client's next transaction lands on a fresh connection.
        f.server = ServerStatements::default();
        assert_eq!(f.send(&bind("", "s1"), 10), Rewrite::Replaced);
        let sent = f.sent();
        assert_eq!(sent.iter().map(|m| m.0).collect::<Vec<_>>(), vec![b'P', b'B']);
        assert!(sent[1].1.starts_with(b"\0__pgdog_1\0\0\0\0\x01"), "{:?}", sent[1].1);
        assert!(sent[1].1.ends_with(&[b'7', 0, 0]));
        // The injected ParseComplete is dropped, BindComplete forwarded.
        let mut s = std::mem::take(&mut f.server);
        assert_eq!(f.pipeline.on_server(b'1', &mut s), super::super::pipeline::Step::Drop);
        assert_eq!(f.pipeline.on_server(b'2', &mut s), super::super::pipeline::Step::Forward);
        // A second Bind in the same pipeline does not prepare it again.
        f.server = s;
        f.send(&bind("", "s1"), 10);
        assert_eq!(f.sent().iter().map(|m| m.0).collect::<Vec<_>>(), vec![b'B']);
    }

    #[test]
    fn pipelined_parse_and_bind_prepare_once() {
        let mut f = Fixture::new();
        f.send(&parse("a", "SELECT 2"), 10);
        f.send(&bind("", "a"), 10);
        f.send(&close_or_describe(b'D', b'S', "a"), 10);
        let tags: Vec<u8> = f.sent().iter().map(|m| m.0).collect();
        assert_eq!(tags, vec![b'P', b'B', b'D']);
    }

    #[test]
    fn unknown_and_unnamed_statements_pass_untouched() {
        let mut f = Fixture::new();
        assert_eq!(f.send(&parse("", "SELECT 1"), 10), Rewrite::Forward);
        assert_eq!(f.send(&bind("", ""), 10), Rewrite::Forward);
        assert_eq!(f.send(&bind("", "never_prepared"), 10), Rewrite::Forward);
        assert_eq!(f.send(&close_or_describe(b'D', b'P', ""), 10), Rewrite::Forward);
        assert_eq!(f.send(&close_or_describe(b'C', b'S', "nope"), 10), Rewrite::Forward);
        assert!(f.sent().is_empty());
        assert!(!f.pipeline.needs_rewrite());
    }

    #[test]
    fn close_drops_only_the_client_name() {
        let mut f = Fixture::new();
        f.send(&parse("s1", "SELECT 1"), 10);
        f.sent();
        f.answer_all();
        assert_eq!(f.send(&close_or_describe(b'C', b'S', "s1"), 10), Rewrite::Answered);
        assert_eq!(f.pipeline.take_local(), Some(Local::CloseComplete));
        assert!(f.client.is_empty());
        assert_eq!(f.server.len(), 1, "the server keeps the shared statement");
        assert_eq!(f.send(&bind("", "s1"), 10), Rewrite::Forward, "closed name is unknown again");
    }

    #[test]
    fn full_connection_evicts_the_least_recently_used() {
        let mut f = Fixture::new();
        for i in 0..3 {
            f.send(&parse(&format!("s{i}"), &format!("SELECT {i}")), 2);
            f.answer_all();
        }
        let tags: Vec<u8> = f.sent().iter().map(|m| m.0).collect();
        assert_eq!(tags, vec![b'P', b'P', b'C', b'P'], "third statement closes the first");
        assert_eq!(f.server.len(), 2);
        // s0 was evicted: binding it prepares it again (evicting s1).
        f.send(&bind("", "s0"), 2);
        let sent = f.sent();
        assert_eq!(sent.iter().map(|m| m.0).collect::<Vec<_>>(), vec![b'C', b'P', b'B']);
        assert_eq!(sent[0].1, b"S__pgdog_2\0");
    }

    #[test]
    fn streamed_bind_head_is_renamed() {
        let mut f = Fixture::new();
        f.send(&parse("big", "INSERT INTO t VALUES ($1)"), 10);
        let msg = bind("p", "big");
        let (old, statement, head) = streamed_bind_head(&msg[..12], msg.len(), &f.client).unwrap();
        assert_eq!(old, HEADER_LEN + 2 + 4);
        let mut rebuilt = head.clone();
        rebuilt.extend_from_slice(&msg[old..]);
        assert_eq!(frame::header(&rebuilt).unwrap().unwrap(), (b'B', rebuilt.len()));
        assert!(rebuilt[HEADER_LEN..].starts_with(b"p\0__pgdog_1\0"));
        assert_eq!(statement.id, 1);
        assert!(streamed_bind_head(&msg[..7], msg.len(), &f.client).is_none(), "names not all here");
        assert!(streamed_bind_head(&bind("", "x"), 20, &f.client).is_none(), "unknown name");
    }
}
