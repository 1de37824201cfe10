//! `wharf login` and `wharf logout`, storing credentials exactly where `docker login`
//! does, so docker, podman and wharf share one config.json.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use clap::{ArgAction, Args};
use wharf_client::{Credential, CredentialSource, Registry, RegistryClient, Secret};

use crate::client_args::{block_on, flag_bool, ClientFlags};

#[derive(Args)]
pub struct LoginArgs {
    /// User name; asked for on the terminal when absent.
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// The password; it shows in the process list and shell history, so prefer
    /// --password-stdin, or typing it when asked (it is not echoed).
    #[arg(long, short = 'p')]
    password: Option<String>,
    /// Read the password from stdin (keeps it out of the process list and shell history).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    password_stdin: bool,
    /// The registry, as `docker login` takes it: host[:port].
    #[arg(value_name = "HOST")]
    host: String,
}

#[derive(Args)]
pub struct LogoutArgs {
    #[arg(value_name = "HOST")]
    host: String,
}

pub fn login(args: LoginArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let registry = Registry::from_server_address(&args.host)?;
    if args.password.is_some() {
        if args.password_stdin {
            bail!("--password and --password-stdin are mutually exclusive");
        }
        // docker's words, so scripts and people who know them recognise them.
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let mut options = flags.options()?;
    if args.host.trim().starts_with("http://") {
        options.plain_http.push(registry.as_str().to_owned());
    }
    let stdin = std::io::stdin();
    // docker's rule and words: a prompt reads a terminal, never a pipe, or `echo pw | wharf
    // login HOST` would take the password for the user name.
    let prompts = args.username.is_none() || (args.password.is_none() && !args.password_stdin);
    if prompts && !args.password_stdin && !stdin.is_terminal() {
        bail!("Cannot perform an interactive login from a non TTY device: pass --username, and --password-stdin to read the password from stdin (`echo PW | wharf login -u USER --password-stdin {}`)", args.host);
    }
    let mut lines = stdin.lock().lines();
    let username = match args.username {
        Some(u) => u,
        None if args.password_stdin => bail!("--password-stdin needs --username"),
        None => {
            eprint!("Username: ");
            std::io::stderr().flush().ok();
            lines.next().transpose()?.unwrap_or_default()
        }
    };
    let username = username.trim().to_owned();
    if username.is_empty() {
        bail!("no user name given; pass --username");
    }
    let password = if let Some(p) = args.password {
        p
    } else if args.password_stdin {
        let mut all = String::new();
        for line in lines {
            all.push_str(&line?);
            all.push('\n');
        }
        // docker strips the trailing newline(s) of a piped password, and nothing else.
        all.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        // As docker: not echoed, so it does not stay on screen (stdin is a terminal here).
        rpassword::prompt_password("Password: ").context("cannot read the password")?
    };
    if password.is_empty() {
        bail!("no password given");
    }
    let credential = Credential::Basic {
        username,
        password: Secret::new(password),
    };
    // Proved before stored, as docker login does: a typo must not replace a good login.
    let client =
        RegistryClient::with_credential(registry.clone(), &options, Some(credential.clone()))?;
    block_on(client.ping())??;
    let source = CredentialSource::from_process_env()?;
    source
        .store(&registry, &credential)
        .with_context(|| format!("cannot store the credentials for {registry}"))?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let registry = Registry::from_server_address(&args.host)?;
    let source = CredentialSource::from_process_env()?;
    if source.erase(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}
