//! The first packets of a client connection: SSLRequest / GSSENCRequest
//! negotiation, CancelRequest, and the StartupMessage with its parameters.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use crate::config::ClientTlsMode;
use crate::net::{Stream, Tcp};
use crate::protocol::backend::{self as be, Severity};
use crate::protocol::frame;
use crate::protocol::frontend::{self as fe, StartupPacket};
use crate::protocol::sqlstate;

/// What the client asked for once negotiation is over.
pub enum Opening {
    Login(Login),
    Cancel { pid: i32, secret: i32 },
}

pub struct Login {
    pub stream: Stream,
    pub user: String,
    pub database: String,
    /// Every parameter as sent, in order (user and database included).
    pub params: Vec<(String, String)>,
    /// Bytes the client already sent after the StartupMessage.
    pub leftover: BytesMut,
}

/// A refusal to send before closing: SQLSTATE and message.
#[derive(Debug)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_string(), message: message.into() }
    }
}

pub enum StartupError {
    /// The peer went away or broke the TCP/TLS stream: nothing to answer.
    Io(io::Error),
    /// The peer gets a FATAL ErrorResponse on this stream, then is closed.
    Refused(Stream, Refusal),
}

/// Reads one startup-phase packet, buffering across reads.
async fn read_packet(stream: &mut Stream, buf: &mut BytesMut) -> Result<Result<usize, Refusal>, io::Error> {
    loop {
        match frame::check_startup(buf) {
            Ok(Some(len)) => return Ok(Ok(len)),
            Ok(None) => {}
            Err(e) => return Ok(Err(Refusal::new(sqlstate::PROTOCOL_VIOLATION, e.to_string()))),
        }
        buf.reserve(1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Drives negotiation until a StartupMessage or CancelRequest arrives.
/// `client_certs`: a CA for client certificates is configured, so every
/// client must come over TLS (a plaintext client would skip the check).
pub async fn negotiate(
    tcp: Tcp,
    tls: Option<&TlsAcceptor>,
    tls_mode: ClientTlsMode,
    client_certs: bool,
) -> Result<Opening, StartupError> {
    let mut stream = Stream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(1024);
    let mut ssl_answered = false;
    let mut gss_answered = false;
    loop {
        let len = match read_packet(&mut stream, &mut buf).await {
            Ok(Ok(len)) => len,
            Ok(Err(refusal)) => return Err(StartupError::Refused(stream, refusal)),
            Err(e) => return Err(StartupError::Io(e)),
        };
        let packet = buf.split_to(len);
        let parsed = match fe::parse_startup(&packet) {
            Ok(p) => p,
            Err(e) => return Err(StartupError::Refused(stream, Refusal::new(sqlstate::PROTOCOL_VIOLATION, e.0))),
        };
        match parsed {
            StartupPacket::Ssl if !ssl_answered && !stream.is_tls() => {
                ssl_answered = true;
                // A client must not pipeline past SSLRequest: bytes here
                // would bypass encryption (CVE-2021-23214 in PostgreSQL).
                if !buf.is_empty() {
                    let r = Refusal::new(sqlstate::PROTOCOL_VIOLATION, "received unencrypted data after SSL request");
                    return Err(StartupError::Refused(stream, r));
                }
                match (tls, tls_mode) {
                    (Some(acceptor), mode) if mode != ClientTlsMode::Disable => {
                        let Stream::Plain(mut tcp) = stream else {
                            return Err(StartupError::Io(io::ErrorKind::InvalidData.into()));
                        };
                        tcp.write_all(b"S").await.map_err(StartupError::Io)?;
                        let tls = acceptor.accept(tcp).await.map_err(StartupError::Io)?;
                        stream = Stream::Accepted(Box::new(tls));
                    }
                    _ => stream.write_all(b"N").await.map_err(StartupError::Io)?,
                }
            }
            StartupPacket::GssEnc if !gss_answered && !stream.is_tls() => {
                gss_answered = true;
                stream.write_all(b"N").await.map_err(StartupError::Io)?;
            }
            StartupPacket::Ssl | StartupPacket::GssEnc => {
                let r = Refusal::new(sqlstate::PROTOCOL_VIOLATION, "unexpected repeated encryption request");
                return Err(StartupError::Refused(stream, r));
            }
            StartupPacket::Cancel { pid, secret } => return Ok(Opening::Cancel { pid, secret }),
            StartupPacket::Startup { version, params } => {
                if (tls_mode == ClientTlsMode::Require || client_certs) && !stream.is_tls() {
                    let r = Refusal::new(
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        "SSL/TLS is required: connect with sslmode=require",
                    );
                    return Err(StartupError::Refused(stream, r));
                }
                return finish_startup(stream, version, params, buf).await;
            }
        }
    }
}

async fn finish_startup(
    mut stream: Stream,
    version: i32,
    params: Vec<(String, String)>,
    leftover: BytesMut,
) -> Result<Opening, StartupError> {
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if let Some(replication) = get("replication") {
        if !matches!(replication.as_str(), "false" | "off" | "no" | "0") {
            let r = Refusal::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "replication connections are not supported by pgdog-router; connect to the server directly",
            );
            return Err(StartupError::Refused(stream, r));
        }
    }
    let Some(user) = get("user").filter(|u| !u.is_empty()) else {
        let r = Refusal::new(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "no PostgreSQL user name specified in startup packet",
        );
        return Err(StartupError::Refused(stream, r));
    };
    let database = get("database").filter(|d| !d.is_empty()).unwrap_or_else(|| user.clone());

    // A newer 3.x minor version, or `_pq_.` extensions: answer with what we speak (3.0).
    let minor = version & 0xffff;
    let unknown: Vec<&str> = params.iter().filter(|(k, _)| k.starts_with("_pq_.")).map(|(k, _)| k.as_str()).collect();
    if minor > 0 || !unknown.is_empty() {
        let mut out = BytesMut::new();
        be::negotiate_protocol_version(&mut out, 0, &unknown);
        stream.write_all(&out).await.map_err(StartupError::Io)?;
    }
    Ok(Opening::Login(Login { stream, user, database, params, leftover }))
}

/// Sends a FATAL error and closes, ignoring a peer that is already gone.
pub async fn refuse(mut stream: Stream, refusal: &Refusal) {
    let mut out = BytesMut::new();
    be::error_response(&mut out, Severity::Fatal, &refusal.code, &refusal.message, None);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
