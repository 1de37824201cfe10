//! Garbage collection from the review queues (a store with `database:`): `wharf serve`'s
//! workers and `wharf garbage-collect`'s drain take due rows off the queues the metadata
//! store keeps (see `store::queue` and `docs/storage.md`). No mark and no collector lock:
//! a pass costs what was queued, whatever the size of the registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::gc::{BlobEntry, GcReport, ManifestEntry};
use super::{Core, Error, Result};
use crate::store::queue::{Due, QueueSizes, ReviewOptions, ReviewQueue, REVIEW_BATCH};
use crate::store::StoreError;

/// A drain gives up after this many failed passes in a row (a lock a writer holds, a
/// bucket that refuses): what it left stays queued for the next one.
const DRAIN_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, Copy)]
pub struct DrainOptions {
    pub dry_run: bool,
    pub delete_untagged: bool,
    pub due: Due,
}

/// What the reviews of this process did, and the queues as last measured. GitLab's names
/// where it has one (`registry_gc_deletes_total`, `registry_gc_storage_deleted_bytes_total`,
/// `registry_gc_postpones_total`); `registry_gc_runs_total` is mark-and-sweep's already, so
/// a review is `registry_gc_reviews_total`.
#[derive(Debug, Default)]
pub struct QueueMetrics {
    blob_reviews_dangling: AtomicU64,
    blob_reviews_kept: AtomicU64,
    manifest_reviews_dangling: AtomicU64,
    manifest_reviews_kept: AtomicU64,
    blobs_deleted: AtomicU64,
    manifests_deleted: AtomicU64,
    bytes_deleted: AtomicU64,
    postpones: AtomicU64,
    errors: AtomicU64,
    sizes: std::sync::Mutex<QueueSizes>,
}

impl QueueMetrics {
    fn add(&self, blobs: &GcReport, kept_blobs: usize, kept_manifests: usize, postponed: usize) {
        let r = Ordering::Relaxed;
        self.blob_reviews_dangling
            .fetch_add(blobs.blobs.len() as u64, r);
        self.blob_reviews_kept.fetch_add(kept_blobs as u64, r);
        self.manifest_reviews_dangling
            .fetch_add(blobs.manifests.len() as u64, r);
        self.manifest_reviews_kept
            .fetch_add(kept_manifests as u64, r);
        self.blobs_deleted.fetch_add(blobs.blobs.len() as u64, r);
        self.manifests_deleted
            .fetch_add(blobs.manifests.len() as u64, r);
        self.bytes_deleted.fetch_add(blobs.bytes_freed, r);
        self.postpones.fetch_add(postponed as u64, r);
    }

    fn set_sizes(&self, s: QueueSizes) {
        *self.sizes.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    n: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(n);
    let mut m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m.encode_family(&labels.to_vec())?)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    queue: &str,
    v: f64,
) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    let mut m = e.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m.encode_family(&vec![("queue", queue)])?)
}

impl Collector for QueueMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let r = Ordering::Relaxed;
        for (queue, dangling, n) in [
            ("blobs", "true", self.blob_reviews_dangling.load(r)),
            ("blobs", "false", self.blob_reviews_kept.load(r)),
            ("manifests", "true", self.manifest_reviews_dangling.load(r)),
            ("manifests", "false", self.manifest_reviews_kept.load(r)),
        ] {
            counter(&mut e, "gc_reviews", "Review-queue rows reviewed by this process, by queue and whether they were dangling.", &[("queue", queue), ("dangling", dangling)], n)?;
        }
        for (backend, artifact, n) in [
            ("storage", "blob", self.blobs_deleted.load(r)),
            ("database", "manifest", self.manifests_deleted.load(r)),
        ] {
            counter(
                &mut e,
                "gc_deletes",
                "Artifacts deleted by online garbage collection.",
                &[("backend", backend), ("artifact", artifact)],
                n,
            )?;
        }
        counter(
            &mut e,
            "gc_storage_deleted_bytes",
            "Bytes deleted from storage by online garbage collection.",
            &[],
            self.bytes_deleted.load(r),
        )?;
        counter(
            &mut e,
            "gc_postpones",
            "Reviews postponed (a writer held the row, or the manifest was put again).",
            &[],
            self.postpones.load(r),
        )?;
        counter(
            &mut e,
            "gc_review_errors",
            "Review passes that failed and were retried later.",
            &[],
            self.errors.load(r),
        )?;
        let s = self.sizes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (queue, size, due, oldest) in [
            ("blobs", s.blobs, s.blobs_due, s.blobs_oldest_due_seconds),
            (
                "manifests",
                s.manifests,
                s.manifests_due,
                s.manifests_oldest_due_seconds,
            ),
        ] {
            gauge(
                &mut e,
                "gc_queue_size",
                "Rows in a review queue, when last measured.",
                queue,
                size as f64,
            )?;
            gauge(
                &mut e,
                "gc_queue_due",
                "Rows of a review queue due for review, when last measured.",
                queue,
                due as f64,
            )?;
            gauge(
                &mut e,
                "gc_queue_oldest_due_seconds",
                "How long the oldest due row of a review queue has waited past its review_after.",
                queue,
                oldest,
            )?;
        }
        Ok(())
    }
}

/// One pass's counts besides what the report lists.
#[derive(Default)]
struct Pass {
    reviewed: usize,
    kept_blobs: usize,
    kept_manifests: usize,
    postponed: usize,
}

impl Core {
    /// The review queues of this store, if its metadata keeps them.
    pub fn review_queue(&self) -> Option<&dyn ReviewQueue> {
        self.store.meta.review_queue()
    }

    async fn review_pass(
        &self,
        queue: &dyn ReviewQueue,
        opts: &DrainOptions,
        batch: usize,
        report: &mut GcReport,
    ) -> Result<Pass> {
        let ro = ReviewOptions {
            batch,
            due: opts.due,
            dry_run: opts.dry_run,
        };
        let mut pass = Pass::default();
        if opts.delete_untagged {
            let m = queue.review_manifests(&ro).await?;
            pass.reviewed += m.reviewed;
            pass.kept_manifests += m.kept;
            pass.postponed += m.postponed;
            report.manifests.extend(
                m.deleted
                    .into_iter()
                    .map(|(repository, digest)| ManifestEntry { repository, digest }),
            );
        }
        let b = queue.review_blobs(&ro).await?;
        pass.reviewed += b.reviewed;
        pass.kept_blobs += b.kept;
        report.links_removed += b.links_removed;
        report.blobs_rescued += b.kept;
        for (digest, size) in b.deleted {
            report.bytes_freed += size;
            report.blobs.push(BlobEntry { digest, size });
        }
        Ok(pass)
    }

    /// `wharf garbage-collect` with a database: review every due row until none is left
    /// (a dry run: one look, nothing locked or deleted).
    pub async fn drain_review_queues(&self, opts: &DrainOptions) -> Result<GcReport> {
        let started = Instant::now();
        let queue = self.review_queue().ok_or_else(|| {
            Error::Store(StoreError::NotAStore(
                "this store keeps no review queues (they need `database:`): use --full".into(),
            ))
        })?;
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        let batch = if opts.dry_run { 1 << 40 } else { REVIEW_BATCH };
        let mut failures = 0;
        loop {
            match self.review_pass(queue, opts, batch, &mut report).await {
                Ok(p) => {
                    report.reviewed += p.reviewed;
                    if p.reviewed == 0 || opts.dry_run {
                        break;
                    }
                    failures = 0;
                }
                Err(e) if failures + 1 < DRAIN_ATTEMPTS => {
                    failures += 1;
                    tracing::debug!(error = %e, "review pass failed; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * failures as u64)).await;
                }
                Err(e) => return Err(e),
            }
        }
        if !opts.dry_run {
            let figures = [
                ("blobs_deleted", report.blobs.len() as u64),
                ("manifests_deleted", report.manifests.len() as u64),
                ("bytes_freed", report.bytes_freed),
            ];
            self.record_run("gc", started.elapsed(), &figures).await;
            if !report.blobs.is_empty() {
                self.recount_after_gc().await;
            }
        }
        Ok(report)
    }

    /// One worker of `wharf serve`: review what is due, batch after batch, and rest
    /// `idle` when nothing is. Several workers, on several replicas, share the queues.
    pub async fn review_worker(
        self: Arc<Self>,
        delete_untagged: bool,
        idle: Duration,
        metrics: Arc<QueueMetrics>,
    ) {
        let opts = DrainOptions {
            dry_run: false,
            delete_untagged,
            due: Due::Now,
        };
        loop {
            let Some(queue) = self.review_queue() else {
                return;
            };
            let mut report = GcReport::default();
            let rest = match self
                .review_pass(queue, &opts, REVIEW_BATCH, &mut report)
                .await
            {
                Ok(p) => {
                    metrics.add(&report, p.kept_blobs, p.kept_manifests, p.postponed);
                    if !report.blobs.is_empty() || !report.manifests.is_empty() {
                        tracing::info!(
                            blobs = report.blobs.len(),
                            manifests = report.manifests.len(),
                            bytes_freed = report.bytes_freed,
                            "garbage reviewed"
                        );
                    }
                    p.reviewed == 0
                }
                Err(e) => {
                    metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "garbage review failed; its rows wait for a later pass");
                    true
                }
            };
            if let Ok(s) = queue.queue_sizes().await {
                metrics.set_sizes(s);
            }
            if rest {
                tokio::time::sleep(idle).await;
            }
        }
    }
}
