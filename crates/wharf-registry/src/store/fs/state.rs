//! [`State`](crate::store::state::State) in files under `_wharf/`, where wharf has always
//! kept it, so a store upgrades in place:
//!
//! - `events/log/<seq>.json`: the event log ([`FsLog`]);
//! - `events/endpoints/<name>/cursor` and `lease.lock` (an `flock`, which dies with its
//!   holder): each webhook endpoint's delivery;
//! - `reports/<job>.json`: what background jobs did;
//! - `ui/signed-out/<SHA-256 of the user name>`: sign-out stamps (hashed: any user name
//!   is a safe file name);
//! - `pulls/<SHA-256 of the repository name>`: each repository's pull count (`pulls.rs`).

use std::fs::{self, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::durable::{write_atomic, AtomicWrite, Fsync};
use super::eventlog::FsLog;
use super::{blocking, read_if_any};
use crate::store::state::{EventLog, Record, Records};
use crate::store::{Guard, StoreError, StoreResult};

/// wharf's records under one directory (`docker/registry/v2/_wharf`).
pub struct FsState {
    pub(super) dir: PathBuf,
    /// Opened on first use: a read-only store may be served without an event log.
    log: OnceLock<Arc<FsLog>>,
}

impl FsState {
    pub fn new(dir: PathBuf) -> FsState {
        FsState {
            dir,
            log: OnceLock::new(),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn log(&self) -> io::Result<&Arc<FsLog>> {
        if let Some(log) = self.log.get() {
            return Ok(log);
        }
        let log = Arc::new(FsLog::open(self.dir.join("events/log"))?);
        Ok(self.log.get_or_init(|| log))
    }

    fn endpoint_dir(&self, endpoint: &str) -> PathBuf {
        self.dir.join("events/endpoints").join(endpoint)
    }

    fn path(&self, record: Record<'_>) -> StoreResult<PathBuf> {
        match record {
            Record::Report(job) => {
                let plain = !job.is_empty()
                    && job
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !plain {
                    return Err(StoreError::Io(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{job:?} cannot name a report"),
                    )));
                }
                Ok(self.dir.join("reports").join(format!("{job}.json")))
            }
            Record::SignedOut(user) => {
                let name = hex::encode(Sha256::digest(user.as_bytes()));
                Ok(self.dir.join("ui/signed-out").join(name))
            }
        }
    }
}

#[async_trait]
impl Records for FsState {
    /// Read in place: a small file, and metrics read reports from a synchronous collector.
    async fn get(&self, record: Record<'_>) -> StoreResult<Option<Vec<u8>>> {
        Ok(read_if_any(&self.path(record)?)?)
    }

    async fn put(&self, record: Record<'_>, bytes: Vec<u8>) -> StoreResult<()> {
        let path = self.path(record)?;
        // A stamp has always been fsynced whole, metadata too.
        let write = match record {
            Record::Report(_) => AtomicWrite::DURABLE,
            Record::SignedOut(_) => AtomicWrite {
                sync: Fsync::All,
                ..AtomicWrite::DURABLE
            },
        };
        let at = path.clone();
        blocking(move || {
            write
                .replace(&path, &bytes)
                .map_err(super::durable::at(&at))
        })
        .await?;
        Ok(())
    }
}

#[async_trait]
impl EventLog for FsState {
    /// Through the log's group commit: one fsync for every append waiting.
    async fn append(&self, event: Vec<u8>) -> StoreResult<u64> {
        let seqs = self.log()?.append_grouped(vec![event]).await?;
        Ok(seqs.first().copied().unwrap_or(0))
    }

    async fn append_batch(&self, events: Vec<Vec<u8>>) -> StoreResult<Vec<u64>> {
        Ok(self.log()?.append_grouped(events).await?)
    }

    fn append_queued(
        &self,
        events: Vec<Vec<u8>>,
    ) -> Option<futures::future::BoxFuture<'static, StoreResult<Vec<u64>>>> {
        let log = self.log().ok()?;
        let queued = log.enqueue(events);
        Some(Box::pin(async move {
            let done = queued
                .await
                .unwrap_or_else(|_| Err(io::Error::other("the event log's committer stopped")));
            Ok(done?)
        }))
    }

    async fn read(&self, seq: u64) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.log()?.read(seq)?)
    }

    async fn newest(&self) -> StoreResult<u64> {
        Ok(self.log()?.newest())
    }

    async fn first_from(&self, seq: u64) -> StoreResult<Option<u64>> {
        Ok(self.log()?.first_from(seq)?)
    }

    async fn trim(&self, keep: usize, age: Duration, delivered: u64) -> StoreResult<usize> {
        let log = self.log()?.clone();
        Ok(blocking(move || log.trim(keep, age, delivered)).await?)
    }

    async fn cursor(&self, endpoint: &str) -> StoreResult<Option<u64>> {
        let path = self.endpoint_dir(endpoint).join("cursor");
        let Some(bytes) = read_if_any(&path)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Corrupt {
                what: path.display().to_string(),
                why: "not a number".into(),
            })
    }

    async fn save_cursor(&self, endpoint: &str, seq: u64) -> StoreResult<()> {
        let path = self.endpoint_dir(endpoint).join("cursor");
        Ok(blocking(move || write_atomic(&path, seq.to_string().as_bytes())).await?)
    }

    async fn try_lease(&self, endpoint: &str) -> StoreResult<Option<Guard>> {
        Ok(lease(&self.endpoint_dir(endpoint))?)
    }
}

fn lease(dir: &Path) -> io::Result<Option<Guard>> {
    fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lease.lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Box::new(file))),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_cursors_and_leases_keep_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let state = FsState::new(dir.path().to_owned());
        assert_eq!(state.get(Record::Report("gc")).await.unwrap(), None);
        state
            .put(Record::Report("gc"), b"{}".to_vec())
            .await
            .unwrap();
        state
            .put(Record::SignedOut("alice"), b"42".to_vec())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("reports/gc.json")).unwrap(),
            b"{}"
        );
        let stamp = hex::encode(Sha256::digest(b"alice"));
        let stamp = dir.path().join("ui/signed-out").join(stamp);
        assert_eq!(std::fs::read(stamp).unwrap(), b"42");
        assert!(state.put(Record::Report("../x"), vec![]).await.is_err());

        assert_eq!(state.cursor("hook").await.unwrap(), None);
        state.save_cursor("hook", 7).await.unwrap();
        assert_eq!(state.cursor("hook").await.unwrap(), Some(7));
        let cursor = dir.path().join("events/endpoints/hook/cursor");
        assert_eq!(std::fs::read_to_string(cursor).unwrap(), "7");

        let held = state.try_lease("hook").await.unwrap();
        assert!(held.is_some());
        assert!(state.try_lease("hook").await.unwrap().is_none());
        drop(held);
        assert!(state.try_lease("hook").await.unwrap().is_some());

        assert_eq!(state.newest().await.unwrap(), 0);
        assert_eq!(state.append(b"{}".to_vec()).await.unwrap(), 1);
        assert_eq!(state.read(1).await.unwrap().as_deref(), Some(&b"{}"[..]));
        assert!(dir.path().join("events/log").is_dir());
    }
}
