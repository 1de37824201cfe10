//! Tokens and the audit log in files under `_wharf/`, for every process on one root:
//!
//! - `tokens/<SHA-256 of the name>.json`: one token each, replaced whole (atomic rename
//!   and fsync); creates and revocations hold `tokens/lock` (an `flock`) so that two
//!   processes never both take a name or undo a revocation with a stale copy;
//! - `audit/log.jsonl`: sealed records, one a line, only ever appended (and fdatasynced);
//!   `audit/head`: the last record's number, hash and the log's length, replaced (not
//!   fsynced) after each append. Appends hold `audit/lock`, so the chain is one line across processes.
//!   A crash between the two writes leaves the head behind the log: the next append
//!   notices the length differs and continues from the log's last whole line.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::durable::AtomicWrite;
use super::state::FsState;
use super::{blocking, read_if_any};
use crate::store::auditchain::{self, GENESIS};
use crate::store::state::{AuditEntry, AuditLog, TokenRecord, Tokens};
use crate::store::{StoreError, StoreResult};

fn locked(dir: &Path) -> io::Result<File> {
    fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    file.lock()?;
    Ok(file)
}

fn token_path(dir: &Path, name: &str) -> PathBuf {
    let file = hex::encode(Sha256::digest(name.as_bytes()));
    dir.join(format!("{file}.json"))
}

fn read_token(path: &Path) -> io::Result<Option<TokenRecord>> {
    let Some(bytes) = read_if_any(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

fn write_token(path: &Path, token: &TokenRecord) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(token).map_err(io::Error::other)?;
    AtomicWrite::DURABLE.replace(path, &bytes)
}

/// Change a stored token under the lock; false when there is none.
fn update_token(dir: &Path, name: &str, change: impl FnOnce(&mut TokenRecord)) -> io::Result<bool> {
    let _lock = locked(dir)?;
    let path = token_path(dir, name);
    let Some(mut token) = read_token(&path)? else {
        return Ok(false);
    };
    change(&mut token);
    write_token(&path, &token)?;
    Ok(true)
}

impl FsState {
    fn tokens_dir(&self) -> PathBuf {
        self.dir().join("tokens")
    }

    fn audit_dir(&self) -> PathBuf {
        self.dir().join("audit")
    }
}

#[async_trait]
impl Tokens for FsState {
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<bool> {
        let (dir, token) = (self.tokens_dir(), token.clone());
        Ok(blocking(move || {
            let _lock = locked(&dir)?;
            let path = token_path(&dir, &token.name);
            if path.exists() {
                return Ok(false);
            }
            write_token(&path, &token)?;
            Ok(true)
        })
        .await?)
    }

    async fn token(&self, name: &str) -> StoreResult<Option<TokenRecord>> {
        Ok(read_token(&token_path(&self.tokens_dir(), name))?)
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let dir = self.tokens_dir();
        let mut out = blocking(move || {
            let mut out = Vec::new();
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let path = entry?.path();
                if path.extension().is_some_and(|x| x == "json") {
                    out.extend(read_token(&path)?);
                }
            }
            Ok(out)
        })
        .await?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn revoke_token(&self, name: &str, at: u64) -> StoreResult<bool> {
        let (dir, name) = (self.tokens_dir(), name.to_owned());
        Ok(blocking(move || {
            update_token(&dir, &name, |t| {
                t.revoked.get_or_insert(at);
            })
        })
        .await?)
    }

    async fn token_used(&self, name: &str, at: u64) -> StoreResult<()> {
        let (dir, name) = (self.tokens_dir(), name.to_owned());
        blocking(move || update_token(&dir, &name, |t| t.last_used = Some(at))).await?;
        Ok(())
    }
}

/// `seq hash length` of the head file.
/// The head's width: `seq hash length` padded, so each rewrite covers the last.
const HEAD_WIDTH: usize = 160;

fn read_head(dir: &Path) -> io::Result<Option<(u64, String, u64)>> {
    let Some(bytes) = read_if_any(&dir.join("head"))? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut parts = text.split_whitespace();
    let parsed = (|| {
        let seq = parts.next()?.parse().ok()?;
        let hash = parts.next()?.to_owned();
        let len = parts.next()?.parse().ok()?;
        Some((seq, hash, len))
    })();
    parsed.map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not `seq hash length`", dir.join("head").display()),
        )
    })
}

/// The last whole line of the log and where it ends; a torn tail after it (a crash
/// mid-append, never acknowledged) is cut off.
fn last_line(log: &mut File) -> io::Result<(Option<String>, u64)> {
    let len = log.metadata()?.len();
    let from = len.saturating_sub(256 * 1024);
    log.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    log.read_to_end(&mut tail)?;
    let Some(end) = tail.iter().rposition(|b| *b == b'\n') else {
        log.set_len(from)?;
        return Ok((None, from));
    };
    let whole = from + end as u64 + 1;
    if whole != len {
        log.set_len(whole)?;
    }
    let start = tail[..end]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line = String::from_utf8_lossy(&tail[start..end]).into_owned();
    Ok((Some(line), whole))
}

fn append_lines(dir: &Path, entries: &[AuditEntry]) -> io::Result<Vec<String>> {
    let _lock = locked(dir)?;
    let mut log = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join("log.jsonl"))?;
    let len = log.metadata()?.len();
    // A head that does not match the log (behind it after a crash, or torn) is only a
    // shortcut missed: the log's last line says where the chain is.
    let (mut seq, mut prev) = match read_head(dir) {
        Ok(Some((seq, hash, at))) if at == len => (seq, hash),
        _ => match last_line(&mut log)?.0 {
            Some(line) => {
                let r = auditchain::parse(&line)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                (r.seq, r.hash)
            }
            None => (0, GENESIS.to_owned()),
        },
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut bytes = Vec::new();
    for entry in entries {
        seq += 1;
        let (line, hash) = auditchain::seal(seq, &prev, entry);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        out.push(line);
        prev = hash;
    }
    log.seek(SeekFrom::End(0))?;
    log.write_all(&bytes)?;
    log.sync_data()?;
    let len = log.metadata()?.len();
    // The lines are durable; the head needs no fsync of its own: one lost in a crash is
    // behind the log, which the next append notices by its length and verify accepts. It
    // is overwritten in place at one width, not replaced: a file created and renamed per
    // append cost pushes several percent, and a torn head is noticed as one behind is.
    let head = format!("{seq} {prev} {len}");
    let line = format!("{head:<HEAD_WIDTH$}\n");
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("head"))?
        .write_all_at(line.as_bytes(), 0)?;
    Ok(out)
}

#[async_trait]
impl AuditLog for FsState {
    async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<Vec<String>> {
        let (dir, entries) = (self.audit_dir(), entries.to_vec());
        Ok(blocking(move || append_lines(&dir, &entries)).await?)
    }

    async fn audit_lines(&self) -> StoreResult<Vec<String>> {
        let Some(bytes) = read_if_any(&self.audit_dir().join("log.jsonl"))? else {
            return Ok(Vec::new());
        };
        let text = String::from_utf8(bytes).map_err(|_| StoreError::Corrupt {
            what: "audit/log.jsonl".into(),
            why: "not UTF-8".into(),
        })?;
        Ok(text.lines().map(str::to_owned).collect())
    }

    async fn audit_head(&self) -> StoreResult<Option<(u64, String)>> {
        Ok(read_head(&self.audit_dir())?.map(|(seq, hash, _)| (seq, hash)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            time: "t".into(),
            actor: "a".into(),
            source: "s".into(),
            action: action.into(),
            target: "x".into(),
            outcome: "ok".into(),
        }
    }

    #[tokio::test]
    async fn tokens_keep_no_secret_and_the_log_chains_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let state = FsState::new(dir.path().to_owned());
        let token = TokenRecord {
            name: "ci".into(),
            owner: None,
            owner_groups: Vec::new(),
            scopes: vec!["team/*:pull,push".into()],
            hash: "ab".repeat(32),
            created: 1,
            expires: None,
            revoked: None,
            last_used: None,
        };
        assert!(state.create_token(&token).await.unwrap());
        assert!(
            !state.create_token(&token).await.unwrap(),
            "a name is taken once"
        );
        assert!(state.revoke_token("ci", 5).await.unwrap());
        state.token_used("ci", 6).await.unwrap();
        let stored = state.token("ci").await.unwrap().unwrap();
        assert_eq!((stored.revoked, stored.last_used), (Some(5), Some(6)));
        assert_eq!(state.list_tokens().await.unwrap().len(), 1);
        assert!(!state.revoke_token("nobody", 5).await.unwrap());

        state.append_audit(&[entry("a"), entry("b")]).await.unwrap();
        // Another process on the same root continues the same chain.
        let other = FsState::new(dir.path().to_owned());
        other.append_audit(&[entry("c")]).await.unwrap();
        // A torn line from a crash is cut before the next append.
        let log = dir.path().join("audit/log.jsonl");
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"{\"seq\":4,\"pr").unwrap();
        state.append_audit(&[entry("d")]).await.unwrap();
        let lines = state.audit_lines().await.unwrap();
        let head = state.audit_head().await.unwrap().unwrap();
        assert_eq!(auditchain::verify(&lines, Some((head.0, &head.1))), Ok(4));
    }
}
