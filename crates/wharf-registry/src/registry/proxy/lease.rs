//! One upstream fetch per blob and per manifest for the whole cluster. Within a process,
//! single flight (`flight.rs`) makes the askers follow one fill; across processes (several
//! on one filesystem root, or replicas on one bucket and database), the process that fills
//! holds a lease: the store's job lock (a `flock` under `_wharf/locks/` on a filesystem,
//! a PostgreSQL advisory lock with a database), released when the fill ends or its holder
//! dies.
//!
//! A process that finds the lease taken waits for the content to appear in the store and
//! then serves it from there; it never reads another process's growing upload. That
//! works the same on every backend (an S3 multipart upload cannot be read before it
//! completes), costs the followers of another replica only their first byte, and leaves
//! the cluster with one copy of the bytes coming in.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::store::{Guard, Locks, StoreError};

/// How often a waiting process looks for the content another one is fetching.
const POLL: Duration = Duration::from_millis(50);

/// A lease held this long without the content appearing is given up on: the follower
/// fetches for itself rather than wait on a holder that hangs (a stalled upstream is cut
/// off after a minute of silence, so this is a holder that is stuck in some other way).
const WAIT_AT_MOST: Duration = Duration::from_secs(30 * 60);

/// Leases held at once by this process. With a database each one holds a connection of
/// the lock pool for the whole fill, and a fill needs one more to publish what it
/// fetched: with at most this many held, the pool (10 by default) always has room for
/// the writer locks that let them finish.
pub const MAX_HELD: usize = 4;

/// What the lease gave: the right to fetch, or the content someone else fetched.
pub enum Leased<T> {
    Mine(Held),
    Done(T),
}

/// A held lease, with its place among this process's [`MAX_HELD`].
pub struct Held {
    _guard: Guard,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The lease of a fetch of `what` (a digest, a `repo@digest`): a name fit for a lock
/// file, the same in every process.
pub fn name(kind: &str, what: &str) -> String {
    format!(
        "proxy-{kind}-{}",
        &wharf_oci::Digest::sha256_of(what.as_bytes()).hex()[..32]
    )
}

/// Take the lease `name`, or wait until `ready` finds the content its holder fetched.
/// `ready` is asked first, and again once the lease is taken (its last holder may have
/// just finished).
pub async fn lease_or_wait<T, E, F, Fut>(
    locks: &dyn Locks,
    slots: &std::sync::Arc<Semaphore>,
    name: &str,
    ready: F,
) -> Result<Leased<T>, E>
where
    E: From<StoreError>,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let started = Instant::now();
    let mut logged = false;
    loop {
        if let Some(t) = ready().await? {
            return Ok(Leased::Done(t));
        }
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if let Some(guard) = locks.try_job(name).await? {
            if let Some(t) = ready().await? {
                return Ok(Leased::Done(t));
            }
            return Ok(Leased::Mine(Held {
                _guard: guard,
                _permit: permit,
            }));
        }
        drop(permit);
        if started.elapsed() > WAIT_AT_MOST {
            tracing::warn!(
                lease = name,
                "another process has held the fetch lease for {} s without result; giving up on it",
                WAIT_AT_MOST.as_secs()
            );
            return Err(StoreError::Unavailable(format!(
                "another process has been fetching this for over {} s",
                WAIT_AT_MOST.as_secs()
            ))
            .into());
        }
        if !logged {
            tracing::debug!(
                lease = name,
                "another process is fetching this; waiting for it"
            );
            logged = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::store::fs::FsLocks;

    #[tokio::test]
    async fn a_second_process_waits_for_the_first_ones_content() {
        let dir = tempfile::tempdir().unwrap();
        // Two lock tables on one directory: two processes on one root.
        let a = FsLocks::new(dir.path().to_path_buf());
        let b = Arc::new(FsLocks::new(dir.path().to_path_buf()));
        let slots = Arc::new(Semaphore::new(MAX_HELD));
        let stored = Arc::new(AtomicBool::new(false));
        let ready = |s: Arc<AtomicBool>| {
            move || {
                let s = s.clone();
                async move { Ok::<_, StoreError>(s.load(Ordering::SeqCst).then_some(7u32)) }
            }
        };
        let Leased::Mine(held) = lease_or_wait(&a, &slots, "x", ready(stored.clone()))
            .await
            .unwrap()
        else {
            panic!("the first asker gets the lease")
        };
        let (b2, slots2, stored2) = (b.clone(), slots.clone(), stored.clone());
        let follower = tokio::spawn(async move {
            match lease_or_wait(&*b2, &slots2, "x", ready(stored2))
                .await
                .unwrap()
            {
                Leased::Done(v) => v,
                Leased::Mine(_) => panic!("the follower fetched as well"),
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !follower.is_finished(),
            "the follower waits for the content"
        );
        stored.store(true, Ordering::SeqCst);
        drop(held);
        assert_eq!(follower.await.unwrap(), 7);
    }
}
