//! `wharf`: one binary, subcommands wiring the crates together.

mod archive;
mod client_args;
mod copy;
mod htpasswd;
mod images;
mod layout;
mod login;
mod maintenance;
mod progress;
mod serve;
mod watch;

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
    #[command(flatten)]
    client: client_args::ClientFlags,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (OCI Distribution 1.1, drop-in for registry:2).
    Serve(serve::ServeArgs),
    /// Manage an htpasswd file (bcrypt entries, as `htpasswd -B` writes).
    #[command(subcommand)]
    Htpasswd(htpasswd::HtpasswdCommand),
    /// Check credentials against a registry and store them as `docker login` does.
    Login(login::LoginArgs),
    /// Remove stored credentials for a registry, as `docker logout` does.
    Logout(login::LogoutArgs),
    /// List a repository's tags, one a line.
    Tags(images::RefArg),
    /// List a registry's repositories, one a line.
    Catalog(images::HostArg),
    /// Print the digest an image reference resolves to.
    Digest(images::RefArg),
    /// Describe an image or index as JSON: digest, media type, platform, layers.
    Inspect(images::RefArg),
    /// Delete a manifest (a tag is resolved to its digest first).
    Delete(images::RefArg),
    /// Copy an image or index from one registry (or repository) to another.
    Copy(copy::CopyArgs),
    /// Pull an image or index into an OCI image layout directory or a `docker save` tar.
    Pull(layout::PullArgs),
    /// Push an image from an OCI image layout directory or a `docker save` tar.
    Push(layout::PushArgs),
    /// Delete what no tag (or manifest) reaches, while the registry keeps serving
    /// (registry:2's `registry garbage-collect`).
    GarbageCollect(maintenance::GcArgs),
    /// Re-hash every blob and check every link, tag and manifest; --repair fixes what it can.
    Scrub(maintenance::ScrubArgs),
    /// Watch running containers and update them when their image changes in its registry
    /// (watchtower's flags, labels and environment).
    Watch(Box<watch::WatchArgs>),
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
    let cli = Cli::parse();
    let flags = &cli.client;
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Watch(args) => exit_on_error(watch::run(*args, flags)),
        Command::Htpasswd(cmd) => {
            init_logging(None, false);
            htpasswd::run(cmd)
        }
        Command::GarbageCollect(args) => client_command(|| maintenance::garbage_collect(args)),
        Command::Scrub(args) => client_command(|| maintenance::scrub(args)),
        Command::Login(args) => client_command(|| login::login(args, flags)),
        Command::Logout(args) => client_command(|| login::logout(args)),
        Command::Tags(arg) => client_command(|| images::tags(arg, flags)),
        Command::Catalog(arg) => client_command(|| images::catalog(arg, flags)),
        Command::Digest(arg) => client_command(|| images::digest(arg, flags)),
        Command::Inspect(arg) => client_command(|| images::inspect(arg, flags)),
        Command::Delete(arg) => client_command(|| images::delete(arg, flags)),
        Command::Copy(args) => client_command(|| copy::copy(args, flags)),
        Command::Pull(args) => client_command(|| layout::pull(args, flags)),
        Command::Push(args) => client_command(|| layout::push(args, flags)),
    }
}

/// Client commands log only warnings unless asked: their stdout is for scripts. Errors are
/// one line (cause and fix) without a backtrace, since they are the user's to act on.
fn client_command(run: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    init_logging(Some("warn"), false);
    exit_on_error(run())
}

/// An error the user acts on: one line, cause and fix, no backtrace.
fn exit_on_error(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
