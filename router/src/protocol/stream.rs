//! Walks message boundaries in a byte stream that is forwarded as it arrives.
//!
//! The proxy does not parse what it only forwards: for most messages it needs
//! the tag and the length, and the body goes through in whatever pieces the
//! socket delivered (a 50 MB DataRow is never buffered whole). Messages the
//! caller must read (ReadyForQuery, ErrorResponse, Terminate, ...) are marked
//! "inspected" and reported only once complete, so they can be acted on,
//! dropped or replaced.

use super::frame::{self, FrameError, HEADER_LEN};

/// Inspected messages larger than this are streamed like any other: no
/// message the router acts on is legitimately that large, and buffering a
/// client's 1 GB message would be a denial of service.
pub const INSPECT_LIMIT: usize = 1 << 20;

/// Which message tags are reported whole: a 256-bit set.
#[derive(Debug, Clone, Copy)]
pub struct TagSet([u64; 4]);

impl TagSet {
    pub const fn new(tags: &[u8]) -> Self {
        let mut set = [0u64; 4];
        let mut i = 0;
        while i < tags.len() {
            let t = tags[i] as usize;
            set[t / 64] |= 1 << (t % 64);
            i += 1;
        }
        TagSet(set)
    }

    #[inline]
    pub fn contains(&self, tag: u8) -> bool {
        let t = tag as usize;
        self.0[t / 64] & (1 << (t % 64)) != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first bytes of a streamed message: its tag, total length (tag
    /// included) and how many of its bytes are available now (header included).
    Start { tag: u8, total: usize, available: usize },
    /// More bytes of the streamed message in progress.
    Body(usize),
    /// A complete inspected message of `len` bytes (tag included) is next.
    Whole { tag: u8, len: usize },
    /// Nothing more can be said until more bytes arrive.
    NeedMore,
}

/// Per-direction scanner state: how much of a streamed message is still to come.
#[derive(Debug)]
pub struct Scanner {
    inspect: TagSet,
    remaining: usize,
}

impl Scanner {
    pub fn new(inspect: TagSet) -> Self {
        Self { inspect, remaining: 0 }
    }

    pub fn set_inspect(&mut self, inspect: TagSet) {
        self.inspect = inspect;
    }

    /// The caller consumed the head of a streamed message itself (to rewrite
    /// it): the next `remaining` bytes are that message's body.
    pub fn stream_rest(&mut self, remaining: usize) {
        self.remaining = remaining;
    }

    /// True between messages; false while a streamed message is only partly through.
    #[inline]
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Classifies the bytes at the start of `buf` (the unconsumed input). The
    /// caller consumes exactly the bytes the event names before calling again.
    #[inline]
    pub fn next(&mut self, buf: &[u8]) -> Result<Event, FrameError> {
        if self.remaining > 0 {
            if buf.is_empty() {
                return Ok(Event::NeedMore);
            }
            let n = self.remaining.min(buf.len());
            self.remaining -= n;
            return Ok(Event::Body(n));
        }
        let Some((tag, total)) = frame::header(buf)? else {
            return Ok(Event::NeedMore);
        };
        if self.inspect.contains(tag) && total <= INSPECT_LIMIT {
            if buf.len() < total {
                return Ok(Event::NeedMore);
            }
            return Ok(Event::Whole { tag, len: total });
        }
        let available = total.min(buf.len());
        debug_assert!(available >= HEADER_LEN);
        self.remaining = total - available;
        Ok(Event::Start { tag, total, available })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSPECT_Z: TagSet = TagSet::new(b"Z");

    fn stream() -> Vec<u8> {
        let mut v = Vec::new();
        // DataRow with one empty column: length 10, 11 bytes in all.
        v.extend_from_slice(b"D\0\0\0\x0a\0\x01\0\0\0\0");
        v.extend_from_slice(b"C\0\0\0\x0bSELECT\0");
        v.extend_from_slice(b"Z\0\0\0\x05I");
        v
    }

    /// Feeds `input` in chunks of `chunk` bytes and returns the sequence of
    /// (tag, bytes) seen, merging Start and Body pieces per message.
    fn run(input: &[u8], chunk: usize) -> Vec<(u8, usize)> {
        let mut s = Scanner::new(INSPECT_Z);
        let mut pending: Vec<u8> = Vec::new();
        let mut out: Vec<(u8, usize)> = Vec::new();
        for piece in input.chunks(chunk) {
            pending.extend_from_slice(piece);
            loop {
                match s.next(&pending).unwrap() {
                    Event::Start { tag, available, .. } => {
                        out.push((tag, available));
                        pending.drain(..available);
                    }
                    Event::Body(n) => {
                        out.last_mut().unwrap().1 += n;
                        pending.drain(..n);
                    }
                    Event::Whole { tag, len } => {
                        out.push((tag, len));
                        pending.drain(..len);
                    }
                    Event::NeedMore => break,
                }
            }
        }
        assert!(pending.is_empty());
        out
    }

    #[test]
    fn same_messages_whatever_the_chunking() {
        let input = stream();
        let expected = vec![(b'D', 11), (b'C', 12), (b'Z', 6)];
        for chunk in 1..=input.len() {
            assert_eq!(run(&input, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn inspected_message_waits_until_whole() {
        let mut s = Scanner::new(INSPECT_Z);
        assert_eq!(s.next(b"Z\0\0\0\x05").unwrap(), Event::NeedMore);
        assert_eq!(s.next(b"Z\0\0\0\x05I").unwrap(), Event::Whole { tag: b'Z', len: 6 });
    }

    #[test]
    fn tag_set_membership() {
        let set = TagSet::new(b"ZE\xff\x00");
        for tag in 0..=255u8 {
            assert_eq!(set.contains(tag), matches!(tag, b'Z' | b'E' | 0xff | 0), "{tag}");
        }
    }

    #[test]
    fn bad_length_is_an_error() {
        let mut s = Scanner::new(INSPECT_Z);
        assert!(s.next(b"D\0\0\0\x02").is_err());
    }
}
