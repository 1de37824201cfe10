//! Pull counts in files: `_wharf/pulls/<SHA-256 of the repository name>`, each holding the
//! count as decimal text. Processes sharing the store add under one `flock` on
//! `_wharf/pulls/.lock`, so that two batches read-modify-write one after the other; each
//! file is replaced atomically and fsynced, so a crash keeps the old count or the new one.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::durable::AtomicWrite;
use super::state::FsState;
use super::{blocking, read_if_any};
use crate::store::state::PullCounts;
use crate::store::StoreResult;

fn file(dir: &Path, repo: &str) -> PathBuf {
    dir.join(hex::encode(Sha256::digest(repo.as_bytes())))
}

/// A count file's number; an unreadable one counts from 0 again rather than stopping
/// every later count (it is a statistic, not a record anything depends on).
fn read_count(path: &Path) -> io::Result<u64> {
    Ok(read_if_any(path)?
        .and_then(|b| String::from_utf8_lossy(&b).trim().parse().ok())
        .unwrap_or(0))
}

fn add(dir: &Path, counts: &[(String, u64)]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))?;
    lock.lock()?;
    for (repo, n) in counts {
        let path = file(dir, repo);
        let total = read_count(&path)?.saturating_add(*n);
        AtomicWrite::DURABLE.replace(&path, total.to_string().as_bytes())?;
    }
    Ok(())
}

#[async_trait]
impl PullCounts for FsState {
    async fn add_pulls(&self, counts: &[(String, u64)]) -> StoreResult<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let dir = self.dir.join("pulls");
        let counts = counts.to_vec();
        Ok(blocking(move || add(&dir, &counts)).await?)
    }

    async fn pulls(&self, repos: &[String]) -> StoreResult<Vec<u64>> {
        let dir = self.dir.join("pulls");
        let repos = repos.to_vec();
        Ok(blocking(move || repos.iter().map(|r| read_count(&file(&dir, r))).collect()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_add_up_across_batches_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = FsState::new(dir.path().to_owned());
        let names = vec!["a/b".to_owned(), "c".to_owned()];
        assert_eq!(state.pulls(&names).await.unwrap(), vec![0, 0]);
        state.add_pulls(&[("a/b".into(), 2)]).await.unwrap();
        state
            .add_pulls(&[("a/b".into(), 3), ("c".into(), 1)])
            .await
            .unwrap();
        let reopened = FsState::new(dir.path().to_owned());
        assert_eq!(reopened.pulls(&names).await.unwrap(), vec![5, 1]);
    }

    /// Processes sharing a store add under the lock: none of their batches is lost to
    /// another's read-modify-write (each state here opens the lock file on its own, as
    /// another process would).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_adders_lose_no_count() {
        let dir = tempfile::tempdir().unwrap();
        let adders: Vec<_> = (0..4)
            .map(|_| {
                let state = FsState::new(dir.path().to_owned());
                tokio::spawn(async move {
                    for _ in 0..25 {
                        state.add_pulls(&[("shared".into(), 2)]).await.unwrap();
                    }
                })
            })
            .collect();
        for a in adders {
            a.await.unwrap();
        }
        let state = FsState::new(dir.path().to_owned());
        assert_eq!(state.pulls(&["shared".into()]).await.unwrap(), vec![200]);
    }
}
