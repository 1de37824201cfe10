//! The two storage traits everything persistent goes through.
//!
//! - [`BlobStore`]: bytes addressed by digest, and the uploads that produce them.
//! - [`MetaStore`]: what the bytes mean: which repository may serve which blob, manifests,
//!   tags and referrers.
//!
//! Backends: `fs` keeps both in registry:2's on-disk layout, so Distribution and wharf can
//! serve the same directory.

pub mod fs;
#[cfg(test)]
mod suite;

use std::io;
use std::ops::RangeInclusive;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use uuid::Uuid;
use wharf_oci::{Descriptor, Digest, RepoName, Tag};

pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("upload {0} is unknown")]
    UploadUnknown(Uuid),
    #[error("upload is at offset {actual}, not {expected}")]
    UploadOffset { expected: u64, actual: u64 },
    #[error("uploaded content has digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {0} is unknown")]
    BlobUnknown(Digest),
    #[error("range {start}-{end} is outside a blob of {size} bytes")]
    RangeInvalid { start: u64, end: u64, size: u64 },
    #[error("client body: {0}")]
    Body(io::Error),
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt metadata at {what}: {why}")]
    Corrupt { what: String, why: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A blob (or a byte range of one) ready to be sent.
pub struct BlobRead {
    /// Size of the whole blob.
    pub size: u64,
    /// The bytes actually streamed (the range, or everything).
    pub range: RangeInclusive<u64>,
    pub body: ByteStream,
}

/// Content-addressed bytes and the uploads that produce them.
///
/// Contract: a blob is visible (`stat`, `read`) only once `commit` has verified its digest and
/// made it durable; concurrent commits of the same digest both succeed; an upload is
/// resumable across a restart of the process.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    async fn start_upload(&self, repo: &RepoName) -> StoreResult<Uuid>;
    /// Bytes received so far.
    async fn upload_size(&self, repo: &RepoName, id: Uuid) -> StoreResult<u64>;
    /// Append `body`, hashing as it is written. With `at`, refuses unless the upload is
    /// exactly that long. Returns the new size.
    async fn append(
        &self,
        repo: &RepoName,
        id: Uuid,
        at: Option<u64>,
        body: ByteStream,
    ) -> StoreResult<u64>;
    /// Verify the upload against `expected`, make it durable and visible. Returns the size.
    async fn commit(&self, repo: &RepoName, id: Uuid, expected: &Digest) -> StoreResult<u64>;
    async fn cancel(&self, repo: &RepoName, id: Uuid) -> StoreResult<()>;
    /// Store a whole blob sent in one request (a monolithic upload): stream, hash, verify
    /// against `expected`, make durable and visible. Returns the size.
    async fn put_stream(&self, expected: &Digest, body: ByteStream) -> StoreResult<u64>;
    /// Store small content that is already in memory (manifests), verifying its digest.
    async fn put(&self, digest: &Digest, bytes: Bytes) -> StoreResult<()>;
    /// Size of a committed blob, or None.
    async fn stat(&self, digest: &Digest) -> StoreResult<Option<u64>>;
    async fn read(
        &self,
        digest: &Digest,
        range: Option<RangeInclusive<u64>>,
    ) -> StoreResult<BlobRead>;
    /// The whole blob in memory, for small content (manifests). None if unknown or over `limit`.
    async fn get(&self, digest: &Digest, limit: u64) -> StoreResult<Option<Bytes>>;
    async fn delete(&self, digest: &Digest) -> StoreResult<()>;
    /// Remove uploads untouched for longer than `age` (abandoned by their clients).
    /// Returns how many were removed.
    async fn purge_uploads(&self, age: std::time::Duration) -> StoreResult<usize>;
}

/// A manifest as the metadata store records it.
#[derive(Debug, Clone)]
pub struct ManifestRecord {
    pub digest: Digest,
    /// What the manifest needs linked in its repository before it may be stored.
    pub blobs: Vec<Digest>,
    pub children: Vec<Digest>,
    /// Set for a manifest with a `subject`: its entry in the subject's referrers list.
    pub referrer: Option<(Digest, Descriptor)>,
}

/// A page of a sorted listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<String>,
    /// True when items were left out after the last one returned.
    pub more: bool,
}

/// The meaning of the bytes: repositories, their blob links, manifests, tags and referrers.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    async fn repo_exists(&self, repo: &RepoName) -> StoreResult<bool>;
    /// Allow `repo` to serve `digest` (after a commit or a mount).
    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<()>;
    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool>;
    /// Returns false if it was not linked.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool>;
    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> StoreResult<()>;
    async fn manifest_linked(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool>;
    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<Digest>>;
    /// Remove a manifest from a repository, with every tag that points at it. False if absent.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool>;
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<bool>;
    /// Tags sorted, after `last`, at most `n`. None when the repository is unknown.
    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> StoreResult<Option<Page>>;
    /// Repository names sorted, after `last`, at most `n`.
    async fn list_repos(&self, last: Option<&str>, n: Option<usize>) -> StoreResult<Page>;
    /// Manifests of `repo` whose subject is `subject`.
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> StoreResult<Vec<Descriptor>>;
}

/// Apply `last`/`n` pagination to a sorted iterator of names.
pub fn paginate<I: Iterator<Item = String>>(
    sorted: I,
    last: Option<&str>,
    n: Option<usize>,
) -> Page {
    let mut after = sorted.skip_while(|s| last.is_some_and(|l| s.as_str() <= l));
    match n {
        None => Page {
            items: after.collect(),
            more: false,
        },
        Some(n) => {
            let items: Vec<String> = after.by_ref().take(n).collect();
            let more = after.next().is_some();
            Page { items, more }
        }
    }
}
