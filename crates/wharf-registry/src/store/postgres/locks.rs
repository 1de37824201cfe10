//! [`Locks`] across hosts: PostgreSQL's session advisory locks.
//! - writer: `pg_advisory_lock_shared(K)`, collector: `pg_advisory_lock(K)`. PostgreSQL
//!   queues a new shared request behind a waiting exclusive one, so a steady stream of
//!   writers cannot starve a collector (what `gate.lock` does for the filesystem);
//! - a job: `pg_try_advisory_lock(hash(name))`, so a job runs once across replicas.
//!
//! A session lock belongs to its connection: a guard owns one, and on drop unlocks it and
//! returns it to the pool. If that cannot be done (no runtime, the unlock fails), the
//! connection is closed instead, which ends the session and so releases the lock; a
//! process that dies releases its locks the same way.

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::runtime::RuntimeFlavor;
use wharf_oci::Digest;

use super::store_error;
use crate::store::keyed::KeyedMutex;
use crate::store::{Guard, Locks, StoreResult};

pub struct PgLocks {
    pool: PgPool,
    /// The connections of [`Locks::exclusive`]'s locks. Their holders go on to take the
    /// writer lock; were both on one pool, holders of distinct names could take every
    /// connection and wait forever for one more.
    keyed_pool: PgPool,
    keyed: KeyedMutex,
    describe: String,
}

/// Locks of one kind share a key; a name picks it (the first 8 bytes of its SHA-256), so
/// every wharf version and replica agrees on it.
fn key(name: &str) -> i64 {
    let hex = Digest::sha256_of(format!("wharf/{name}").as_bytes()).hex()[..16].to_owned();
    u64::from_str_radix(&hex, 16).expect("hex digits") as i64
}

struct Held {
    conn: Option<PoolConnection<Postgres>>,
    unlock: &'static str,
    key: i64,
    /// Release before drop returns. A job's guard does: the next run of a job (`wharf
    /// garbage-collect` run again at once, by a script) must find it free, and a session
    /// the process leaves behind by exiting is only released once its server notices.
    /// The writer and collector guards, dropped on every write, release in the background.
    wait: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime to unlock on (a pool connection cannot even be returned without
            // one): closing the connection ends the session, which releases the lock.
            drop(conn.detach());
            return;
        };
        let (unlock, key) = (self.unlock, self.key);
        let release = async move {
            let unlocked: Result<bool, _> = sqlx::query_scalar(unlock)
                .bind(key)
                .fetch_one(&mut *conn)
                .await;
            if !matches!(unlocked, Ok(true)) {
                // Not released: a session that ends releases it.
                conn.close_on_drop();
            }
        };
        if self.wait && rt.runtime_flavor() == RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(|| rt.block_on(release));
        } else {
            drop(rt.spawn(release));
        }
    }
}

impl PgLocks {
    pub fn new(pool: PgPool, keyed_pool: PgPool, describe: String) -> PgLocks {
        PgLocks {
            pool,
            keyed_pool,
            keyed: KeyedMutex::default(),
            describe,
        }
    }

    /// A connection of the lock pool. When every one is taken, by holders and by waiters
    /// queued behind a collector, the database is up and a lock is busy: keep waiting, as
    /// a lock waits, instead of failing the write as unavailable.
    async fn connection(&self) -> StoreResult<PoolConnection<Postgres>> {
        Self::connection_of(&self.pool, &self.describe).await
    }

    async fn connection_of(pool: &PgPool, describe: &str) -> StoreResult<PoolConnection<Postgres>> {
        loop {
            match pool.acquire().await {
                Ok(c) => return Ok(c),
                Err(sqlx::Error::PoolTimedOut) if pool.size() > 0 => continue,
                Err(e) => return Err(store_error(describe, e)),
            }
        }
    }

    /// Wait for a lock on a connection of its own.
    async fn hold(&self, lock: &str, unlock: &'static str, name: &str) -> StoreResult<Guard> {
        let mut conn = self.connection().await?;
        let key = key(name);
        sqlx::query(lock)
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(|e| store_error(&self.describe, e))?;
        Ok(Box::new(Held {
            conn: Some(conn),
            unlock,
            key,
            wait: false,
        }))
    }
}

#[async_trait]
impl Locks for PgLocks {
    async fn writer(&self) -> StoreResult<Guard> {
        self.hold(
            "SELECT pg_advisory_lock_shared($1)",
            "SELECT pg_advisory_unlock_shared($1)",
            "gc",
        )
        .await
    }

    async fn collector(&self) -> StoreResult<Guard> {
        self.hold(
            "SELECT pg_advisory_lock($1)",
            "SELECT pg_advisory_unlock($1)",
            "gc",
        )
        .await
    }

    async fn try_job(&self, name: &str) -> StoreResult<Option<Guard>> {
        let mut conn = self.connection().await?;
        let key = key(&format!("job/{name}"));
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| store_error(&self.describe, e))?;
        Ok(got.then(|| {
            Box::new(Held {
                conn: Some(conn),
                unlock: "SELECT pg_advisory_unlock($1)",
                key,
                wait: true,
            }) as Guard
        }))
    }

    async fn exclusive(&self, name: &str) -> StoreResult<Guard> {
        // One task of this process waits on the database per name; the rest queue here.
        let local = self.keyed.lock(name).await;
        let mut conn = Self::connection_of(&self.keyed_pool, &self.describe).await?;
        let key = key(&format!("exclusive/{name}"));
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(|e| store_error(&self.describe, e))?;
        let held = Held {
            conn: Some(conn),
            unlock: "SELECT pg_advisory_unlock($1)",
            key,
            // The next holder, often on another replica, waits for this release.
            wait: true,
        };
        Ok(Box::new((held, local)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(super::key("gc"), super::key("gc"));
        assert_ne!(super::key("gc"), super::key("job/gc"));
    }
}
