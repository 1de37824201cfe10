//! What `wharf database import` writes: a registry:2 root's links and tags as they were,
//! with their times. Every statement is an upsert, so an import can run again.

use std::time::SystemTime;

use wharf_oci::{Digest, RepoName};

use super::meta::{at, digests, PgMetaStore};
use crate::store::StoreResult;

impl PgMetaStore {
    /// Apply pending migrations now (rather than on first use).
    pub async fn migrate(&self) -> StoreResult<()> {
        self.db().await.map(|_| ())
    }

    pub async fn import_links(&self, repo: &RepoName, links: &[Digest]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let id = self.ensure_repo(&mut tx, repo).await?;
        sqlx::query(
            "INSERT INTO blob_links (repository_id, digest) SELECT $1, unnest($2::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(digests(links))
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        tx.commit().await.map_err(self.err())
    }

    /// Point `tag` at a manifest the repository has; false if it has not.
    pub async fn import_tag(
        &self,
        repo: &RepoName,
        tag: &str,
        digest: &Digest,
        pushed: SystemTime,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO tags (repository_id, name, digest, pushed_at)
             SELECT m.repository_id, $2, m.digest, $4 FROM manifests m JOIN repositories r ON r.id = m.repository_id
             WHERE r.name = $1 AND m.digest = $3
             ON CONFLICT (repository_id, name) DO UPDATE SET digest = EXCLUDED.digest, pushed_at = EXCLUDED.pushed_at",
        )
        .bind(repo.as_str())
        .bind(tag)
        .bind(digest.to_string())
        .bind(at(pushed))
        .execute(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(done.rows_affected() > 0)
    }
}
