//! [`Locks`] for processes sharing one directory on one host: `flock(2)` on files under
//! `_wharf/locks/`. A lock belongs to an open file description, so every acquisition opens
//! its own, and the kernel drops it when a holder dies, even by kill -9.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::PathBuf;

use async_trait::async_trait;

use super::blocking;
use crate::store::{Guard, Locks, StoreResult};

pub struct FsLocks {
    dir: PathBuf,
}

impl FsLocks {
    pub fn new(dir: PathBuf) -> FsLocks {
        FsLocks { dir }
    }

    fn open(&self, name: &str) -> io::Result<File> {
        let path = self.dir.join(name);
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir)?;
                open()
            }
            other => other,
        }
    }

    async fn hold(&self, name: &'static str, exclusive: bool) -> StoreResult<Guard> {
        let file = self.open(name)?;
        let file = blocking(move || {
            if exclusive {
                file.lock()?;
            } else {
                file.lock_shared()?;
            }
            Ok(file)
        })
        .await?;
        Ok(Box::new(file))
    }
}

#[async_trait]
impl Locks for FsLocks {
    async fn writer(&self) -> StoreResult<Guard> {
        self.hold("gc.lock", false).await
    }

    async fn collector(&self) -> StoreResult<Guard> {
        self.hold("gc.lock", true).await
    }

    async fn try_job(&self, name: &str) -> StoreResult<Option<Guard>> {
        let file = self.open(&format!("job-{name}.lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_collector_waits_for_writers_and_jobs_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let locks = std::sync::Arc::new(FsLocks::new(dir.path().join("locks")));
        let w1 = locks.writer().await.unwrap();
        let _w2 = locks.writer().await.unwrap();
        let l = locks.clone();
        let collector = tokio::spawn(async move { l.collector().await.map(|_| ()) });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!collector.is_finished(), "a writer still holds the lock");
        drop(w1);
        drop(_w2);
        tokio::time::timeout(std::time::Duration::from_secs(5), collector)
            .await
            .expect("the collector gets the lock once writers are gone")
            .unwrap()
            .unwrap();
        let job = locks.try_job("gc").await.unwrap();
        assert!(job.is_some());
        assert!(locks.try_job("gc").await.unwrap().is_none());
        drop(job);
        assert!(locks.try_job("gc").await.unwrap().is_some());
    }
}
