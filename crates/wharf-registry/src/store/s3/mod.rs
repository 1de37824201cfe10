//! S3-compatible object storage in registry:2's key layout (`<rootdirectory>/docker/registry/v2/…`),
//! so a bucket Distribution wrote is served in place and Distribution serves what wharf wrote.
//!
//! - blobs: `blobs.rs`; uploads are S3 multipart uploads whose state lives in the bucket
//!   (`upload.rs`), so any process continues an upload another one started;
//! - metadata: link objects, as registry:2 writes them (`meta.rs`);
//! - locks: within this process only (`locks.rs`): S3 has no locks, so several processes on
//!   one bucket need the PostgreSQL metadata store, whose advisory locks replace these.
//!
//! aws-sdk-s3 rather than object_store: uploads need UploadPartCopy (multipart copy of blobs
//! over 5 GiB), presigned GETs, DeleteObjects batches, the SDK's throttling-aware retries,
//! and the AWS credential chain with profiles; object_store lacks the first and the last.
//!
//! Without the `s3` feature only [`S3Config`] remains, so that a configuration still parses
//! into it and the loader can say what the build lacks.

#[cfg(feature = "s3")]
mod blobs;
#[cfg(feature = "s3")]
mod bucket;
#[cfg(feature = "s3")]
mod locks;
#[cfg(feature = "s3")]
mod meta;
#[cfg(feature = "s3")]
mod upload;

#[cfg(feature = "s3")]
use std::sync::Arc;
#[cfg(feature = "s3")]
use std::time::Duration;

#[cfg(feature = "s3")]
pub use blobs::S3BlobStore;
#[cfg(feature = "s3")]
pub use bucket::Bucket;
#[cfg(feature = "s3")]
pub use locks::LocalLocks;
#[cfg(feature = "s3")]
pub use meta::S3MetaStore;

#[cfg(feature = "s3")]
use super::{Locks, Store, StoreError, StoreResult};

/// S3's smallest part (all parts but the last), and registry:2's default and floor for `chunksize`.
pub const MIN_PART: u64 = 5 * 1024 * 1024;
const DEFAULT_CHUNK: u64 = 10 * 1024 * 1024;
/// S3's largest single CopyObject; above it a copy goes part by part.
#[cfg(feature = "s3")]
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
const DEFAULT_COPY_CHUNK: u64 = 32 * 1024 * 1024;

/// `storage.s3`, with registry:2's key names and defaults.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub accesskey: Option<String>,
    pub secretkey: Option<String>,
    pub region: String,
    pub regionendpoint: Option<String>,
    pub bucket: String,
    /// Key prefix; empty or `/` for none.
    pub rootdirectory: String,
    /// https unless false (used when `regionendpoint` has no scheme).
    pub secure: bool,
    pub forcepathstyle: bool,
    /// Part size of multipart uploads (at least 5 MiB); grows for very large blobs.
    pub chunksize: u64,
    pub multipartcopychunksize: u64,
    pub multipartcopymaxconcurrency: usize,
    pub multipartcopythresholdsize: u64,
    /// `storage.redirect.disable` inverted: pulls get presigned URLs.
    pub redirect: bool,
}

impl S3Config {
    pub fn new(bucket: String, region: String) -> S3Config {
        S3Config {
            accesskey: None,
            secretkey: None,
            region,
            regionendpoint: None,
            bucket,
            rootdirectory: String::new(),
            secure: true,
            forcepathstyle: false,
            chunksize: DEFAULT_CHUNK,
            multipartcopychunksize: DEFAULT_COPY_CHUNK,
            multipartcopymaxconcurrency: 100,
            multipartcopythresholdsize: DEFAULT_COPY_CHUNK,
            redirect: true,
        }
    }

    /// What a message calls this store.
    pub fn describe(&self) -> String {
        let endpoint = self.regionendpoint.as_deref().unwrap_or("AWS");
        format!("s3://{}/{} at {endpoint}", self.bucket, self.prefix())
    }

    /// The key prefix, without leading or trailing slashes.
    fn prefix(&self) -> &str {
        self.rootdirectory.trim_matches('/')
    }
}

/// Open a bucket as a store. `locks` replace the in-process ones when a database provides
/// locks that hold across processes.
#[cfg(feature = "s3")]
pub async fn open(config: &S3Config, locks: Option<Arc<dyn Locks>>) -> StoreResult<Store> {
    let bucket = Arc::new(Bucket::connect(config).await?);
    bucket.check().await?;
    let locks = locks.unwrap_or_else(|| Arc::new(LocalLocks::default()));
    let blobs: Arc<dyn super::BlobStore> = Arc::new(S3BlobStore::new(
        bucket.clone(),
        locks.clone(),
        config.clone(),
    ));
    let meta = Arc::new(S3MetaStore::new(bucket, blobs.clone()));
    Ok(Store {
        blobs,
        meta,
        locks,
        describe: config.describe(),
        state: None,
        identity: None,
        pulls: None,
        events: None,
        quotas: None,
        tag_checks: None,
    })
}

/// How long a presigned URL stays valid (registry:2 uses 20 minutes).
#[cfg(feature = "s3")]
const PRESIGN_FOR: Duration = Duration::from_secs(20 * 60);

#[cfg(feature = "s3")]
fn unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(what.to_string())
}
