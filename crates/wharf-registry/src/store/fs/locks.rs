//! [`Locks`] for processes sharing one directory on one host: `flock(2)` on files under
//! `_wharf/locks/`. A lock belongs to an open file description, so every acquisition opens
//! its own, and the kernel drops it when a holder dies, even by kill -9.
//!
//! `flock` lets shared holders overtake a waiting exclusive one, so under a steady stream
//! of writers a collector could wait forever. Two things stop that: in this process, a
//! fair read-write lock in front (a queued collector holds back later writers); across
//! processes, a turnstile (`gate.lock`) that writers pass through shared on their way in
//! and that a collector holds exclusive while it waits for the writers inside to leave.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::RwLock;

use super::blocking;
use crate::store::keyed::KeyedMutex;
use crate::store::{Guard, Locks, StoreResult};
use wharf_oci::Digest;

const GC: &str = "gc.lock";
const GATE: &str = "gate.lock";

pub struct FsLocks {
    dir: PathBuf,
    fair: Arc<RwLock<()>>,
    /// One task of this process at a time waits on the files, so writers held up by
    /// another process's collector queue here, not in blocking threads that the writers
    /// already inside need to finish.
    entering: tokio::sync::Mutex<()>,
    keyed: KeyedMutex,
}

impl FsLocks {
    pub fn new(dir: PathBuf) -> FsLocks {
        FsLocks {
            dir,
            fair: Arc::new(RwLock::new(())),
            entering: tokio::sync::Mutex::new(()),
            keyed: KeyedMutex::default(),
        }
    }

    fn open(dir: &std::path::Path, name: &str) -> io::Result<File> {
        let path = dir.join(name);
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        let opened = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).and_then(|()| open())
            }
            other => other,
        };
        opened.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot lock the store ({}: {e}); writing needs a writable storage root",
                    path.display()
                ),
            )
        })
    }
}

#[async_trait]
impl Locks for FsLocks {
    async fn writer(&self) -> StoreResult<Guard> {
        let fair = self.fair.clone().read_owned().await;
        let _one_at_a_time = self.entering.lock().await;
        let dir = self.dir.clone();
        let held = blocking(move || {
            let gate = Self::open(&dir, GATE)?;
            gate.lock_shared()?;
            drop(gate); // through the turnstile
            let gc = Self::open(&dir, GC)?;
            gc.lock_shared()?;
            Ok(gc)
        })
        .await?;
        Ok(Box::new((fair, held)))
    }

    async fn collector(&self) -> StoreResult<Guard> {
        let fair = self.fair.clone().write_owned().await;
        let dir = self.dir.clone();
        let held = blocking(move || {
            let gate = Self::open(&dir, GATE)?;
            gate.lock()?;
            let gc = Self::open(&dir, GC)?;
            gc.lock()?;
            Ok((gate, gc))
        })
        .await?;
        Ok(Box::new((fair, held)))
    }

    async fn try_job(&self, name: &str) -> StoreResult<Option<Guard>> {
        let file = Self::open(&self.dir, &format!("job-{name}.lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }

    async fn exclusive(&self, name: &str) -> StoreResult<Guard> {
        let local = self.keyed.lock(name).await;
        // A name may hold any character; its hash makes a file name of fixed length.
        let file = format!(
            "key-{}.lock",
            &Digest::sha256_of(name.as_bytes()).hex()[..32]
        );
        let dir = self.dir.clone();
        let held = blocking(move || {
            let f = Self::open(&dir, &file)?;
            f.lock()?;
            Ok(f)
        })
        .await?;
        Ok(Box::new((local, held)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_collector_waits_for_writers_and_jobs_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let locks = Arc::new(FsLocks::new(dir.path().join("locks")));
        let w1 = locks.writer().await.unwrap();
        let w2 = locks.writer().await.unwrap();
        let l = locks.clone();
        let collector = tokio::spawn(async move { l.collector().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!collector.is_finished(), "a writer still holds the lock");
        drop(w1);
        drop(w2);
        tokio::time::timeout(Duration::from_secs(5), collector)
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

    /// Writers that overlap without a gap, in this process and from another "process"
    /// (a second FsLocks on the same directory), do not keep a collector out.
    #[tokio::test]
    async fn a_stream_of_writers_does_not_starve_the_collector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks");
        for other_process in [false, true] {
            let writers = Arc::new(FsLocks::new(path.clone()));
            let collector_side = if other_process {
                Arc::new(FsLocks::new(path.clone()))
            } else {
                writers.clone()
            };
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (w, stop) = (writers.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _g = w.writer().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let got =
                tokio::time::timeout(Duration::from_secs(5), collector_side.collector()).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(
                got.is_ok(),
                "the collector starved (other process: {other_process})"
            );
            drop(got);
            for t in tasks {
                t.await.unwrap();
            }
        }
    }
}
