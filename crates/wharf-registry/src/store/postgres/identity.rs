//! Tokens and the audit log in PostgreSQL, shared by every replica. A token is read from
//! its row on each check (callers cache for at most a second), so a revocation on one
//! replica holds on all of them at once. Audit appends take a transaction-scoped advisory
//! lock, so concurrent replicas extend one chain.

use async_trait::async_trait;
use sqlx::PgPool;
use tokio::sync::OnceCell;

use super::{migrate, store_error};
use crate::store::auditchain::{self, GENESIS};
use crate::store::state::{AuditEntry, AuditLog, TokenRecord, Tokens};
use crate::store::{StoreError, StoreResult};

pub struct PgIdentity {
    pool: PgPool,
    describe: String,
    migrated: OnceCell<()>,
}

type TokenRow = (
    String,
    Option<String>,
    Vec<String>,
    Vec<String>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

const TOKEN_COLUMNS: &str =
    "name, owner, owner_groups, scopes, hash, created_at, expires_at, revoked_at, last_used_at";

fn record(row: TokenRow) -> TokenRecord {
    let secs = |v: i64| v.max(0) as u64;
    TokenRecord {
        name: row.0,
        owner: row.1,
        owner_groups: row.2,
        scopes: row.3,
        hash: row.4,
        created: secs(row.5),
        expires: row.6.map(secs),
        revoked: row.7.map(secs),
        last_used: row.8.map(secs),
    }
}

/// The advisory lock key of audit appends.
const AUDIT_LOCK: i64 = 0x7768_6172_6661_7564; // "wharfaud"

impl PgIdentity {
    pub fn new(pool: PgPool, describe: String) -> PgIdentity {
        PgIdentity {
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

#[async_trait]
impl Tokens for PgIdentity {
    async fn create_token(&self, t: &TokenRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO robot_tokens (name, owner, owner_groups, scopes, hash, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&t.name)
        .bind(&t.owner)
        .bind(&t.owner_groups)
        .bind(&t.scopes)
        .bind(&t.hash)
        .bind(t.created as i64)
        .bind(t.expires.map(|e| e as i64))
        .execute(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(done.rows_affected() == 1)
    }

    async fn token(&self, name: &str) -> StoreResult<Option<TokenRecord>> {
        let row: Option<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM robot_tokens WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(row.map(record))
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let rows: Vec<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM robot_tokens ORDER BY name"
        ))
        .fetch_all(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(rows.into_iter().map(record).collect())
    }

    async fn revoke_token(&self, name: &str, at: u64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE robot_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE name = $1",
        )
        .bind(name)
        .bind(at as i64)
        .execute(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(done.rows_affected() == 1)
    }

    async fn token_used(&self, name: &str, at: u64) -> StoreResult<()> {
        sqlx::query("UPDATE robot_tokens SET last_used_at = $2 WHERE name = $1")
            .bind(name)
            .bind(at as i64)
            .execute(self.db().await?)
            .await
            .map_err(self.err())?;
        Ok(())
    }
}

#[async_trait]
impl AuditLog for PgIdentity {
    async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<Vec<String>> {
        let mut tx = self.db().await?.begin().await.map_err(self.err())?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE one")
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.err())?;
        let position: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM audit_log")
            .fetch_one(&mut *tx)
            .await
            .map_err(self.err())?;
        let (mut seq, mut prev) = head.map_or((0, GENESIS.to_owned()), |(s, h)| (s as u64, h));
        let mut position = position.unwrap_or(0);
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            seq += 1;
            position += 1;
            let (line, hash) = auditchain::seal(seq, &prev, entry);
            sqlx::query("INSERT INTO audit_log (position, line) VALUES ($1, $2)")
                .bind(position)
                .bind(&line)
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
            out.push(line);
            prev = hash;
        }
        sqlx::query(
            "INSERT INTO audit_head (one, seq, hash) VALUES (true, $1, $2) \
             ON CONFLICT (one) DO UPDATE SET seq = $1, hash = $2",
        )
        .bind(seq as i64)
        .bind(&prev)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        tx.commit().await.map_err(self.err())?;
        Ok(out)
    }

    async fn audit_lines(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT line FROM audit_log ORDER BY position")
            .fetch_all(self.db().await?)
            .await
            .map_err(self.err())
    }

    async fn audit_head(&self) -> StoreResult<Option<(u64, String)>> {
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE one")
                .fetch_optional(self.db().await?)
                .await
                .map_err(self.err())?;
        Ok(head.map(|(s, h)| (s as u64, h)))
    }
}
