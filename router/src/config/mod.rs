//! Configuration: `pgdog.toml` + `users.toml` into one validated [`Config`].

mod env;
mod load;
mod secrets;
mod types;
mod validate;

pub use env::apply_env_overrides;
pub use load::{load_files, parse_str, ConfigError};
pub use types::*;
