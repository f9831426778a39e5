//! Arguments. Go-style single-dash long flags (`-template x`, `-shard-count=64`)
//! are rewritten to `--` before clap sees them; every variable has a flag.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Arg, ArgAction, Command};

use crate::vars::{self, Kind, LIST_VARS, VARS};

/// Which loader validates the rendered output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// `users` when the template's file name starts with `users`, else `router`.
    Auto,
    Router,
    Users,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cli {
    pub template: Option<PathBuf>,
    pub output: String,
    pub values: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub kind: OutputKind,
    /// `--check CONFIG [USERS]`.
    pub check: Option<Vec<String>>,
    /// Variable name → raw value from flags.
    pub flags: BTreeMap<String, String>,
}

const OPTIONS: &[&str] = &["template", "output", "values", "config", "kind", "check", "help"];

fn known_long(name: &str) -> bool {
    OPTIONS.contains(&name) || VARS.iter().any(|v| v.flag == name)
}

/// `-template` → `--template`, `-shard-count=64` → `--shard-count=64`, for
/// known long flags only; everything after `--` is left alone.
pub fn rewrite_single_dash(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for arg in args {
        if rest {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            rest = true;
        } else if let Some(body) = arg.strip_prefix('-').filter(|b| !b.starts_with('-')) {
            let name = body.split('=').next().unwrap_or(body);
            if known_long(name) {
                out.push(format!("-{arg}"));
                continue;
            }
        }
        out.push(arg);
    }
    out
}

fn command() -> Command {
    let mut after_help = String::from(
        "Variables are taken from flags, then environment variables, then the values file \
         (-values, .toml/.json/.yaml, keys are variable names), then the defaults above. \
         Single-dash long flags (-template) work like --template.\n\n\
         List variables (values file only, an array of tables; empty by default):",
    );
    for list in LIST_VARS {
        after_help.push_str(&format!("\n  {}: {}", list.name, list.help));
    }
    let mut cmd = Command::new("pgdog-config-gen")
        .about("Renders Go-style templates into validated pgdog-router configuration")
        .override_usage(
            "pgdog-config-gen -template FILE [-output FILE|-] [-values FILE] [-VARIABLE VALUE ...]\n       \
             pgdog-config-gen --check CONFIG [USERS]",
        )
        .after_help(after_help)
        .arg(Arg::new("template").long("template").value_name("FILE").help("template to render"))
        .arg(
            Arg::new("output")
                .long("output")
                .value_name("FILE")
                .default_value("-")
                .help("where to write; - is stdout; files are replaced atomically"),
        )
        .arg(Arg::new("values").long("values").value_name("FILE").help("values file (.toml, .json, .yaml)"))
        .arg(Arg::new("config").long("config").value_name("FILE").help(
            "rendered router config to validate a users template against (default: pgdog.toml.tmpl next to \
             the template, rendered with the same variables)",
        ))
        .arg(
            Arg::new("kind")
                .long("kind")
                .value_parser(["auto", "router", "users"])
                .default_value("auto")
                .help("how to validate the output; auto: users if the template name starts with \"users\""),
        )
        .arg(
            Arg::new("check")
                .long("check")
                .value_names(["CONFIG", "USERS"])
                .num_args(1..=2)
                .conflicts_with("template")
                .help("validate existing files and exit"),
        )
        .next_help_heading("Variables");
    for var in VARS {
        let mut arg = Arg::new(var.name)
            .long(var.flag)
            .value_name(var.name)
            .help(match vars::allowed_short(var.kind) {
                Some(range) => format!("{} ({range}) [default: {}] [env: {}]", var.help, var.default, var.env),
                None => format!("{} [default: {}] [env: {}]", var.help, var.default, var.env),
            })
            .action(ArgAction::Set);
        if let Kind::Bool = var.kind {
            arg = arg.num_args(0..=1).default_missing_value("true");
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Parse process arguments (without the program name).
pub fn parse(args: Vec<String>) -> Result<Cli, clap::Error> {
    let mut argv = vec!["pgdog-config-gen".to_string()];
    argv.extend(rewrite_single_dash(args));
    let mut m = command().try_get_matches_from(argv)?;
    let mut flags = BTreeMap::new();
    for var in VARS {
        if let Some(value) = m.remove_one::<String>(var.name) {
            flags.insert(var.name.to_string(), value);
        }
    }
    let kind = match m.remove_one::<String>("kind").as_deref() {
        Some("router") => OutputKind::Router,
        Some("users") => OutputKind::Users,
        _ => OutputKind::Auto,
    };
    let cli = Cli {
        template: m.remove_one::<String>("template").map(PathBuf::from),
        output: m.remove_one::<String>("output").unwrap_or_else(|| "-".into()),
        values: m.remove_one::<String>("values").map(PathBuf::from),
        config: m.remove_one::<String>("config").map(PathBuf::from),
        kind,
        check: m.remove_many::<String>("check").map(Iterator::collect),
        flags,
    };
    if cli.template.is_none() && cli.check.is_none() {
        return Err(command().error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "either -template FILE or --check CONFIG [USERS] is required",
        ));
    }
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rewrites_known_single_dash_flags() {
        let out = rewrite_single_dash(args(&[
            "-template",
            "t",
            "-shard-count=64",
            "--namespace",
            "n",
            "-x",
            "-",
            "--",
            "-template",
        ]));
        assert_eq!(
            out,
            args(&["--template", "t", "--shard-count=64", "--namespace", "n", "-x", "-", "--", "-template"])
        );
    }

    #[test]
    fn product_invocation() {
        let cli = parse(args(&[
            "-template",
            "config/pgdog.toml.tmpl",
            "-output",
            "config/pgdog.toml",
            "-cluster-name",
            "my-cluster",
            "-namespace",
            "production",
            "-shard-count",
            "64",
        ]))
        .unwrap();
        assert_eq!(cli.template, Some(PathBuf::from("config/pgdog.toml.tmpl")));
        assert_eq!(cli.output, "config/pgdog.toml");
        assert_eq!(cli.flags.get("ClusterName").map(String::as_str), Some("my-cluster"));
        assert_eq!(cli.flags.get("Namespace").map(String::as_str), Some("production"));
        assert_eq!(cli.flags.get("ShardCount").map(String::as_str), Some("64"));
    }

    #[test]
    fn bool_flag_alone_means_true_and_output_defaults_to_stdout() {
        let cli = parse(args(&["-template", "t", "-tls-enabled"])).unwrap();
        assert_eq!(cli.flags.get("TLSEnabled").map(String::as_str), Some("true"));
        assert_eq!(cli.output, "-");
        let cli = parse(args(&["-template", "t", "-tls-enabled=false"])).unwrap();
        assert_eq!(cli.flags.get("TLSEnabled").map(String::as_str), Some("false"));
    }

    #[test]
    fn check_mode_and_errors() {
        let cli = parse(args(&["--check", "a.toml", "b.toml"])).unwrap();
        assert_eq!(cli.check, Some(args(&["a.toml", "b.toml"])));
        assert!(parse(args(&[])).is_err());
        assert!(parse(args(&["-template", "t", "-bogus", "1"])).is_err());
    }

    #[test]
    fn help_lists_every_variable() {
        let help = command().render_help().to_string();
        for var in VARS {
            assert!(help.contains(&format!("--{}", var.flag)), "{}", var.name);
            assert!(help.contains(&format!("[env: {}]", var.env)), "{}", var.name);
            assert!(help.contains(&format!("[default: {}]", var.default)), "{}", var.name);
        }
        for list in LIST_VARS {
            assert!(help.contains(&format!("{}: {}", list.name, list.help)), "{}", list.name);
        }
    }
}
