//! Parsing admin console commands: case-insensitive keywords, an optional
//! database argument, with or without a trailing `;`. Pure, so every form
//! is unit-tested.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    Reload,
    Pause(Option<String>),
    Resume(Option<String>),
    Reconnect(Option<String>),
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Pools,
    Clients,
    Servers,
    Stats,
    Databases,
    Config,
    Version,
    /// The read/write classifier's cache of query shapes, per worker.
    QueryCache,
}

/// What the console accepts, for the 42601 error text.
pub const SUPPORTED: &str = "SHOW POOLS, SHOW CLIENTS, SHOW SERVERS, SHOW STATS, SHOW DATABASES, SHOW CONFIG, \
                             SHOW VERSION, SHOW QUERY_CACHE, RELOAD, PAUSE [db], RESUME [db], RECONNECT [db], \
                             SHUTDOWN";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

/// Parses one statement (already split at `;`).
pub fn parse(text: &str) -> Result<Command, ParseError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let unknown = || ParseError(format!("unsupported admin command \"{}\"", text.trim()));
    // The argument of PAUSE/RESUME/RECONNECT: one word, or a quoted name.
    let database = || -> Result<Option<String>, ParseError> {
        let rest = text.trim_start();
        let rest = rest.get(words.first().map_or(0, |w| w.len())..).unwrap_or("").trim();
        if rest.is_empty() {
            return Ok(None);
        }
        if rest.len() >= 2 && rest.starts_with('"') && rest.ends_with('"') && !rest[1..rest.len() - 1].contains('"') {
            return Ok(Some(rest[1..rest.len() - 1].to_string()));
        }
        if rest.split_whitespace().count() == 1 && !rest.contains('"') {
            return Ok(Some(rest.to_string()));
        }
        Err(unknown())
    };
    // Quoted names may hold spaces: only the keywords are matched by word.
    let upper: Vec<String> = match upper.first().map(String::as_str) {
        Some("PAUSE" | "RESUME" | "RECONNECT") => upper[..1].to_vec(),
        _ => upper,
    };
    match upper.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["SHOW", what] => Ok(Command::Show(match *what {
            "POOLS" => Show::Pools,
            "CLIENTS" => Show::Clients,
            "SERVERS" => Show::Servers,
            "STATS" => Show::Stats,
            "DATABASES" => Show::Databases,
            "CONFIG" => Show::Config,
            "VERSION" => Show::Version,
            "QUERY_CACHE" => Show::QueryCache,
            _ => return Err(unknown()),
        })),
        ["RELOAD"] => Ok(Command::Reload),
        ["SHUTDOWN"] => Ok(Command::Shutdown),
        ["PAUSE"] => Ok(Command::Pause(database()?)),
        ["RESUME"] => Ok(Command::Resume(database()?)),
        ["RECONNECT"] => Ok(Command::Reconnect(database()?)),
        _ => Err(unknown()),
    }
}

/// Splits a simple-query string into statements at `;`, dropping empty ones.
/// Admin commands have no string literals, so no quoting to respect.
pub fn split(query: &str) -> Vec<&str> {
    query.split(';').map(str::trim).filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_that_parse() {
        let cases: &[(&str, Command)] = &[
            ("SHOW POOLS", Command::Show(Show::Pools)),
            ("show pools", Command::Show(Show::Pools)),
            ("  Show   Stats ", Command::Show(Show::Stats)),
            ("SHOW CLIENTS", Command::Show(Show::Clients)),
            ("SHOW SERVERS", Command::Show(Show::Servers)),
            ("SHOW DATABASES", Command::Show(Show::Databases)),
            ("SHOW CONFIG", Command::Show(Show::Config)),
            ("show version", Command::Show(Show::Version)),
            ("SHOW QUERY_CACHE", Command::Show(Show::QueryCache)),
            ("Show Query_Cache", Command::Show(Show::QueryCache)),
            ("reload", Command::Reload),
            ("PAUSE", Command::Pause(None)),
            ("pause app", Command::Pause(Some("app".into()))),
            ("PAUSE \"My Db\"", Command::Pause(Some("My Db".into()))),
            ("resume App", Command::Resume(Some("App".into()))),
            ("RECONNECT", Command::Reconnect(None)),
            ("shutdown", Command::Shutdown),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).as_ref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn forms_that_do_not() {
        for text in ["", "SHOW", "SHOW FOO", "SELECT 1", "PAUSE a b", "PAUSE \"a", "RELOAD now", "SHOW POOLS x"] {
            let err = parse(text).unwrap_err();
            assert!(err.0.starts_with("unsupported admin command"), "{text}: {err:?}");
        }
    }

    #[test]
    fn splitting() {
        assert_eq!(split("SHOW POOLS;"), ["SHOW POOLS"]);
        assert_eq!(split(" show pools ; show stats;;"), ["show pools", "show stats"]);
        assert!(split(" ; ").is_empty());
    }
}
