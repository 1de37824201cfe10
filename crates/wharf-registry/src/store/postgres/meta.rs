//! [`MetaStore`] on PostgreSQL. Listings come from indexes with keyset pagination
//! (`WHERE name > $last ORDER BY name LIMIT n+1`), never from a walk. A manifest's put time
//! is the `now` its writer passes, read from `BlobStore::now` ([`crate::store::Store::put_time`]),
//! the clock garbage collection reads the instant its mark began from (the bucket's, on
//! S3), so that skew between hosts cannot make a put after the mark look older than it.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use sqlx::types::time::OffsetDateTime;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::OnceCell;
use wharf_oci::{Descriptor, Digest, RepoName, Tag};

use super::{migrate, store_error};
use crate::store::{BlobStore, ManifestRecord, MetaStore, Page, StoreError, StoreResult};

pub struct PgMetaStore {
    pool: PgPool,
    /// Where manifests' bytes are, for manifests this database has no record of.
    pub(super) blobs: Arc<dyn BlobStore>,
    describe: String,
    /// Pending migrations are applied once, when the database is first reached.
    migrated: OnceCell<()>,
    /// Tag lists by repository id, with the `tags_version` they were read at.
    pub(super) tag_lists: dashmap::DashMap<i64, (i64, Arc<Vec<String>>)>,
}

pub(super) fn digests(ds: &[Digest]) -> Vec<String> {
    ds.iter().map(Digest::to_string).collect()
}

pub(super) fn parse_digest(s: &str, what: &str) -> StoreResult<Digest> {
    s.parse().map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        why: format!("{s:?}: {e}"),
    })
}

fn parse_digests(ss: &[String], what: &str) -> StoreResult<Vec<Digest>> {
    ss.iter().map(|s| parse_digest(s, what)).collect()
}

pub(super) fn at(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

/// A page from `limit + 1` rows: the extra one only says there is more.
fn page(mut items: Vec<String>, n: Option<usize>) -> Page {
    let more = n.is_some_and(|n| items.len() > n);
    if let Some(n) = n {
        items.truncate(n);
    }
    Page { items, more }
}

fn limit(n: Option<usize>) -> Option<i64> {
    n.map(|n| n.saturating_add(1).min(i64::MAX as usize) as i64)
}

type RecordRow = (
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Option<String>,
    Option<String>,
);

impl PgMetaStore {
    pub fn new(pool: PgPool, blobs: Arc<dyn BlobStore>, describe: String) -> PgMetaStore {
        PgMetaStore {
            pool,
            blobs,
            describe,
            migrated: OnceCell::new(),
            tag_lists: dashmap::DashMap::new(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool, once the schema is current. A failure (the database is down) is retried
    /// by the next call.
    pub(super) async fn db(&self) -> StoreResult<&PgPool> {
        self.migrated
            .get_or_try_init(|| migrate::up(&self.pool))
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(why) => {
                    StoreError::Unavailable(format!("{}: {why}", self.describe))
                }
                other => other,
            })?;
        Ok(&self.pool)
    }

    pub(super) fn err(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        |e| store_error(&self.describe, e)
    }

    pub(super) async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.db().await?.begin().await.map_err(self.err())
    }

    /// The repository's id, creating it.
    pub(super) async fn ensure_repo(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        repo: &RepoName,
    ) -> StoreResult<i64> {
        sqlx::query("INSERT INTO repositories (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(repo.as_str())
            .execute(&mut **tx)
            .await
            .map_err(self.err())?;
        sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(self.err())
    }

    async fn repo_id(&self, repo: &RepoName) -> StoreResult<Option<i64>> {
        sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(self.db().await?)
            .await
            .map_err(self.err())
    }

    /// What the database recorded for `digest` when it was put, in any repository.
    async fn stored_record(&self, digest: &Digest) -> StoreResult<Option<ManifestRecord>> {
        let row: Option<RecordRow> = sqlx::query_as(
            "SELECT blobs, foreign_blobs, children, subject, referrer::text
             FROM manifests WHERE digest = $1 LIMIT 1",
        )
        .bind(digest.to_string())
        .fetch_optional(self.db().await?)
        .await
        .map_err(self.err())?;
        let Some((blobs, foreign, children, subject, referrer)) = row else {
            return Ok(None);
        };
        let what = format!("manifest {digest} in the database");
        let referrer = match (subject, referrer) {
            (Some(s), Some(r)) => {
                let d: Descriptor = serde_json::from_str(&r).map_err(|e| StoreError::Corrupt {
                    what: what.clone(),
                    why: e.to_string(),
                })?;
                Some((parse_digest(&s, &what)?, d))
            }
            _ => None,
        };
        Ok(Some(ManifestRecord {
            digest: digest.clone(),
            blobs: parse_digests(&blobs, &what)?,
            foreign: parse_digests(&foreign, &what)?,
            children: parse_digests(&children, &what)?,
            referrer,
        }))
    }

    /// Run a statement with (repository name, digest or tag) and say whether it touched a row.
    async fn affected(&self, sql: &str, repo: &RepoName, key: &str) -> StoreResult<bool> {
        let done = sqlx::query(sql)
            .bind(repo.as_str())
            .bind(key)
            .execute(self.db().await?)
            .await
            .map_err(self.err())?;
        Ok(done.rows_affected() > 0)
    }

    async fn exists(&self, sql: &str, repo: &RepoName, key: &str) -> StoreResult<bool> {
        sqlx::query_scalar(sql)
            .bind(repo.as_str())
            .bind(key)
            .fetch_one(self.db().await?)
            .await
            .map_err(self.err())
    }
}

#[async_trait]
impl MetaStore for PgMetaStore {
    async fn repo_exists(&self, repo: &RepoName) -> StoreResult<bool> {
        Ok(self.repo_id(repo).await?.is_some())
    }

    /// Under the blob's queue-row lock, and only if its bytes are still there once it is
    /// held: a review that deleted them since the caller looked has removed every link,
    /// and this one must not point at nothing (BlobUnknown: the client pushes it again).
    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let id = self.ensure_repo(&mut tx, repo).await?;
        let d = vec![digest.to_string()];
        self.lock_blob_rows(&mut tx, &d).await?;
        if self.blobs.stat(digest).await?.is_none() {
            return Err(StoreError::BlobUnknown(digest.clone()));
        }
        sqlx::query(
            "INSERT INTO blob_links (repository_id, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(digest.to_string())
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        self.unlock_blob_rows(&mut tx, &d).await?;
        tx.commit().await.map_err(self.err())
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        self.exists(
            "SELECT EXISTS (SELECT 1 FROM blob_links l JOIN repositories r ON r.id = l.repository_id
             WHERE r.name = $1 AND l.digest = $2)",
            repo,
            &digest.to_string(),
        )
        .await
    }

    async fn missing_links(
        &self,
        repo: &RepoName,
        blobs: &[Digest],
        manifests: &[Digest],
    ) -> StoreResult<Vec<Digest>> {
        let missing: Vec<String> = sqlx::query_scalar(
            "WITH r AS (SELECT id FROM repositories WHERE name = $1)
             SELECT d FROM unnest($2::text[]) AS d WHERE NOT EXISTS
               (SELECT 1 FROM blob_links l, r WHERE l.repository_id = r.id AND l.digest = d)
             UNION ALL
             SELECT d FROM unnest($3::text[]) AS d WHERE NOT EXISTS
               (SELECT 1 FROM manifests m, r WHERE m.repository_id = r.id AND m.digest = d)",
        )
        .bind(repo.as_str())
        .bind(digests(blobs))
        .bind(digests(manifests))
        .fetch_all(self.db().await?)
        .await
        .map_err(self.err())?;
        parse_digests(&missing, "a digest the registry sent")
    }

    /// The queue row first, then the link (whose trigger queues the blob): the order a
    /// review takes them in, so the two never wait on each other in a cycle.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let d = vec![digest.to_string()];
        self.lock_blob_rows(&mut tx, &d).await?;
        let done = sqlx::query(
            "DELETE FROM blob_links l USING repositories r
             WHERE r.id = l.repository_id AND r.name = $1 AND l.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        self.unlock_blob_rows(&mut tx, &d).await?;
        tx.commit().await.map_err(self.err())?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
        now: SystemTime,
    ) -> StoreResult<()> {
        let tag = tag.map(|t| (t.as_str(), now));
        self.record_manifest(repo, manifest, tag, now, Some(false), &[])
            .await
    }

    async fn put_pushed_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
        now: SystemTime,
    ) -> StoreResult<()> {
        let tag = tag.map(|t| (t.as_str(), now));
        self.record_manifest(repo, manifest, tag, now, Some(true), &[])
            .await
    }

    async fn put_pushed_manifest_reporting(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
        now: SystemTime,
        events: &[Vec<u8>],
    ) -> StoreResult<()> {
        let tag = tag.map(|t| (t.as_str(), now));
        self.record_manifest(repo, manifest, tag, now, Some(true), events)
            .await
    }

    async fn delete_manifest_reporting(
        &self,
        repo: &RepoName,
        digest: &Digest,
        events: &[Vec<u8>],
    ) -> StoreResult<bool> {
        self.affected_reporting(
            "DELETE FROM manifests m USING repositories r
             WHERE r.id = m.repository_id AND r.name = $1 AND m.digest = $2",
            repo,
            &digest.to_string(),
            events,
        )
        .await
    }

    async fn delete_tag_reporting(
        &self,
        repo: &RepoName,
        tag: &Tag,
        events: &[Vec<u8>],
    ) -> StoreResult<bool> {
        self.affected_reporting(
            "DELETE FROM tags t USING repositories r
             WHERE r.id = t.repository_id AND r.name = $1 AND t.name = $2",
            repo,
            tag.as_str(),
            events,
        )
        .await
    }

    async fn forget_repository_reporting(
        &self,
        repo: &RepoName,
        events: &[Vec<u8>],
    ) -> StoreResult<()> {
        self.forget_reporting(repo, events).await
    }

    fn records_put_time(&self) -> bool {
        true
    }

    async fn manifest_linked(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        self.exists(
            "SELECT EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repository_id
             WHERE r.name = $1 AND m.digest = $2)",
            repo,
            &digest.to_string(),
        )
        .await
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<Digest>> {
        let d: Option<String> = sqlx::query_scalar(
            "SELECT t.digest FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = $1 AND t.name = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(self.db().await?)
        .await
        .map_err(self.err())?;
        d.map(|d| parse_digest(&d, &format!("tag {repo}:{tag}")))
            .transpose()
    }

    async fn tag_pushed(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<SystemTime>> {
        let t: Option<OffsetDateTime> = sqlx::query_scalar(
            "SELECT t.pushed_at FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = $1 AND t.name = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(t.map(SystemTime::from))
    }

    /// Its tags go with it (the foreign key cascades), in the same statement.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        self.affected(
            "DELETE FROM manifests m USING repositories r
             WHERE r.id = m.repository_id AND r.name = $1 AND m.digest = $2",
            repo,
            &digest.to_string(),
        )
        .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<bool> {
        self.delete_tag_link(repo, tag.as_str()).await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> StoreResult<Option<Page>> {
        self.tags_listed(repo, last, n).await
    }

    async fn search_repos(&self, needle: &str) -> StoreResult<Vec<String>> {
        self.search_names(needle).await
    }

    async fn list_repos(&self, last: Option<&str>, n: Option<usize>) -> StoreResult<Page> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM repositories WHERE ($1::text IS NULL OR name > $1)
             ORDER BY name LIMIT $2",
        )
        .bind(last)
        .bind(limit(n))
        .fetch_all(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(page(names, n))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> StoreResult<Vec<Descriptor>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT m.referrer::text FROM manifests m JOIN repositories r ON r.id = m.repository_id
             WHERE r.name = $1 AND m.subject = $2 AND m.referrer IS NOT NULL ORDER BY m.digest",
        )
        .bind(repo.as_str())
        .bind(subject.to_string())
        .fetch_all(self.db().await?)
        .await
        .map_err(self.err())?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(r).map_err(|e| StoreError::Corrupt {
                    what: format!("a referrer of {subject} in {repo}"),
                    why: e.to_string(),
                })
            })
            .collect()
    }

    async fn list_manifests(&self, repo: &RepoName) -> StoreResult<Vec<(Digest, SystemTime)>> {
        let rows: Vec<(String, OffsetDateTime)> = sqlx::query_as(
            "SELECT m.digest, m.put_at FROM manifests m JOIN repositories r ON r.id = m.repository_id
             WHERE r.name = $1",
        )
        .bind(repo.as_str())
        .fetch_all(self.db().await?)
        .await
        .map_err(self.err())?;
        let what = format!("a manifest of {repo}");
        rows.into_iter()
            .map(|(d, t)| Ok((parse_digest(&d, &what)?, SystemTime::from(t))))
            .collect()
    }

    async fn tag_targets(
        &self,
        repo: &RepoName,
    ) -> StoreResult<Vec<(String, Result<Digest, String>)>> {
        Ok(self
            .tag_rows(repo)
            .await?
            .into_iter()
            .map(|(name, d, _)| (name, d.parse().map_err(|e| format!("{d:?}: {e}"))))
            .collect())
    }

    async fn tag_pushes(&self, repo: &RepoName) -> StoreResult<Vec<(String, Digest, SystemTime)>> {
        Ok(self
            .tag_rows(repo)
            .await?
            .into_iter()
            .filter_map(|(name, d, t)| Some((name, d.parse().ok()?, SystemTime::from(t))))
            .collect())
    }

    async fn all_blob_links(&self) -> StoreResult<Vec<(String, Arc<Vec<Digest>>)>> {
        let rows: Vec<(String, Vec<String>)> = sqlx::query_as(
            "SELECT r.name, COALESCE(array_agg(l.digest) FILTER (WHERE l.digest IS NOT NULL), '{}')
             FROM repositories r LEFT JOIN blob_links l ON l.repository_id = r.id
             GROUP BY r.name ORDER BY r.name",
        )
        .fetch_all(self.db().await?)
        .await
        .map_err(self.err())?;
        rows.into_iter()
            .map(|(name, ds)| {
                let ds = parse_digests(&ds, &format!("a blob link of {name}"))?;
                Ok((name, Arc::new(ds)))
            })
            .collect()
    }

    async fn list_blob_links(&self, repo: &RepoName) -> StoreResult<Vec<Digest>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT l.digest FROM blob_links l JOIN repositories r ON r.id = l.repository_id
             WHERE r.name = $1",
        )
        .bind(repo.as_str())
        .fetch_all(self.db().await?)
        .await
        .map_err(self.err())?;
        parse_digests(&rows, &format!("a blob link of {repo}"))
    }

    /// From the record the put left, while the bytes are still there (a manifest's
    /// references never change, and this saves a read and a parse per manifest in GC);
    /// from the bytes for a manifest the database does not know.
    async fn manifest_record(&self, digest: &Digest) -> StoreResult<Option<ManifestRecord>> {
        if self.blobs.stat(digest).await?.is_none() {
            return Ok(None);
        }
        if let Some(r) = self.stored_record(digest).await? {
            // A row with neither blobs nor children may be an index the pull-through cache
            // stored before its children arrived (so none were recorded): its bytes name
            // them, and GC must not take an image's platforms for garbage.
            if !(r.blobs.is_empty() && r.children.is_empty()) {
                return Ok(Some(r));
            }
        }
        crate::store::read_manifest_record(&*self.blobs, digest).await
    }

    /// One statement: put before `since` and no tag pointing at it, checked as it deletes.
    async fn delete_manifest_unless_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        since: SystemTime,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "DELETE FROM manifests m USING repositories r
             WHERE r.id = m.repository_id AND r.name = $1 AND m.digest = $2 AND m.put_at < $3
               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest)",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .bind(at(since))
        .execute(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_tag_link(&self, repo: &RepoName, tag: &str) -> StoreResult<bool> {
        self.affected(
            "DELETE FROM tags t USING repositories r
             WHERE r.id = t.repository_id AND r.name = $1 AND t.name = $2",
            repo,
            tag,
        )
        .await
    }

    async fn forget_repository(&self, repo: &RepoName) -> StoreResult<()> {
        sqlx::query("DELETE FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .execute(self.db().await?)
            .await
            .map_err(self.err())?;
        Ok(())
    }

    fn review_queue(&self) -> Option<&dyn crate::store::queue::ReviewQueue> {
        Some(self)
    }
}

impl PgMetaStore {
    async fn tag_rows(
        &self,
        repo: &RepoName,
    ) -> StoreResult<Vec<(String, String, OffsetDateTime)>> {
        sqlx::query_as(
            "SELECT t.name, t.digest, t.pushed_at FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = $1 ORDER BY t.name",
        )
        .bind(repo.as_str())
        .fetch_all(self.db().await?)
        .await
        .map_err(self.err())
    }
}
