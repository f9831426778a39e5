//! Hand-written PostgreSQL wire protocol, for tests that need bytes no real
//! client would send (malformed packets, odd protocol versions) or values a
//! real client hides (the BackendKeyData pid and secret).
//!
//! Everything here is blocking I/O on a [`std::net::TcpStream`], usually one
//! from [`crate::raw_connect`], whose 10 s read timeout turns "the router never
//! answered" into an error instead of a hang. Only what the tests need is
//! implemented: startup-phase packets, simple queries, and a trust login
//! (a password exchange is out of scope; use tokio-postgres for that).

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Protocol 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 3 << 16;
/// Protocol 3.2: what libpq 18 asks for by default.
pub const PROTOCOL_3_2: i32 = (3 << 16) | 2;
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;

/// Largest backend message these helpers accept; a larger length means the
/// stream is out of step, and reading it would only hide that.
const MAX_BACKEND_MESSAGE: usize = 64 << 20;

/// A StartupMessage with an explicit protocol `version` word.
pub fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    for (name, value) in params {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    with_length_prefix(&body)
}

/// A protocol 3.0 StartupMessage.
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    startup_packet(PROTOCOL_3_0, params)
}

/// SSLRequest.
pub fn ssl_request() -> Vec<u8> {
    with_length_prefix(&SSL_REQUEST_CODE.to_be_bytes())
}

/// GSSENCRequest.
pub fn gssenc_request() -> Vec<u8> {
    with_length_prefix(&GSSENC_REQUEST_CODE.to_be_bytes())
}

/// CancelRequest for the key a BackendKeyData message announced.
pub fn cancel_request(pid: i32, secret: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(&secret.to_be_bytes());
    with_length_prefix(&body)
}

/// A simple Query message.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    typed_message(b'Q', &body)
}

/// SASLInitialResponse: mechanism name, then the length-prefixed data.
pub fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&i32::try_from(data.len()).expect("SASL data fits an i32").to_be_bytes());
    body.extend_from_slice(data);
    typed_message(b'p', &body)
}

/// PasswordMessage with a NUL-terminated password (cleartext or MD5 hash).
pub fn password_message(password: &str) -> Vec<u8> {
    let mut body = password.as_bytes().to_vec();
    body.push(0);
    typed_message(b'p', &body)
}

/// Terminate.
pub fn terminate_message() -> Vec<u8> {
    typed_message(b'X', &[])
}

/// A typed message: tag, length (self-inclusive), body.
pub fn typed_message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&with_length_prefix(body));
    out
}

/// `body` preceded by its length plus four, as every packet is framed.
fn with_length_prefix(body: &[u8]) -> Vec<u8> {
    let len = i32::try_from(body.len() + 4).expect("test packet fits an i32 length");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// One message from the router (tag and body, without the length word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendMessage {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl BackendMessage {
    /// The request code of an Authentication ('R') message: 0 ok, 3
    /// cleartext, 5 MD5, 10 SASL, 11 SASL continue, 12 SASL final.
    pub fn auth_code(&self) -> Option<i32> {
        (self.tag == b'R').then(|| be_i32(&self.body, 0)).flatten()
    }

    /// The mechanisms an AuthenticationSASL message offers.
    pub fn sasl_mechanisms(&self) -> Vec<String> {
        if self.auth_code() != Some(10) {
            return Vec::new();
        }
        cstrings(&self.body[4..]).into_iter().take_while(|m| !m.is_empty()).collect()
    }

    /// The SASL data of an AuthenticationSASLContinue or
    /// AuthenticationSASLFinal message (request codes 11 and 12).
    pub fn sasl_data(&self) -> Option<&[u8]> {
        matches!(self.auth_code(), Some(11 | 12)).then(|| &self.body[4..])
    }

    /// The fields of an ErrorResponse ('E') or NoticeResponse ('N').
    pub fn error_fields(&self) -> Option<ErrorFields> {
        matches!(self.tag, b'E' | b'N').then(|| ErrorFields::parse(&self.body))
    }

    /// A printable summary for assertion messages.
    pub fn describe(&self) -> String {
        match self.error_fields() {
            Some(e) => format!("'{}' {} {}: {}", self.tag as char, e.severity, e.code, e.message),
            None => format!("'{}' {:?}", self.tag.escape_ascii(), String::from_utf8_lossy(&self.body)),
        }
    }
}

/// The fields of an ErrorResponse that tests look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// Non-localised severity (`V`), or `S` when the sender omits `V`.
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ErrorFields {
    fn parse(body: &[u8]) -> ErrorFields {
        let mut fields = ErrorFields::default();
        let mut localized = String::new();
        let mut rest = body;
        while let Some((&kind, after)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let Some(end) = after.iter().position(|&b| b == 0) else { break };
            let value = String::from_utf8_lossy(&after[..end]).into_owned();
            rest = &after[end + 1..];
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
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}

/// Big-endian i32 at `at`, if the bytes are there.
fn be_i32(buf: &[u8], at: usize) -> Option<i32> {
    let bytes = buf.get(at..at + 4)?;
    Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// NUL-terminated strings in `buf`, in order; a trailing unterminated piece is dropped.
fn cstrings(buf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Some(end) = rest.iter().position(|&b| b == 0) {
        out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = &rest[end + 1..];
    }
    out
}

/// Write all of `bytes`.
pub fn send(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes)?;
    stream.flush()
}

/// Read one byte: the answer to an SSLRequest ('S' or 'N'), or an error
/// message's first byte.
pub fn read_byte(stream: &mut TcpStream) -> io::Result<u8> {
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    Ok(byte[0])
}

/// Read one whole backend message. A peer that closes before sending
/// anything gives `UnexpectedEof`; see [`is_closed`].
pub fn read_message(stream: &mut TcpStream) -> io::Result<BackendMessage> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header)?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len).ok().filter(|&l| (4..=MAX_BACKEND_MESSAGE).contains(&l)).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("backend message '{}' with impossible length {len}", header[0].escape_ascii()),
        )
    })?;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body)?;
    Ok(BackendMessage { tag: header[0], body })
}

/// Whether a read error means the peer closed the connection (as opposed
/// to a timeout or garbage).
pub fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Everything the peer sends until it closes the connection.
#[derive(Debug)]
pub struct UntilClose {
    pub messages: Vec<BackendMessage>,
    /// None when the peer closed; otherwise the read error that stopped us
    /// (a timeout means the connection was left open).
    pub error: Option<io::Error>,
}

impl UntilClose {
    pub fn closed(&self) -> bool {
        self.error.is_none()
    }

    /// The first ErrorResponse, if any.
    pub fn first_error(&self) -> Option<ErrorFields> {
        self.messages.iter().find(|m| m.tag == b'E').and_then(BackendMessage::error_fields)
    }

    pub fn describe(&self) -> String {
        let messages: Vec<String> = self.messages.iter().map(BackendMessage::describe).collect();
        match &self.error {
            None => format!("[{}] then closed", messages.join(", ")),
            Some(e) => format!("[{}] then {e} (connection not closed)", messages.join(", ")),
        }
    }
}

/// Read messages until the peer closes (or a read fails; at most 100 messages).
pub fn read_until_close(stream: &mut TcpStream) -> UntilClose {
    let mut messages = Vec::new();
    for _ in 0..100 {
        match read_message(stream) {
            Ok(m) => messages.push(m),
            Err(e) if is_closed(&e) => return UntilClose { messages, error: None },
            Err(e) => return UntilClose { messages, error: Some(e) },
        }
    }
    let e = io::Error::other("more than 100 messages without closing");
    UntilClose { messages, error: Some(e) }
}

/// A logged-in raw connection.
#[derive(Debug)]
pub struct RawSession {
    pub stream: TcpStream,
    /// From BackendKeyData.
    pub pid: i32,
    pub secret: i32,
    /// Every message from the first answer to ReadyForQuery, in order.
    pub greeting: Vec<BackendMessage>,
}

/// The rows and command tags of one simple query.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryResult {
    pub rows: Vec<Vec<Option<String>>>,
    pub tags: Vec<String>,
}

impl RawSession {
    /// Send `startup` (built with [`startup_packet`]) on `stream` and read
    /// up to ReadyForQuery. Only logins that need no password can succeed:
    /// a password request is an error, as is an ErrorResponse (returned
    /// with its fields in the message).
    pub fn login(mut stream: TcpStream, startup: &[u8]) -> Result<RawSession, String> {
        send(&mut stream, startup).map_err(|e| format!("send startup: {e}"))?;
        let mut greeting = Vec::new();
        let mut key = None;
        loop {
            let m = read_message(&mut stream)
                .map_err(|e| format!("reading login reply after {greeting:?}: {e} ({:?})", e.kind()))?;
            match m.tag {
                b'E' => return Err(format!("login refused: {}", m.describe())),
                b'R' if m.auth_code() != Some(0) => {
                    return Err(format!("router asked for a password: {}", m.describe()))
                }
                b'K' => key = Some((be_i32(&m.body, 0), be_i32(&m.body, 4))),
                _ => {}
            }
            let done = m.tag == b'Z';
            greeting.push(m);
            if done {
                break;
            }
        }
        let Some((Some(pid), Some(secret))) = key else {
            return Err(format!("no BackendKeyData in greeting: {greeting:?}"));
        };
        Ok(RawSession { stream, pid, secret, greeting })
    }

    /// Connect to 127.0.0.1:`port` and log in with a protocol 3.0
    /// StartupMessage for a trust user.
    pub fn trust_login(port: u16, user: &str, database: &str) -> Result<RawSession, String> {
        let stream = crate::raw_connect(port);
        RawSession::login(stream, &startup_message(&[("user", user), ("database", database)]))
    }

    /// Send a simple query without waiting for its result.
    pub fn send_query(&mut self, sql: &str) -> io::Result<()> {
        send(&mut self.stream, &query_message(sql))
    }

    /// Read one simple query's result up to ReadyForQuery: rows and tags,
    /// or the ErrorResponse it reported.
    pub fn read_result(&mut self) -> io::Result<Result<QueryResult, ErrorFields>> {
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            let m = read_message(&mut self.stream)?;
            match m.tag {
                b'D' => result.rows.push(parse_data_row(&m.body)?),
                b'C' => result.tags.push(cstrings(&m.body).into_iter().next().unwrap_or_default()),
                b'E' => {
                    let fields = ErrorFields::parse(&m.body);
                    if fields.severity == "FATAL" {
                        return Ok(Err(fields));
                    }
                    error.get_or_insert(fields);
                }
                b'Z' => return Ok(error.map_or(Ok(result), Err)),
                _ => {}
            }
        }
    }

    /// Run one simple query and read its result.
    pub fn simple_query(&mut self, sql: &str) -> io::Result<Result<QueryResult, ErrorFields>> {
        self.send_query(sql)?;
        self.read_result()
    }

    /// Send Terminate and drop the connection.
    pub fn close(mut self) {
        let _ = send(&mut self.stream, &terminate_message());
    }
}

/// Text-format values of a DataRow body; None is SQL NULL.
fn parse_data_row(body: &[u8]) -> io::Result<Vec<Option<String>>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed DataRow");
    let count = body.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])).ok_or_else(bad)?;
    let mut at = 2;
    let mut values = Vec::new();
    for _ in 0..count {
        let len = be_i32(body, at).ok_or_else(bad)?;
        at += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let value = body.get(at..at + len as usize).ok_or_else(bad)?;
        values.push(Some(String::from_utf8_lossy(value).into_owned()));
        at += len as usize;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_framing() {
        let packet = startup_message(&[("user", "u")]);
        assert_eq!(packet, b"\0\0\0\x10\0\x03\0\0user\0u\0\0");
        assert_eq!(ssl_request(), b"\0\0\0\x08\x04\xd2\x16\x2f");
        assert_eq!(query_message("x"), b"Q\0\0\0\x06x\0");
        assert_eq!(cancel_request(1, 2).len(), 16);
    }

    #[test]
    fn error_and_row_parsing() {
        let m = BackendMessage { tag: b'E', body: b"SFATAL\0VFATAL\0C08P01\0Mbad\0\0".to_vec() };
        let e = m.error_fields().unwrap();
        assert_eq!((e.severity.as_str(), e.code.as_str(), e.message.as_str()), ("FATAL", "08P01", "bad"));
        let row = parse_data_row(b"\0\x02\0\0\0\x0242\xff\xff\xff\xff").unwrap();
        assert_eq!(row, vec![Some("42".to_string()), None]);
        assert!(parse_data_row(b"\0\x01\0\0\0\x09ab").is_err());
        let sasl = BackendMessage { tag: b'R', body: b"\0\0\0\x0aSCRAM-SHA-256\0\0".to_vec() };
        assert_eq!(sasl.auth_code(), Some(10));
        assert_eq!(sasl.sasl_mechanisms(), vec!["SCRAM-SHA-256".to_string()]);
    }
}
