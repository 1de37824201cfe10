//! `wharf htpasswd add|delete|list FILE`: manage users the way `htpasswd -B` does, so the
//! registry (wharf or registry:2) and nginx read the same file.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

/// bcrypt cost: htpasswd's -B default is 5; 10 costs ~50 ms per check, which the registry's
/// verified-credential cache pays once per user and password.
const COST: u32 = 10;

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

fn read_lines(file: &Path) -> anyhow::Result<Vec<String>> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// Replace the file atomically, so the registry never reads half of it.
fn write_lines(file: &Path, lines: &[String]) -> anyhow::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.wharf-tmp",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("htpasswd")
    ));
    let mut f = std::fs::File::create(&tmp)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    for l in lines {
        writeln!(f, "{l}")?;
    }
    // Keep the file's mode: a provisioned one is 0600, one nginx reads is wider.
    if let Ok(meta) = std::fs::metadata(file) {
        f.set_permissions(meta.permissions())?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

fn user_of(line: &str) -> Option<&str> {
    line.split_once(':').map(|(u, _)| u)
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
            if user.is_empty() || user.contains(':') {
                bail!("user name {user:?} must be non-empty and contain no ':'");
            }
            let password = read_password()?;
            let hash =
                bcrypt::hash_with_result(password, COST)?.format_for_version(bcrypt::Version::TwoY);
            let mut lines = read_lines(&file)?;
            let entry = format!("{user}:{hash}");
            match lines.iter_mut().find(|l| user_of(l) == Some(&user)) {
                Some(l) => *l = entry,
                None => lines.push(entry),
            }
            write_lines(&file, &lines)?;
            eprintln!("user {user} saved in {}", file.display());
        }
        HtpasswdCommand::Delete { file, user } => {
            let mut lines = read_lines(&file)?;
            let before = lines.len();
            lines.retain(|l| user_of(l) != Some(&user));
            if lines.len() == before {
                bail!("user {user} is not in {}", file.display());
            }
            write_lines(&file, &lines)?;
            eprintln!("user {user} deleted from {}", file.display());
        }
        HtpasswdCommand::List { file } => {
            for l in read_lines(&file)? {
                if let Some(u) = user_of(&l).filter(|_| !l.trim_start().starts_with('#')) {
                    println!("{u}");
                }
            }
        }
    }
    Ok(())
}
