//! Secrets: turn a `[[users]]` entry as written ([`UserEntry`]) into the
//! [`User`] the router runs with.
//!
//! A password can be written in the file (`password`), named by an environment
//! variable (`password_env`, for orchestrators that inject secrets as
//! variables) or read from a file (`password_file`, for mounted secrets; one
//! trailing newline is dropped because `echo` and most editors add it). At most
//! one form may be used, so there is never a question of which one wins.
//! Relative `*_file` paths are resolved against the router's working
//! directory; use absolute paths.
//!
//! The stored client password is plaintext, a `SCRAM-SHA-256$...` verifier or
//! an `md5` + 32 hex digits hash. Only plaintext can be replayed to the server,
//! so `server_password` defaults to the client password only then. With a
//! verifier or hash and no `server_password`, the router logs in to the server
//! without a password: the server must trust that user (`pg_hba.conf`), or
//! `server_password` must be set.

use super::load::{io_reason, Issue, KeyPath, DEFAULT_POOL};
use super::types::{AuthMethod, User, UserEntry};

/// What a stored password string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordKind {
    Plain,
    Scram,
    Md5,
}

/// Classify a stored password. `SCRAM-SHA-256$` and `md5` + 32 hex digits are
/// PostgreSQL's own verifier formats (as in `pg_authid.rolpassword`).
pub(crate) fn password_kind(password: &str) -> PasswordKind {
    if password.starts_with("SCRAM-SHA-256$") {
        PasswordKind::Scram
    } else if password.len() == 35
        && password.starts_with("md5")
        && password[3..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        PasswordKind::Md5
    } else {
        PasswordKind::Plain
    }
}

/// Resolve entry number `index` of `users.toml`.
pub(crate) fn resolve_user(
    entry: &UserEntry,
    index: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<User, Issue> {
    let at = KeyPath::new("users").index(index);
    let who = format!("user {:?}", entry.name);
    if entry.name.is_empty() {
        return Err(Issue::users(at.key("name"), "user name must not be empty"));
    }

    let password = resolve_secret(
        &at,
        &who,
        ["password", "password_env", "password_file"],
        [&entry.password, &entry.password_env, &entry.password_file],
        env,
    )?;
    let server_password = resolve_secret(
        &at,
        &who,
        ["server_password", "server_password_env", "server_password_file"],
        [&entry.server_password, &entry.server_password_env, &entry.server_password_file],
        env,
    )?;

    let kind = password.as_deref().map(password_kind);
    match (entry.auth, kind) {
        (AuthMethod::Trust, _) => {}
        (AuthMethod::Scram | AuthMethod::Md5, None) => {
            let method = if entry.auth == AuthMethod::Scram { "scram" } else { "md5" };
            return Err(Issue::users(
                at.key("password"),
                format!("{who} has auth = \"{method}\" but no password (set password, password_env or password_file)"),
            ));
        }
        (AuthMethod::Md5, Some(PasswordKind::Scram)) => {
            return Err(Issue::users(
                at.key("auth"),
                format!(
                    "{who} has auth = \"md5\" but a SCRAM-SHA-256 verifier is stored, and MD5 cannot be verified \
                     from it (store the plaintext password or an md5 hash, or use auth = \"scram\")"
                ),
            ));
        }
        (AuthMethod::Scram, Some(PasswordKind::Md5)) => {
            return Err(Issue::users(
                at.key("auth"),
                format!(
                    "{who} has auth = \"scram\" but an md5 hash is stored, and SCRAM cannot be verified \
                     from it (store the plaintext password or a SCRAM-SHA-256 verifier, or use auth = \"md5\")"
                ),
            ));
        }
        (AuthMethod::Scram | AuthMethod::Md5, Some(_)) => {}
    }

    let server_password = server_password.or_else(|| match kind {
        Some(PasswordKind::Plain) => password.clone(),
        _ => None,
    });

    Ok(User {
        name: entry.name.clone(),
        password,
        database: entry.database.clone(),
        pool: entry.pool.clone().unwrap_or_else(|| DEFAULT_POOL.to_string()),
        pool_mode: entry.pool_mode,
        server_user: entry.server_user.clone().unwrap_or_else(|| entry.name.clone()),
        server_password,
        auth: entry.auth,
        force_replica: entry.force_replica,
    })
}

/// The HTTP API's bearer token: `PGDOG_API_TOKEN` when set (environment
/// wins over the file, as everywhere), else `api.token_file`, else the
/// variable `api.token_env` names. None disables the authenticated API.
pub(crate) fn resolve_api_token(
    api: &super::types::Api,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, Issue> {
    let at = KeyPath::new("api");
    if api.token_env.is_some() && api.token_file.is_some() {
        return Err(Issue::router(at.key("token_file"), "set at most one of api.token_env and api.token_file"));
    }
    if let Some(token) = env("PGDOG_API_TOKEN").filter(|t| !t.trim().is_empty()) {
        return Ok(Some(token.trim().to_string()));
    }
    let token = if let Some(path) = &api.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|err| Issue::router(at.key("token_file"), format!("cannot read {path}: {}", io_reason(&err))))?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(var) = &api.token_env {
        env(var)
            .ok_or_else(|| Issue::router(at.key("token_env"), format!("environment variable {var:?} is not set")))?
    } else {
        return Ok(None);
    };
    if token.trim().is_empty() {
        let key = if api.token_file.is_some() { "token_file" } else { "token_env" };
        return Err(Issue::router(at.key(key), "the API token is empty"));
    }
    Ok(Some(token))
}

/// One secret given as a literal, an environment variable name or a file
/// path; at most one of the three may be set.
fn resolve_secret(
    at: &KeyPath,
    who: &str,
    keys: [&str; 3],
    values: [&Option<String>; 3],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, Issue> {
    let set: Vec<usize> = (0..3).filter(|&i| values[i].is_some()).collect();
    if set.len() > 1 {
        let names: Vec<&str> = set.iter().map(|&i| keys[i]).collect();
        return Err(Issue::users(
            at.key(keys[set[1]]),
            format!("{who} sets {}; set exactly one of {}", names.join(" and "), keys.join(", ")),
        ));
    }
    let Some(&which) = set.first() else {
        return Ok(None);
    };
    let key = at.key(keys[which]);
    let given = values[which].as_deref().unwrap_or_default();
    let secret = match which {
        0 => given.to_string(),
        1 => env(given)
            .ok_or_else(|| Issue::users(key.clone(), format!("{who}: environment variable {given:?} is not set")))?,
        _ => {
            let text = std::fs::read_to_string(given)
                .map_err(|err| Issue::users(key.clone(), format!("{who}: cannot read {given}: {}", io_reason(&err))))?;
            let trimmed = text.strip_suffix('\n').unwrap_or(&text);
            trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string()
        }
    };
    if secret.is_empty() {
        return Err(Issue::users(key, format!("{who}: {} is empty", keys[0])));
    }
    Ok(Some(secret))
}

#[cfg(test)]
mod tests {
    use super::super::load::parse_str;
    use super::*;
    use std::io::Write;

    const DB: &str = "[[databases]]\nname = \"postgres\"\nhost = \"127.0.0.1\"\n";
    const SCRAM: &str = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVkS2V5$c2VydmVyS2V5";
    const MD5: &str = "md5a3556571e93b0d20722ba62be61e8c2d";

    fn env(name: &str) -> Option<String> {
        match name {
            "ALICE_PW" => Some("from-env".into()),
            "EMPTY_PW" => Some(String::new()),
            _ => None,
        }
    }

    fn load(users: &str) -> Result<Vec<User>, String> {
        parse_str(DB, "pgdog.toml", users, "users.toml", &env).map(|c| c.users).map_err(|e| e.to_string())
    }

    fn user(body: &str) -> Result<User, String> {
        load(&format!("[[users]]\nname = \"alice\"\ndatabase = \"postgres\"\n{body}")).map(|mut u| u.remove(0))
    }

    fn secret_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    #[test]
    fn classifies_stored_passwords() {
        assert_eq!(password_kind("hunter2"), PasswordKind::Plain);
        assert_eq!(password_kind(SCRAM), PasswordKind::Scram);
        assert_eq!(password_kind(MD5), PasswordKind::Md5);
        assert_eq!(password_kind("md5notreallyahash"), PasswordKind::Plain);
    }

    #[test]
    fn plaintext_password_defaults_server_side() {
        let u = user("password = \"pw\"\n").unwrap();
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.server_user, "alice");
        assert_eq!(u.server_password.as_deref(), Some("pw"));
        assert_eq!(u.pool, "default");
    }

    #[test]
    fn verifiers_do_not_become_server_passwords() {
        for (auth, stored) in [("scram", SCRAM), ("md5", MD5)] {
            let u = user(&format!("auth = \"{auth}\"\npassword = \"{stored}\"\n")).unwrap();
            assert_eq!(u.password.as_deref(), Some(stored));
            assert_eq!(u.server_password, None, "{auth}");
        }
        let u = user(&format!("password = \"{SCRAM}\"\nserver_user = \"app\"\nserver_password = \"real\"\n")).unwrap();
        assert_eq!((u.server_user.as_str(), u.server_password.as_deref()), ("app", Some("real")));
    }

    #[test]
    fn md5_auth_accepts_plaintext() {
        let u = user("auth = \"md5\"\npassword = \"pw\"\n").unwrap();
        assert_eq!(u.auth, AuthMethod::Md5);
    }

    #[test]
    fn trust_needs_no_password() {
        let u = user("auth = \"trust\"\n").unwrap();
        assert_eq!((u.password, u.server_password), (None, None));
    }

    #[test]
    fn password_from_env() {
        let u = user("password_env = \"ALICE_PW\"\n").unwrap();
        assert_eq!(u.password.as_deref(), Some("from-env"));
        assert_eq!(u.server_password.as_deref(), Some("from-env"));
        let u = user("auth = \"trust\"\nserver_password_env = \"ALICE_PW\"\n").unwrap();
        assert_eq!((u.password, u.server_password.as_deref()), (None, Some("from-env")));
    }

    #[test]
    fn password_from_file_drops_one_trailing_newline() {
        for (contents, expected) in
            [("s3cret\n", "s3cret"), ("s3cret\r\n", "s3cret"), ("s3cret", "s3cret"), ("two\n\n", "two\n")]
        {
            let file = secret_file(contents);
            let path = file.path().display();
            let u = user(&format!("password_file = \"{path}\"\nserver_password_file = \"{path}\"\n")).unwrap();
            assert_eq!(u.password.as_deref(), Some(expected));
            assert_eq!(u.server_password.as_deref(), Some(expected));
        }
    }

    /// (case, entry body, expected "users.toml:line:col: key" start, words in the message)
    #[test]
    fn secret_errors_name_user_and_key() {
        let empty = secret_file("\n");
        let empty = format!("password_file = \"{}\"\n", empty.path().display());
        let cases: Vec<(&str, String, &str, &[&str])> = vec![
            (
                "two sources",
                "password = \"a\"\npassword_env = \"ALICE_PW\"\n".into(),
                "users.toml:5:1: users[0].password_env:",
                &[
                    "user \"alice\" sets password and password_env",
                    "exactly one of password, password_env, password_file",
                ],
            ),
            (
                "two server sources",
                "password = \"a\"\nserver_password_file = \"/x\"\nserver_password = \"b\"\n".into(),
                "users.toml:5:1: users[0].server_password_file:",
                &["sets server_password and server_password_file"],
            ),
            (
                "missing variable",
                "password_env = \"NOPE_PW\"\n".into(),
                "users.toml:4:1: users[0].password_env:",
                &["user \"alice\": environment variable \"NOPE_PW\" is not set"],
            ),
            (
                "empty variable",
                "password_env = \"EMPTY_PW\"\n".into(),
                "users.toml:4:1: users[0].password_env:",
                &["password is empty"],
            ),
            (
                "missing file",
                "password_file = \"/nonexistent/pgdog-pw\"\n".into(),
                "users.toml:4:1: users[0].password_file:",
                &["cannot read /nonexistent/pgdog-pw: No such file or directory"],
            ),
            ("empty file", empty, "users.toml:4:1: users[0].password_file:", &["password is empty"]),
            (
                "no password for scram",
                String::new(),
                "users.toml:1:1: users[0].password:",
                &["user \"alice\" has auth = \"scram\" but no password"],
            ),
            (
                "no password for md5",
                "auth = \"md5\"\n".into(),
                "users.toml:1:1: users[0].password:",
                &["auth = \"md5\" but no password"],
            ),
            (
                "md5 with scram verifier",
                format!("auth = \"md5\"\npassword = \"{SCRAM}\"\n"),
                "users.toml:4:1: users[0].auth:",
                &["MD5 cannot be verified"],
            ),
            (
                "scram with md5 hash",
                format!("password = \"{MD5}\"\n"),
                "users.toml:1:1: users[0].auth:",
                &["SCRAM cannot be verified"],
            ),
        ];
        for (case, body, start, words) in cases {
            let err = user(&body).expect_err(case);
            assert!(err.starts_with(start), "{case}: {err}");
            for word in words {
                assert!(err.contains(word), "{case}: {err:?} lacks {word:?}");
            }
        }
    }

    #[test]
    fn empty_name_is_an_error() {
        let err = load("[[users]]\nname = \"\"\ndatabase = \"postgres\"\nauth = \"trust\"\n").unwrap_err();
        assert!(err.starts_with("users.toml:2:1: users[0].name: user name must not be empty"), "{err}");
    }
}
