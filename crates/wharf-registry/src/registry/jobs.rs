//! Background jobs over a serving registry: upload purging, scheduled garbage collection
//! (with the pull-through cache's eviction), scheduled retention, and the cache's figures
//! in the log. Each job that changes the store takes its job lock, so one round runs at a
//! time across every process on the store; another process's round makes this one skip.

use std::sync::Arc;
use std::time::Duration;

use super::gc::GcOptions;
use super::gc_queue::QueueMetrics;
use super::{Error, Registry};
use crate::config::proxy::ProxyConfig;
use crate::config::{GcSchedule, UploadPurging};
use crate::store::StoreError;

/// What to run, from the configuration.
#[derive(Default)]
pub struct Schedules {
    /// `storage.maintenance.uploadpurging`.
    pub purging: Option<UploadPurging>,
    /// `gc:`.
    pub gc: Option<GcSchedule>,
    /// `proxy:`, whose retention and size cap scheduled collection applies first.
    pub proxy: Option<ProxyConfig>,
    /// `retention.schedule`.
    pub retention: Option<Duration>,
    /// Where the review-queue workers count (with `database:`).
    pub queue_metrics: Option<Arc<QueueMetrics>>,
}

/// Start every scheduled job on the runtime.
pub fn spawn(registry: &Arc<Registry>, schedules: Schedules) {
    if let Some(purging) = schedules.purging {
        tokio::spawn(purge_uploads(registry.clone(), purging));
    }
    if let Some(gc) = schedules.gc {
        let queued = registry.core().review_queue().is_some() && !registry.rules().read_only;
        if queued {
            let metrics = schedules.queue_metrics.clone().unwrap_or_default();
            tokio::spawn(start_reviews(registry.clone(), gc.clone(), metrics));
        }
        tokio::spawn(collect_garbage(
            registry.clone(),
            gc,
            schedules.proxy,
            queued,
        ));
    }
    // A read-only registry deletes nothing.
    if let Some(every) = schedules.retention.filter(|_| !registry.rules().read_only) {
        tokio::spawn(apply_retention(registry.clone(), every));
    }
    if let Some(counter) = registry.pull_counter() {
        tokio::spawn(super::pulls::flush_every(counter.clone()));
    }
    if let Some(stats) = registry.proxy_stats() {
        tokio::spawn(log_proxy_stats(stats));
    }
}

/// The first round of a job waits one interval, as registry:2's purging does.
fn interval_after(every: Duration) -> tokio::time::Interval {
    tokio::time::interval_at(tokio::time::Instant::now() + every, every)
}

async fn purge_uploads(registry: Arc<Registry>, purging: UploadPurging) {
    let store = &registry.core().store;
    let mut tick = tokio::time::interval(purging.interval);
    loop {
        tick.tick().await;
        let Ok(Some(_job)) = store.locks.try_job("purge").await else {
            continue;
        };
        match store.blobs.purge_uploads(purging.age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "purged abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "purging abandoned uploads failed"),
        }
    }
}

/// `gc:` with a database: write the review delay where the triggers read it, then run the
/// workers. The delay is the registry's, not this replica's: the last replica to start sets it.
async fn start_reviews(registry: Arc<Registry>, gc: GcSchedule, metrics: Arc<QueueMetrics>) {
    let core = registry.core().clone();
    if let Some(queue) = core.review_queue() {
        let delay = gc.review_after.unwrap_or(gc.grace);
        if let Err(e) = queue.set_review_after(delay).await {
            tracing::warn!(error = %e, "cannot set gc.reviewafter in the database");
        }
    }
    for _ in 0..gc.workers.max(1) {
        tokio::spawn(core.clone().review_worker(
            gc.delete_untagged,
            gc.review_interval,
            metrics.clone(),
        ));
    }
}

/// `gc:`: collect while serving (with review queues, only the cache's eviction: what it
/// frees is queued and reviewed like any delete).
async fn collect_garbage(
    registry: Arc<Registry>,
    gc: GcSchedule,
    proxy: Option<ProxyConfig>,
    queued: bool,
) {
    if queued && proxy.is_none() {
        return;
    }
    let opts = GcOptions {
        dry_run: false,
        delete_untagged: gc.delete_untagged,
        grace: gc.grace,
    };
    let mut tick = interval_after(gc.interval);
    loop {
        tick.tick().await;
        // Evicted manifests leave their blobs unreferenced: this same collection sweeps them.
        if let Some(proxy) = &proxy {
            match registry.evict_cached(proxy).await {
                Ok(e) if e.manifests > 0 => {
                    tracing::info!(
                        manifests = e.manifests,
                        bytes = e.bytes,
                        "evicted cached content"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "evicting cached content failed"),
            }
        }
        if queued {
            continue;
        }
        match registry.collect_garbage(&opts).await {
            Ok(r) => {
                tracing::info!(
                    blobs = r.blobs.len(),
                    manifests = r.manifests.len(),
                    bytes_freed = r.bytes_freed,
                    held = r.blobs_held,
                    "garbage collected"
                )
            }
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}

/// `retention.schedule`: apply the rules while serving.
async fn apply_retention(registry: Arc<Registry>, every: Duration) {
    let mut tick = interval_after(every);
    loop {
        tick.tick().await;
        match registry.apply_retention(false).await {
            Ok(r) => tracing::info!(
                tags = r.tags.len(),
                manifests = r.manifests.len(),
                immutable_kept = r.immutable_kept,
                "retention applied"
            ),
            Err(Error::Store(StoreError::NotAStore(why))) => {
                tracing::debug!(why, "retention skipped")
            }
            Err(e) => tracing::warn!(error = %e, "retention failed"),
        }
    }
}

/// The cache's counters in the log once a minute, when they moved.
async fn log_proxy_stats(stats: Arc<super::proxy::ProxyStats>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut last = [0u64; 5];
    loop {
        tick.tick().await;
        let now = stats.snapshot();
        if now != last {
            let [hits, misses, upstream_bytes, errors, stale] = now;
            tracing::info!(
                hits,
                misses,
                upstream_bytes,
                errors,
                stale,
                "pull-through cache"
            );
            last = now;
        }
    }
}
