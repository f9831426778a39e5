//! `pgdog-config-gen`: renders Go-style templates into validated router
//! configuration, or (`--check`) validates existing files with the router's
//! own config loader. See README.md.

mod cli;
mod generate;
mod render;
mod vars;
mod write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = match cli::parse(args) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let result = match &cli.check {
        Some(files) => generate::check(files).map(|ok| println!("{ok}")),
        None => generate::generate(&cli, &|name| std::env::var(name).ok()),
    };
    if let Err(err) = result {
        eprintln!("pgdog-config-gen: {err}");
        std::process::exit(1);
    }
}
