//! [`ReviewQueue`] on PostgreSQL: the rows the triggers of migration 0003 queue, reviewed
//! with `FOR UPDATE SKIP LOCKED` so that any number of workers on any number of replicas
//! share the queues without reviewing a row twice at once. Writers that reference a blob
//! lock its queue row in their own transaction (`lock_blob_rows`), so a review and a push
//! of the same digest take turns; `docs/storage.md` walks through every interleaving.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use sqlx::types::time::OffsetDateTime;
use sqlx::{Postgres, Transaction};
use wharf_oci::Digest;

use super::meta::PgMetaStore;
use crate::store::queue::{
    BlobReview, Due, ManifestReview, QueueSizes, ReviewOptions, ReviewQueue,
};
use crate::store::{StoreError, StoreResult};

/// Blobs stat'ed at once for their sizes (bytes freed).
const PARALLEL_STATS: usize = 16;

/// A review waits this long at most for a row lock a writer holds (the triggers' queueing
/// of what a delete frees, mostly), then gives up and leaves its rows for the next pass.
/// Shorter than PostgreSQL's deadlock_timeout (1 s), so that in a lock cycle with a push
/// it is the review, which can always try again later, that yields.
const REVIEW_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '200ms'";

/// Test hook, documented in docs/storage.md: milliseconds a blob review sleeps after its
/// bucket deletes and before its commit, so a test can kill the process mid-review.
const REVIEW_DELAY_VAR: &str = "WHARF_GC_TEST_REVIEW_DELAY_MS";

/// Whether a manifest still names the digest: as a layer or config, a foreign layer, or
/// as its own bytes. GIN indexes make each an index probe (migration 0003).
const REFERENCED: &str = "SELECT d FROM unnest($1::text[]) AS d
    WHERE EXISTS (SELECT 1 FROM manifests WHERE blobs @> ARRAY[d])
       OR EXISTS (SELECT 1 FROM manifests WHERE foreign_blobs @> ARRAY[d])
       OR EXISTS (SELECT 1 FROM manifests WHERE digest = d)";

fn due_clause(due: Due) -> (&'static str, f64) {
    match due {
        Due::Now => ("review_after <= now() AND $2::float8 >= 0", 0.0),
        Due::QueuedBefore(g) => (
            "queued_at <= now() - make_interval(secs => $2::float8) AND event <> 'lock'",
            g.as_secs_f64(),
        ),
    }
}

fn parse(ds: Vec<String>, what: &str) -> StoreResult<Vec<Digest>> {
    ds.iter()
        .map(|s| {
            s.parse().map_err(|e| StoreError::Corrupt {
                what: what.to_owned(),
                why: format!("{s:?}: {e}"),
            })
        })
        .collect()
}

impl PgMetaStore {
    /// Lock the queue rows of `ds` in the caller's transaction, creating a placeholder row
    /// (event 'lock', never due) for a digest not queued, so that a delete queueing it
    /// meanwhile waits for this transaction, and a review holding it makes this wait.
    /// Returns the digests whose row was already there: a review may have been deciding
    /// them, so their bytes must be checked once the lock is held.
    pub(super) async fn lock_blob_rows(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        ds: &[String],
    ) -> StoreResult<Vec<String>> {
        let mut sorted: Vec<&String> = ds.iter().collect::<HashSet<_>>().into_iter().collect();
        sorted.sort();
        if sorted.is_empty() {
            return Ok(Vec::new());
        }
        // Sorted, so that two pushes sharing layers lock them in the same order.
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "INSERT INTO gc_blob_review_queue (digest, review_after, event)
             SELECT d, 'infinity', 'lock' FROM unnest($1::text[]) WITH ORDINALITY AS u(d, i) ORDER BY i
             ON CONFLICT (digest) DO UPDATE SET digest = EXCLUDED.digest
             RETURNING digest, (xmax = 0)",
        )
        .bind(sorted)
        .fetch_all(&mut **tx)
        .await
        .map_err(self.err())?;
        Ok(rows
            .into_iter()
            .filter(|(_, fresh)| !fresh)
            .map(|(d, _)| d)
            .collect())
    }

    /// Remove the placeholders `lock_blob_rows` made (a trigger that queued the digest
    /// meanwhile changed its event, and that row stays).
    pub(super) async fn unlock_blob_rows(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        ds: &[String],
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM gc_blob_review_queue WHERE digest = ANY($1) AND event = 'lock'")
            .bind(ds)
            .execute(&mut **tx)
            .await
            .map_err(self.err())?;
        Ok(())
    }

    async fn due_blobs(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        opts: &ReviewOptions,
    ) -> StoreResult<Vec<String>> {
        let (when, secs) = due_clause(opts.due);
        let lock = if opts.dry_run {
            ""
        } else {
            "FOR UPDATE SKIP LOCKED"
        };
        let sql = format!(
            "SELECT digest FROM gc_blob_review_queue WHERE {when}
             ORDER BY review_after LIMIT $1 {lock}"
        );
        sqlx::query_scalar(&sql)
            .bind(opts.batch as i64)
            .bind(secs)
            .fetch_all(&mut **tx)
            .await
            .map_err(self.err())
    }

    async fn sizes(&self, dangling: Vec<Digest>) -> StoreResult<Vec<(Digest, u64)>> {
        let blobs = self.blobs.clone();
        futures::stream::iter(dangling)
            .map(|d| {
                let blobs = blobs.clone();
                async move { Ok::<_, StoreError>((blobs.stat(&d).await?.unwrap_or(0), d)) }
            })
            .buffer_unordered(PARALLEL_STATS)
            .map_ok(|(size, d)| (d, size))
            .try_collect()
            .await
    }

    /// After a failed review: its rows wait longer each time (GitLab's backoff), up to a day.
    async fn back_off(&self, table: &str, key: &str, rows: &[String]) {
        let sql = format!(
            "UPDATE {table} SET review_count = review_count + 1,
               review_after = now() + LEAST(INTERVAL '1 day', INTERVAL '5 minutes' * power(2, LEAST(review_count, 10)))
             WHERE {key} = ANY($1)"
        );
        if let Ok(pool) = self.db().await {
            if let Err(e) = sqlx::query(&sql).bind(rows).execute(pool).await {
                tracing::warn!(error = %e, "cannot postpone the rows of a failed review");
            }
        }
    }

    async fn review_blob_batch(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        opts: &ReviewOptions,
        due: &[String],
    ) -> StoreResult<BlobReview> {
        let referenced: HashSet<String> = sqlx::query_scalar::<_, String>(REFERENCED)
            .bind(due)
            .fetch_all(&mut **tx)
            .await
            .map_err(self.err())?
            .into_iter()
            .collect();
        let dangling: Vec<String> = due
            .iter()
            .filter(|d| !referenced.contains(*d))
            .cloned()
            .collect();
        let mut report = BlobReview {
            reviewed: due.len(),
            kept: referenced.len(),
            ..BlobReview::default()
        };
        let parsed = parse(dangling.clone(), "a digest in gc_blob_review_queue")?;
        report.deleted = self.sizes(parsed.clone()).await?;
        if opts.dry_run {
            return Ok(report);
        }
        // Links, bytes and rows go together: the commit is the moment the blob is gone.
        // A crash before it leaves every row queued and due, so the next review finishes.
        let links = sqlx::query("DELETE FROM blob_links WHERE digest = ANY($1)")
            .bind(&dangling)
            .execute(&mut **tx)
            .await
            .map_err(self.err())?;
        report.links_removed = links.rows_affected() as usize;
        self.blobs.delete_batch(&parsed).await?;
        if let Some(ms) = std::env::var(REVIEW_DELAY_VAR)
            .ok()
            .and_then(|v| v.parse().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        sqlx::query("DELETE FROM gc_blob_review_queue WHERE digest = ANY($1)")
            .bind(due)
            .execute(&mut **tx)
            .await
            .map_err(self.err())?;
        Ok(report)
    }

    async fn due_manifests(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        opts: &ReviewOptions,
    ) -> StoreResult<Vec<(i64, String, OffsetDateTime)>> {
        let (when, secs) = due_clause(opts.due);
        let lock = if opts.dry_run {
            ""
        } else {
            "FOR UPDATE SKIP LOCKED"
        };
        let sql = format!(
            "SELECT repository_id, digest, queued_at FROM gc_manifest_review_queue WHERE {when}
             ORDER BY review_after LIMIT $1 {lock}"
        );
        sqlx::query_as(&sql)
            .bind(opts.batch as i64)
            .bind(secs)
            .fetch_all(&mut **tx)
            .await
            .map_err(self.err())
    }

    async fn review_manifest_batch(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        opts: &ReviewOptions,
        due: Vec<(i64, String, OffsetDateTime)>,
    ) -> StoreResult<ManifestReview> {
        let ids: Vec<i64> = due.iter().map(|r| r.0).collect();
        let ds: Vec<String> = due.iter().map(|r| r.1.clone()).collect();
        let queued: Vec<OffsetDateTime> = due.iter().map(|r| r.2).collect();
        // The manifests themselves, locked so that no tag or index can be put on one while
        // it is judged; one a writer holds is skipped, not waited for.
        let lock = if opts.dry_run {
            ""
        } else {
            "FOR UPDATE OF m SKIP LOCKED"
        };
        let sql = format!(
            "SELECT m.repository_id, m.digest, r.name, m.put_at > u.q AS put_again
             FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS u(id, d, q)
             JOIN manifests m ON m.repository_id = u.id AND m.digest = u.d
             JOIN repositories r ON r.id = m.repository_id {lock}"
        );
        let held: Vec<(i64, String, String, bool)> = sqlx::query_as(&sql)
            .bind(&ids)
            .bind(&ds)
            .bind(&queued)
            .fetch_all(&mut **tx)
            .await
            .map_err(self.err())?;
        // Not held: gone (the row is moot), or locked by a writer (review it later).
        let missing: Vec<(i64, String)> = sqlx::query_as(
            "SELECT u.id, u.d FROM unnest($1::bigint[], $2::text[]) AS u(id, d)
             WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = u.id AND m.digest = u.d)",
        )
        .bind(&ids)
        .bind(&ds)
        .fetch_all(&mut **tx)
        .await
        .map_err(self.err())?;
        let judged: Vec<&(i64, String, String, bool)> = held.iter().filter(|h| !h.3).collect();
        let (jid, jd): (Vec<i64>, Vec<String>) = judged.iter().map(|h| (h.0, h.1.clone())).unzip();
        let kept: HashSet<(i64, String)> = sqlx::query_as::<_, (i64, String)>(
            "SELECT u.id, u.d FROM unnest($1::bigint[], $2::text[]) AS u(id, d)
             WHERE EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = u.id AND t.digest = u.d)
                OR EXISTS (SELECT 1 FROM manifests p WHERE p.children @> ARRAY[u.d] AND p.repository_id = u.id)
                OR EXISTS (SELECT 1 FROM manifests m JOIN manifests s
                             ON s.repository_id = m.repository_id AND s.digest = m.subject
                           WHERE m.repository_id = u.id AND m.digest = u.d)",
        )
        .bind(&jid)
        .bind(&jd)
        .fetch_all(&mut **tx)
        .await
        .map_err(self.err())?
        .into_iter()
        .collect();
        let mut report = ManifestReview::default();
        let (mut del_id, mut del_d, mut done_id, mut done_d) = (vec![], vec![], vec![], vec![]);
        for (id, d, name, put_again) in &held {
            if *put_again {
                report.postponed += 1;
                continue;
            }
            done_id.push(*id);
            done_d.push(d.clone());
            if kept.contains(&(*id, d.clone())) {
                report.kept += 1;
            } else {
                del_id.push(*id);
                del_d.push(d.clone());
                let digest = parse(vec![d.clone()], "a digest in gc_manifest_review_queue")?;
                report.deleted.push((name.clone(), digest[0].clone()));
            }
        }
        for (id, d) in &missing {
            done_id.push(*id);
            done_d.push(d.clone());
        }
        report.postponed += due.len() - held.len() - missing.len();
        report.reviewed = done_id.len();
        if opts.dry_run {
            return Ok(report);
        }
        self.finish_manifests(tx, &held, (&del_id, &del_d), (&done_id, &done_d))
            .await?;
        Ok(report)
    }

    async fn finish_manifests(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        held: &[(i64, String, String, bool)],
        delete: (&[i64], &[String]),
        done: (&[i64], &[String]),
    ) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM gc_manifest_review_queue q USING unnest($1::bigint[], $2::text[]) AS u(id, d)
             WHERE q.repository_id = u.id AND q.digest = u.d",
        )
        .bind(done.0)
        .bind(done.1)
        .execute(&mut **tx)
        .await
        .map_err(self.err())?;
        // After the rows: deleting a manifest queues its children (the trigger), and one of
        // them reviewed in this batch must keep the row that queues it again.
        sqlx::query(
            "DELETE FROM manifests m USING unnest($1::bigint[], $2::text[]) AS u(id, d)
             WHERE m.repository_id = u.id AND m.digest = u.d",
        )
        .bind(delete.0)
        .bind(delete.1)
        .execute(&mut **tx)
        .await
        .map_err(self.err())?;
        // Put again since queued: a fresh delay, counted from the new put.
        let (pid, pd): (Vec<i64>, Vec<String>) = held
            .iter()
            .filter(|h| h.3)
            .map(|h| (h.0, h.1.clone()))
            .unzip();
        sqlx::query(
            "UPDATE gc_manifest_review_queue q SET review_after = gc_review_after('manifest_upload'), queued_at = now()
             FROM unnest($1::bigint[], $2::text[]) AS u(id, d) WHERE q.repository_id = u.id AND q.digest = u.d",
        )
        .bind(&pid)
        .bind(&pd)
        .execute(&mut **tx)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    async fn review_tx(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.begin().await?;
        sqlx::query(REVIEW_LOCK_TIMEOUT)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        Ok(tx)
    }
}

#[async_trait]
impl ReviewQueue for PgMetaStore {
    async fn review_blobs(&self, opts: &ReviewOptions) -> StoreResult<BlobReview> {
        let mut tx = self.review_tx().await?;
        let due = self.due_blobs(&mut tx, opts).await?;
        if due.is_empty() {
            return Ok(BlobReview::default());
        }
        match self.review_blob_batch(&mut tx, opts, &due).await {
            Ok(report) if opts.dry_run => Ok(report),
            Ok(report) => {
                tx.commit().await.map_err(self.err())?;
                Ok(report)
            }
            Err(e) => {
                // Release the rows before postponing them from another connection.
                let _ = tx.rollback().await;
                if !opts.dry_run {
                    self.back_off("gc_blob_review_queue", "digest", &due).await;
                }
                Err(e)
            }
        }
    }

    async fn review_manifests(&self, opts: &ReviewOptions) -> StoreResult<ManifestReview> {
        let mut tx = self.review_tx().await?;
        let due = self.due_manifests(&mut tx, opts).await?;
        if due.is_empty() {
            return Ok(ManifestReview::default());
        }
        let report = self.review_manifest_batch(&mut tx, opts, due).await?;
        if !opts.dry_run {
            tx.commit().await.map_err(self.err())?;
        }
        Ok(report)
    }

    async fn queue_sizes(&self) -> StoreResult<QueueSizes> {
        let row: (i64, i64, f64, i64, i64, f64) = sqlx::query_as(
            "SELECT
               (SELECT count(*) FROM gc_blob_review_queue WHERE event <> 'lock'),
               (SELECT count(*) FROM gc_blob_review_queue WHERE review_after <= now()),
               COALESCE((SELECT extract(epoch FROM now() - min(review_after))::float8
                         FROM gc_blob_review_queue WHERE review_after <= now()), 0),
               (SELECT count(*) FROM gc_manifest_review_queue),
               (SELECT count(*) FROM gc_manifest_review_queue WHERE review_after <= now()),
               COALESCE((SELECT extract(epoch FROM now() - min(review_after))::float8
                         FROM gc_manifest_review_queue WHERE review_after <= now()), 0)",
        )
        .fetch_one(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(QueueSizes {
            blobs: row.0 as u64,
            blobs_due: row.1 as u64,
            blobs_oldest_due_seconds: row.2,
            manifests: row.3 as u64,
            manifests_due: row.4 as u64,
            manifests_oldest_due_seconds: row.5,
        })
    }

    async fn set_review_after(&self, delay: Duration) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO gc_review_after_defaults (event, value)
             VALUES ('default', make_interval(secs => $1::float8))
             ON CONFLICT (event) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(delay.as_secs_f64())
        .execute(self.db().await?)
        .await
        .map_err(self.err())?;
        Ok(())
    }
}

/// Queue what an import found unreferenced: every blob of the store no manifest names,
/// and every untagged manifest, each reviewed after the configured delay.
pub(super) async fn queue_unreferenced(store: &PgMetaStore) -> StoreResult<(u64, u64)> {
    let all: Vec<String> = store
        .blobs
        .list_blobs()
        .await?
        .into_iter()
        .map(|b| b.digest.to_string())
        .collect();
    let mut blobs = 0;
    for chunk in all.chunks(10_000) {
        let done = sqlx::query(&format!(
            "WITH unref AS ({REFERENCED_NOT})
             SELECT gc_queue_blobs(ARRAY(SELECT d FROM unref), 'import'), (SELECT count(*) FROM unref)"
        ))
        .bind(chunk)
        .fetch_one(store.db().await?)
        .await
        .map_err(store.err())?;
        use sqlx::Row;
        blobs += done.try_get::<i64, _>(1).map_err(store.err())? as u64;
    }
    let manifests = sqlx::query(
        "INSERT INTO gc_manifest_review_queue (repository_id, digest, review_after, event)
         SELECT m.repository_id, m.digest, gc_review_after('import'), 'import' FROM manifests m
         WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest)
         ON CONFLICT (repository_id, digest) DO UPDATE
           SET review_after = EXCLUDED.review_after, queued_at = now(), event = EXCLUDED.event",
    )
    .execute(store.db().await?)
    .await
    .map_err(store.err())?
    .rows_affected();
    Ok((blobs, manifests))
}

const REFERENCED_NOT: &str = "SELECT d FROM unnest($1::text[]) AS d
    WHERE NOT EXISTS (SELECT 1 FROM manifests WHERE blobs @> ARRAY[d])
      AND NOT EXISTS (SELECT 1 FROM manifests WHERE foreign_blobs @> ARRAY[d])
      AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = d)";
