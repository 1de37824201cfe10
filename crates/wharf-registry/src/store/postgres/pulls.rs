//! Pull counts in the `pull_counts` table (migration 0006): one upsert per batch adds to
//! every repository in it, so replicas add to the same figures without a lock.

use async_trait::async_trait;

use super::meta::PgMetaStore;
use crate::store::state::PullCounts;
use crate::store::StoreResult;

#[async_trait]
impl PullCounts for PgMetaStore {
    async fn add_pulls(&self, counts: &[(String, u64)]) -> StoreResult<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = counts.iter().map(|(r, _)| r.as_str()).collect();
        let ns: Vec<i64> = counts
            .iter()
            .map(|(_, n)| i64::try_from(*n).unwrap_or(i64::MAX))
            .collect();
        sqlx::query(
            "INSERT INTO pull_counts (repository, pulls)
             SELECT * FROM UNNEST($1::text[], $2::bigint[])
             ON CONFLICT (repository) DO UPDATE SET pulls = pull_counts.pulls + EXCLUDED.pulls",
        )
        .bind(&names)
        .bind(&ns)
        .execute(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    async fn pulls(&self, repos: &[String]) -> StoreResult<Vec<u64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT repository, pulls FROM pull_counts WHERE repository = ANY($1::text[])",
        )
        .bind(repos)
        .fetch_all(self.db().await?)
        .await
        .map_err(self.err())?;
        let found: std::collections::HashMap<String, i64> = rows.into_iter().collect();
        Ok(repos
            .iter()
            .map(|r| found.get(r).map_or(0, |n| (*n).max(0) as u64))
            .collect())
    }
}
