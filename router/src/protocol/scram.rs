//! SCRAM-SHA-256 authentication (RFC 5802 with the SHA-256 profile of
//! RFC 7677) as PostgreSQL speaks it, written as two byte-in/byte-out state
//! machines with no I/O:
//!
//! * [`ScramServer`] checks a client that logs in to the pooler;
//! * [`ScramClient`] logs the pooler in to a PostgreSQL server.
//!
//! The caller moves the SASL payloads between these and the wire
//! (AuthenticationSASL / SASLInitialResponse / SASLResponse /
//! AuthenticationSASLContinue / AuthenticationSASLFinal); nothing here knows
//! about message framing.
//!
//! Everything received from the peer is untrusted: every parse failure is a
//! [`ScramError`], never a panic, and secrets are compared in constant time.
//!
//! Differences from a general-purpose SCRAM library, all following
//! PostgreSQL:
//!
//! * The user name inside the SCRAM messages is ignored (the role comes
//!   from the startup packet), and our client sends an empty one.
//! * Channel binding (`-PLUS`) is not offered, so only the `n` and `y` GS2
//!   flags are accepted.
//! * Passwords are used as raw UTF-8 bytes without SASLprep. PostgreSQL runs
//!   SASLprep but falls back to the raw bytes whenever SASLprep fails, and
//!   for printable ASCII SASLprep changes nothing, so the two agree for
//!   nearly all real passwords. They differ only for non-ASCII passwords
//!   that SASLprep would rewrite (NFKC-normalised, non-ASCII spaces mapped to
//!   U+0020, soft hyphens deleted): with those, a verifier made by
//!   PostgreSQL will not match what a user types here, and vice versa. That
//!   needs a Unicode normalisation table, which we choose not to carry.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// SASL mechanism name to advertise in AuthenticationSASL.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Iteration count for verifiers we make ourselves; PostgreSQL's default
/// (`scram_iterations`) and the RFC 7677 recommendation.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Highest iteration count our client accepts from a server. Each iteration
/// costs two HMACs; without a bound a hostile or misconfigured server could
/// pin a pooler thread for minutes on a single login.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Random bytes in a nonce we generate; PostgreSQL uses 18 as well, which
/// base64-encodes to 24 characters without padding.
const NONCE_BYTES: usize = 18;

/// Salt length for verifiers we make; PostgreSQL's default.
const SALT_BYTES: usize = 16;

/// Output size of SHA-256, and so of every key, proof and signature.
const KEY_LEN: usize = 32;

/// How a PostgreSQL SCRAM verifier (`pg_authid.rolpassword`) starts.
const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";

/// `c=` value for the GS2 header `n,,`: base64 of the header itself.
const CBIND_N: &str = "biws";

/// `c=` value for the GS2 header `y,,`.
const CBIND_Y: &str = "eSws";

type Key = [u8; KEY_LEN];

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The peer's message does not follow the SCRAM grammar, or uses a
    /// feature we (like PostgreSQL) do not support.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// A message arrived in the wrong state (twice, too early, or after the
    /// exchange already failed).
    #[error("SCRAM message received out of order")]
    UnexpectedMessage,
    /// The client asked for channel binding (`p=`); we do not offer -PLUS.
    #[error("SCRAM channel binding is not supported")]
    UnsupportedChannelBinding,
    /// The `c=` attribute of client-final does not repeat the GS2 header of
    /// client-first.
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The nonce does not continue the one from the earlier message.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client proof is wrong: in practice, a wrong password.
    #[error("SCRAM client proof is invalid")]
    InvalidProof,
    /// The stored secret (or a test parameter) cannot be used for SCRAM.
    #[error("invalid SCRAM secret: {0}")]
    InvalidVerifier(&'static str),
    /// The server did not prove it knows the password: it may be an
    /// impostor, so the connection must not be used.
    #[error("SCRAM server signature mismatch")]
    ServerSignatureMismatch,
    /// The server ended the exchange with `e=<reason>`.
    #[error("server rejected SCRAM authentication: {0}")]
    ServerError(String),
}

/// What the server needs to know about a password: never the password
/// itself, only the salt and iteration count to send out and the two keys
/// derived from the salted password.
struct Secret {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Key,
    server_key: Key,
}

impl Secret {
    fn from_password(password: &[u8], salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted_password(password, &salt, iterations);
        Self {
            iterations,
            stored_key: sha256(&hmac_sha256(&salted, b"Client Key")),
            server_key: hmac_sha256(&salted, b"Server Key"),
            salt,
        }
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    fn parse(verifier: &str) -> Result<Self, ScramError> {
        let bad = ScramError::InvalidVerifier;
        let rest = verifier.strip_prefix(VERIFIER_PREFIX).ok_or(bad("missing SCRAM-SHA-256$ prefix"))?;
        let (params, keys) = rest.split_once('$').ok_or(bad("missing '$'"))?;
        let (iterations, salt) = params.split_once(':').ok_or(bad("missing salt"))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(bad("missing server key"))?;
        let iterations = parse_decimal(iterations).filter(|&n| n >= 1).ok_or(bad("iteration count"))?;
        let salt = decode_nonempty(salt).ok_or(bad("salt"))?;
        Ok(Self {
            iterations,
            salt,
            stored_key: decode_key(stored_key).ok_or(bad("stored key"))?,
            server_key: decode_key(server_key).ok_or(bad("server key"))?,
        })
    }

    fn to_verifier(&self) -> String {
        format!(
            "{VERIFIER_PREFIX}{}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

/// Builds the verifier PostgreSQL stores for `password` with this salt and
/// iteration count; the format `CREATE ROLE ... PASSWORD` produces under
/// `password_encryption = scram-sha-256`. Like PostgreSQL, an iteration
/// count of 0 is raised to 1, as zero rounds are not defined.
pub fn make_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    Secret::from_password(password.as_bytes(), salt.to_vec(), iterations.max(1)).to_verifier()
}

/// [`make_verifier`] with a fresh random salt and [`DEFAULT_ITERATIONS`].
pub fn generate_verifier(password: &str) -> String {
    make_verifier(password, &random_bytes(SALT_BYTES), DEFAULT_ITERATIONS)
}

/// Whether `stored` looks like a SCRAM verifier rather than a plaintext
/// password (it may still fail to parse).
pub fn is_verifier(stored: &str) -> bool {
    stored.starts_with(VERIFIER_PREFIX)
}

/// Server side: authenticates one client against one stored secret.
///
/// Flow: [`server_first`](Self::server_first) with the SASLInitialResponse
/// data, send the result in AuthenticationSASLContinue;
/// [`server_final`](Self::server_final) with the SASLResponse data, send the
/// result in AuthenticationSASLFinal and then AuthenticationOk. Any error
/// ends the exchange for good: a client gets one attempt per handshake.
pub struct ScramServer {
    secret: Secret,
    /// Fixed server nonce part, for deterministic tests; random otherwise.
    fixed_nonce: Option<String>,
    state: ServerState,
}

enum ServerState {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// Kept verbatim: the AuthMessage is computed over the exact bytes.
        client_first_bare: String,
        server_first: String,
        nonce: String,
        /// The `c=` value client-final must carry.
        cbind: &'static str,
    },
    Authenticated,
    Failed,
}

impl std::fmt::Debug for ScramServer {
    // Hand-written so that keys never end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            ServerState::AwaitingClientFirst => "awaiting client-first",
            ServerState::AwaitingClientFinal { .. } => "awaiting client-final",
            ServerState::Authenticated => "authenticated",
            ServerState::Failed => "failed",
        };
        f.debug_struct("ScramServer").field("state", &state).finish()
    }
}

impl ScramServer {
    /// Prepares an exchange against `stored`, which is either a PostgreSQL
    /// SCRAM verifier or a plaintext password.
    ///
    /// For a plaintext password a random salt is drawn each time. That costs
    /// one key derivation per login but reveals nothing; callers that log in
    /// often can store a verifier from [`make_verifier`] instead.
    ///
    /// Errors: a malformed verifier (rather than silently treating it as a
    /// password nobody could type), an empty password (PostgreSQL treats it
    /// as "no password"), and a PostgreSQL MD5 hash (SCRAM cannot be derived
    /// from it; use MD5 authentication for such users).
    pub fn new(stored: &str) -> Result<Self, ScramError> {
        let secret = if is_verifier(stored) {
            Secret::parse(stored)?
        } else {
            check_plaintext(stored)?;
            Secret::from_password(stored.as_bytes(), random_bytes(SALT_BYTES), DEFAULT_ITERATIONS)
        };
        Ok(Self::from_secret(secret))
    }

    /// Deterministic constructor for tests: a plaintext password with a
    /// given salt, iteration count and server nonce part.
    pub fn with_salt_and_nonce(
        password: &str,
        salt: &[u8],
        iterations: u32,
        server_nonce: &str,
    ) -> Result<Self, ScramError> {
        check_plaintext(password)?;
        if salt.is_empty() {
            return Err(ScramError::InvalidVerifier("empty salt"));
        }
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::InvalidVerifier("iteration count"));
        }
        let secret = Secret::from_password(password.as_bytes(), salt.to_vec(), iterations);
        Self::from_secret(secret).with_server_nonce(server_nonce)
    }

    /// Replaces the random server nonce part with a fixed one, for tests.
    pub fn with_server_nonce(mut self, server_nonce: &str) -> Result<Self, ScramError> {
        if !is_valid_nonce(server_nonce) {
            return Err(ScramError::InvalidVerifier("server nonce"));
        }
        self.fixed_nonce = Some(server_nonce.to_string());
        Ok(self)
    }

    fn from_secret(secret: Secret) -> Self {
        Self { secret, fixed_nonce: None, state: ServerState::AwaitingClientFirst }
    }

    /// Whether the client has proven it knows the password.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, ServerState::Authenticated)
    }

    /// Consumes client-first-message, returns server-first-message.
    pub fn server_first(&mut self, client_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::AwaitingClientFirst) {
            self.state = ServerState::Failed;
            return Err(ScramError::UnexpectedMessage);
        }
        // Pessimistic until the message has been accepted.
        self.state = ServerState::Failed;
        let first = parse_client_first(client_first)?;

        let server_part = self.fixed_nonce.clone().unwrap_or_else(random_nonce);
        let nonce = format!("{}{server_part}", first.nonce);
        let server_first = format!("r={nonce},s={},i={}", BASE64.encode(&self.secret.salt), self.secret.iterations);
        self.state = ServerState::AwaitingClientFinal {
            client_first_bare: first.bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            cbind: first.cbind,
        };
        Ok(server_first.into_bytes())
    }

    /// Consumes client-final-message and checks the client's proof. On
    /// success returns server-final-message (`v=<ServerSignature>`), which
    /// lets the client check us in turn. A wrong password is
    /// [`ScramError::InvalidProof`].
    pub fn server_final(&mut self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        let ServerState::AwaitingClientFinal { client_first_bare, server_first, nonce, cbind } = state else {
            return Err(ScramError::UnexpectedMessage);
        };

        let last = parse_client_final(client_final)?;
        if last.cbind != cbind {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if last.nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }

        let auth_message = format!("{client_first_bare},{server_first},{}", last.without_proof);
        // ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage), so XOR
        // recovers the ClientKey, whose hash must be the StoredKey.
        let client_signature = hmac_sha256(&self.secret.stored_key, auth_message.as_bytes());
        let client_key = xor(&last.proof, &client_signature);
        if !ct_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(ScramError::InvalidProof);
        }

        let server_signature = hmac_sha256(&self.secret.server_key, auth_message.as_bytes());
        self.state = ServerState::Authenticated;
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

/// Client side: logs in to a PostgreSQL server with a plaintext password.
///
/// Flow: send [`client_first`](Self::client_first) in SASLInitialResponse;
/// pass AuthenticationSASLContinue data to
/// [`handle_server_first`](Self::handle_server_first) and send the result in
/// SASLResponse; pass AuthenticationSASLFinal data to
/// [`verify_server_final`](Self::verify_server_final). Only after that
/// succeeds is the server known to hold the password.
pub struct ScramClient {
    password: Vec<u8>,
    nonce: String,
    state: ClientState,
}

enum ClientState {
    AwaitingServerFirst,
    AwaitingServerFinal { server_signature: Key },
    Failed,
}

impl std::fmt::Debug for ScramClient {
    // Hand-written so that the password never ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            ClientState::AwaitingServerFirst => "awaiting server-first",
            ClientState::AwaitingServerFinal { .. } => "awaiting server-final",
            ClientState::Failed => "failed",
        };
        f.debug_struct("ScramClient").field("state", &state).finish()
    }
}

impl ScramClient {
    /// A client with a fresh random nonce.
    pub fn new(password: &str) -> Self {
        Self { password: password.as_bytes().to_vec(), nonce: random_nonce(), state: ClientState::AwaitingServerFirst }
    }

    /// Deterministic constructor for tests. The nonce must be non-empty
    /// printable ASCII without commas.
    pub fn with_nonce(password: &str, nonce: &str) -> Result<Self, ScramError> {
        if !is_valid_nonce(nonce) {
            return Err(ScramError::Malformed("invalid client nonce"));
        }
        Ok(Self {
            password: password.as_bytes().to_vec(),
            nonce: nonce.to_string(),
            state: ClientState::AwaitingServerFirst,
        })
    }

    /// client-first-message: `n,,n=,r=<nonce>`. No channel binding, no
    /// authorization identity, and an empty user name because PostgreSQL
    /// takes the role from the startup packet and ignores this one.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.nonce)
    }

    /// Consumes server-first-message, returns client-final-message
    /// (`c=biws,r=<nonce>,p=<ClientProof>`).
    pub fn handle_server_first(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ClientState::AwaitingServerFirst) {
            self.state = ClientState::Failed;
            return Err(ScramError::UnexpectedMessage);
        }
        self.state = ClientState::Failed;

        let text = utf8(server_first)?;
        let mut attrs = text.split(',');
        let first_attr = attrs.next().unwrap_or_default();
        if first_attr.starts_with("m=") {
            return Err(ScramError::Malformed("mandatory extensions are not supported"));
        }
        let nonce = first_attr.strip_prefix("r=").ok_or(ScramError::Malformed("expected nonce attribute"))?;
        if !is_valid_nonce(nonce) {
            return Err(ScramError::Malformed("invalid nonce"));
        }
        // The server must echo our nonce and add its own part; an echo
        // alone would let the exchange be replayed.
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let salt =
            attrs.next().and_then(|a| a.strip_prefix("s=")).ok_or(ScramError::Malformed("expected salt attribute"))?;
        let salt = decode_nonempty(salt).ok_or(ScramError::Malformed("invalid salt"))?;
        let iterations = attrs
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .ok_or(ScramError::Malformed("expected iteration count attribute"))?;
        let iterations = parse_decimal(iterations)
            .filter(|n| (1..=MAX_ITERATIONS).contains(n))
            .ok_or(ScramError::Malformed("iteration count out of range"))?;
        check_extensions(attrs)?;

        let without_proof = format!("c={CBIND_N},r={nonce}");
        // The server's message goes into the AuthMessage byte for byte.
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare());
        let salted = cached_salted_password(&self.password, &salt, iterations);
        let (proof, server_signature) = client_proof_and_server_signature(&salted, auth_message.as_bytes());

        self.state = ClientState::AwaitingServerFinal { server_signature };
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks server-final-message: the server's signature must be the one
    /// only a holder of the password (or its verifier) could compute. An
    /// `e=` message becomes [`ScramError::ServerError`].
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let ClientState::AwaitingServerFinal { server_signature } = &self.state else {
            return Err(ScramError::UnexpectedMessage);
        };
        let text = utf8(server_final)?;
        let mut attrs = text.split(',');
        let first_attr = attrs.next().unwrap_or_default();
        if let Some(reason) = first_attr.strip_prefix("e=") {
            return Err(ScramError::ServerError(reason.to_string()));
        }
        let signature =
            first_attr.strip_prefix("v=").ok_or(ScramError::Malformed("expected verifier or error attribute"))?;
        let signature = decode_key(signature).ok_or(ScramError::Malformed("invalid server signature"))?;
        check_extensions(attrs)?;
        if !ct_eq(&signature, server_signature) {
            return Err(ScramError::ServerSignatureMismatch);
        }
        Ok(())
    }
}

/// The parts of client-first-message the server needs.
struct ClientFirst<'a> {
    /// `c=` value client-final must repeat.
    cbind: &'static str,
    /// client-first-message-bare, verbatim, for the AuthMessage.
    bare: &'a str,
    nonce: &'a str,
}

/// Parses `gs2-header client-first-message-bare`, i.e.
/// `<n|y|p=..>,[a=..],[m=..,]n=<user>,r=<nonce>[,ext...]`.
fn parse_client_first(bytes: &[u8]) -> Result<ClientFirst<'_>, ScramError> {
    let text = utf8(bytes)?;
    let (flag, rest) = text.split_once(',').ok_or(ScramError::Malformed("missing GS2 header"))?;
    let cbind = match flag {
        // The client cannot do channel binding.
        "n" => CBIND_N,
        // The client can, but thinks we cannot. True: we never advertise
        // SCRAM-SHA-256-PLUS. (If we ever do, "y" must be refused here, as
        // it would then reveal a downgrade attack.)
        "y" => CBIND_Y,
        _ if flag.starts_with("p=") => return Err(ScramError::UnsupportedChannelBinding),
        _ => return Err(ScramError::Malformed("invalid channel binding flag")),
    };
    let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("missing GS2 header"))?;
    if !authzid.is_empty() {
        // PostgreSQL has no notion of acting as another role here.
        return Err(ScramError::Malformed("authorization identity is not supported"));
    }

    let mut attrs = bare.split(',');
    let user = attrs.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(ScramError::Malformed("mandatory extensions are not supported"));
    }
    // The user name is ignored (the startup packet decides the role), so
    // its saslname escaping is not even decoded.
    if !user.starts_with("n=") {
        return Err(ScramError::Malformed("expected user name attribute"));
    }
    let nonce =
        attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed("expected nonce attribute"))?;
    if !is_valid_nonce(nonce) {
        return Err(ScramError::Malformed("invalid nonce"));
    }
    check_extensions(attrs)?;
    Ok(ClientFirst { cbind, bare, nonce })
}

/// The parts of client-final-message the server needs.
struct ClientFinal<'a> {
    cbind: &'a str,
    nonce: &'a str,
    /// client-final-message-without-proof, verbatim, for the AuthMessage.
    without_proof: &'a str,
    proof: Key,
}

/// Parses `c=<cbind>,r=<nonce>[,ext...],p=<proof>`.
fn parse_client_final(bytes: &[u8]) -> Result<ClientFinal<'_>, ScramError> {
    let text = utf8(bytes)?;
    // The proof is last by definition and base64 has no commas, so the
    // last comma separates it from what the proof was computed over.
    let (without_proof, proof) = text.rsplit_once(',').ok_or(ScramError::Malformed("missing proof"))?;
    let proof = proof.strip_prefix("p=").ok_or(ScramError::Malformed("proof must be the last attribute"))?;
    let mut attrs = without_proof.split(',');
    let cbind = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(ScramError::Malformed("expected channel binding attribute"))?;
    let nonce =
        attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed("expected nonce attribute"))?;
    check_extensions(attrs)?;
    let proof = decode_key(proof).ok_or(ScramError::Malformed("invalid proof"))?;
    Ok(ClientFinal { cbind, nonce, without_proof, proof })
}

/// Optional extensions (`<letter>=<value>`) are allowed after the known
/// attributes and ignored, as RFC 5802 requires; anything else is garbage.
fn check_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    for attr in attrs {
        let mut bytes = attr.bytes();
        match (bytes.next(), bytes.next()) {
            (Some(name), Some(b'=')) if name.is_ascii_alphabetic() => {}
            _ => return Err(ScramError::Malformed("invalid attribute")),
        }
    }
    Ok(())
}

/// A nonce is a non-empty run of printable ASCII other than ','.
fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty() && nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Rejects plaintext secrets that cannot back a SCRAM exchange.
fn check_plaintext(password: &str) -> Result<(), ScramError> {
    if password.is_empty() {
        return Err(ScramError::InvalidVerifier("empty password"));
    }
    // PostgreSQL's rule for a stored MD5 hash: "md5" + 32 lower-case hex.
    let is_md5_hash = password.len() == 35
        && password
            .strip_prefix("md5")
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if is_md5_hash {
        return Err(ScramError::InvalidVerifier("an MD5 hash cannot be used for SCRAM"));
    }
    Ok(())
}

fn utf8(bytes: &[u8]) -> Result<&str, ScramError> {
    std::str::from_utf8(bytes).map_err(|_| ScramError::Malformed("not valid UTF-8"))
}

/// Strict decimal: digits only (no sign, no spaces), must fit in a u32.
fn parse_decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn decode_nonempty(text: &str) -> Option<Vec<u8>> {
    BASE64.decode(text).ok().filter(|bytes| !bytes.is_empty())
}

fn decode_key(text: &str) -> Option<Key> {
    BASE64.decode(text).ok()?.try_into().ok()
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    // thread_rng is a CSPRNG seeded from the OS, fit for salts and nonces.
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

fn random_nonce() -> String {
    BASE64.encode(random_bytes(NONCE_BYTES))
}

/// SaltedPassword = Hi(password, salt, i), which is PBKDF2-HMAC-SHA-256.
/// Salted passwords the client side already derived. A PostgreSQL role
/// keeps its salt and iteration count, so every new server connection for a
/// pool would repeat the same 4096 HMAC rounds; with this memo a pool
/// refilling under load pays for them once. Bounded: cleared when full.
fn cached_salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Memo = Mutex<HashMap<(Vec<u8>, Vec<u8>, u32), Key>>;
    static MEMO: OnceLock<Memo> = OnceLock::new();
    const MAX_ENTRIES: usize = 1024;

    let memo = MEMO.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (password.to_vec(), salt.to_vec(), iterations);
    if let Some(found) = memo.lock().ok().and_then(|m| m.get(&key).copied()) {
        return found;
    }
    let salted = salted_password(password, salt, iterations);
    if let Ok(mut m) = memo.lock() {
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(key, salted);
    }
    salted
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Key {
    // HMAC is defined for keys of every length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; KEY_LEN];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// Constant-time equality: the time taken depends only on the lengths,
/// never on where the first differing byte is, so a proof or signature
/// cannot be found byte by byte from response times.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The client's two outputs for one exchange, from the salted password and
/// the AuthMessage (client-first-bare, server-first and
/// client-final-without-proof joined by commas): the ClientProof it sends
/// and the ServerSignature it expects back.
fn client_proof_and_server_signature(salted: &Key, auth_message: &[u8]) -> (Key, Key) {
    let client_key = hmac_sha256(salted, b"Client Key");
    let stored_key = sha256(&client_key);
    let client_signature = hmac_sha256(&stored_key, auth_message);
    let server_key = hmac_sha256(salted, b"Server Key");
    let server_signature = hmac_sha256(&server_key, auth_message);
    (xor(&client_key, &client_signature), server_signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    // RFC 7677, section 3.
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    /// The verifier PostgreSQL would store for "pencil" with the RFC salt,
    /// computed independently (Python hashlib/hmac).
    const RFC_VERIFIER: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
         WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
         wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    /// Low iteration count for tests that run many exchanges.
    const FAST: u32 = 16;

    fn rfc_salt() -> Vec<u8> {
        BASE64.decode(RFC_SALT).unwrap()
    }

    fn rfc_server() -> ScramServer {
        ScramServer::with_salt_and_nonce("pencil", &rfc_salt(), 4096, RFC_SERVER_NONCE).unwrap()
    }

    /// Runs a full exchange; Ok(()) only if both sides are satisfied.
    fn exchange(client: &mut ScramClient, server: &mut ScramServer) -> Result<(), ScramError> {
        let server_first = server.server_first(&client.client_first())?;
        let client_final = client.handle_server_first(&server_first)?;
        let server_final = server.server_final(&client_final)?;
        client.verify_server_final(&server_final)?;
        assert!(server.is_authenticated());
        Ok(())
    }

    #[test]
    fn rfc7677_key_derivation() {
        let salted = salted_password(b"pencil", &rfc_salt(), 4096);
        let without_proof = RFC_CLIENT_FINAL.rsplit_once(",p=").unwrap().0;
        let auth_message =
            format!("{},{RFC_SERVER_FIRST},{without_proof}", RFC_CLIENT_FIRST.strip_prefix("n,,").unwrap());
        let (proof, signature) = client_proof_and_server_signature(&salted, auth_message.as_bytes());
        assert_eq!(BASE64.encode(proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(BASE64.encode(signature), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn rfc7677_server_exchange() {
        let mut server = rfc_server();
        let server_first = server.server_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(server_first, RFC_SERVER_FIRST.as_bytes());
        let server_final = server.server_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
        assert!(server.is_authenticated());
    }

    #[test]
    fn rfc7677_verifier() {
        assert_eq!(make_verifier("pencil", &rfc_salt(), 4096), RFC_VERIFIER);
        let mut server = ScramServer::new(RFC_VERIFIER).unwrap().with_server_nonce(RFC_SERVER_NONCE).unwrap();
        assert_eq!(server.server_first(RFC_CLIENT_FIRST.as_bytes()).unwrap(), RFC_SERVER_FIRST.as_bytes());
        assert_eq!(server.server_final(RFC_CLIENT_FINAL.as_bytes()).unwrap(), RFC_SERVER_FINAL.as_bytes());
    }

    #[test]
    fn verifier_parse_round_trip() {
        let secret = Secret::parse(RFC_VERIFIER).unwrap();
        assert_eq!(secret.iterations, 4096);
        assert_eq!(secret.salt, rfc_salt());
        assert_eq!(secret.to_verifier(), RFC_VERIFIER);
        assert!(generate_verifier("x").starts_with("SCRAM-SHA-256$4096:"));
        assert!(Secret::parse(&generate_verifier("x")).is_ok());
        assert!(make_verifier("x", b"salt", 0).starts_with("SCRAM-SHA-256$1:"));
    }

    #[test]
    fn client_message_shapes() {
        let client = ScramClient::with_nonce("pencil", RFC_CLIENT_NONCE).unwrap();
        assert_eq!(client.client_first(), b"n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        let random = ScramClient::new("pencil");
        let first = String::from_utf8(random.client_first()).unwrap();
        let nonce = first.strip_prefix("n,,n=,r=").unwrap();
        assert_eq!(nonce.len(), 24);
        assert!(is_valid_nonce(nonce));
        assert_ne!(random.client_first(), ScramClient::new("pencil").client_first());
    }

    #[test]
    fn server_nonce_is_random_and_extends_client_nonce() {
        let mut server = ScramServer::new("pw").unwrap();
        let first = server.server_first(b"n,,n=,r=abc").unwrap();
        let first = String::from_utf8(first).unwrap();
        let nonce = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        assert_eq!(nonce.len(), 3 + 24);
        assert!(nonce.starts_with("abc"));
        assert!(first.ends_with(",i=4096"));
    }

    #[test]
    fn round_trip_plaintext() {
        let mut client = ScramClient::new("correct horse");
        let mut server = ScramServer::new("correct horse").unwrap();
        exchange(&mut client, &mut server).unwrap();
    }

    #[test]
    fn round_trip_verifier() {
        let verifier = make_verifier("correct horse", b"0123456789abcdef", FAST);
        let mut client = ScramClient::new("correct horse");
        let mut server = ScramServer::new(&verifier).unwrap();
        exchange(&mut client, &mut server).unwrap();
    }

    #[test]
    fn round_trip_non_ascii_password() {
        let mut client = ScramClient::new("pässwörd ☃");
        let mut server = ScramServer::new(&make_verifier("pässwörd ☃", b"salt", FAST)).unwrap();
        exchange(&mut client, &mut server).unwrap();
    }

    #[test]
    fn wrong_password_is_invalid_proof() {
        let mut client = ScramClient::new("wrong");
        let mut server = ScramServer::new("right").unwrap();
        assert_eq!(exchange(&mut client, &mut server), Err(ScramError::InvalidProof));
        assert!(!server.is_authenticated());
        // No second attempt within the same exchange.
        assert_eq!(server.server_final(b"c=biws,r=x,p=AAAA"), Err(ScramError::UnexpectedMessage));

        let verifier = make_verifier("right", b"salt", FAST);
        let mut client = ScramClient::new("wrong");
        let mut server = ScramServer::new(&verifier).unwrap();
        assert_eq!(exchange(&mut client, &mut server), Err(ScramError::InvalidProof));
    }

    #[test]
    fn impostor_server_is_detected() {
        // Right StoredKey (so the client's proof passes) but a wrong
        // ServerKey: the server cannot produce the right signature.
        let mut secret = Secret::parse(&make_verifier("pw", b"salt", FAST)).unwrap();
        secret.server_key = [7; KEY_LEN];
        let mut client = ScramClient::new("pw");
        let mut server = ScramServer::new(&secret.to_verifier()).unwrap();
        assert_eq!(exchange(&mut client, &mut server), Err(ScramError::ServerSignatureMismatch));
    }

    #[test]
    fn server_error_message() {
        let mut client = ScramClient::with_nonce("pw", "abc").unwrap();
        client.handle_server_first(b"r=abcdef,s=c2FsdA==,i=16").unwrap();
        assert_eq!(
            client.verify_server_final(b"e=invalid-proof"),
            Err(ScramError::ServerError("invalid-proof".to_string()))
        );
    }

    /// Client side of an exchange with an arbitrary GS2 header, which our
    /// own client never sends.
    fn manual_client_final(password: &str, client_first: &str, server_first: &[u8], cbind: &str) -> String {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let bare = client_first.splitn(3, ',').nth(2).unwrap();
        let mut attrs = server_first.split(',');
        let nonce = attrs.next().unwrap().strip_prefix("r=").unwrap();
        let salt = BASE64.decode(attrs.next().unwrap().strip_prefix("s=").unwrap()).unwrap();
        let iterations = attrs.next().unwrap().strip_prefix("i=").unwrap();
        let without_proof = format!("c={cbind},r={nonce}");
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let salted = salted_password(password.as_bytes(), &salt, iterations.parse().unwrap());
        let (proof, _) = client_proof_and_server_signature(&salted, auth_message.as_bytes());
        format!("{without_proof},p={}", BASE64.encode(proof))
    }

    #[test]
    fn y_flag_requires_matching_channel_binding() {
        let client_first = "y,,n=someone,r=nonce";
        let mut server = ScramServer::with_salt_and_nonce("pw", b"salt", FAST, "srv").unwrap();
        let server_first = server.server_first(client_first.as_bytes()).unwrap();
        let good = manual_client_final("pw", client_first, &server_first, CBIND_Y);
        assert!(server.server_final(good.as_bytes()).is_ok());

        let mut server = ScramServer::with_salt_and_nonce("pw", b"salt", FAST, "srv").unwrap();
        let server_first = server.server_first(client_first.as_bytes()).unwrap();
        let bad = manual_client_final("pw", client_first, &server_first, CBIND_N);
        assert_eq!(server.server_final(bad.as_bytes()), Err(ScramError::ChannelBindingMismatch));
    }

    #[test]
    fn extensions_are_ignored() {
        let client_first = "n,,n=,r=nonce,x=ext";
        let mut server = ScramServer::with_salt_and_nonce("pw", b"salt", FAST, "srv").unwrap();
        let server_first = server.server_first(client_first.as_bytes()).unwrap();
        let last = manual_client_final("pw", client_first, &server_first, CBIND_N);
        // An extension in client-final is covered by the proof.
        let (without_proof, _) = last.rsplit_once(",p=").unwrap();
        let with_ext = format!("{without_proof},z=1");
        let auth_message = format!("n=,r=nonce,x=ext,{},{with_ext}", std::str::from_utf8(&server_first).unwrap());
        let salted = salted_password(b"pw", b"salt", FAST);
        let (proof, _) = client_proof_and_server_signature(&salted, auth_message.as_bytes());
        let message = format!("{with_ext},p={}", BASE64.encode(proof));
        assert!(server.server_final(message.as_bytes()).is_ok());

        let mut client = ScramClient::with_nonce("pw", "abc").unwrap();
        assert!(client.handle_server_first(b"r=abcdef,s=c2FsdA==,i=16,q=whatever").is_ok());
    }

    #[test]
    fn client_first_rejections() {
        let cases: &[(&[u8], ScramError)] = &[
            (b"p=tls-server-end-point,,n=,r=abc", ScramError::UnsupportedChannelBinding),
            (b"n,a=admin,n=,r=abc", ScramError::Malformed("authorization identity is not supported")),
            (b"n,,m=ext,n=,r=abc", ScramError::Malformed("mandatory extensions are not supported")),
            (b"x,,n=,r=abc", ScramError::Malformed("invalid channel binding flag")),
            (b"n,,n=,r=", ScramError::Malformed("invalid nonce")),
            (b"n,,n=,r=a\x7fb", ScramError::Malformed("invalid nonce")),
            (b"n,,n=,r=abc,1", ScramError::Malformed("invalid attribute")),
            (b"n,,r=abc", ScramError::Malformed("expected user name attribute")),
            (b"n,,n=\xff,r=abc", ScramError::Malformed("not valid UTF-8")),
        ];
        for (message, expected) in cases {
            let mut server = ScramServer::new("pw").unwrap();
            assert_eq!(server.server_first(message).as_ref(), Err(expected), "{:?}", String::from_utf8_lossy(message));
            assert!(!server.is_authenticated());
        }
    }

    #[test]
    fn client_final_rejections() {
        let fresh = || {
            let mut server = ScramServer::with_salt_and_nonce("pw", b"salt", FAST, "srv").unwrap();
            server.server_first(b"n,,n=,r=abc").unwrap();
            server
        };
        let proof = BASE64.encode([0u8; KEY_LEN]);
        let cases = [
            (format!("c=eSws,r=abcsrv,p={proof}"), ScramError::ChannelBindingMismatch),
            (format!("c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=abcsrv,p={proof}"), ScramError::ChannelBindingMismatch),
            (format!("c=biws,r=abcsrX,p={proof}"), ScramError::NonceMismatch),
            (format!("c=biws,r=abc,p={proof}"), ScramError::NonceMismatch),
            (format!("c=biws,r=abcsrv,p={proof}"), ScramError::InvalidProof),
            ("c=biws,r=abcsrv,p=AAAA".to_string(), ScramError::Malformed("invalid proof")),
            (format!("c=biws,p={proof},r=abcsrv"), ScramError::Malformed("proof must be the last attribute")),
            (format!("r=abcsrv,c=biws,p={proof}"), ScramError::Malformed("expected channel binding attribute")),
        ];
        for (message, expected) in cases {
            assert_eq!(fresh().server_final(message.as_bytes()), Err(expected), "{message}");
        }
    }

    #[test]
    fn server_first_rejections() {
        let cases: &[(&[u8], ScramError)] = &[
            (b"r=abc,s=c2FsdA==,i=16", ScramError::NonceMismatch),
            (b"r=xbcdef,s=c2FsdA==,i=16", ScramError::NonceMismatch),
            (b"r=ab,s=c2FsdA==,i=16", ScramError::NonceMismatch),
            (b"m=x,r=abcdef,s=c2FsdA==,i=16", ScramError::Malformed("mandatory extensions are not supported")),
            (b"r=abcdef,s=,i=16", ScramError::Malformed("invalid salt")),
            (b"r=abcdef,s=c2FsdA,i=16", ScramError::Malformed("invalid salt")),
            (b"r=abcdef,s=c2FsdA==,i=0", ScramError::Malformed("iteration count out of range")),
            (b"r=abcdef,s=c2FsdA==,i=10000001", ScramError::Malformed("iteration count out of range")),
            (b"r=abcdef,s=c2FsdA==,i=99999999999999999999", ScramError::Malformed("iteration count out of range")),
            (b"r=abcdef,s=c2FsdA==,i=+16", ScramError::Malformed("iteration count out of range")),
            (b"r=abcdef,s=c2FsdA==,i=-1", ScramError::Malformed("iteration count out of range")),
            (b"r=abcdef,i=16,s=c2FsdA==", ScramError::Malformed("expected salt attribute")),
        ];
        for (message, expected) in cases {
            let mut client = ScramClient::with_nonce("pw", "abc").unwrap();
            assert_eq!(
                client.handle_server_first(message).as_ref(),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn out_of_order_messages() {
        let mut server = ScramServer::new("pw").unwrap();
        assert_eq!(server.server_final(b"c=biws,r=a,p=AAAA"), Err(ScramError::UnexpectedMessage));
        let mut server = ScramServer::new("pw").unwrap();
        server.server_first(b"n,,n=,r=abc").unwrap();
        assert_eq!(server.server_first(b"n,,n=,r=abc"), Err(ScramError::UnexpectedMessage));

        let mut client = ScramClient::with_nonce("pw", "abc").unwrap();
        assert_eq!(client.verify_server_final(b"v=AAAA"), Err(ScramError::UnexpectedMessage));
        client.handle_server_first(b"r=abcdef,s=c2FsdA==,i=16").unwrap();
        assert_eq!(client.handle_server_first(b"r=abcdef,s=c2FsdA==,i=16"), Err(ScramError::UnexpectedMessage));
    }

    #[test]
    fn stored_secret_validation() {
        for bad in [
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:c2FsdA==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$x:c2FsdA==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$4096:c2FsdA==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
            "",
            "md53175bce1d3201d16594cebf9d7eb3f9d",
        ] {
            assert!(
                matches!(ScramServer::new(bad), Err(ScramError::InvalidVerifier(_))),
                "{bad}"
            );
        }
        // Looks a bit like an MD5 hash but is not one: a plaintext password.
        assert!(ScramServer::new("md5notahash").is_ok());
        assert!(ScramServer::with_salt_and_nonce("pw", b"", FAST, "n").is_err());
        assert!(ScramServer::with_salt_and_nonce("pw", b"s", 0, "n").is_err());
        assert!(ScramServer::with_salt_and_nonce("pw", b"s", FAST, "a,b").is_err());
        assert!(ScramClient::with_nonce("pw", "").is_err());
        assert!(ScramClient::with_nonce("pw", "a b").is_err());
    }

    /// Every strict prefix of every message: never a panic, never a
    /// completed exchange. Client-final and server-final prefixes must be
    /// refused outright. A prefix of client-first or server-first can be
    /// well-formed on its own (a shorter nonce, fewer iteration digits), so
    /// for those the exchange must fail at the next step instead.
    #[test]
    fn truncated_messages_fail() {
        let password = "pw";
        let new_client = || ScramClient::with_nonce(password, "clientnonce").unwrap();
        let new_server = || ScramServer::with_salt_and_nonce(password, b"saltsalt", FAST, "servernonce").unwrap();

        // Reference transcript.
        let mut client = new_client();
        let mut server = new_server();
        let client_first = client.client_first();
        let server_first = server.server_first(&client_first).unwrap();
        let client_final = client.handle_server_first(&server_first).unwrap();
        let server_final = server.server_final(&client_final).unwrap();
        client.verify_server_final(&server_final).unwrap();

        for len in 0..client_first.len() {
            let prefix = &client_first[..len];
            if let Ok(reply) = new_server().server_first(prefix) {
                assert!(new_client().handle_server_first(&reply).is_err(), "{len}");
            }
        }
        for len in 0..server_first.len() {
            let prefix = &server_first[..len];
            if let Ok(reply) = new_client().handle_server_first(prefix) {
                let mut server = new_server();
                server.server_first(&client_first).unwrap();
                assert!(server.server_final(&reply).is_err(), "{len}");
            }
        }
        for len in 0..client_final.len() {
            let mut server = new_server();
            server.server_first(&client_first).unwrap();
            assert!(server.server_final(&client_final[..len]).is_err(), "{len}");
            assert!(!server.is_authenticated());
        }
        for len in 0..server_final.len() {
            let mut client = new_client();
            client.handle_server_first(&server_first).unwrap();
            assert!(client.verify_server_final(&server_final[..len]).is_err(), "{len}");
        }
    }

    /// Random bytes and single-byte corruptions of valid messages, fed to
    /// every entry point in every state: no panics, and no corrupted final
    /// message is ever accepted.
    #[test]
    fn garbage_never_panics() {
        let mut rng = StdRng::seed_from_u64(0x5c7a_3d00);
        let new_client = || ScramClient::with_nonce("pw", "clientnonce").unwrap();
        let new_server = || ScramServer::with_salt_and_nonce("pw", b"saltsalt", FAST, "servernonce").unwrap();
        let client_first = new_client().client_first();
        let server_first = new_server().server_first(&client_first).unwrap();
        let client_final = new_client().handle_server_first(&server_first).unwrap();
        let mut server = new_server();
        server.server_first(&client_first).unwrap();
        let server_final = server.server_final(&client_final).unwrap();

        let alphabet = b"nyprcsiemv=,+/AZaz09\x00\xff\xc3";
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for _ in 0..300 {
            let len = rng.gen_range(0..80);
            inputs.push((0..len).map(|_| rng.gen()).collect());
            // Biased towards bytes that matter to the grammar.
            inputs.push((0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect());
        }
        for input in &inputs {
            let _ = new_server().server_first(input);
            let mut server = new_server();
            server.server_first(&client_first).unwrap();
            assert!(server.server_final(input).is_err());
            let _ = new_client().handle_server_first(input);
            let mut client = new_client();
            client.handle_server_first(&server_first).unwrap();
            assert!(client.verify_server_final(input).is_err());
        }

        let corruptions = [0u8, b',', b'=', b'A', b'/', 0xff];
        let corrupt = |message: &[u8], at: usize, byte: u8| {
            let mut copy = message.to_vec();
            copy[at] = byte;
            (copy != message).then_some(copy)
        };
        for at in 0..client_first.len() {
            for byte in corruptions {
                if let Some(bad) = corrupt(&client_first, at, byte) {
                    let _ = new_server().server_first(&bad);
                }
            }
        }
        for at in 0..server_first.len() {
            for byte in corruptions {
                if let Some(bad) = corrupt(&server_first, at, byte) {
                    let _ = new_client().handle_server_first(&bad);
                }
            }
        }
        for at in 0..client_final.len() {
            for byte in corruptions {
                if let Some(bad) = corrupt(&client_final, at, byte) {
                    let mut server = new_server();
                    server.server_first(&client_first).unwrap();
                    assert!(server.server_final(&bad).is_err(), "{at} {byte}");
                }
            }
        }
        for at in 0..server_final.len() {
            for byte in corruptions {
                if let Some(bad) = corrupt(&server_final, at, byte) {
                    let mut client = new_client();
                    client.handle_server_first(&server_first).unwrap();
                    assert!(client.verify_server_final(&bad).is_err(), "{at} {byte}");
                }
            }
        }
    }

    #[test]
    fn ct_eq_basics() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn debug_hides_secrets() {
        let server = ScramServer::new("hunter2").unwrap();
        let client = ScramClient::new("hunter2");
        assert!(!format!("{server:?}").contains("hunter2"));
        assert!(!format!("{client:?}").contains("hunter2"));
        assert!(!format!("{server:?}").contains("key"));
    }
}
