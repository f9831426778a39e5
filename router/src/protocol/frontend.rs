//! Frontend messages: encoders for what the router sends to servers (as a
//! client would), and the parse of a client's startup packet.

use bytes::{BufMut, BytesMut};

use super::backend::{begin, finish};
use super::frame::Reader;

pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;

pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        buf.put_slice(k.as_bytes());
        buf.put_u8(0);
        buf.put_slice(v.as_bytes());
        buf.put_u8(0);
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(SSL_REQUEST_CODE);
}

pub fn cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_i32(16);
    buf.put_i32(CANCEL_REQUEST_CODE);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

/// PasswordMessage carrying a cleartext or MD5 password.
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    let at = begin(buf, b'p');
    buf.put_slice(password);
    buf.put_u8(0);
    finish(buf, at);
}

pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let at = begin(buf, b'p');
    buf.put_slice(mechanism.as_bytes());
    buf.put_u8(0);
    buf.put_i32(data.len() as i32);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'p');
    buf.put_slice(data);
    finish(buf, at);
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, b'Q');
    buf.put_slice(sql.as_bytes());
    buf.put_u8(0);
    finish(buf, at);
}

/// Parse: a statement name, its query and parameter type OIDs.
pub fn parse(buf: &mut BytesMut, name: &str, sql: &str, types: &[u32]) {
    let at = begin(buf, b'P');
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
    buf.put_slice(sql.as_bytes());
    buf.put_u8(0);
    buf.put_u16(types.len() as u16);
    for t in types {
        buf.put_u32(*t);
    }
    finish(buf, at);
}

/// Terminate: a fixed five bytes.
pub const TERMINATE: &[u8] = b"X\0\0\0\x04";

/// What a client's first packet asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: i32,
    },
    /// A StartupMessage: protocol version and its parameters in order.
    Startup {
        version: i32,
        params: Vec<(String, String)>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct StartupParseError(pub &'static str);

/// Parses a complete startup packet (length prefix included).
pub fn parse_startup(packet: &[u8]) -> Result<StartupPacket, StartupParseError> {
    let mut r = Reader::new(packet.get(4..).ok_or(StartupParseError("truncated startup packet"))?);
    let code = r.i32().ok_or(StartupParseError("truncated startup packet"))?;
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEnc),
        CANCEL_REQUEST_CODE => {
            let pid = r.i32().ok_or(StartupParseError("truncated cancel request"))?;
            let secret = r.i32().ok_or(StartupParseError("truncated cancel request"))?;
            Ok(StartupPacket::Cancel { pid, secret })
        }
        version if version >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let name = r
                    .cstr()
                    .ok_or(StartupParseError("invalid startup packet layout: expected terminator as last byte"))?;
                if name.is_empty() {
                    break;
                }
                let value = r
                    .cstr()
                    .ok_or(StartupParseError("invalid startup packet layout: expected terminator as last byte"))?;
                let name = String::from_utf8(name.to_vec())
                    .map_err(|_| StartupParseError("startup parameter name is not UTF-8"))?;
                let value = String::from_utf8(value.to_vec())
                    .map_err(|_| StartupParseError("startup parameter value is not UTF-8"))?;
                params.push((name, value));
            }
            Ok(StartupPacket::Startup { version, params })
        }
        _ => Err(StartupParseError("unsupported frontend protocol")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_round_trip() {
        let mut buf = BytesMut::new();
        startup_message(&mut buf, &[("user", "alice"), ("database", "db")]);
        let parsed = parse_startup(&buf).unwrap();
        assert_eq!(
            parsed,
            StartupPacket::Startup {
                version: PROTOCOL_3_0,
                params: vec![("user".into(), "alice".into()), ("database".into(), "db".into())]
            }
        );
        for cut in 0..buf.len() {
            let _ = parse_startup(&buf[..cut]);
        }
    }

    #[test]
    fn special_requests() {
        let mut buf = BytesMut::new();
        ssl_request(&mut buf);
        assert_eq!(parse_startup(&buf), Ok(StartupPacket::Ssl));
        buf.clear();
        cancel_request(&mut buf, 7, -9);
        assert_eq!(parse_startup(&buf), Ok(StartupPacket::Cancel { pid: 7, secret: -9 }));
        assert!(parse_startup(&[0, 0, 0, 8, 0, 2, 0, 0]).is_err());
    }

    #[test]
    fn missing_terminator_is_an_error() {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        buf.put_i32(PROTOCOL_3_0);
        buf.put_slice(b"user\0bob");
        assert!(parse_startup(&buf).is_err());
    }
}
