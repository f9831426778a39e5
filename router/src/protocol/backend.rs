//! Backend messages: encoders for what the router sends to clients (as a
//! server would), and parsers for the few server messages the router reads.
//!
//! Encoders append to a caller's `BytesMut` and back-fill the length, so
//! building a reply allocates nothing once the buffer has capacity.

use bytes::{BufMut, BytesMut};

use super::frame::Reader;

/// Starts a typed message; returns the offset to pass to [`finish`].
#[inline]
pub fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

/// Back-fills the length of the message started at `at`.
#[inline]
pub fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

pub fn authentication_ok(buf: &mut BytesMut) {
    let at = begin(buf, b'R');
    buf.put_i32(0);
    finish(buf, at);
}

pub fn authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    let at = begin(buf, b'R');
    buf.put_i32(5);
    buf.put_slice(&salt);
    finish(buf, at);
}

pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let at = begin(buf, b'R');
    buf.put_i32(10);
    for m in mechanisms {
        put_cstr(buf, m.as_bytes());
    }
    buf.put_u8(0);
    finish(buf, at);
}

pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(11);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(12);
    buf.put_slice(data);
    finish(buf, at);
}

/// Bodyless replies of the extended protocol, fixed bytes.
pub const PARSE_COMPLETE: &[u8] = b"1\0\0\0\x04";
pub const BIND_COMPLETE: &[u8] = b"2\0\0\0\x04";
pub const CLOSE_COMPLETE: &[u8] = b"3\0\0\0\x04";
pub const NO_DATA: &[u8] = b"n\0\0\0\x04";
/// ParameterDescription of a statement without parameters.
pub const NO_PARAMETERS: &[u8] = b"t\0\0\0\x06\0\0";

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let at = begin(buf, b'S');
    put_cstr(buf, name.as_bytes());
    put_cstr(buf, value.as_bytes());
    finish(buf, at);
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(secret);
    finish(buf, at);
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let at = begin(buf, b'Z');
    buf.put_u8(status);
    finish(buf, at);
}

/// NegotiateProtocolVersion: the newest minor version we speak, and the
/// `_pq_.` options we did not recognise.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unrecognized: &[&str]) {
    let at = begin(buf, b'v');
    buf.put_i32(minor);
    buf.put_i32(unrecognized.len() as i32);
    for o in unrecognized {
        put_cstr(buf, o.as_bytes());
    }
    finish(buf, at);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
        }
    }
}

/// ErrorResponse (or NoticeResponse for `Severity::Notice`) with the fields
/// clients display: severity (both forms), SQLSTATE, message, optional detail.
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, message: &str, detail: Option<&str>) {
    let tag = if severity == Severity::Notice { b'N' } else { b'E' };
    let at = begin(buf, tag);
    buf.put_u8(b'S');
    put_cstr(buf, severity.as_str().as_bytes());
    buf.put_u8(b'V');
    put_cstr(buf, severity.as_str().as_bytes());
    buf.put_u8(b'C');
    put_cstr(buf, code.as_bytes());
    buf.put_u8(b'M');
    put_cstr(buf, message.as_bytes());
    if let Some(d) = detail {
        buf.put_u8(b'D');
        put_cstr(buf, d.as_bytes());
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// One column of a RowDescription, for result sets the router makes itself.
pub struct Column<'a> {
    pub name: &'a str,
    /// Type OID: 25 text, 20 int8, 16 bool.
    pub type_oid: i32,
}

pub fn row_description(buf: &mut BytesMut, columns: &[Column<'_>]) {
    let at = begin(buf, b'T');
    buf.put_i16(columns.len() as i16);
    for c in columns {
        put_cstr(buf, c.name.as_bytes());
        buf.put_i32(0); // table oid
        buf.put_i16(0); // attribute number
        buf.put_i32(c.type_oid);
        buf.put_i16(-1); // type size: variable
        buf.put_i32(-1); // type modifier
        buf.put_i16(0); // text format
    }
    finish(buf, at);
}

/// DataRow in text format; None is SQL NULL.
pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    let at = begin(buf, b'D');
    buf.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                buf.put_i32(v.len() as i32);
                buf.put_slice(v.as_bytes());
            }
            None => buf.put_i32(-1),
        }
    }
    finish(buf, at);
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    let at = begin(buf, b'C');
    put_cstr(buf, tag.as_bytes());
    finish(buf, at);
}

pub fn empty_query_response(buf: &mut BytesMut) {
    let at = begin(buf, b'I');
    finish(buf, at);
}

/// The fields of an ErrorResponse/NoticeResponse body the router acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// Non-localised severity (`V`), falling back to `S`.
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ErrorFields {
    pub fn is_fatal(&self) -> bool {
        self.severity == "FATAL" || self.severity == "PANIC"
    }
}

/// Parses an ErrorResponse/NoticeResponse body (after tag and length).
pub fn parse_error_fields(body: &[u8]) -> ErrorFields {
    let mut fields = ErrorFields::default();
    let mut r = Reader::new(body);
    let mut localized = String::new();
    while let Some(kind) = r.u8() {
        if kind == 0 {
            break;
        }
        let Some(value) = r.cstr() else { break };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'S' => localized = value,
            b'V' => fields.severity = value,
            b'C' => fields.code = value,
            b'M' => fields.message = value,
            _ => {}
        }
    }
    if fields.severity.is_empty() {
        fields.severity = localized;
    }
    fields
}

/// A server's Authentication request (`R` body).
#[derive(Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5([u8; 4]),
    Sasl(Vec<&'a str>),
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    Other(i32),
}

pub fn parse_auth_request(body: &[u8]) -> Option<AuthRequest<'_>> {
    let mut r = Reader::new(body);
    Some(match r.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => {
            let s = r.take(4)?;
            AuthRequest::Md5([s[0], s[1], s[2], s[3]])
        }
        10 => {
            let mut mechs = Vec::new();
            while let Some(m) = r.str() {
                if m.is_empty() {
                    break;
                }
                mechs.push(m);
            }
            AuthRequest::Sasl(mechs)
        }
        11 => AuthRequest::SaslContinue(r.remaining()),
        12 => AuthRequest::SaslFinal(r.remaining()),
        other => AuthRequest::Other(other),
    })
}

/// ParameterStatus body → (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let mut r = Reader::new(body);
    Some((r.str()?, r.str()?))
}

/// BackendKeyData body → (pid, secret).
pub fn parse_backend_key_data(body: &[u8]) -> Option<(i32, i32)> {
    let mut r = Reader::new(body);
    Some((r.i32()?, r.i32()?))
}

/// DataRow body → its values as text (None for NULL). None when malformed.
pub fn parse_data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let mut r = Reader::new(body);
    let n = r.i16()?;
    let mut values = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = r.i32()?;
        if len < 0 {
            values.push(None);
        } else {
            let bytes = r.take(len as usize)?;
            values.push(Some(String::from_utf8_lossy(bytes).into_owned()));
        }
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame;

    #[test]
    fn data_row_round_trip() {
        let mut buf = BytesMut::new();
        data_row(&mut buf, &[Some("a"), None, Some("")]);
        let row = parse_data_row(&buf[5..]).unwrap();
        assert_eq!(row, vec![Some("a".to_string()), None, Some(String::new())]);
        assert!(parse_data_row(&buf[5..buf.len() - 1]).is_none());
    }

    #[test]
    fn error_response_round_trip() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, Severity::Fatal, "08P01", "bad", Some("why"));
        let total = frame::check(&buf).unwrap().unwrap();
        assert_eq!(total, buf.len());
        let f = parse_error_fields(&buf[5..]);
        assert_eq!(f.code, "08P01");
        assert_eq!(f.message, "bad");
        assert!(f.is_fatal());
    }

    #[test]
    fn ready_for_query_bytes() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, b'I');
        assert_eq!(&buf[..], b"Z\0\0\0\x05I");
    }

    #[test]
    fn auth_request_parse_survives_truncation() {
        let mut buf = BytesMut::new();
        authentication_sasl(&mut buf, &["SCRAM-SHA-256"]);
        assert_eq!(parse_auth_request(&buf[5..]), Some(AuthRequest::Sasl(vec!["SCRAM-SHA-256"])));
        for cut in 5..buf.len() {
            let _ = parse_auth_request(&buf[5..cut]);
        }
        authentication_md5(&mut buf, [1, 2, 3, 4]);
        assert_eq!(parse_auth_request(&buf[buf.len() - 8..]), Some(AuthRequest::Md5([1, 2, 3, 4])));
    }

    #[test]
    fn data_row_encodes_null() {
        let mut buf = BytesMut::new();
        data_row(&mut buf, &[Some("a"), None]);
        assert_eq!(&buf[..], b"D\0\0\0\x0f\0\x02\0\0\0\x01a\xff\xff\xff\xff");
    }
}
