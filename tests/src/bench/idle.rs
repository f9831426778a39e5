//! Many logged-in, idle client connections, opened with hand-written
//! protocol bytes so the benchmark itself stays small while a pooler holds
//! thousands of clients: what each idle client costs the pooler in memory
//! is what a connection pooler is for.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Open `count` connections to 127.0.0.1:`port`, each logged in as `user`
/// to `database` without a password (the pooler must `trust` that user) and
/// left idle after ReadyForQuery. `concurrency` logins are in flight at
/// once. Returns the open sockets; dropping them disconnects.
pub fn open(port: u16, user: &str, database: &str, count: usize, concurrency: usize) -> Result<Vec<TcpStream>, String> {
    let next = AtomicUsize::new(0);
    let opened = Mutex::new(Vec::with_capacity(count));
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let startup = startup_message(user, database);
    std::thread::scope(|scope| {
        for _ in 0..concurrency.max(1) {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    if first_error.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        return;
                    }
                    match login(port, &startup) {
                        Ok(stream) => opened.lock().unwrap_or_else(|e| e.into_inner()).push(stream),
                        Err(e) => {
                            let mut slot = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            let done = opened.lock().unwrap_or_else(|e| e.into_inner()).len();
                            slot.get_or_insert_with(|| format!("idle client #{} to port {port}: {e}", done + 1));
                            return;
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(opened.into_inner().unwrap_or_else(|e| e.into_inner())),
    }
}

/// StartupMessage for protocol 3.0.
fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for (key, value) in [("user", user), ("database", database), ("application_name", "pgdog-bench-idle")] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// Connect, send the startup packet and read until ReadyForQuery.
fn login(port: u16, startup: &[u8]) -> Result<TcpStream, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.write_all(startup).map_err(|e| format!("send startup: {e}"))?;
    loop {
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).map_err(|e| format!("read reply: {e}"))?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if !(4..=1 << 20).contains(&len) {
            return Err(format!("bad message length {len}"));
        }
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).map_err(|e| format!("read reply: {e}"))?;
        match header[0] {
            b'Z' => return Ok(stream),
            b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => {}
            b'R' => return Err("server asked for a password; the idle user must be trusted".into()),
            b'E' => return Err(format!("login refused: {}", error_text(&body))),
            // ParameterStatus, BackendKeyData, NoticeResponse.
            _ => {}
        }
    }
}

/// The message field (`M`) of an ErrorResponse body.
fn error_text(body: &[u8]) -> String {
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_message_is_length_prefixed_and_terminated() {
        let msg = startup_message("u", "d");
        assert_eq!(u32::from_be_bytes(msg[..4].try_into().unwrap()) as usize, msg.len());
        assert_eq!(&msg[4..8], &196_608u32.to_be_bytes());
        assert_eq!(msg.last(), Some(&0));
        assert!(msg.windows(7).any(|w| w == b"user\0u\0"));
    }

    #[test]
    fn error_text_finds_the_message_field() {
        assert_eq!(error_text(b"SFATAL\0C28000\0Mno such user\0\0"), "no such user");
    }
}
