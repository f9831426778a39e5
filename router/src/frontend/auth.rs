//! Client authentication: SCRAM-SHA-256, MD5 or trust, per user.
//!
//! Like PostgreSQL, an unknown user goes through the same exchange as a known
//! one (against a random secret) and fails with the same 28P01 message, so
//! the router never reveals which users exist.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::AuthMethod;
use crate::net::Stream;
use crate::protocol::backend as be;
use crate::protocol::frame::{self, Reader};
use crate::protocol::{md5, scram, sqlstate};

use super::startup::Refusal;

/// Auth messages are tiny; anything bigger is not a password.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// What the router checks a client against, prepared at config load so a
/// login never derives keys (4096 HMAC rounds) from a plaintext password.
#[derive(Debug, Clone)]
pub struct Credential {
    pub method: AuthMethod,
    /// SCRAM verifier for `scram` users.
    pub scram_verifier: Option<String>,
    /// Plaintext or `md5...` hash for `md5` users.
    pub md5_secret: Option<String>,
}

impl Credential {
    pub fn prepare(method: AuthMethod, password: Option<&str>) -> Credential {
        match method {
            AuthMethod::Trust => Credential { method, scram_verifier: None, md5_secret: None },
            AuthMethod::Md5 => Credential { method, scram_verifier: None, md5_secret: password.map(str::to_string) },
            AuthMethod::Scram => {
                let verifier =
                    password.map(|p| if scram::is_verifier(p) { p.to_string() } else { scram::generate_verifier(p) });
                Credential { method, scram_verifier: verifier, md5_secret: None }
            }
        }
    }
}

pub enum AuthError {
    Io(io::Error),
    Refused(Refusal),
}

impl From<io::Error> for AuthError {
    fn from(e: io::Error) -> Self {
        AuthError::Io(e)
    }
}

fn failed(user: &str) -> AuthError {
    AuthError::Refused(Refusal::new(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    ))
}

/// Reads one password-class message ('p') body from the client.
async fn read_password_message(stream: &mut Stream, buf: &mut BytesMut) -> Result<BytesMut, AuthError> {
    loop {
        match frame::header(buf) {
            Ok(Some((tag, total))) => {
                if tag != b'p' {
                    return Err(AuthError::Refused(Refusal::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        format!("expected password response, got message type \"{}\"", tag.escape_ascii()),
                    )));
                }
                if total > MAX_AUTH_MESSAGE {
                    return Err(AuthError::Refused(Refusal::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        "password message too long",
                    )));
                }
                if buf.len() >= total {
                    let mut msg = buf.split_to(total);
                    msg.advance(frame::HEADER_LEN);
                    return Ok(msg);
                }
            }
            Ok(None) => {}
            Err(e) => return Err(AuthError::Refused(Refusal::new(sqlstate::PROTOCOL_VIOLATION, e.to_string()))),
        }
        buf.reserve(1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(AuthError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Runs the exchange. `credential` is None for an unknown user. `buf` holds
/// bytes the client already sent; on success it holds what followed.
pub async fn authenticate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    user: &str,
    credential: Option<&Credential>,
) -> Result<(), AuthError> {
    let method = credential.map(|c| c.method).unwrap_or(AuthMethod::Scram);
    let mut out = BytesMut::with_capacity(256);
    match method {
        AuthMethod::Trust => Ok(()),
        AuthMethod::Md5 => {
            let salt: [u8; 4] = rand::random();
            be::authentication_md5(&mut out, salt);
            stream.write_all(&out).await?;
            let body = read_password_message(stream, buf).await?;
            let ok = credential
                .and_then(|c| c.md5_secret.as_deref())
                .is_some_and(|secret| md5::verify(user, secret, salt, &body));
            if ok {
                Ok(())
            } else {
                Err(failed(user))
            }
        }
        AuthMethod::Scram => {
            // Unknown users are checked against a throwaway secret: same
            // messages, same timing shape, same failure.
            let decoy;
            let stored = match credential.and_then(|c| c.scram_verifier.as_deref()) {
                Some(v) => v,
                None => {
                    decoy = decoy_verifier(user);
                    &decoy
                }
            };
            let mut server = scram::ScramServer::new(stored).map_err(|_| failed(user))?;
            be::authentication_sasl(&mut out, &[scram::MECHANISM]);
            stream.write_all(&out).await?;

            let body = read_password_message(stream, buf).await?;
            let mut r = Reader::new(&body);
            let mechanism = r.str().unwrap_or("");
            if mechanism != scram::MECHANISM {
                return Err(AuthError::Refused(Refusal::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    "client selected an invalid SASL authentication mechanism",
                )));
            }
            let len = r.i32().unwrap_or(-1);
            let data = if len < 0 { &[][..] } else { r.take(len as usize).unwrap_or(&[]) };
            let first = server.server_first(data).map_err(|e| scram_refusal(user, e))?;
            out.clear();
            be::authentication_sasl_continue(&mut out, &first);
            stream.write_all(&out).await?;

            let body = read_password_message(stream, buf).await?;
            let last = server.server_final(&body).map_err(|e| scram_refusal(user, e))?;
            if credential.and_then(|c| c.scram_verifier.as_ref()).is_none() {
                return Err(failed(user));
            }
            out.clear();
            be::authentication_sasl_final(&mut out, &last);
            stream.write_all(&out).await?;
            Ok(())
        }
    }
}

fn scram_refusal(user: &str, e: scram::ScramError) -> AuthError {
    match e {
        scram::ScramError::InvalidProof => failed(user),
        other => AuthError::Refused(Refusal::new(sqlstate::PROTOCOL_VIOLATION, other.to_string())),
    }
}

/// A verifier for a user that does not exist. Like PostgreSQL's mock
/// authentication, the salt is derived from the user name with a secret of
/// this process: stable for one name, different between names, so probing
/// salts cannot tell unknown users from real ones. The keys are random (the
/// proof fails whatever the client sends) and cost no key derivation.
fn decoy_verifier(user: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(rand::random);
    let salt: [u8; 16] = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(user.as_bytes());
            let digest = mac.finalize().into_bytes();
            let mut salt = [0u8; 16];
            salt.copy_from_slice(&digest[..16]);
            salt
        }
        Err(_) => rand::random(),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let stored_key: [u8; 32] = rand::random();
    let server_key: [u8; 32] = rand::random();
    format!(
        "SCRAM-SHA-256${}:{}${}:{}",
        scram::DEFAULT_ITERATIONS,
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoy_salt_is_stable_per_name_and_differs_between_names() {
        let salt = |v: String| v.split('$').nth(1).map(|p| p.split(':').nth(1).unwrap_or("").to_string());
        assert_eq!(salt(decoy_verifier("alice")), salt(decoy_verifier("alice")));
        assert_ne!(salt(decoy_verifier("alice")), salt(decoy_verifier("bob")));
        assert!(scram::ScramServer::new(&decoy_verifier("carol")).is_ok());
    }
}
