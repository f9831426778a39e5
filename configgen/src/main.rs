//! `pgdog-config-gen`: renders Go-style templates into validated router
//! configuration. The renderer lands with its own issue; today the binary
//! only validates existing files with the router's own config loader.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, config, rest @ ..] if flag == "--check" || flag == "-check" => {
            let users = rest.first().map(String::as_str);
            match pgdog_router::config::load_files(std::path::Path::new(config), users.map(std::path::Path::new)) {
                Ok(_) => println!("{config}: ok"),
                Err(err) => {
                    eprintln!("{err}");
                    std::process::exit(1);
                }
            }
        }
        _ => {
            eprintln!("usage: pgdog-config-gen --check CONFIG [USERS]\n(template rendering is not built yet)");
            std::process::exit(2);
        }
    }
}
