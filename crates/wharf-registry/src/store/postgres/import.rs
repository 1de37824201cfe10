//! `wharf database import`: a registry:2 root's repositories, links, manifests and tags
//! as they were, with their times. Every statement is an upsert, so an import can run again.

use std::time::{Instant, SystemTime};

use serde::Serialize;
use wharf_oci::{Digest, RepoName};

use super::meta::{at, digests, PgMetaStore};
use crate::store::{MetaStore, StoreError, StoreResult};

#[derive(Default, Serialize)]
pub struct ImportReport {
    pub repositories: usize,
    pub blob_links: usize,
    pub manifests: usize,
    pub tags: usize,
    /// Blobs no manifest names and untagged manifests, queued for review.
    pub queued_blobs: u64,
    pub queued_manifests: u64,
    /// What could not be imported, and why (manifests whose bytes are gone or do not
    /// parse, tags to such manifests): `wharf scrub` names the same.
    pub skipped: Vec<String>,
    pub seconds: f64,
}

/// Repositories imported at once: each costs a few listings of the storage (S3 round
/// trips), so one at a time spends the import waiting.
const IMPORT_CONCURRENCY: usize = 16;

/// Copy every repository `source` has (its blob links, manifests and tags with their
/// times) into `target`, applying pending migrations first. What cannot be copied is
/// reported, not fatal; an error of either store stops the import.
pub async fn import(source: &dyn MetaStore, target: &PgMetaStore) -> StoreResult<ImportReport> {
    use futures::{StreamExt, TryStreamExt};
    let started = Instant::now();
    target.migrate().await?;
    let names = source.list_repos(None, None).await?.items;
    let reports: Vec<ImportReport> = futures::stream::iter(names)
        .map(|name| async move {
            let mut report = ImportReport::default();
            match name.parse::<RepoName>() {
                Ok(repo) => {
                    copy_repo(source, target, &repo, &mut report).await?;
                    report.repositories += 1;
                }
                Err(_) => report
                    .skipped
                    .push(format!("{name}: not a valid repository name")),
            }
            StoreResult::Ok(report)
        })
        .buffer_unordered(IMPORT_CONCURRENCY)
        .try_collect()
        .await?;
    let mut report = ImportReport::default();
    for r in reports {
        report.repositories += r.repositories;
        report.blob_links += r.blob_links;
        report.manifests += r.manifests;
        report.tags += r.tags;
        report.skipped.extend(r.skipped);
    }
    report.skipped.sort();
    // What the import found unreferenced was never deleted here, so no trigger queued it.
    (report.queued_blobs, report.queued_manifests) =
        super::queue::queue_unreferenced(target).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn copy_repo(
    source: &dyn MetaStore,
    target: &PgMetaStore,
    repo: &RepoName,
    report: &mut ImportReport,
) -> StoreResult<()> {
    let links = source.list_blob_links(repo).await?;
    target.import_links(repo, &links).await?;
    report.blob_links += links.len();
    for (digest, put) in source.list_manifests(repo).await? {
        match source.manifest_record(&digest).await {
            Ok(Some(record)) => {
                target.put_manifest_at(repo, &record, None, put).await?;
                report.manifests += 1;
            }
            Ok(None) => report
                .skipped
                .push(format!("{repo}: manifest {digest}: its bytes are missing")),
            Err(StoreError::Corrupt { why, .. }) => report
                .skipped
                .push(format!("{repo}: manifest {digest}: {why}")),
            Err(e) => return Err(e),
        }
    }
    for (tag, digest, pushed) in source.tag_pushes(repo).await? {
        if target.import_tag(repo, &tag, &digest, pushed).await? {
            report.tags += 1;
        } else {
            report.skipped.push(format!(
                "{repo}:{tag}: points at {digest}, which was not imported"
            ));
        }
    }
    Ok(())
}

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
