//! `wharf`: one binary, subcommands wiring the crates together.

mod htpasswd;
mod serve;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "A container registry and image-update toolkit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (OCI Distribution 1.1, drop-in for registry:2).
    Serve(serve::ServeArgs),
    /// Manage an htpasswd file (bcrypt entries, as `htpasswd -B` writes).
    #[command(subcommand)]
    Htpasswd(htpasswd::HtpasswdCommand),
}

/// Logs to stderr: `WHARF_LOG` (or `RUST_LOG`) wins over the config's `log.level`.
pub fn init_logging(level: Option<&str>, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WHARF_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            EnvFilter::new(
                level
                    .map(|l| if l == "warning" { "warn" } else { l })
                    .unwrap_or("info"),
            )
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
        Command::Htpasswd(cmd) => {
            init_logging(None, false);
            htpasswd::run(cmd)
        }
    }
}
