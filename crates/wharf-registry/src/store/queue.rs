//! Review queues: garbage collection whose cost follows what changed, not the size of the
//! store. A metadata store that keeps them (PostgreSQL) queues a blob or a manifest in the
//! same transaction that takes its last reference, and a review decides, one locked row at
//! a time, whether it is garbage. The design and why each race is safe: `docs/storage.md`.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use wharf_oci::Digest;

use super::StoreResult;

/// Rows reviewed in one transaction; the bucket deletes of a batch go in one request
/// where the store has one (S3's DeleteObjects takes up to 1,000 keys).
pub const REVIEW_BATCH: usize = 500;

#[derive(Debug, Clone, Copy)]
pub enum Due {
    /// Rows whose `review_after` has passed (the workers, and a drain by default).
    Now,
    /// Rows queued at least this long ago, whatever their `review_after` (`--grace`).
    QueuedBefore(Duration),
}

#[derive(Debug, Clone, Copy)]
pub struct ReviewOptions {
    pub batch: usize,
    pub due: Due,
    /// Report what is due and dangling, lock and delete nothing.
    pub dry_run: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct BlobReview {
    /// Rows taken off the queue (locked, decided, deleted).
    pub reviewed: usize,
    /// Still referenced by a manifest: dropped from the queue, kept in the store.
    pub kept: usize,
    /// Unreferenced and deleted (dry run: would be), with their sizes.
    pub deleted: Vec<(Digest, u64)>,
    pub links_removed: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct ManifestReview {
    pub reviewed: usize,
    pub kept: usize,
    /// (repository, digest) deleted (dry run: would be).
    pub deleted: Vec<(String, Digest)>,
    /// Locked by a writer, or put again since they were queued: left for a later review.
    pub postponed: usize,
}

/// How long each queue is, and how overdue its oldest due row.
#[derive(Debug, Default, Clone, Serialize)]
pub struct QueueSizes {
    pub blobs: u64,
    pub blobs_due: u64,
    pub blobs_oldest_due_seconds: f64,
    pub manifests: u64,
    pub manifests_due: u64,
    pub manifests_oldest_due_seconds: f64,
}

#[async_trait]
pub trait ReviewQueue: Send + Sync {
    /// Review up to `opts.batch` due blobs: a referenced one leaves the queue, an
    /// unreferenced one leaves the store (links, bytes) and the queue, in one transaction.
    async fn review_blobs(&self, opts: &ReviewOptions) -> StoreResult<BlobReview>;
    /// Review up to `opts.batch` due manifests (`--delete-untagged`): one no tag, index or
    /// subject in its repository keeps is deleted, which queues its blobs and children.
    async fn review_manifests(&self, opts: &ReviewOptions) -> StoreResult<ManifestReview>;
    async fn queue_sizes(&self) -> StoreResult<QueueSizes>;
    /// The delay between an event and the review of what it queued (`gc.reviewafter`).
    async fn set_review_after(&self, delay: Duration) -> StoreResult<()>;
}
