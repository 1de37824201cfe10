//! `wharf htpasswd add|delete|list FILE`: manage users the way `htpasswd -B` does, so the
//! registry (wharf or registry:2) and nginx read the same file.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;

use wharf_registry::auth::htpasswd_file::{self as file_ops, read_lines, user_of};

#[derive(Subcommand)]
pub enum HtpasswdCommand {
    /// Add a user or change their password (bcrypt). The password is asked for twice on a
    /// terminal (not echoed), or read from stdin (`docker exec -i C wharf htpasswd add ...`).
    Add { file: PathBuf, user: String },
    /// Remove a user.
    Delete { file: PathBuf, user: String },
    /// List the users.
    List { file: PathBuf },
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        // As Apache's htpasswd: twice, not echoed.
        let first = rpassword::prompt_password("New password: ")?;
        let again = rpassword::prompt_password("Re-type new password: ")?;
        if first != again {
            bail!("the passwords do not match; nothing changed");
        }
        if first.is_empty() {
            bail!("empty password; nothing changed");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("empty password: pipe the password in, e.g. `echo -n secret | wharf htpasswd add FILE USER`");
    }
    Ok(password)
}

pub fn run(cmd: HtpasswdCommand) -> anyhow::Result<()> {
    match cmd {
        HtpasswdCommand::Add { file, user } => {
            if !file_ops::valid_user(&user) {
                bail!("user name {user:?} must be non-empty and contain no ':'");
            }
            let password = read_password()?;
            file_ops::set_password(&file, &user, &password).map_err(anyhow::Error::msg)?;
            eprintln!("user {user} saved in {}", file.display());
        }
        HtpasswdCommand::Delete { file, user } => {
            if !file_ops::delete_user(&file, &user).map_err(anyhow::Error::msg)? {
                bail!("user {user} is not in {}", file.display());
            }
            eprintln!("user {user} deleted from {}", file.display());
        }
        HtpasswdCommand::List { file } => {
            let lines =
                read_lines(&file).with_context(|| format!("cannot read {}", file.display()))?;
            for l in lines {
                if let Some(u) = user_of(&l).filter(|_| !l.trim_start().starts_with('#')) {
                    println!("{u}");
                }
            }
        }
    }
    Ok(())
}
