//! PostgreSQL's legacy MD5 password authentication (`AuthenticationMD5Password`).
//!
//! The server sends a 4-byte random salt; the client answers with
//! `"md5" + hex(md5(hex(md5(password + user)) + salt))`. The inner hash,
//! `hex(md5(password + user))`, is what PostgreSQL stores as `md5<32 hex>` in
//! `pg_authid`, which is why a server can check the answer from either the
//! plaintext or the stored hash. It also means the stored hash is a password
//! equivalent, and the scheme is obsolete; it is kept because old servers
//! and clients still use it. Pure functions only, no I/O.

use std::fmt::Write as _;

use ::md5::{Digest, Md5};

/// Length of a stored PostgreSQL MD5 hash: `"md5"` plus 32 hex digits.
const STORED_HASH_LEN: usize = 35;

/// Prefix of a SCRAM verifier; such a secret cannot answer an MD5 challenge.
const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// Lower-case hex MD5 digest of `data`, the form PostgreSQL uses everywhere.
pub fn md5_hex(data: &[u8]) -> String {
    let digest = Md5::digest(data);
    let mut out = String::with_capacity(32);
    for byte in digest {
        // Writing into a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The secret PostgreSQL stores for `password` under MD5:
/// `"md5" + hex(md5(password + user))`. Handy for writing configuration.
pub fn stored_hash(user: &str, password: &str) -> String {
    format!("md5{}", inner_hash(user, password))
}

/// The PasswordMessage payload (without the trailing NUL) a client sends to
/// answer an MD5 challenge with `salt`. Used when we log in to PostgreSQL.
pub fn client_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    salted(&inner_hash(user, password), salt)
}

/// The response we expect from a client, given what we store for it.
///
/// `stored` is either a plaintext password or a PostgreSQL `md5<32 hex>`
/// hash, recognised exactly as PostgreSQL does (lower-case hex only), in
/// which case its hex part is used as the inner hash directly.
///
/// Returns `None` when MD5 cannot work: a SCRAM verifier does not contain
/// the MD5 inner hash, and an empty secret means "no password" (PostgreSQL
/// refuses to store one), which must never let anybody in.
pub fn expected_response(user: &str, stored: &str, salt: [u8; 4]) -> Option<String> {
    if stored.is_empty() || stored.starts_with(SCRAM_PREFIX) {
        return None;
    }
    match stored_hash_hex(stored) {
        Some(hex) => Some(salted(hex, salt)),
        None => Some(salted(&inner_hash(user, stored), salt)),
    }
}

/// Whether the client's PasswordMessage payload `response` answers the
/// challenge `salt` for `user` whose secret is `stored`.
///
/// A single trailing NUL (the C-string terminator of PasswordMessage) is
/// tolerated so callers may pass the raw message body. The comparison is
/// constant-time so the answer cannot be guessed byte by byte from timing.
pub fn verify(user: &str, stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let Some(expected) = expected_response(user, stored, salt) else {
        return false;
    };
    let response = response.strip_suffix(b"\0").unwrap_or(response);
    ct_eq(expected.as_bytes(), response)
}

/// Whether `stored` is a PostgreSQL MD5 hash rather than a plaintext password.
pub fn is_stored_hash(stored: &str) -> bool {
    stored_hash_hex(stored).is_some()
}

/// The 32 hex digits of a stored `md5...` hash, or `None` if `stored` is
/// not one. Same rule as PostgreSQL: exact length and lower-case hex only,
/// so a plaintext password that merely starts with "md5" stays plaintext.
fn stored_hash_hex(stored: &str) -> Option<&str> {
    let hex = stored.strip_prefix("md5")?;
    let is_hash =
        stored.len() == STORED_HASH_LEN && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    is_hash.then_some(hex)
}

/// `hex(md5(password + user))`: PostgreSQL salts the stored hash with the
/// role name so equal passwords of different roles hash differently.
fn inner_hash(user: &str, password: &str) -> String {
    let mut data = Vec::with_capacity(password.len() + user.len());
    data.extend_from_slice(password.as_bytes());
    data.extend_from_slice(user.as_bytes());
    md5_hex(&data)
}

/// `"md5" + hex(md5(inner_hex + salt))`.
fn salted(inner_hex: &str, salt: [u8; 4]) -> String {
    let mut data = Vec::with_capacity(inner_hex.len() + salt.len());
    data.extend_from_slice(inner_hex.as_bytes());
    data.extend_from_slice(&salt);
    format!("md5{}", md5_hex(&data))
}

/// Constant-time equality: the time taken depends only on the lengths, never
/// on where the first differing byte is.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 4] = [0x93, 0x1c, 0x5e, 0x07];

    #[test]
    fn md5_hex_known_values() {
        // RFC 1321 test suite.
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn stored_hash_matches_postgres() {
        // What `CREATE ROLE postgres PASSWORD 'postgres'` stores under
        // password_encryption = md5.
        assert_eq!(stored_hash("postgres", "postgres"), "md53175bce1d3201d16594cebf9d7eb3f9d");
        assert!(is_stored_hash("md53175bce1d3201d16594cebf9d7eb3f9d"));
    }

    #[test]
    fn both_stored_forms_agree() {
        let from_plain = expected_response("postgres", "postgres", SALT);
        let from_hash = expected_response("postgres", "md53175bce1d3201d16594cebf9d7eb3f9d", SALT);
        assert!(from_plain.is_some());
        assert_eq!(from_plain, from_hash);
        assert_eq!(from_plain.as_deref(), Some(client_response("postgres", "postgres", SALT).as_str()));
    }

    #[test]
    fn known_salted_response() {
        // md5("3175bce1d3201d16594cebf9d7eb3f9d" || 01 02 03 04), computed
        // independently of this module.
        let response = client_response("postgres", "postgres", [1, 2, 3, 4]);
        assert_eq!(response, "md568be9ed08db75f318087ab337aaea044");
    }

    #[test]
    fn verify_accepts_right_and_rejects_wrong() {
        let good = client_response("alice", "s3cret", SALT);
        assert!(verify("alice", "s3cret", SALT, good.as_bytes()));
        assert!(verify("alice", &stored_hash("alice", "s3cret"), SALT, good.as_bytes()));
        // Trailing NUL of the PasswordMessage is tolerated, one only.
        let mut with_nul = good.clone().into_bytes();
        with_nul.push(0);
        assert!(verify("alice", "s3cret", SALT, &with_nul));
        with_nul.push(0);
        assert!(!verify("alice", "s3cret", SALT, &with_nul));

        assert!(!verify("alice", "wrong", SALT, good.as_bytes()));
        assert!(!verify("bob", "s3cret", SALT, good.as_bytes()));
        assert!(!verify("alice", "s3cret", [0, 0, 0, 0], good.as_bytes()));
        assert!(!verify("alice", "s3cret", SALT, &good.as_bytes()[..34]));
        assert!(!verify("alice", "s3cret", SALT, b""));
        assert!(!verify("alice", "s3cret", SALT, &[0xff; 35]));
    }

    #[test]
    fn scram_and_empty_secrets_cannot_do_md5() {
        let verifier = "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB";
        assert_eq!(expected_response("u", verifier, SALT), None);
        assert!(!verify("u", verifier, SALT, b"md5"));
        assert_eq!(expected_response("u", "", SALT), None);
        let empty_answer = client_response("u", "", SALT);
        assert!(!verify("u", "", SALT, empty_answer.as_bytes()));
    }

    #[test]
    fn hash_recognition_follows_postgres() {
        // Upper-case hex, wrong length or non-hex: a plaintext password.
        assert!(!is_stored_hash("md53175BCE1D3201D16594CEBF9D7EB3F9D"));
        assert!(!is_stored_hash("md53175bce1d3201d16594cebf9d7eb3f9"));
        assert!(!is_stored_hash("md53175bce1d3201d16594cebf9d7eb3f9dd"));
        assert!(!is_stored_hash("md5g175bce1d3201d16594cebf9d7eb3f9d"));
        assert!(!is_stored_hash("md5"));
        // Multi-byte characters must not confuse the length check.
        assert!(!is_stored_hash("md5éééééééééééééééé"));
        let plain = "md5notahash";
        assert_eq!(expected_response("u", plain, SALT), Some(client_response("u", plain, SALT)));
    }
}
