//! Tag check times in the `proxy_tag_checks` table (migration 0009).

use std::time::Duration;

use async_trait::async_trait;

use super::meta::PgMetaStore;
use crate::store::tagchecks::TagChecks;
use crate::store::StoreResult;

#[async_trait]
impl TagChecks for PgMetaStore {
    async fn checked_ago(&self, repo: &str, tag: &str) -> StoreResult<Option<Duration>> {
        // Measured by the database's clock, which wrote it: replicas' skew does not count.
        let ago: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - checked)::float8
             FROM proxy_tag_checks WHERE repository = $1 AND tag = $2",
        )
        .bind(repo)
        .bind(tag)
        .fetch_optional(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(ago.map(|s| Duration::from_secs_f64(s.max(0.0))))
    }

    async fn confirm(&self, repo: &str, tag: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO proxy_tag_checks (repository, tag, checked) VALUES ($1, $2, now())
             ON CONFLICT (repository, tag) DO UPDATE SET checked = EXCLUDED.checked",
        )
        .bind(repo)
        .bind(tag)
        .execute(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(())
    }
}
