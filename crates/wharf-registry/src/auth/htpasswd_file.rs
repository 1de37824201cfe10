//! Editing an htpasswd file as Apache's `htpasswd -B` does: bcrypt entries, the file
//! replaced atomically (written aside, fsynced, renamed) so a reader never sees half of it.
//! Used by `wharf htpasswd` and by the UI's user administration.

use std::path::Path;

use crate::store::fs::durable::{AtomicWrite, Fsync};

/// bcrypt cost: htpasswd's -B default is 5; 10 costs ~50 ms per check, which the registry's
/// verified-credential cache pays once per user and password.
pub const COST: u32 = 10;

pub fn read_lines(file: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Replace the file atomically, so the registry never reads half of it; durable, in the
/// mode the file had (a provisioned one is 0600, one nginx reads is wider).
pub fn write_lines(file: &Path, lines: &[String]) -> std::io::Result<()> {
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let write = AtomicWrite {
        sync: Fsync::All,
        sync_dir: true,
        create_dirs: false,
        stamp: false,
        keep_mode: true,
    };
    write.replace(file, text.as_bytes())
}

pub fn user_of(line: &str) -> Option<&str> {
    line.split_once(':').map(|(u, _)| u)
}

/// Whether `user` can be an htpasswd entry's name.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty() && !user.contains([':', '\n', '\r']) && !user.trim_start().starts_with('#')
}

/// Add `user` or change their password (bcrypt, `$2y$` as htpasswd writes). Blocking: call
/// off the async threads.
pub fn set_password(file: &Path, user: &str, password: &str) -> Result<(), String> {
    if !valid_user(user) {
        return Err(format!(
            "user name {user:?} must be non-empty and contain no ':'"
        ));
    }
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let hash = bcrypt::hash_with_result(password, COST)
        .map_err(|e| e.to_string())?
        .format_for_version(bcrypt::Version::TwoY);
    let mut lines = read_lines(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let entry = format!("{user}:{hash}");
    match lines.iter_mut().find(|l| user_of(l) == Some(user)) {
        Some(l) => *l = entry,
        None => lines.push(entry),
    }
    write_lines(file, &lines).map_err(|e| format!("cannot replace {}: {e}", file.display()))
}

/// Remove `user`; false when they were not in the file.
pub fn delete_user(file: &Path, user: &str) -> Result<bool, String> {
    let mut lines = read_lines(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let before = lines.len();
    lines.retain(|l| user_of(l) != Some(user));
    if lines.len() == before {
        return Ok(false);
    }
    write_lines(file, &lines).map_err(|e| format!("cannot replace {}: {e}", file.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_resets_and_deletes_users_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, "# comment\nbob:$2y$05$x\n").unwrap();
        set_password(&file, "alice", "pw1").unwrap();
        let first = std::fs::read_to_string(&file).unwrap();
        assert!(first.starts_with("# comment\nbob:$2y$05$x\nalice:$2y$"));
        set_password(&file, "alice", "pw2").unwrap();
        let lines = read_lines(&file).unwrap();
        assert_eq!(lines.len(), 3);
        assert!(bcrypt::verify("pw2", lines[2].split_once(':').unwrap().1).unwrap());
        assert!(delete_user(&file, "bob").unwrap());
        assert!(!delete_user(&file, "bob").unwrap());
        assert!(set_password(&file, "a:b", "x").is_err());
        assert!(set_password(&file, "carol", "").is_err());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
