//! `wharf`: one binary, subcommands wiring the crates together: `serve` and the registry's
//! maintenance (`garbage-collect`, `scrub`, `retention`, `database`) over wharf-registry;
//! the client commands (`login`, `logout`, `tags`, `catalog`, `digest`, `inspect`,
//! `delete`, `copy`, `pull`, `push`, `key`, `sign`, `verify`) over wharf-client; and `watch` over wharf-watch. Each
//! subcommand parses its flags and calls into a crate.

mod client_args;
mod copy;
mod database;
mod htpasswd;
mod identity;
mod images;
mod layout;
mod login;
mod maintenance;
mod progress;
mod serve;
mod trust;
mod watch;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

use client_args::WithClient;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "A container registry and image-update toolkit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Client flags given before the subcommand (`wharf --insecure tags ...`); each
    /// subcommand takes its own too.
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
    Login(WithClient<login::LoginArgs>),
    /// Remove stored credentials for a registry, as `docker logout` does.
    Logout(login::LogoutArgs),
    /// List a repository's tags, one a line.
    Tags(WithClient<images::RefArg>),
    /// List a registry's repositories, one a line.
    Catalog(WithClient<images::HostArg>),
    /// Print the digest an image reference resolves to.
    Digest(WithClient<images::RefArg>),
    /// Describe an image or index as JSON: digest, media type, platform, layers.
    Inspect(WithClient<images::RefArg>),
    /// Delete a manifest (a tag is resolved to its digest first), or with --repository a
    /// whole repository (wharf registries only).
    Delete(WithClient<images::DeleteArgs>),
    /// Copy an image or index from one registry (or repository) to another.
    Copy(WithClient<copy::CopyArgs>),
    /// Pull an image or index into an OCI image layout directory or a `docker save` tar.
    Pull(WithClient<layout::PullArgs>),
    /// Push an image from an OCI image layout directory or a `docker save` tar.
    Push(WithClient<layout::PushArgs>),
    /// cosign key pairs: `wharf key generate` writes cosign.key and cosign.pub.
    #[command(subcommand)]
    Key(trust::KeyCommand),
    /// Sign an image (manifest or index, by digest) with a cosign key.
    Sign(WithClient<trust::SignArgs>),
    /// Verify an image's signatures against cosign public keys or X.509 roots.
    Verify(WithClient<trust::VerifyArgs>),
    /// Delete what no tag (or manifest) reaches, while the registry keeps serving
    /// (registry:2's `registry garbage-collect`).
    GarbageCollect(maintenance::GcArgs),
    /// The metadata database (`database:`): its migrations, and importing a registry:2
    /// storage root into it.
    #[command(subcommand)]
    Database(database::DatabaseCommand),
    /// Re-hash every blob and check every link, tag and manifest; --repair fixes what it can.
    Scrub(maintenance::ScrubArgs),
    /// Apply the config's `retention:` rules: delete the tags no keep rule keeps and old
    /// untagged manifests (--dry-run prints what it would delete).
    Retention(maintenance::RetentionArgs),
    /// Robot tokens: machine credentials used as a docker password, scoped and revocable.
    #[command(subcommand)]
    Token(identity::TokenCommand),
    /// List the audit log (who changed what, from where), or `verify` its hash chain.
    Audit(identity::AuditArgs),
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
    install_logging(filter, json);
}

/// As `init_logging`, except that a level given (a flag, as watchtower's `--debug`)
/// wins over the environment's.
pub fn init_logging_as(level: Option<&str>, json: bool) {
    match level {
        Some(l) => install_logging(tracing_subscriber::EnvFilter::new(l), json),
        None => init_logging(None, json),
    }
}

fn install_logging(filter: tracing_subscriber::EnvFilter, json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        // no-color.org: NO_COLOR set to anything non-empty turns colours off.
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        builder
            .with_ansi(std::io::stderr().is_terminal() && !no_color)
            .init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let top = &cli.client;
    match cli.command {
        Command::Serve(args) => exit_on_error(serve::run(args)),
        Command::Watch(args) => exit_on_error(watch::run(*args, top)),
        Command::Htpasswd(cmd) => {
            init_logging(None, false);
            exit_on_error(htpasswd::run(cmd))
        }
        Command::GarbageCollect(args) => client_command(|| maintenance::garbage_collect(args)),
        Command::Database(cmd) => client_command(|| database::run(cmd)),
        Command::Scrub(args) => client_command(|| maintenance::scrub(args)),
        Command::Retention(args) => client_command(|| maintenance::retention(args)),
        Command::Token(cmd) => client_command(|| identity::token(cmd)),
        Command::Audit(args) => client_command(|| identity::audit(args)),
        Command::Login(c) => client_command(|| login::login(c.args, &top.merge(&c.client))),
        Command::Logout(args) => client_command(|| login::logout(args)),
        Command::Tags(c) => client_command(|| images::tags(c.args, &top.merge(&c.client))),
        Command::Catalog(c) => client_command(|| images::catalog(c.args, &top.merge(&c.client))),
        Command::Digest(c) => client_command(|| images::digest(c.args, &top.merge(&c.client))),
        Command::Inspect(c) => client_command(|| images::inspect(c.args, &top.merge(&c.client))),
        Command::Delete(c) => client_command(|| images::delete(c.args, &top.merge(&c.client))),
        Command::Copy(c) => client_command(|| copy::copy(c.args, &top.merge(&c.client))),
        Command::Pull(c) => client_command(|| layout::pull(c.args, &top.merge(&c.client))),
        Command::Push(c) => client_command(|| layout::push(c.args, &top.merge(&c.client))),
        Command::Key(cmd) => client_command(|| trust::key(cmd)),
        Command::Sign(c) => client_command(|| trust::sign(c.args, &top.merge(&c.client))),
        Command::Verify(c) => client_command(|| trust::verify(c.args, &top.merge(&c.client))),
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
        eprintln!("Error: {}", one_line(&e));
        std::process::exit(1);
    }
    Ok(())
}

/// The error and its causes, each cause only once: many messages already quote their
/// cause (`cannot read X: No such file or directory ...`), which `{:#}` would repeat.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_the_message_already_quotes_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let quoted =
            anyhow::Error::new(io).context("cannot read ca.pem: No such file; pass another");
        assert_eq!(
            super::one_line(&quoted),
            "cannot read ca.pem: No such file; pass another"
        );
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let unquoted = anyhow::Error::new(io).context("cannot read ca.pem");
        assert_eq!(
            super::one_line(&unquoted),
            "cannot read ca.pem: No such file"
        );
    }
}
