//! Client-facing protocol of the router, end to end against real PostgreSQL:
//! authentication (SCRAM, MD5, trust; and SCRAM, MD5, cleartext and trust
//! towards the server), unknown databases, client TLS and client
//! certificates, query cancellation, malformed and unusual startup input,
//! graceful shutdown, reload on SIGHUP, configuration errors and startup
//! options.
//!
//! Every test starts its own router (they are cheap) against the shared
//! cluster, so a router that misbehaves in one test cannot fail another.
//! Real clients are used wherever one can express the case (tokio-postgres,
//! psql for TLS); raw sockets ([`pgdog_tests::wire`]) only for bytes no real
//! client sends and for the BackendKeyData a real client hides.

use std::net::Shutdown;
use std::time::{Duration, Instant};

use pgdog_tests::wire::{self, RawSession};
use pgdog_tests::{
    default_users, free_port, raw_connect, router_config, self_signed_cert, shared_cluster, wait_until, RouterProcess,
    TestCa,
};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Users for most tests, all for database `pgdog`: the harness's default
/// users plus [`EXTRA_USERS`]. Client names say what they exercise; server
/// roles are the ones the harness cluster creates.
fn users() -> String {
    default_users() + EXTRA_USERS
}

/// Users beyond the harness's `default_users()` (pgdog, md5client,
/// trustclient).
const EXTRA_USERS: &str = r#"
# Server side uses md5 (pg_hba) for md5user.
[[users]]
name = "c_md5srv"
password = "c-md5srv-pass"
database = "pgdog"
server_user = "md5user"
server_password = "md5pass"

# Server side uses the cleartext `password` method for plainuser.
[[users]]
name = "c_plainsrv"
password = "c-plainsrv-pass"
database = "pgdog"
server_user = "plainuser"
server_password = "plainpass"

# Server side trusts trustuser: no password at all.
[[users]]
name = "c_trustsrv"
database = "pgdog"
auth = "trust"
server_user = "trustuser"

[[users]]
name = "sess"
password = "sesspass"
database = "pgdog"
pool_mode = "session"
server_user = "pgdog"
server_password = "pgdog"

[[users]]
name = "sesstrust"
database = "pgdog"
auth = "trust"
pool_mode = "session"
server_user = "pgdog"
server_password = "pgdog"
"#;

/// Generous bound for anything polled.
const DEADLINE: Duration = Duration::from_secs(20);

/// The pgdog.toml for the shared cluster with fresh ports.
fn config(extra_general: &str) -> String {
    router_config(shared_cluster(), extra_general, "", free_port(), free_port(), free_port())
}

/// A router with [`users()`] and `extra_general` lines in `[general]`.
fn start(extra_general: &str) -> RouterProcess {
    RouterProcess::start(&config(extra_general), &users())
}

/// Last part of the router log, for assertion messages.
fn log_tail(router: &RouterProcess) -> String {
    let log = router.log();
    let start = log.len().saturating_sub(6000);
    let start = (start..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len());
    format!("\n--- router log (tail) ---\n{}", &log[start..])
}

/// SQLSTATE and message of a server-reported error; panics on any other error.
fn db_error(err: &tokio_postgres::Error) -> (String, String) {
    match err.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => panic!("expected an ErrorResponse, got: {err:?}"),
    }
}

/// Connect with tokio-postgres, optionally with a libpq-style `options`.
async fn connect_with(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    options: Option<&str>,
) -> Result<Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(port).user(user).password(password).dbname(db).connect_timeout(Duration::from_secs(10));
    if let Some(options) = options {
        cfg.options(options);
    }
    let (client, connection) = cfg.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// First column of the first row of a simple query, as text.
async fn scalar(client: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"));
    Ok(row.unwrap_or_else(|| "<NULL>".into()))
}

/// The router is alive and a fresh SCRAM login can run a query.
async fn assert_still_serving(router: &mut RouterProcess, after: &str) {
    let exited = router.child.try_wait().expect("try_wait on router");
    assert!(exited.is_none(), "router exited ({exited:?}) after {after}{}", log_tail(router));
    let client = match router.try_connect("pgdog", "pgdog", "pgdog").await {
        Ok(c) => c,
        Err(e) => panic!("login after {after} failed: {e:?}{}", log_tail(router)),
    };
    assert_eq!(scalar(&client, "SELECT 1").await.expect("SELECT 1"), "1", "after {after}");
}

/// The first backend message answering a protocol 3.0 StartupMessage.
fn first_reply(port: u16, user: &str, database: &str) -> wire::BackendMessage {
    let mut s = raw_connect(port);
    wire::send(&mut s, &wire::startup_message(&[("user", user), ("database", database)])).expect("send startup");
    wire::read_message(&mut s).unwrap_or_else(|e| panic!("{user}: no reply to StartupMessage: {e}"))
}

/// Send `bytes` on a fresh connection and collect everything until close.
/// Write errors are ignored: the router may hang up before reading it all.
fn send_and_collect(port: u16, bytes: &[u8]) -> wire::UntilClose {
    let mut s = raw_connect(port);
    let _ = wire::send(&mut s, bytes);
    wire::read_until_close(&mut s)
}

/// Assert a FATAL 08P01 reply followed by a closed connection.
fn assert_protocol_violation(reply: &wire::UntilClose, what: &str) {
    assert!(reply.closed(), "{what}: connection not closed: {}", reply.describe());
    let err = reply.first_error().unwrap_or_else(|| panic!("{what}: no ErrorResponse: {}", reply.describe()));
    assert_eq!(err.code, "08P01", "{what}: {err}");
    assert_eq!(err.severity, "FATAL", "{what}: {err}");
}

/// Whether the server (as seen directly, not through the router) runs a
/// statement containing `marker`, optionally in backend `pid`.
fn server_running(marker: &str, pid: Option<i32>) -> bool {
    let pid_filter = pid.map(|p| format!(" AND pid = {p}")).unwrap_or_default();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() \
         AND query LIKE '%{marker}%'{pid_filter}"
    );
    shared_cluster().psql_admin(&sql) == "1"
}

/// `tls_certificate`/`tls_private_key` lines for `[general]`.
fn tls_lines(cert: &std::path::Path, key: &std::path::Path) -> String {
    format!("tls_certificate = {:?}\ntls_private_key = {:?}\n", cert.display().to_string(), key.display().to_string())
}

// ---------------------------------------------------------------------------
// 1. SCRAM
// ---------------------------------------------------------------------------

#[tokio::test]
async fn scram_login_and_indistinguishable_failures() {
    let router = start("");

    let client = router.connect("pgdog", "pgdog", "pgdog").await;
    assert_eq!(scalar(&client, "SELECT current_user::text").await.unwrap(), "pgdog");

    let err = router.try_connect("pgdog", "wrong", "pgdog").await.expect_err("wrong password accepted");
    assert_eq!(db_error(&err), ("28P01".into(), "password authentication failed for user \"pgdog\"".into()));

    let err = router.try_connect("nosuch", "whatever", "pgdog").await.expect_err("unknown user accepted");
    assert_eq!(db_error(&err), ("28P01".into(), "password authentication failed for user \"nosuch\"".into()));

    // The first thing a client learns must not depend on whether the user
    // exists: both get the same AuthenticationSASL.
    let known = first_reply(router.port, "pgdog", "pgdog");
    let unknown = first_reply(router.port, "nosuch", "pgdog");
    assert_eq!(known.auth_code(), Some(10), "known user: {}", known.describe());
    assert_eq!(unknown.auth_code(), Some(10), "unknown user: {}", unknown.describe());
    assert_eq!(known.sasl_mechanisms(), vec!["SCRAM-SHA-256".to_string()]);
    assert_eq!(known, unknown, "AuthenticationSASL differs between a known and an unknown user");
}

/// Start a SCRAM exchange as `user` and return the server-first-message's
/// salt (base64) and iteration count.
fn scram_challenge(port: u16, user: &str) -> (String, u32) {
    let mut s = raw_connect(port);
    wire::send(&mut s, &wire::startup_message(&[("user", user), ("database", "pgdog")])).unwrap();
    let first = wire::read_message(&mut s).expect("AuthenticationSASL");
    assert_eq!(first.auth_code(), Some(10), "{user}: {}", first.describe());
    let client_first = b"n,,n=,r=pgdogtestsclientnonce0123";
    wire::send(&mut s, &wire::sasl_initial_response("SCRAM-SHA-256", client_first)).unwrap();
    let reply = wire::read_message(&mut s).expect("AuthenticationSASLContinue");
    let data = reply.sasl_data().unwrap_or_else(|| panic!("{user}: {}", reply.describe()));
    let text = String::from_utf8_lossy(data).into_owned();
    let attr = |name: &str| {
        text.split(',').find_map(|a| a.strip_prefix(name)).unwrap_or_else(|| panic!("{user}: no {name} in {text}"))
    };
    assert!(attr("r=").starts_with("pgdogtestsclientnonce0123"), "{user}: server nonce ignores ours: {text}");
    (attr("s=").to_string(), attr("i=").parse().expect("iteration count"))
}

/// The SCRAM challenge is the other place a user's existence could show:
/// PostgreSQL answers an unknown user with a salt derived from the name, so
/// the salt is stable per name and differs between names, like real ones.
#[tokio::test]
async fn scram_challenge_does_not_reveal_unknown_users() {
    let router = start("");
    let (known_salt, known_iterations) = scram_challenge(router.port, "pgdog");
    assert_eq!(scram_challenge(router.port, "pgdog").0, known_salt, "a known user's salt is stable");

    let (salt_a, iterations_a) = scram_challenge(router.port, "nosuch_a");
    let (salt_b, iterations_b) = scram_challenge(router.port, "nosuch_b");
    assert_eq!((iterations_a, iterations_b), (known_iterations, known_iterations), "iteration counts differ");
    assert_eq!(salt_a.len(), known_salt.len(), "salt length differs between known and unknown users");
    assert_eq!(scram_challenge(router.port, "nosuch_a").0, salt_a, "an unknown user's salt changes between attempts");
    assert_ne!(
        salt_a, salt_b,
        "two unknown users get the same salt ({salt_a}), while every real user has its own: \
         probing two names tells which of them do not exist"
    );
}

// ---------------------------------------------------------------------------
// 2. MD5 and trust clients; server-side methods
// ---------------------------------------------------------------------------

#[tokio::test]
async fn md5_and_trust_clients() {
    let router = start("");

    // The router really asks for MD5 (tokio-postgres would also do SCRAM).
    let first = first_reply(router.port, "md5client", "pgdog");
    assert_eq!(first.auth_code(), Some(5), "md5client: {}", first.describe());
    assert_eq!(first.body.len(), 8, "AuthenticationMD5Password carries a 4-byte salt");

    let client = router.connect("md5client", "md5pass", "pgdog").await;
    assert_eq!(scalar(&client, "SELECT current_user::text").await.unwrap(), "md5user");

    let err = router.try_connect("md5client", "wrong", "pgdog").await.expect_err("wrong md5 password accepted");
    assert_eq!(db_error(&err), ("28P01".into(), "password authentication failed for user \"md5client\"".into()));

    // Trust: AuthenticationOk straight away, no password asked.
    let first = first_reply(router.port, "trustclient", "pgdog");
    assert_eq!(first.auth_code(), Some(0), "trustclient: {}", first.describe());
    let client = router.connect("trustclient", "", "pgdog").await;
    assert_eq!(scalar(&client, "SELECT current_user::text").await.unwrap(), "pgdog");
}

#[tokio::test]
async fn server_side_auth_methods() {
    let router = start("");
    // (client, password, role on the server, server pg_hba method)
    let cases = [
        ("pgdog", "pgdog", "pgdog"),                    // scram-sha-256
        ("c_md5srv", "c-md5srv-pass", "md5user"),       // md5
        ("c_plainsrv", "c-plainsrv-pass", "plainuser"), // password (cleartext)
        ("c_trustsrv", "", "trustuser"),                // trust
    ];
    for (user, password, role) in cases {
        let client = match router.try_connect(user, password, "pgdog").await {
            Ok(c) => c,
            Err(e) => panic!("{user}: login failed: {e:?}{}", log_tail(&router)),
        };
        let got = scalar(&client, "SELECT current_user::text").await;
        match got {
            Ok(got) => assert_eq!(got, role, "{user}"),
            Err(e) => panic!("{user}: query failed: {e:?}{}", log_tail(&router)),
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Unknown database
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_database_is_revealed_only_after_authentication() {
    let router = start("");
    let err = router.try_connect("pgdog", "pgdog", "nodb").await.expect_err("login to nodb succeeded");
    assert_eq!(db_error(&err), ("3D000".into(), "database \"nodb\" does not exist".into()));

    // Without the right password the database's existence is not revealed.
    let err = router.try_connect("pgdog", "wrong", "nodb").await.expect_err("wrong password accepted");
    assert_eq!(db_error(&err).0, "28P01");
    let first = first_reply(router.port, "pgdog", "nodb");
    assert_eq!(first.auth_code(), Some(10), "nodb: {}", first.describe());
}

// ---------------------------------------------------------------------------
// 4. TLS
// ---------------------------------------------------------------------------

/// Run `\conninfo` and `SELECT 1` through psql with `conninfo`; returns
/// (success, stdout, stderr).
fn psql_conninfo(router: &RouterProcess, user: &str, password: &str, conninfo: &str) -> (bool, String, String) {
    let out = router.psql(user, password, conninfo, &["-At", "-c", "\\conninfo", "-c", "SELECT 1"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Send an SSLRequest and return the one-byte answer.
fn ssl_answer(port: u16) -> (std::net::TcpStream, u8) {
    let mut s = raw_connect(port);
    wire::send(&mut s, &wire::ssl_request()).expect("send SSLRequest");
    let answer = wire::read_byte(&mut s).expect("answer to SSLRequest");
    (s, answer)
}

#[tokio::test]
async fn tls_allow_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let router = start(&format!("{}tls_mode = \"allow\"", tls_lines(&cert, &key)));

    let (_s, answer) = ssl_answer(router.port);
    assert_eq!(answer, b'S', "SSLRequest not accepted");

    // GSSAPI encryption is declined, and SSLRequest may follow.
    let mut s = raw_connect(router.port);
    wire::send(&mut s, &wire::gssenc_request()).unwrap();
    assert_eq!(wire::read_byte(&mut s).expect("answer to GSSENCRequest"), b'N');
    wire::send(&mut s, &wire::ssl_request()).unwrap();
    assert_eq!(wire::read_byte(&mut s).expect("answer to SSLRequest after GSSENC"), b'S');
    drop(s);

    // Plaintext bytes pipelined behind SSLRequest would bypass encryption
    // (CVE-2021-23214): refused instead of answered with 'S'.
    let mut bytes = wire::ssl_request();
    bytes.extend_from_slice(&wire::startup_message(&[("user", "trustclient"), ("database", "pgdog")]));
    assert_protocol_violation(&send_and_collect(router.port, &bytes), "data pipelined after SSLRequest");

    let (ok, stdout, stderr) = psql_conninfo(&router, "pgdog", "pgdog", "dbname=pgdog sslmode=require");
    assert!(ok, "psql sslmode=require failed: {stderr}{}", log_tail(&router));
    assert!(stdout.contains("SSL connection"), "not encrypted: {stdout}");
    assert_eq!(stdout.lines().last(), Some("1"), "{stdout}");

    // Plaintext is still allowed in "allow" mode.
    let (ok, stdout, stderr) = psql_conninfo(&router, "pgdog", "pgdog", "dbname=pgdog sslmode=disable");
    assert!(ok, "psql sslmode=disable failed: {stderr}");
    assert!(!stdout.contains("SSL connection"), "{stdout}");
    let client = router.connect("pgdog", "pgdog", "pgdog").await;
    assert_eq!(scalar(&client, "SELECT 1").await.unwrap(), "1");
}

#[tokio::test]
async fn tls_require_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let router = start(&format!("{}tls_mode = \"require\"", tls_lines(&cert, &key)));

    let (ok, stdout, stderr) = psql_conninfo(&router, "pgdog", "pgdog", "dbname=pgdog sslmode=disable");
    assert!(!ok, "plaintext psql accepted with tls_mode = require: {stdout}");
    assert!(stderr.contains("SSL") || stderr.contains("TLS"), "refusal does not mention SSL/TLS: {stderr}");

    // tokio-postgres without TLS never sends SSLRequest.
    let err = router.try_connect("pgdog", "pgdog", "pgdog").await.expect_err("plaintext login accepted");
    let (code, message) = db_error(&err);
    assert_eq!(code, "28000", "{message}");
    assert!(message.contains("SSL") || message.contains("TLS"), "{message}");

    let (ok, stdout, stderr) = psql_conninfo(&router, "pgdog", "pgdog", "dbname=pgdog sslmode=require");
    assert!(ok, "psql sslmode=require failed: {stderr}{}", log_tail(&router));
    assert!(stdout.contains("SSL connection"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("1"), "{stdout}");
}

#[tokio::test]
async fn tls_unavailable_answers_n_then_plaintext_works() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let no_cert = start("");
    let disabled = start(&format!("{}tls_mode = \"disable\"", tls_lines(&cert, &key)));

    for (name, router) in [("no certificate", &no_cert), ("tls_mode = disable", &disabled)] {
        let (stream, answer) = ssl_answer(router.port);
        assert_eq!(answer, b'N', "{name}: SSLRequest answer");
        // The same connection continues in plaintext.
        let startup = wire::startup_message(&[("user", "trustclient"), ("database", "pgdog")]);
        let mut session = RawSession::login(stream, &startup).unwrap_or_else(|e| panic!("{name}: {e}"));
        let result = session.simple_query("SELECT 1").expect("query").expect("SELECT 1 failed");
        assert_eq!(result.rows, vec![vec![Some("1".to_string())]], "{name}");
        session.close();

        // GSSENCRequest, then SSLRequest, both declined, then a login.
        let mut s = raw_connect(router.port);
        wire::send(&mut s, &wire::gssenc_request()).unwrap();
        assert_eq!(wire::read_byte(&mut s).expect("answer to GSSENCRequest"), b'N', "{name}");
        wire::send(&mut s, &wire::ssl_request()).unwrap();
        assert_eq!(wire::read_byte(&mut s).expect("answer to SSLRequest"), b'N', "{name}");
        RawSession::login(s, &startup).unwrap_or_else(|e| panic!("{name}: login after GSSENC and SSL: {e}")).close();

        // Asking twice is a protocol violation.
        let (mut s, _) = ssl_answer(router.port);
        wire::send(&mut s, &wire::ssl_request()).unwrap();
        assert_protocol_violation(&wire::read_until_close(&mut s), &format!("{name}: second SSLRequest"));

        let (ok, stdout, stderr) = psql_conninfo(router, "pgdog", "pgdog", "dbname=pgdog sslmode=require");
        assert!(!ok, "{name}: sslmode=require succeeded without TLS: {stdout}");
        assert!(stderr.contains("SSL"), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn tls_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let (cert, key) = ca.server_cert(dir.path(), "router");
    let (client_cert, client_key) = ca.client_cert(dir.path(), "pgdog");
    let other_dir = tempfile::tempdir().unwrap();
    let (stranger_cert, stranger_key) = TestCa::new(other_dir.path()).client_cert(other_dir.path(), "pgdog");
    let router = start(&format!(
        "{}tls_ca = {:?}\ntls_mode = \"require\"",
        tls_lines(&cert, &key),
        ca.cert_path.display().to_string()
    ));
    let base = format!("dbname=pgdog sslmode=verify-full sslrootcert={}", ca.cert_path.display());

    let with_cert = format!("{base} sslcert={} sslkey={}", client_cert.display(), client_key.display());
    let (ok, stdout, stderr) = psql_conninfo(&router, "pgdog", "pgdog", &with_cert);
    assert!(ok, "psql with a CA-signed client certificate failed: {stderr}{}", log_tail(&router));
    assert!(stdout.contains("SSL connection"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("1"), "{stdout}");

    // libpq sends no certificate when the named files do not exist.
    let missing = dir.path().join("missing");
    let without = format!("{base} sslcert={0}.crt sslkey={0}.key", missing.display());
    let (ok, stdout, stderr) = psql_conninfo(&router, "pgdog", "pgdog", &without);
    assert!(!ok, "login without a client certificate succeeded: {stdout}");
    assert!(stderr.contains("SSL error"), "not refused in the TLS handshake: {stderr}");

    let stranger = format!("{base} sslcert={} sslkey={}", stranger_cert.display(), stranger_key.display());
    let (ok, stdout, stderr) = psql_conninfo(&router, "pgdog", "pgdog", &stranger);
    assert!(!ok, "login with a certificate from another CA succeeded: {stdout}");
    assert!(stderr.contains("SSL error"), "not refused in the TLS handshake: {stderr}");
}

/// The reference says of `tls_ca`: "clients must present a certificate
/// signed by it". A client that skips TLS presents none, so with `tls_ca`
/// set and the default `tls_mode` it must not get in; refusing such a
/// configuration at start-up would honour the promise too.
#[tokio::test]
async fn tls_ca_is_not_bypassed_by_plaintext_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let (cert, key) = ca.server_cert(dir.path(), "router");
    let general = format!("{}tls_ca = {:?}", tls_lines(&cert, &key), ca.cert_path.display().to_string());
    let mut router = RouterProcess::spawn(&config(&general), &users());
    if let Err(e) = router.wait_ready(DEADLINE) {
        // Refused at start-up: fine, if it says why.
        assert!(e.contains("tls_ca") || e.contains("tls_mode"), "router did not start, for no stated reason: {e}");
        return;
    }
    let (ok, stdout, _) = psql_conninfo(&router, "pgdog", "pgdog", "dbname=pgdog sslmode=disable");
    assert!(!ok, "plaintext client without a certificate logged in although tls_ca is set: {stdout}");
    let login = router.try_connect("pgdog", "pgdog", "pgdog").await;
    assert!(login.is_err(), "tokio-postgres without TLS logged in although tls_ca is set");
}

// ---------------------------------------------------------------------------
// 5. Cancel
// ---------------------------------------------------------------------------

/// Start `pg_sleep(30)` as `user`, cancel it through the router once the
/// server runs it, and check it fails promptly with 57014.
async fn cancel_through_router(router: &RouterProcess, user: &str, password: &str, marker: &str) {
    let client = router.connect(user, password, "pgdog").await;
    let token = client.cancel_token();
    let sql = format!("SELECT pg_sleep(30), '{marker}'");
    let started = Instant::now();
    let query = tokio::spawn(async move {
        let result = client.simple_query(&sql).await;
        (result, client)
    });
    let running = wait_until(DEADLINE, || async { server_running(marker, None) }).await;
    assert!(running, "{user}: the query never started on the server{}", log_tail(router));

    token.cancel_query(NoTls).await.expect("send CancelRequest to the router");
    let (result, client) = query.await.expect("query task");
    let elapsed = started.elapsed();
    let err = result.err().unwrap_or_else(|| panic!("{user}: pg_sleep(30) was not cancelled{}", log_tail(router)));
    let (code, message) = db_error(&err);
    assert_eq!(code, "57014", "{user}: {message}");
    assert!(elapsed < Duration::from_secs(10), "{user}: cancel took {elapsed:?}");

    // The session survives a cancelled query.
    assert_eq!(scalar(&client, "SELECT 2").await.expect("query after cancel"), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_in_transaction_mode() {
    let router = start("");
    cancel_through_router(&router, "pgdog", "pgdog", "cancel-transaction-mode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_in_session_mode() {
    let router = start("");
    cancel_through_router(&router, "sess", "sesspass", "cancel-session-mode").await;
}

/// Transaction mode: a client's cancel key follows the server only while
/// that client holds it. Once released, the same server may run another
/// client's query, which the first client's cancel must not touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_does_not_reach_the_next_client_of_a_server() {
    // One worker and one server connection: both clients share the backend.
    let config = router_config(
        shared_cluster(),
        "",
        "[pools.default]\nmax_pool_size = 1",
        free_port(),
        free_port(),
        free_port(),
    )
    .replacen("workers = 2", "workers = 1", 1);
    let router = RouterProcess::start(&config, &users());
    let first = router.connect("pgdog", "pgdog", "pgdog").await;
    let backend: i32 = scalar(&first, "SELECT pg_backend_pid()").await.unwrap().parse().unwrap();
    let stale = first.cancel_token();

    let second = router.connect("pgdog", "pgdog", "pgdog").await;
    let token = second.cancel_token();
    let marker = "cancel-isolation";
    let query = tokio::spawn(async move { second.simple_query(&format!("SELECT pg_sleep(30), '{marker}'")).await });
    let running = wait_until(DEADLINE, || async { server_running(marker, Some(backend)) }).await;
    assert!(running, "second client's query not running on backend {backend}{}", log_tail(&router));

    stale.cancel_query(NoTls).await.expect("send the first client's CancelRequest");
    // Give a wrongly forwarded cancel ample time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server_running(marker, Some(backend)),
        "the first client's cancel key cancelled the second client's query{}",
        log_tail(&router)
    );

    token.cancel_query(NoTls).await.expect("send the second client's CancelRequest");
    let err = query.await.expect("query task").expect_err("pg_sleep(30) was not cancelled");
    assert_eq!(db_error(&err).0, "57014");
    assert_eq!(scalar(&first, "SELECT 1").await.unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_backend_key_is_the_server_pid() {
    let router = start("");
    let mut session = RawSession::trust_login(router.port, "sesstrust", "pgdog").expect("raw trust login");
    let result = session.simple_query("SELECT pg_backend_pid()").expect("query").expect("pg_backend_pid()");
    assert_eq!(result.rows, vec![vec![Some(session.pid.to_string())]], "BackendKeyData pid is not the server pid");

    // A CancelRequest with the wrong secret must not cancel anything; the
    // right one must.
    let marker = "raw-cancel-session";
    session.send_query(&format!("SELECT pg_sleep(30), '{marker}'")).expect("send query");
    let pid = session.pid;
    assert!(wait_until(DEADLINE, || async { server_running(marker, Some(pid)) }).await, "query never started");

    let mut bogus = raw_connect(router.port);
    wire::send(&mut bogus, &wire::cancel_request(session.pid, session.secret.wrapping_add(1))).unwrap();
    // The router closes a cancel connection once it has dealt with it.
    let reply = wire::read_until_close(&mut bogus);
    assert!(reply.closed() && reply.messages.is_empty(), "bogus cancel: {}", reply.describe());
    assert!(server_running(marker, Some(pid)), "a CancelRequest with the wrong secret cancelled the query");

    let started = Instant::now();
    let mut cancel = raw_connect(router.port);
    wire::send(&mut cancel, &wire::cancel_request(session.pid, session.secret)).unwrap();
    let outcome = session.read_result().expect("result of the cancelled query");
    let err = outcome.expect_err("pg_sleep(30) was not cancelled");
    assert_eq!(err.code, "57014", "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "cancel took {:?}", started.elapsed());

    let again = session.simple_query("SELECT pg_backend_pid()").expect("query").expect("after cancel");
    assert_eq!(again.rows, vec![vec![Some(session.pid.to_string())]], "session mode changed server");
    session.close();
}

// ---------------------------------------------------------------------------
// 6. Malformed and unusual input
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_startup_packets() {
    let mut router = start("");
    let port = router.port;

    // Over PostgreSQL's 10,000-byte startup limit, sent in full.
    let big = "x".repeat(10_000);
    let packet = wire::startup_message(&[("user", "pgdog"), ("application_name", &big)]);
    assert!(packet.len() > 10_000);
    assert_protocol_violation(&send_and_collect(port, &packet), "10 KB startup packet");
    assert_still_serving(&mut router, "an oversized startup packet").await;

    for (len, what) in [(3i32, "length 3"), (-1, "length -1"), (0, "length 0")] {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&wire::PROTOCOL_3_0.to_be_bytes());
        assert_protocol_violation(&send_and_collect(port, &bytes), what);
        assert_still_serving(&mut router, what).await;
    }

    let reply = send_and_collect(port, b"GET / HTTP/1.1\r\n\r\n");
    assert_protocol_violation(&reply, "HTTP request");
    assert_still_serving(&mut router, "an HTTP request").await;

    // Truncated, then the client hangs up: nothing to answer, just close.
    let packet = wire::startup_message(&[("user", "pgdog"), ("database", "pgdog")]);
    let mut s = raw_connect(port);
    wire::send(&mut s, &packet[..packet.len() - 6]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let reply = wire::read_until_close(&mut s);
    assert!(reply.closed(), "truncated startup: {}", reply.describe());
    assert!(reply.messages.iter().all(|m| m.tag == b'E'), "truncated startup: {}", reply.describe());
    drop(s);
    assert_still_serving(&mut router, "a truncated startup packet").await;

    // A StartupMessage without a user.
    let reply = send_and_collect(port, &wire::startup_message(&[("database", "pgdog")]));
    assert!(reply.closed(), "no user: {}", reply.describe());
    let err = reply.first_error().unwrap_or_else(|| panic!("no user: {}", reply.describe()));
    assert_eq!(err.code, "28000", "no user: {err}");
    assert_still_serving(&mut router, "a startup without a user").await;

    // Protocol 2.0 is long gone.
    let packet = wire::startup_packet(2 << 16, &[("user", "pgdog"), ("database", "pgdog")]);
    let reply = send_and_collect(port, &packet);
    assert!(reply.closed(), "protocol 2.0: {}", reply.describe());
    let err = reply.first_error().unwrap_or_else(|| panic!("protocol 2.0: {}", reply.describe()));
    assert!(matches!(err.code.as_str(), "08P01" | "0A000"), "protocol 2.0: {err}");
    assert!(err.message.contains("protocol"), "protocol 2.0: {err}");
    assert_still_serving(&mut router, "a protocol 2.0 startup").await;
}

#[tokio::test]
async fn malformed_messages_after_login() {
    let mut router = start("");
    let cases: [(&str, &[u8]); 2] = [("length 2", b"Q\0\0\0\x02"), ("length 0x7fffffff", b"Q\x7f\xff\xff\xff")];
    for user in ["trustclient", "sesstrust"] {
        for (what, bytes) in cases {
            let what = format!("{user}: 'Q' with {what}");
            let mut session = RawSession::trust_login(router.port, user, "pgdog").expect("raw trust login");
            // Prove the session works before breaking it.
            let ok = session.simple_query("SELECT 1").expect("query").expect("SELECT 1");
            assert_eq!(ok.rows, vec![vec![Some("1".to_string())]]);
            let _ = wire::send(&mut session.stream, bytes);
            let reply = wire::read_until_close(&mut session.stream);
            assert_protocol_violation(&reply, &what);
            assert_still_serving(&mut router, &what).await;
        }
    }
}

/// Connect, send a StartupMessage for `user` and check the first auth
/// request is `code`; returns the connection, mid-authentication.
fn begin_auth(port: u16, user: &str, code: i32) -> std::net::TcpStream {
    let mut s = raw_connect(port);
    wire::send(&mut s, &wire::startup_message(&[("user", user), ("database", "pgdog")])).unwrap();
    let first = wire::read_message(&mut s).expect("authentication request");
    assert_eq!(first.auth_code(), Some(code), "{user}: {}", first.describe());
    s
}

#[tokio::test]
async fn malformed_authentication_messages() {
    let mut router = start("");
    let mut too_long = vec![b'p'];
    too_long.extend_from_slice(&100_004i32.to_be_bytes());
    let cases: [(&str, i32, Vec<u8>); 8] = [
        ("pgdog", 10, wire::query_message("SELECT 1")),
        ("pgdog", 10, b"p\0\0\0\x03".to_vec()),
        ("pgdog", 10, too_long.clone()),
        ("pgdog", 10, wire::sasl_initial_response("SCRAM-SHA-1", b"n,,n=,r=abc")),
        ("pgdog", 10, wire::sasl_initial_response("SCRAM-SHA-256", b"not a client-first-message")),
        ("pgdog", 10, wire::sasl_initial_response("SCRAM-SHA-256", b"p=tls-server-end-point,,n=,r=abc")),
        ("md5client", 5, wire::query_message("SELECT 1")),
        ("md5client", 5, too_long),
    ];
    for (user, code, bytes) in cases {
        let what = format!("{user}: {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(40)]));
        let mut s = begin_auth(router.port, user, code);
        let _ = wire::send(&mut s, &bytes);
        assert_protocol_violation(&wire::read_until_close(&mut s), &what);
        assert_still_serving(&mut router, &what).await;
    }

    // A well-formed but wrong MD5 response is a wrong password, not a protocol error.
    let mut s = begin_auth(router.port, "md5client", 5);
    wire::send(&mut s, &wire::password_message("md50123456789abcdef0123456789abcdef")).unwrap();
    let reply = wire::read_until_close(&mut s);
    let err = reply.first_error().unwrap_or_else(|| panic!("wrong md5 hash: {}", reply.describe()));
    assert_eq!(err.code, "28P01", "{err}");
    assert!(reply.closed(), "{}", reply.describe());
}

#[tokio::test]
async fn stalled_logins_are_dropped_after_the_login_timeout() {
    let mut router = start("client_login_timeout_ms = 1000");
    // Both at once: one says nothing, one stops in the middle of SCRAM.
    let mut silent = raw_connect(router.port);
    let mut stalled = begin_auth(router.port, "pgdog", 10);
    for (what, s) in [("silent client", &mut silent), ("stalled SCRAM", &mut stalled)] {
        let reply = wire::read_until_close(s);
        assert!(reply.closed(), "{what} still connected: {}{}", reply.describe(), log_tail(&router));
        assert!(reply.messages.iter().all(|m| m.tag == b'E'), "{what}: {}", reply.describe());
    }
    assert_still_serving(&mut router, "stalled logins").await;
}

#[tokio::test]
async fn replication_connections_are_refused() {
    let mut router = start("");
    for mode in ["database", "true"] {
        let packet = wire::startup_message(&[("user", "pgdog"), ("database", "pgdog"), ("replication", mode)]);
        let reply = send_and_collect(router.port, &packet);
        assert!(reply.closed(), "replication={mode}: {}", reply.describe());
        let err = reply.first_error().unwrap_or_else(|| panic!("replication={mode}: {}", reply.describe()));
        assert_eq!(err.code, "0A000", "replication={mode}: {err}");
        assert!(err.message.contains("replication"), "replication={mode}: {err}");
    }
    assert_still_serving(&mut router, "replication startups").await;
}

#[tokio::test]
async fn newer_protocol_versions_are_negotiated_down() {
    let router = start("");

    // 3.2: NegotiateProtocolVersion (3.0, no unknown options) comes first.
    let startup = wire::startup_packet(wire::PROTOCOL_3_2, &[("user", "trustclient"), ("database", "pgdog")]);
    let mut session = RawSession::login(raw_connect(router.port), &startup).expect("protocol 3.2 login");
    let tags: Vec<u8> = session.greeting.iter().map(|m| m.tag).collect();
    assert_eq!(session.greeting[0].tag, b'v', "greeting: {:?}", String::from_utf8_lossy(&tags));
    assert_eq!(session.greeting[0].body, [0, 0, 0, 0, 0, 0, 0, 0], "minor 0, no options");
    assert_eq!(session.greeting[1].auth_code(), Some(0), "then AuthenticationOk");
    let result = session.simple_query("SELECT 1").expect("query").expect("SELECT 1");
    assert_eq!(result.rows, vec![vec![Some("1".to_string())]]);
    session.close();

    // A password user: NegotiateProtocolVersion, then AuthenticationSASL.
    let mut s = raw_connect(router.port);
    wire::send(&mut s, &wire::startup_packet(wire::PROTOCOL_3_2, &[("user", "pgdog"), ("database", "pgdog")])).unwrap();
    let first = wire::read_message(&mut s).expect("first reply");
    assert_eq!(first.tag, b'v', "{}", first.describe());
    let second = wire::read_message(&mut s).expect("second reply");
    assert_eq!(second.auth_code(), Some(10), "{}", second.describe());
    drop(s);

    // Unknown `_pq_.` options are listed back.
    let startup =
        wire::startup_message(&[("user", "trustclient"), ("database", "pgdog"), ("_pq_.test_extension", "on")]);
    let mut session = RawSession::login(raw_connect(router.port), &startup).expect("login with _pq_ option");
    let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 1];
    expected.extend_from_slice(b"_pq_.test_extension\0");
    assert_eq!(session.greeting[0].tag, b'v');
    assert_eq!(session.greeting[0].body, expected);
    let result = session.simple_query("SELECT 1").expect("query").expect("SELECT 1");
    assert_eq!(result.rows, vec![vec![Some("1".to_string())]]);
    session.close();
}

// ---------------------------------------------------------------------------
// 7. Shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_lets_an_open_transaction_commit() {
    let cluster = shared_cluster();
    cluster.psql_admin("CREATE TABLE auth_shutdown_graceful (id int, note text)");
    let mut router = start("shutdown_timeout_ms = 20000");

    let client = router.connect("pgdog", "pgdog", "pgdog").await;
    client.batch_execute("BEGIN; INSERT INTO auth_shutdown_graceful VALUES (1, 'in flight')").await.unwrap();
    router.signal(libc::SIGTERM);

    // New logins are refused (57P03) or the port is closed.
    let refused = wait_until(DEADLINE, || async {
        match router.try_connect("pgdog", "pgdog", "pgdog").await {
            Ok(_) => false,
            Err(e) => match e.as_db_error() {
                Some(db) => db.code().code() == "57P03",
                None => true,
            },
        }
    })
    .await;
    assert!(refused, "new connections still accepted after SIGTERM{}", log_tail(&router));

    client
        .batch_execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("COMMIT during shutdown: {e:?}{}", log_tail(&router)));
    assert_eq!(cluster.psql_admin("SELECT count(*) FROM auth_shutdown_graceful WHERE note = 'in flight'"), "1");

    let status = router.wait_exit(DEADLINE);
    let status = status.unwrap_or_else(|| panic!("router still running after the last client{}", log_tail(&router)));
    assert!(status.success(), "exit status {status}{}", log_tail(&router));
}

#[tokio::test]
async fn sigterm_shutdown_timeout_ends_an_abandoned_transaction() {
    let cluster = shared_cluster();
    cluster.psql_admin("CREATE TABLE auth_shutdown_timeout (id int, note text)");
    let mut router = start("shutdown_timeout_ms = 1000");

    let client = router.connect("pgdog", "pgdog", "pgdog").await;
    client.batch_execute("BEGIN; INSERT INTO auth_shutdown_timeout VALUES (1, 'abandoned')").await.unwrap();
    let signalled = Instant::now();
    router.signal(libc::SIGTERM);

    let status = router.wait_exit(DEADLINE);
    let status = status.unwrap_or_else(|| panic!("router ignored shutdown_timeout_ms{}", log_tail(&router)));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}{}", log_tail(&router));
    assert!(took < Duration::from_secs(10), "shutdown took {took:?} with shutdown_timeout_ms = 1000");
    assert!(router.log().contains("shutdown timeout reached"), "{}", log_tail(&router));

    // The transaction did not survive, let alone commit.
    assert!(client.batch_execute("COMMIT").await.is_err(), "COMMIT succeeded after the router exited");
    let gone = wait_until(DEADLINE, || async {
        cluster.psql_admin(
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' \
             AND query LIKE '%auth_shutdown_timeout%' AND pid <> pg_backend_pid()",
        ) == "0"
    })
    .await;
    assert!(gone, "server connection still idle in transaction after the router exited");
    assert_eq!(cluster.psql_admin("SELECT count(*) FROM auth_shutdown_timeout"), "0");
}

// ---------------------------------------------------------------------------
// 8. Reload
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sighup_reload_adds_users_and_survives_a_broken_file() {
    let router = RouterProcess::start(&config(""), &default_users());
    let old = router.connect("pgdog", "pgdog", "pgdog").await;
    assert_eq!(scalar(&old, "SELECT 1").await.unwrap(), "1");

    let err = router.try_connect("newuser", "newpass", "pgdog").await.expect_err("newuser exists before reload");
    assert_eq!(db_error(&err).0, "28P01");

    // newuser is added; pgdog's client password changes while the old
    // client, logged in as pgdog, stays connected.
    let changed =
        default_users().replacen("password = \"pgdog\"\n", "password = \"pgdog2\"\nserver_password = \"pgdog\"\n", 1);
    assert_ne!(changed, default_users());
    let added = format!(
        "{changed}\n[[users]]\nname = \"newuser\"\npassword = \"newpass\"\ndatabase = \"pgdog\"\n\
         server_user = \"pgdog\"\nserver_password = \"pgdog\"\n"
    );
    router.write_users(&added);
    router.signal(libc::SIGHUP);
    let reloaded =
        wait_until(DEADLINE, || async { router.try_connect("newuser", "newpass", "pgdog").await.is_ok() }).await;
    assert!(reloaded, "newuser cannot log in after SIGHUP{}", log_tail(&router));
    let client = router.connect("newuser", "newpass", "pgdog").await;
    assert_eq!(scalar(&client, "SELECT current_user::text").await.unwrap(), "pgdog");
    let err = router.try_connect("pgdog", "pgdog", "pgdog").await.expect_err("old password still accepted");
    assert_eq!(db_error(&err).0, "28P01");
    let client = router.connect("pgdog", "pgdog2", "pgdog").await;
    assert_eq!(scalar(&client, "SELECT 1").await.unwrap(), "1");
    assert_eq!(scalar(&old, "SELECT 2").await.expect("old client after reload"), "2");

    router.write_users("[[users]]\nname = \"broken\"\npassword = \n");
    router.signal(libc::SIGHUP);
    assert!(router.wait_for_log("reload failed", DEADLINE), "no reload error logged{}", log_tail(&router));
    let log = router.log();
    let line = log.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(line.contains("users.toml"), "reload error does not name the file: {line}");

    // The running configuration stays.
    let client = router.connect("pgdog", "pgdog2", "pgdog").await;
    assert_eq!(scalar(&client, "SELECT 3").await.unwrap(), "3");
    let client = router.connect("newuser", "newpass", "pgdog").await;
    assert_eq!(scalar(&client, "SELECT 4").await.unwrap(), "4");
    assert_eq!(scalar(&old, "SELECT 5").await.expect("old client after failed reload"), "5");
}

/// A SIGHUP that arrives as soon as the router accepts connections must
/// reload, not kill it (an orchestrator reloads once the port is up). The
/// window is short, so up to 30 routers are tried, each signalled the moment
/// its port answers.
#[test]
fn sighup_right_after_startup_reloads_instead_of_killing() {
    use std::os::unix::process::ExitStatusExt;
    // Only a trust user: nothing to derive, so start-up and reload are quick.
    let users = "[[users]]\nname = \"t\"\ndatabase = \"pgdog\"\nauth = \"trust\"\nserver_user = \"trustuser\"\n";
    for attempt in 0..30 {
        let mut router = RouterProcess::spawn(&config(""), users);
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", router.port)).is_err() {
            assert!(router.child.try_wait().unwrap().is_none(), "router exited during start-up{}", log_tail(&router));
            assert!(Instant::now() < deadline, "router never listened{}", log_tail(&router));
            std::thread::sleep(Duration::from_millis(1));
        }
        router.signal(libc::SIGHUP);
        let deadline = Instant::now() + DEADLINE;
        while !router.log().contains("configuration reloaded") {
            if let Some(status) = router.wait_exit(Duration::from_millis(20)) {
                panic!(
                    "attempt {attempt}: SIGHUP sent once the port accepted connections killed the router \
                     ({status}, signal {:?}){}",
                    status.signal(),
                    log_tail(&router)
                );
            }
            assert!(Instant::now() < deadline, "attempt {attempt}: SIGHUP not handled{}", log_tail(&router));
        }
    }
}

// ---------------------------------------------------------------------------
// 9. Configuration errors
// ---------------------------------------------------------------------------

/// 1-based number of the first line of `text` starting with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines().position(|l| l.starts_with(prefix)).map(|i| i + 1).expect("line present")
}

#[test]
fn config_errors_stop_startup_naming_file_line_and_key() {
    let cluster = shared_cluster();
    let ports = || (free_port(), free_port(), free_port());

    let (p, a, m) = ports();
    let unknown_key = router_config(cluster, "bogus_key = 1", "", p, a, m);
    let (p, a, m) = ports();
    let out_of_range = router_config(cluster, "", "[pools.default]\nmax_pool_size = 0", p, a, m);
    let users_unknown = format!("{}colour = \"blue\"\n", default_users());
    let (p, a, m) = ports();
    let good = router_config(cluster, "", "", p, a, m);

    let cases = [
        (
            "unknown key in [general]",
            unknown_key.clone(),
            default_users(),
            "pgdog.toml",
            line_of(&unknown_key, "bogus_key"),
            "bogus_key",
        ),
        (
            "out-of-range pool size",
            out_of_range.clone(),
            default_users(),
            "pgdog.toml",
            line_of(&out_of_range, "max_pool_size"),
            "pools.default.max_pool_size",
        ),
        (
            "unknown key in users.toml",
            good,
            users_unknown.clone(),
            "users.toml",
            line_of(&users_unknown, "colour"),
            "colour",
        ),
    ];
    for (what, config, users, file, line, key) in cases {
        let mut router = RouterProcess::spawn(&config, &users);
        let status = router.wait_exit(Duration::from_secs(30));
        let status = status.unwrap_or_else(|| panic!("{what}: router started anyway{}", log_tail(&router)));
        assert!(!status.success(), "{what}: exit status {status}");
        let log = router.log();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{what}: expected one line of error, got:\n{log}");
        let message = lines[0];
        assert!(message.contains(&format!("{file}:{line}:")), "{what}: no {file}:{line}: in {message}");
        assert!(message.contains(key), "{what}: key {key} not named in {message}");
    }
}

// ---------------------------------------------------------------------------
// 10. Startup options
// ---------------------------------------------------------------------------

#[tokio::test]
async fn startup_options_are_applied() {
    let router = start("");
    for user in [("pgdog", "pgdog"), ("sess", "sesspass")] {
        let client = connect_with(router.port, user.0, user.1, "pgdog", Some("-c statement_timeout=100"))
            .await
            .unwrap_or_else(|e| panic!("{}: login with options: {e:?}{}", user.0, log_tail(&router)));
        assert_eq!(scalar(&client, "SHOW statement_timeout").await.unwrap(), "100ms", "{}", user.0);
        let err = client.simple_query("SELECT pg_sleep(1)").await.expect_err("statement_timeout not in force");
        let (code, message) = db_error(&err);
        assert_eq!(code, "57014", "{}: {message}", user.0);
        assert!(message.contains("statement timeout"), "{}: {message}", user.0);
    }
    // A client without options is not affected by another's.
    let plain = router.connect("pgdog", "pgdog", "pgdog").await;
    assert_eq!(scalar(&plain, "SHOW statement_timeout").await.unwrap(), "0");
}

#[tokio::test]
async fn unsupported_startup_option_is_refused() {
    let mut router = start("");
    let err = connect_with(router.port, "pgdog", "pgdog", "pgdog", Some("-B 100"))
        .await
        .expect_err("login with -B 100 accepted");
    let (code, message) = db_error(&err);
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("-B"), "refusal does not name the option: {message}");
    assert_still_serving(&mut router, "an unsupported option").await;
}

/// PostgreSQL refuses a login whose settings it cannot apply (FATAL 22023
/// or 42704). The router must too, whether or not its pool already has
/// server connections: accepting the login and failing every query after
/// it leaves the client with a session that can never work.
#[tokio::test]
async fn invalid_startup_settings_are_refused_at_login() {
    let router = start("");
    // Warm the pool so the login does not need a fresh server connection.
    let warm = router.connect("pgdog", "pgdog", "pgdog").await;
    assert_eq!(scalar(&warm, "SELECT 1").await.unwrap(), "1");

    for (options, expected) in [("-c statement_timeout=banana", "22023"), ("-c no_such_setting=1", "42704")] {
        match connect_with(router.port, "pgdog", "pgdog", "pgdog", Some(options)).await {
            Err(e) => assert_eq!(db_error(&e).0, expected, "{options}"),
            Ok(client) => {
                let query = client.simple_query("SELECT 1").await;
                panic!("login with {options} accepted; then SELECT 1 gave {query:?}");
            }
        }
    }
}
