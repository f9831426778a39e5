//! The admin console on `general.admin_port`: `psql -h HOST -p 6432 -U
//! pgdog_admin` (any database name), PgBouncer-style SHOW views and
//! control commands over the simple query protocol.
//!
//! Login goes through the client side's own code — startup negotiation
//! (TLS, `tls_mode`, client certificates, size limits) and SCRAM/MD5
//! authentication against users.toml — rather than a second PostgreSQL
//! server library: one SCRAM implementation to keep right, and the console
//! gets exactly the client port's TLS and limits. What is left is small: a
//! message loop and result sets built with `protocol::backend`'s encoders.
//!
//! Layout: `command` parses, `show` builds the views, `control` runs the
//! commands that steer, `table` renders results for the wire and for JSON.

pub mod command;
pub mod control;
pub mod show;
pub mod table;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::frontend::auth::{self, AuthError};
use crate::frontend::startup::{self, Opening, Refusal, StartupError};
use crate::net::Stream;
use crate::protocol::backend::{self as be, Severity};
use crate::protocol::frame::{self, Reader};
use crate::protocol::sqlstate;
use crate::runtime::Shared;

use command::{Command, Show};
use control::Failure;

/// Concurrent console sessions; more are refused with 53300. Operators
/// need a handful; the cap keeps a misbehaving script from exhausting
/// descriptors on the control thread.
const MAX_SESSIONS: usize = 64;
/// Largest message the console reads; commands are a few bytes.
const MAX_MESSAGE: usize = 64 * 1024;

/// Accepts console connections until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let sessions = Arc::new(AtomicUsize::new(0));
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let shared = shared.clone();
                let sessions = sessions.clone();
                let _ = tcp.set_nodelay(true);
                let span = tracing::info_span!("admin", %peer);
                tokio::spawn(
                    async move {
                        let count = sessions.fetch_add(1, Ordering::Relaxed) + 1;
                        session(&shared, tcp, count).await;
                        sessions.fetch_sub(1, Ordering::Relaxed);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn session(shared: &Shared, tcp: TcpStream, count: usize) {
    let Some((mut stream, mut buf)) = login(shared, tcp, count).await else { return };
    let mut out = BytesMut::with_capacity(4096);
    // After an extended-protocol message: skip until Sync, then answer it.
    let mut skipping = false;
    loop {
        let (tag, total) = match frame::header(&buf) {
            Ok(Some((_, total))) if total > MAX_MESSAGE => {
                fatal(&mut stream, sqlstate::PROTOCOL_VIOLATION, "admin message too long").await;
                return;
            }
            Ok(Some((tag, total))) if buf.len() >= total => (tag, total),
            Ok(_) => {
                buf.reserve(1024);
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
            Err(e) => {
                fatal(&mut stream, sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
                return;
            }
        };
        let mut msg = buf.split_to(total);
        msg.advance(frame::HEADER_LEN);
        out.clear();
        match tag {
            b'X' => return,
            b'Q' => {
                let sql = Reader::new(&msg).str().unwrap_or("").to_string();
                skipping = false;
                run_query(shared, &sql, &mut out).await;
                be::ready_for_query(&mut out, b'I');
            }
            b'S' => {
                skipping = false;
                be::ready_for_query(&mut out, b'I');
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' if !skipping => {
                skipping = true;
                be::error_response(
                    &mut out,
                    Severity::Error,
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the admin console supports the simple query protocol only",
                    None,
                );
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => {}
            b'F' => {
                be::error_response(
                    &mut out,
                    Severity::Error,
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "function calls are not supported on the admin console",
                    None,
                );
                be::ready_for_query(&mut out, b'I');
            }
            other => {
                let message = format!("unexpected message type \"{}\" on the admin console", other.escape_ascii());
                fatal(&mut stream, sqlstate::PROTOCOL_VIOLATION, &message).await;
                return;
            }
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Runs every statement of one simple query; stops at the first error, as
/// PostgreSQL does for a multi-statement query string.
async fn run_query(shared: &Shared, sql: &str, out: &mut BytesMut) {
    let statements = command::split(sql);
    if statements.is_empty() {
        be::empty_query_response(out);
        return;
    }
    for text in statements {
        let result = match command::parse(text) {
            Ok(cmd) => {
                tracing::info!(command = text, "admin command");
                execute(shared, cmd, out).await
            }
            Err(e) => Err(Failure {
                code: sqlstate::SYNTAX_ERROR,
                message: e.0,
                detail: Some(format!("Supported commands: {}.", command::SUPPORTED)),
            }),
        };
        if let Err(f) = result {
            be::error_response(out, Severity::Error, f.code, &f.message, f.detail.as_deref());
            return;
        }
    }
}

async fn execute(shared: &Shared, cmd: Command, out: &mut BytesMut) -> Result<(), Failure> {
    let tag = match cmd {
        Command::Show(what) => {
            let table = match what {
                Show::Pools => show::pools(shared),
                Show::Clients => show::clients(shared),
                Show::Servers => show::servers(shared),
                Show::Stats => show::stats(shared),
                Show::Databases => show::databases(shared),
                Show::Config => show::config(shared),
                Show::Version => show::version(),
                Show::QueryCache => show::query_cache(shared),
            };
            table.encode(out);
            return Ok(());
        }
        Command::Reload => control::reload(shared)?,
        Command::Pause(db) => control::pause(shared, db.as_deref()).await?,
        Command::Resume(db) => control::resume(shared, db.as_deref())?,
        Command::Reconnect(db) => control::reconnect(shared, db.as_deref())?,
        Command::Shutdown => control::shutdown(shared)?,
    };
    be::command_complete(out, tag);
    Ok(())
}

/// Startup and authentication with the client port's code; only
/// `admin.admin_users` get in, and any database name is accepted.
async fn login(shared: &Shared, tcp: TcpStream, count: usize) -> Option<(Stream, BytesMut)> {
    let snapshot = shared.snapshot();
    let general = &snapshot.config.router.general;
    let timeout = Duration::from_millis(general.client_login_timeout_ms);
    let opening = tokio::time::timeout(
        timeout,
        startup::negotiate(
            crate::net::Tcp::Tokio(tcp),
            snapshot.tls.as_ref(),
            general.tls_mode,
            general.tls_ca.is_some(),
        ),
    )
    .await;
    let login = match opening {
        Ok(Ok(Opening::Login(login))) => login,
        // Cancel requests have nothing to cancel here.
        Ok(Ok(Opening::Cancel { .. })) | Err(_) | Ok(Err(StartupError::Io(_))) => return None,
        Ok(Err(StartupError::Refused(stream, refusal))) => {
            startup::refuse(stream, &refusal).await;
            return None;
        }
    };
    let startup::Login { mut stream, user, leftover, params, .. } = login;
    let mut buf = leftover;
    if count > MAX_SESSIONS {
        let r = Refusal::new(sqlstate::TOO_MANY_CONNECTIONS, "too many admin console connections");
        startup::refuse(stream, &r).await;
        return None;
    }
    if !snapshot.config.router.admin.admin_users.contains(&user) {
        tracing::info!(%user, "admin login refused: not an admin user");
        let r = Refusal::new(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("user \"{user}\" is not allowed to use the admin console (see admin.admin_users)"),
        );
        startup::refuse(stream, &r).await;
        return None;
    }
    // The user's users.toml entry (any database: the password is the same
    // person's); an admin name missing from users.toml authenticates
    // against a decoy and fails like a wrong password.
    let credential = snapshot
        .credentials
        .iter()
        .filter(|((name, _), _)| *name == user)
        .min_by(|a, b| a.0 .1.cmp(&b.0 .1))
        .map(|(_, c)| c.clone());
    let authed = tokio::time::timeout(timeout, auth::authenticate(&mut stream, &mut buf, &user, credential.as_ref()));
    match authed.await {
        Ok(Ok(())) => {}
        Ok(Err(AuthError::Refused(r))) => {
            tracing::info!(%user, code = r.code, "admin login failed");
            startup::refuse(stream, &r).await;
            return None;
        }
        Ok(Err(AuthError::Io(_))) | Err(_) => return None,
    }
    let application_name = params.iter().find(|(k, _)| k == "application_name").map(|(_, v)| v.as_str());
    let mut out = BytesMut::with_capacity(512);
    be::authentication_ok(&mut out);
    // What psql and drivers read at login. The version is the router's,
    // as PgBouncer's console reports its own.
    for (name, value) in [
        ("server_version", concat!(env!("CARGO_PKG_VERSION"), "/pgdog-router")),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", application_name.unwrap_or("")),
    ] {
        be::parameter_status(&mut out, name, value);
    }
    be::backend_key_data(&mut out, 0, 0);
    be::ready_for_query(&mut out, b'I');
    stream.write_all(&out).await.ok()?;
    tracing::info!(%user, "admin logged in");
    Some((stream, buf))
}

async fn fatal(stream: &mut Stream, code: &str, message: &str) {
    let mut out = BytesMut::new();
    be::error_response(&mut out, Severity::Fatal, code, message, None);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
