//! One run: resolve variables, render, validate with the router's own config
//! loader, write. Nothing is written unless the output would load.

use std::collections::BTreeSet;
use std::path::Path;

use crate::cli::{Cli, OutputKind};
use crate::{render, vars, write};

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

/// `--check CONFIG [USERS]`: validate existing files with the process environment.
pub fn check(files: &[String]) -> Result<String, String> {
    let config = Path::new(&files[0]);
    let users = files.get(1).map(Path::new);
    pgdog_router::config::load_files(config, users).map_err(|err| err.to_string())?;
    Ok(format!("{}: ok", files[0]))
}

/// Render `cli.template` and write it to `cli.output`.
pub fn generate(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    let template = cli.template.as_deref().ok_or("no -template given")?;
    let file_values = match &cli.values {
        Some(path) => vars::parse_values_file(&path.display().to_string(), &read(path)?).map_err(|e| e.to_string())?,
        None => vars::FileValues::default(),
    };
    let values = vars::resolve(&cli.flags, env, &file_values).map_err(|e| e.to_string())?;
    let name = template.display().to_string();
    let rendered = render::render(&name, &read(template)?, &values).map_err(|e| e.to_string())?;

    let output_name = if cli.output == "-" { "<stdout>".to_string() } else { cli.output.clone() };
    let kind = match cli.kind {
        OutputKind::Auto => {
            let file = template.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
            if file.starts_with("users") {
                OutputKind::Users
            } else {
                OutputKind::Router
            }
        }
        other => other,
    };
    match kind {
        OutputKind::Users => {
            let (router_name, router_toml) = match &cli.config {
                Some(path) => (path.display().to_string(), read(path)?),
                None => {
                    let sibling = template.with_file_name("pgdog.toml.tmpl");
                    if !sibling.exists() {
                        return Err(format!(
                            "{name}: a users file is validated against a router config: pass -config FILE \
                             (no {} to render)",
                            sibling.display()
                        ));
                    }
                    let sibling_name = sibling.display().to_string();
                    let text = render::render(&sibling_name, &read(&sibling)?, &values).map_err(|e| e.to_string())?;
                    (format!("{sibling_name} (rendered)"), text)
                }
            };
            validate(&router_toml, &router_name, &rendered, &output_name)?;
        }
        _ => validate(&rendered, &output_name, "", "users.toml")?,
    }
    write::write_output(&cli.output, &rendered).map_err(|err| format!("cannot write {output_name}: {err}"))
}

/// The rendered files as the router would load them, except that secrets named
/// by `*_env` keys get a placeholder (they exist only where the router runs)
/// and no environment overrides apply (the file must be valid on its own).
fn validate(router_toml: &str, router_name: &str, users_toml: &str, users_name: &str) -> Result<(), String> {
    let secret_vars = secret_env_names(users_toml);
    let env = |name: &str| secret_vars.contains(name).then(|| "config-gen-placeholder".to_string());
    pgdog_router::config::parse_str(router_toml, router_name, users_toml, users_name, &env)
        .map(|_| ())
        .map_err(|err| err.to_string())
}

/// Values of `password_env` / `server_password_env` in a users file.
fn secret_env_names(users_toml: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Ok(table) = users_toml.parse::<toml::Table>() else {
        return names;
    };
    if let Some(toml::Value::Array(users)) = table.get("users") {
        for user in users {
            for key in ["password_env", "server_password_env"] {
                if let Some(toml::Value::String(var)) = user.get(key) {
                    names.insert(var.clone());
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_come_from_users_file() {
        let users =
            "[[users]]\nname = \"a\"\npassword_env = \"A_PW\"\nserver_password_env = \"S_PW\"\ndatabase = \"d\"\n";
        let names: Vec<String> = secret_env_names(users).into_iter().collect();
        assert_eq!(names, ["A_PW", "S_PW"]);
    }

    #[test]
    fn validation_ignores_process_overrides_and_uses_placeholders() {
        let router = "[[databases]]\nname = \"d\"\nhost = \"h\"\n";
        let users = "[[users]]\nname = \"a\"\npassword_env = \"NOT_SET_ANYWHERE_X\"\ndatabase = \"d\"\n";
        validate(router, "r", users, "u").unwrap();
        let err = validate(router, "r", &users.replace("\"d\"\n", "\"other\"\n"), "u").unwrap_err();
        assert!(err.contains("u:"), "{err}");
    }
}
