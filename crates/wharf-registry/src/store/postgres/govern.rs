//! Quota figures and small records in PostgreSQL, shared by every replica: the
//! `quota_usage`/`quota_blobs` and `wharf_records` tables (migration 8).
//!
//! A charge adds its blob and grows the total in one transaction, so the two never
//! disagree; callers hold the quota's advisory lock (`Locks::exclusive`) from their read of
//! the figure to the charge, so that racing replicas are charged one after the other.

use async_trait::async_trait;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use wharf_oci::Digest;

use super::{migrate, store_error};
use crate::store::state::{QuotaLedger, Record, Records};
use crate::store::{StoreError, StoreResult};

pub struct PgGovern {
    pool: PgPool,
    describe: String,
    migrated: OnceCell<()>,
}

impl PgGovern {
    pub fn new(pool: PgPool, describe: String) -> PgGovern {
        PgGovern {
            pool,
            describe,
            migrated: OnceCell::new(),
        }
    }

    async fn db(&self) -> StoreResult<&PgPool> {
        self.migrated
            .get_or_try_init(|| migrate::up(&self.pool))
            .await?;
        Ok(&self.pool)
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        |e| store_error(&self.describe, e)
    }
}

fn bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl QuotaLedger for PgGovern {
    async fn usage(&self, quota: &str) -> StoreResult<Option<u64>> {
        let n: Option<i64> = sqlx::query_scalar("SELECT bytes FROM quota_usage WHERE quota = $1")
            .bind(quota)
            .fetch_optional(self.db().await?)
            .await
            .map_err(self.err())?;
        Ok(n.map(|n| n.max(0) as u64))
    }

    async fn charged(&self, quota: &str, digest: &Digest) -> StoreResult<bool> {
        let n: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM quota_blobs WHERE quota = $1 AND digest = $2")
                .bind(quota)
                .bind(digest.to_string())
                .fetch_optional(self.db().await?)
                .await
                .map_err(self.err())?;
        Ok(n.is_some())
    }

    async fn charge(&self, quota: &str, digest: &Digest, size: u64) -> StoreResult<()> {
        let mut tx = self.db().await?.begin().await.map_err(self.err())?;
        let added = sqlx::query(
            "INSERT INTO quota_blobs (quota, digest, size) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(quota)
        .bind(digest.to_string())
        .bind(bytes(size))
        .execute(&mut *tx)
        .await
        .map_err(self.err())?
        .rows_affected();
        if added == 1 {
            sqlx::query(
                "INSERT INTO quota_usage (quota, bytes) VALUES ($1, $2) \
                 ON CONFLICT (quota) DO UPDATE SET bytes = quota_usage.bytes + EXCLUDED.bytes",
            )
            .bind(quota)
            .bind(bytes(size))
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        }
        tx.commit().await.map_err(self.err())
    }

    async fn replace(&self, quota: &str, blobs: &[(Digest, u64)]) -> StoreResult<Option<u64>> {
        let old = self.usage(quota).await?;
        let digests: Vec<String> = blobs.iter().map(|(d, _)| d.to_string()).collect();
        let sizes: Vec<i64> = blobs.iter().map(|(_, s)| bytes(*s)).collect();
        let total = blobs.iter().fold(0u64, |t, (_, s)| t.saturating_add(*s));
        let mut tx = self.db().await?.begin().await.map_err(self.err())?;
        sqlx::query("DELETE FROM quota_blobs WHERE quota = $1")
            .bind(quota)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        sqlx::query(
            "INSERT INTO quota_blobs (quota, digest, size) \
             SELECT $1, d, s FROM unnest($2::text[], $3::bigint[]) AS t(d, s)",
        )
        .bind(quota)
        .bind(&digests)
        .bind(&sizes)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        sqlx::query(
            "INSERT INTO quota_usage (quota, bytes) VALUES ($1, $2) \
             ON CONFLICT (quota) DO UPDATE SET bytes = EXCLUDED.bytes",
        )
        .bind(quota)
        .bind(bytes(total))
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        tx.commit().await.map_err(self.err())?;
        Ok(old)
    }
}

fn key(record: Record<'_>) -> (&'static str, &str) {
    match record {
        Record::Report(job) => ("report", job),
        Record::SignedOut(user) => ("signed-out", user),
    }
}

#[async_trait]
impl Records for PgGovern {
    async fn get(&self, record: Record<'_>) -> StoreResult<Option<Vec<u8>>> {
        let (kind, name) = key(record);
        sqlx::query_scalar("SELECT value FROM wharf_records WHERE kind = $1 AND name = $2")
            .bind(kind)
            .bind(name)
            .fetch_optional(self.db().await?)
            .await
            .map_err(self.err())
    }

    async fn put(&self, record: Record<'_>, value: Vec<u8>) -> StoreResult<()> {
        let (kind, name) = key(record);
        sqlx::query(
            "INSERT INTO wharf_records (kind, name, value) VALUES ($1, $2, $3) \
             ON CONFLICT (kind, name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(kind)
        .bind(name)
        .bind(value)
        .execute(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(())
    }
}
