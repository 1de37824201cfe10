//! Manifest puts on PostgreSQL: the row, its children's retain, its tag, and for a
//! registry's write the review-queue locks that keep a review from collecting what the
//! put references while it is being recorded (docs/storage.md, review queues).

use std::time::SystemTime;

use sqlx::{Postgres, Transaction};
use wharf_oci::{Digest, RepoName};

use super::meta::{at, digests, parse_digest, PgMetaStore};
use crate::store::{ManifestRecord, StoreError, StoreResult};

impl PgMetaStore {
    /// Record a manifest put at `when`, retaining its children, and move `tag` to it
    /// (pushed at `when` too). Idempotent, so an import can run again.
    pub async fn put_manifest_at(
        &self,
        repo: &RepoName,
        m: &ManifestRecord,
        tag: Option<(&str, SystemTime)>,
        when: SystemTime,
    ) -> StoreResult<()> {
        self.record_manifest(repo, m, tag, when, None, &[]).await
    }

    /// `check`: a registry's write, which locks the review-queue rows of what the manifest
    /// references and checks, once they are held, that none was collected meanwhile
    /// (`Some(true)`: its blobs must be linked in `repo`, as a client's push requires).
    /// `events` are recorded in the same transaction, last.
    pub(super) async fn record_manifest(
        &self,
        repo: &RepoName,
        m: &ManifestRecord,
        tag: Option<(&str, SystemTime)>,
        when: SystemTime,
        check: Option<bool>,
        events: &[Vec<u8>],
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let id = self.ensure_repo(&mut tx, repo).await?;
        if check.is_some() {
            self.hold_children(&mut tx, id, m).await?;
        }
        let referrer = match &m.referrer {
            Some((_, d)) => Some(serde_json::to_string(d).map_err(std::io::Error::other)?),
            None => None,
        };
        sqlx::query(
            "INSERT INTO manifests (repository_id, digest, put_at, blobs, foreign_blobs, children, subject, referrer)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
             ON CONFLICT (repository_id, digest) DO UPDATE SET put_at = GREATEST(manifests.put_at, EXCLUDED.put_at),
               blobs = EXCLUDED.blobs, foreign_blobs = EXCLUDED.foreign_blobs, children = EXCLUDED.children,
               subject = EXCLUDED.subject, referrer = EXCLUDED.referrer",
        )
        .bind(id)
        .bind(m.digest.to_string())
        .bind(at(when))
        .bind(digests(&m.blobs))
        .bind(digests(&m.foreign))
        .bind(digests(&m.children))
        .bind(m.subject().map(Digest::to_string))
        .bind(referrer)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        let held = match check {
            Some(linked) => Some(self.hold_blobs(&mut tx, id, m, linked).await?),
            None => None,
        };
        // An index retains its children, so a collection racing this put does not take a
        // child that only this index keeps.
        if !m.children.is_empty() {
            sqlx::query(
                "UPDATE manifests SET put_at = GREATEST(put_at, $3)
                 WHERE repository_id = $1 AND digest = ANY($2)",
            )
            .bind(id)
            .bind(digests(&m.children))
            .bind(at(when))
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        }
        if let Some((tag, pushed)) = tag {
            sqlx::query(
                "INSERT INTO tags (repository_id, name, digest, pushed_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (repository_id, name) DO UPDATE SET digest = EXCLUDED.digest, pushed_at = EXCLUDED.pushed_at",
            )
            .bind(id)
            .bind(tag)
            .bind(m.digest.to_string())
            .bind(at(pushed))
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        }
        if let Some(held) = held {
            self.unlock_blob_rows(&mut tx, &held).await?;
        }
        self.record_events(&mut tx, events).await?;
        tx.commit().await.map_err(self.err())
    }

    /// Share-lock the child manifests an index names, so that a review (which takes them
    /// FOR UPDATE SKIP LOCKED) cannot delete one while this index is put; all must exist.
    async fn hold_children(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        id: i64,
        m: &ManifestRecord,
    ) -> StoreResult<()> {
        if m.children.is_empty() {
            return Ok(());
        }
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM manifests WHERE repository_id = $1 AND digest = ANY($2)
             ORDER BY digest FOR SHARE",
        )
        .bind(id)
        .bind(digests(&m.children))
        .fetch_all(&mut **tx)
        .await
        .map_err(self.err())?;
        match m.children.iter().find(|c| !found.contains(&c.to_string())) {
            Some(gone) => Err(StoreError::BlobUnknown(gone.clone())),
            None => Ok(()),
        }
    }

    /// Lock the queue rows of the manifest's blobs and its own bytes; then any that a
    /// review finished with meanwhile shows: its links are gone (`linked`), or a queued
    /// one's bytes are. Returns the digests to unlock at commit.
    async fn hold_blobs(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        id: i64,
        m: &ManifestRecord,
        linked: bool,
    ) -> StoreResult<Vec<String>> {
        let mut ds = digests(&m.blobs);
        ds.push(m.digest.to_string());
        let queued = self.lock_blob_rows(tx, &ds).await?;
        if linked && !m.blobs.is_empty() {
            let unlinked: Option<String> = sqlx::query_scalar(
                "SELECT d FROM unnest($2::text[]) AS d WHERE NOT EXISTS
                   (SELECT 1 FROM blob_links l WHERE l.repository_id = $1 AND l.digest = d) LIMIT 1",
            )
            .bind(id)
            .bind(digests(&m.blobs))
            .fetch_optional(&mut **tx)
            .await
            .map_err(self.err())?;
            if let Some(d) = unlinked {
                return Err(StoreError::BlobUnknown(parse_digest(&d, "a blob link")?));
            }
        }
        // The manifest's own bytes were written before this lock, and a review that held
        // the row then may have deleted them (a push's always: a review may have finished
        // with them, row and all, before this lock was taken).
        let own = m.digest.to_string();
        let mut check: Vec<&String> = queued.iter().filter(|d| **d == own || linked).collect();
        if linked && !check.contains(&&own) {
            check.push(&own);
        }
        for d in check {
            let digest = parse_digest(d, "a queued digest")?;
            if self.blobs.stat(&digest).await?.is_none() {
                return Err(StoreError::BlobUnknown(digest));
            }
        }
        Ok(ds)
    }
}
