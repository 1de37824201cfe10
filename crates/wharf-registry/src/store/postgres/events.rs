//! The event log in PostgreSQL (migration 0007), shared by every replica.
//!
//! - An event is inserted in the transaction of the change it reports
//!   ([`PgMetaStore::record_events`], called by the manifest put and the deletes), so an
//!   acknowledged push always has its event and a failed one never has.
//! - Ids are `max(id) + 1` under a transaction-scoped advisory lock taken just before the
//!   commit: ids commit in order and without holes, so a reader that has read event N
//!   never sees an event below N appear later (a sequence hands out numbers that can
//!   commit out of order, which a reader resuming "after N" would skip).
//! - Each insert sends `NOTIFY wharf_events` (delivered at commit), which every replica's
//!   `LISTEN` turns into a wake-up of its subscribers; a poll of `max(id)` covers a lost
//!   listening connection (see `registry::events`).
//! - A webhook endpoint's cursor and lease are one row of `event_endpoints`: the holder
//!   renews its lease every `LEASE_TTL / 4`; a replica that dies stops renewing, and
//!   another takes the lease over once it has expired, from the shared cursor.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Transaction};
use wharf_oci::Digest;

use super::meta::PgMetaStore;
use crate::store::state::EventLog;
use crate::store::{Guard, StoreError, StoreResult};

/// The channel every insert notifies.
const CHANNEL: &str = "wharf_events";
/// How long a delivery lease lasts without renewal: how long a dead replica's endpoints
/// wait before another replica takes them over.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

/// This process, as a lease holder.
static HOLDER: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().to_string());

/// The advisory key that orders appends (distinct from `locks`' keys by its name).
fn append_key() -> i64 {
    let hex = Digest::sha256_of(b"wharf/event-log-append").hex()[..16].to_owned();
    u64::from_str_radix(&hex, 16).expect("hex digits") as i64
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl PgMetaStore {
    /// Append `events` in order inside `tx`, as its last statements before the commit;
    /// their ids. The advisory lock is held from here to the commit only.
    pub(super) async fn record_events(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        events: &[Vec<u8>],
    ) -> StoreResult<Vec<u64>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let bodies = events
            .iter()
            .map(|e| String::from_utf8(e.clone()).map_err(std::io::Error::other))
            .collect::<Result<Vec<String>, _>>()?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(append_key())
            .execute(&mut **tx)
            .await
            .map_err(self.err())?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO events (id, body)
             SELECT m.n + e.ord, e.body
             FROM (SELECT COALESCE(MAX(id), 0) AS n FROM events) m,
                  unnest($1::text[]) WITH ORDINALITY AS e(body, ord)
             RETURNING id",
        )
        .bind(&bodies)
        .fetch_all(&mut **tx)
        .await
        .map_err(self.err())?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut **tx)
            .await
            .map_err(self.err())?;
        let mut ids: Vec<u64> = ids.into_iter().map(|i| i.max(0) as u64).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// [`PgMetaStore::affected`], recording `events` in the same transaction if it did.
    pub(super) async fn affected_reporting(
        &self,
        sql: &str,
        repo: &wharf_oci::RepoName,
        key: &str,
        events: &[Vec<u8>],
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(sql)
            .bind(repo.as_str())
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            self.record_events(&mut tx, events).await?;
        }
        tx.commit().await.map_err(self.err())?;
        Ok(deleted)
    }

    /// Forget `repo`, recording `events` in the same transaction.
    pub(super) async fn forget_reporting(
        &self,
        repo: &wharf_oci::RepoName,
        events: &[Vec<u8>],
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        self.record_events(&mut tx, events).await?;
        tx.commit().await.map_err(self.err())
    }

    async fn take_lease(&self, endpoint: &str) -> StoreResult<bool> {
        let got: Option<String> = sqlx::query_scalar(
            "INSERT INTO event_endpoints (endpoint, holder, expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3))
             ON CONFLICT (endpoint) DO UPDATE
               SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
               WHERE event_endpoints.holder IS NULL OR event_endpoints.holder = EXCLUDED.holder
                  OR event_endpoints.expires_at < now()
             RETURNING endpoint",
        )
        .bind(endpoint)
        .bind(HOLDER.as_str())
        .bind(secs(LEASE_TTL))
        .fetch_optional(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(got.is_some())
    }
}

/// Renew `endpoint`'s lease until dropped (or lost), then give it up.
struct Lease {
    renew: tokio::task::JoinHandle<()>,
    pool: PgPool,
    endpoint: String,
}

async fn renew(pool: PgPool, endpoint: String) {
    loop {
        tokio::time::sleep(LEASE_TTL / 4).await;
        let renewed = sqlx::query(
            "UPDATE event_endpoints SET expires_at = now() + make_interval(secs => $3)
             WHERE endpoint = $1 AND holder = $2",
        )
        .bind(&endpoint)
        .bind(HOLDER.as_str())
        .bind(secs(LEASE_TTL))
        .execute(&pool)
        .await;
        match renewed {
            Ok(done) if done.rows_affected() == 0 => {
                tracing::warn!(%endpoint, "the delivery lease passed to another replica");
                return;
            }
            Ok(_) => {}
            // Until it expires the lease is still this process's; keep trying.
            Err(e) => tracing::warn!(%endpoint, error = %e, "cannot renew the delivery lease"),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // it expires by itself
        };
        let (pool, endpoint) = (self.pool.clone(), std::mem::take(&mut self.endpoint));
        drop(rt.spawn(async move {
            let _ = sqlx::query(
                "UPDATE event_endpoints SET holder = NULL WHERE endpoint = $1 AND holder = $2",
            )
            .bind(endpoint)
            .bind(HOLDER.as_str())
            .execute(&pool)
            .await;
        }));
    }
}

#[async_trait]
impl EventLog for PgMetaStore {
    async fn append(&self, event: Vec<u8>) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let ids = self.record_events(&mut tx, &[event]).await?;
        tx.commit().await.map_err(self.err())?;
        Ok(ids.first().copied().unwrap_or(0))
    }

    async fn read(&self, seq: u64) -> StoreResult<Option<Vec<u8>>> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM events WHERE id = $1")
            .bind(to_i64(seq))
            .fetch_optional(self.db().await?)
            .await
            .map_err(self.err())?;
        Ok(body.map(String::into_bytes))
    }

    async fn newest(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(self.db().await?)
            .await
            .map_err(self.err())?;
        Ok(n.max(0) as u64)
    }

    async fn first_from(&self, seq: u64) -> StoreResult<Option<u64>> {
        let n: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM events WHERE id >= $1")
            .bind(to_i64(seq))
            .fetch_one(self.db().await?)
            .await
            .map_err(self.err())?;
        Ok(n.map(|n| n.max(0) as u64))
    }

    async fn trim(&self, keep: usize, age: Duration, delivered: u64) -> StoreResult<usize> {
        let done = sqlx::query(
            "WITH m AS (SELECT COALESCE(MAX(id), 0) AS n FROM events)
             DELETE FROM events e USING m
             WHERE e.id <= $1 AND e.id <= m.n - $2 AND e.id < m.n
               AND e.recorded_at < now() - make_interval(secs => $3)",
        )
        .bind(to_i64(delivered))
        .bind(to_i64(keep.max(1) as u64))
        .bind(secs(age))
        .execute(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(done.rows_affected() as usize)
    }

    async fn cursor(&self, endpoint: &str) -> StoreResult<Option<u64>> {
        let n: Option<Option<i64>> =
            sqlx::query_scalar("SELECT delivered FROM event_endpoints WHERE endpoint = $1")
                .bind(endpoint)
                .fetch_optional(self.db().await?)
                .await
                .map_err(self.err())?;
        Ok(n.flatten().map(|n| n.max(0) as u64))
    }

    /// Only while this process holds the lease: a holder that lost it (it stalled past
    /// the lease) learns so here and stops, rather than deliver beside the new holder.
    async fn save_cursor(&self, endpoint: &str, seq: u64) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE event_endpoints SET delivered = $3 WHERE endpoint = $1 AND holder = $2",
        )
        .bind(endpoint)
        .bind(HOLDER.as_str())
        .bind(to_i64(seq))
        .execute(self.db().await?)
        .await
        .map_err(self.err())?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Unavailable(format!(
                "the delivery lease of endpoint {endpoint} passed to another replica"
            )));
        }
        Ok(())
    }

    async fn try_lease(&self, endpoint: &str) -> StoreResult<Option<Guard>> {
        if !self.take_lease(endpoint).await? {
            return Ok(None);
        }
        let pool = self.pool().clone();
        let lease = Lease {
            renew: tokio::spawn(renew(pool.clone(), endpoint.to_owned())),
            pool,
            endpoint: endpoint.to_owned(),
        };
        Ok(Some(Box::new(lease)))
    }

    async fn listen(&self) -> StoreResult<Option<BoxStream<'static, ()>>> {
        let mut listener = PgListener::connect_with(self.db().await?)
            .await
            .map_err(self.err())?;
        listener.listen(CHANNEL).await.map_err(self.err())?;
        // A lost connection ends the stream: the caller polls, then listens again.
        let wakes = listener
            .into_stream()
            .take_while(|n| futures::future::ready(n.is_ok()))
            .map(|_| ());
        Ok(Some(wakes.boxed()))
    }
}
