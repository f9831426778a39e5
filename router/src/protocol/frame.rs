//! Message framing: where one message ends, without copying or parsing bodies.
//!
//! Like `Frame::check` in mini-redis, "incomplete" is the normal answer while
//! bytes are still arriving; only impossible lengths are errors.

use std::fmt;

/// PostgreSQL's own cap on a message (`PQ_LARGE_MESSAGE_LIMIT` is 1 GB).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;
/// Startup packets are tiny; PostgreSQL itself refuses over 10,000 bytes.
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Bytes in a typed message header: tag + i32 length.
pub const HEADER_LEN: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length below 4 or above the cap: the peer is not speaking our protocol.
    BadLength { tag: u8, len: i64 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLength { tag, len } if *tag == 0 => {
                write!(f, "invalid startup packet length {len}")
            }
            FrameError::BadLength { tag, len } => {
                write!(f, "invalid length {len} for message type \"{}\"", tag.escape_ascii())
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// The header of a typed message at the start of `buf`, if five bytes are there:
/// `(tag, total length including the tag byte)`.
#[inline]
pub fn header(buf: &[u8]) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as i64;
    if len < 4 || len as usize > MAX_MESSAGE_LEN {
        return Err(FrameError::BadLength { tag, len });
    }
    Ok(Some((tag, len as usize + 1)))
}

/// Total length of the complete typed message at the start of `buf`, or None
/// while it is still incomplete.
#[inline]
pub fn check(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    match header(buf)? {
        Some((_, total)) if buf.len() >= total => Ok(Some(total)),
        _ => Ok(None),
    }
}

/// Length of the complete untyped startup-phase packet (StartupMessage,
/// SSLRequest, CancelRequest, GSSENCRequest) at the start of `buf`.
pub fn check_startup(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as i64;
    if !(8..=MAX_STARTUP_LEN as i64).contains(&len) {
        return Err(FrameError::BadLength { tag: 0, len });
    }
    let len = len as usize;
    Ok((buf.len() >= len).then_some(len))
}

/// Reads NUL-terminated strings and big-endian integers from a message body.
/// Every accessor returns None past the end instead of panicking.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    pub fn i16(&mut self) -> Option<i16> {
        let bytes = self.take(2)?;
        Some(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub fn i32(&mut self) -> Option<i32> {
        let bytes = self.take(4)?;
        Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// A C string without its terminator; None if no NUL follows.
    pub fn cstr(&mut self) -> Option<&'a [u8]> {
        let end = self.buf.iter().position(|&b| b == 0)?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Some(s)
    }

    /// A C string that must be UTF-8.
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.cstr()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_message_boundaries() {
        let msg = [b'Z', 0, 0, 0, 5, b'I'];
        assert_eq!(check(&msg), Ok(Some(6)));
        for cut in 0..msg.len() {
            assert_eq!(check(&msg[..cut]), Ok(None), "prefix {cut}");
        }
        assert_eq!(header(&msg), Ok(Some((b'Z', 6))));
    }

    #[test]
    fn impossible_lengths_are_errors() {
        for len in [0i32, 3, -1, i32::MAX] {
            let mut msg = vec![b'Q'];
            msg.extend_from_slice(&len.to_be_bytes());
            assert!(check(&msg).is_err(), "len {len}");
        }
    }

    #[test]
    fn startup_lengths() {
        let mut ssl = Vec::new();
        ssl.extend_from_slice(&8i32.to_be_bytes());
        ssl.extend_from_slice(&80877103i32.to_be_bytes());
        assert_eq!(check_startup(&ssl), Ok(Some(8)));
        for cut in 0..ssl.len() {
            assert_eq!(check_startup(&ssl[..cut]), Ok(None));
        }
        assert!(check_startup(&10_001i32.to_be_bytes()).is_err());
        assert!(check_startup(&7i32.to_be_bytes()).is_err());
        assert!(check_startup(&(-5i32).to_be_bytes()).is_err());
    }

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(b"abc\0\x00\x01");
        assert_eq!(r.str(), Some("abc"));
        assert_eq!(r.i32(), None);
        assert_eq!(r.i16(), Some(1));
        assert_eq!(r.u8(), None);
        let mut r = Reader::new(b"no terminator");
        assert_eq!(r.cstr(), None);
    }
}
