//! The two storage traits everything persistent goes through.
//!
//! - [`BlobStore`]: bytes addressed by digest, and the uploads that produce them.
//! - [`MetaStore`]: what the bytes mean: which repository may serve which blob, manifests,
//!   tags and referrers.
//!
//! - [`Locks`]: the coordination that lets garbage collection run while others write.
//!
//! [`open`] picks the backends from configuration. `fs` keeps everything in registry:2's
//! on-disk layout, so Distribution and wharf (several processes of it) serve one directory.
//! The contract is written down in `docs/storage.md`.

pub mod auditchain;
pub mod fs;
pub mod hashstate;
pub mod keyed;
pub mod layout;
mod open;
pub mod postgres;
pub mod queue;
pub mod s3;
pub mod state;
#[cfg(any(test, feature = "testsuite"))]
pub mod suite;
pub mod tagchecks;

pub use open::open;

use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use uuid::Uuid;
use wharf_oci::{Descriptor, Digest, Manifest, RepoName, Tag};

pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// Manifests larger than this are not read (Distribution's limit).
pub const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;

/// What a stored manifest references, read from its bytes: None if they are gone,
/// Err(Corrupt) if they do not parse.
pub async fn read_manifest_record(
    blobs: &dyn BlobStore,
    digest: &Digest,
) -> StoreResult<Option<ManifestRecord>> {
    let Some(bytes) = blobs.get(digest, MANIFEST_LIMIT).await? else {
        return Ok(None);
    };
    let manifest = Manifest::parse(&bytes, None).map_err(|e| StoreError::Corrupt {
        what: format!("manifest {digest}"),
        why: e.to_string(),
    })?;
    Ok(Some(ManifestRecord::of(
        &manifest,
        digest.clone(),
        bytes.len() as u64,
    )))
}

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
    #[error("{0}")]
    NotAStore(String),
    /// A backend that is down or throttling past its retries (a database, an object
    /// store): the client may retry, so it is a 503, not a 500.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
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
    /// Bytes `from..to` of an upload in progress, already appended: how the readers of a
    /// pull-through fill follow it while it is written. UploadUnknown once it is committed.
    async fn read_upload(
        &self,
        repo: &RepoName,
        id: Uuid,
        from: u64,
        to: u64,
    ) -> StoreResult<ByteStream>;
    /// The digest of what the upload holds, when the store has it without reading the
    /// bytes back (its running hash); None otherwise. A pull-through fill checks content
    /// with it before `commit` makes it durable, so its clients need not wait for that.
    async fn upload_digest(&self, _repo: &RepoName, _id: Uuid) -> StoreResult<Option<Digest>> {
        Ok(None)
    }
    /// Verify the upload against `expected`, make it durable and visible. Returns the size.
    async fn commit(&self, repo: &RepoName, id: Uuid, expected: &Digest) -> StoreResult<u64>;
    async fn cancel(&self, repo: &RepoName, id: Uuid) -> StoreResult<()>;
    /// Store a whole blob sent in one request (a monolithic upload): stream, hash, verify
    /// against `expected`, make durable and visible. Returns the size.
    async fn put_stream(&self, expected: &Digest, body: ByteStream) -> StoreResult<u64>;
    /// Store small content that is already in memory (manifests), verifying its digest.
    /// Call under [`Locks::writer`] (unlike commit and put_stream, it does not take it, so
    /// that a manifest put holds the lock once around everything it publishes).
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
    /// Delete blobs that are already gone from the metadata, in as few requests as the
    /// store allows; one that is already gone is no error.
    async fn delete_batch(&self, digests: &[Digest]) -> StoreResult<()> {
        for d in digests {
            match self.delete(d).await {
                Ok(()) | Err(StoreError::BlobUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    /// Remove uploads untouched for longer than `age` (abandoned by their clients).
    /// Returns how many were removed.
    async fn purge_uploads(&self, age: std::time::Duration) -> StoreResult<usize>;

    /// Where a client may fetch the blob itself (a presigned object-store URL), instead of
    /// through the registry. None: serve the bytes.
    async fn redirect(&self, _digest: &Digest) -> StoreResult<Option<String>> {
        Ok(None)
    }

    /// Every committed blob with its size and when it was last retained (committed, or
    /// named by a write under [`Locks::writer`]).
    async fn list_blobs(&self) -> StoreResult<Vec<BlobInfo>>;
    /// Mark these blobs as in use now, so a collection that began earlier keeps them.
    /// Returns the ones that do not exist. Call under [`Locks::writer`].
    async fn retain(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>>;
    /// Now, as this store would record a retain made now: a filesystem that keeps whole
    /// seconds rounds it down, and a collection must compare like with like.
    async fn now(&self) -> StoreResult<SystemTime> {
        Ok(SystemTime::now())
    }
    /// When the blob was last retained; None if it does not exist.
    async fn retained(&self, digest: &Digest) -> StoreResult<Option<SystemTime>>;
    /// Delete the blob unless it was retained at or after `since`; true if deleted.
    /// Call under [`Locks::collector`].
    async fn delete_unless_retained(&self, digest: &Digest, since: SystemTime)
        -> StoreResult<bool>;
    /// Move a blob whose bytes do not match its digest out of the way, keeping the bytes
    /// for inspection. Returns where they went.
    async fn quarantine(&self, digest: &Digest) -> StoreResult<Option<String>>;
    /// Uploads in progress: (repository, id, bytes so far, last written).
    async fn list_uploads(&self) -> StoreResult<Vec<UploadInfo>>;
}

/// A committed blob, as listed for garbage collection and scrub.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    pub retained: SystemTime,
}

#[derive(Debug, Clone)]
pub struct UploadInfo {
    pub repo: String,
    pub id: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// A manifest as the metadata store records it.
#[derive(Debug, Clone)]
pub struct ManifestRecord {
    pub digest: Digest,
    /// What the manifest needs linked in its repository before it may be stored.
    pub blobs: Vec<Digest>,
    /// Foreign layers it names: not required, but kept alive while it is, if present.
    pub foreign: Vec<Digest>,
    pub children: Vec<Digest>,
    /// Set for a manifest with a `subject`: its entry in the subject's referrers list.
    pub referrer: Option<(Digest, Descriptor)>,
}

impl ManifestRecord {
    /// What a parsed manifest references.
    pub fn of(manifest: &Manifest, digest: Digest, size: u64) -> ManifestRecord {
        ManifestRecord {
            blobs: manifest.required_blobs().cloned().collect(),
            foreign: manifest.foreign_blobs().cloned().collect(),
            children: manifest.required_manifests().cloned().collect(),
            referrer: manifest.subject.as_ref().map(|s| {
                (
                    s.digest.clone(),
                    manifest.referrer_descriptor(digest.clone(), size),
                )
            }),
            digest,
        }
    }

    pub fn subject(&self) -> Option<&Digest> {
        self.referrer.as_ref().map(|(s, _)| s)
    }
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
    /// Of `blobs` and `manifests`, the ones `repo` has no link to, checked in one go.
    async fn missing_links(
        &self,
        repo: &RepoName,
        blobs: &[Digest],
        manifests: &[Digest],
    ) -> StoreResult<Vec<Digest>>;
    /// Returns false if it was not linked.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool>;
    /// Record `manifest` in `repo` (and move `tag` to it) as put, and its tag as pushed, at
    /// `now`: see [`Store::put_time`], and call under [`Locks::writer`].
    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
        now: SystemTime,
    ) -> StoreResult<()>;
    /// [`MetaStore::put_manifest`] for a client's push, whose blobs the registry found
    /// linked in `repo`: a store with review queues checks that again once it holds them.
    async fn put_pushed_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
        now: SystemTime,
    ) -> StoreResult<()> {
        self.put_manifest(repo, manifest, tag, now).await
    }
    /// Whether [`MetaStore::put_manifest`] records the `now` it is given. A store whose
    /// records carry the time they were written (file mtimes, objects' LastModified)
    /// ignores it, and its writers need not read the blob store's clock, which costs a
    /// write there.
    fn records_put_time(&self) -> bool {
        false
    }
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
    /// When `tag` was last moved (pushed), if the store knows.
    async fn tag_pushed(&self, _repo: &RepoName, _tag: &Tag) -> StoreResult<Option<SystemTime>> {
        Ok(None)
    }
    /// Repository names sorted, after `last`, at most `n`.
    async fn list_repos(&self, last: Option<&str>, n: Option<usize>) -> StoreResult<Page>;
    /// Manifests of `repo` whose subject is `subject`.
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> StoreResult<Vec<Descriptor>>;

    /// Every manifest of `repo` (tagged or not), with when it was last put.
    async fn list_manifests(&self, repo: &RepoName) -> StoreResult<Vec<(Digest, SystemTime)>>;
    /// Every tag of `repo` with what it points at. A tag whose link cannot be read is
    /// returned as an error string, so scrub can name it and GC can refuse to guess.
    async fn tag_targets(
        &self,
        repo: &RepoName,
    ) -> StoreResult<Vec<(String, Result<Digest, String>)>>;
    /// Every readable tag of `repo` with its target and when it was last pushed (retention
    /// keeps the newest); tags whose link cannot be read are left out.
    async fn tag_pushes(&self, repo: &RepoName) -> StoreResult<Vec<(String, Digest, SystemTime)>>;
    /// Every repository with its blob links (what quotas count). Backends may cache, but
    /// must see every other process's links.
    async fn all_blob_links(&self) -> StoreResult<Vec<(String, Arc<Vec<Digest>>)>> {
        let mut out = Vec::new();
        for name in self.list_repos(None, None).await?.items {
            if let Ok(repo) = name.parse::<RepoName>() {
                let links = self.list_blob_links(&repo).await?;
                out.push((name, Arc::new(links)));
            }
        }
        Ok(out)
    }
    /// The blobs `repo` may serve (its links), whether or not the blobs exist.
    async fn list_blob_links(&self, repo: &RepoName) -> StoreResult<Vec<Digest>>;
    /// What a stored manifest references, read from its bytes. None if its bytes are gone;
    /// Err(Corrupt) if they do not parse.
    async fn manifest_record(&self, digest: &Digest) -> StoreResult<Option<ManifestRecord>>;
    /// Remove an untagged manifest from `repo` unless it was put at or after `since`.
    /// Call under [`Locks::collector`].
    async fn delete_manifest_unless_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        since: SystemTime,
    ) -> StoreResult<bool>;
    /// Remove a tag whose target cannot be read or does not exist (scrub --repair).
    async fn delete_tag_link(&self, repo: &RepoName, tag: &str) -> StoreResult<bool>;
    /// Remove what is left of a repository whose manifests were deleted and whose blobs
    /// were unlinked, so that the catalog no longer lists it. Call under [`Locks::writer`].
    async fn forget_repository(&self, repo: &RepoName) -> StoreResult<()>;
    /// Drop `repo` from the catalog if nothing is left in it: no tag, manifest, blob link
    /// or upload. Call under [`Locks::collector`]. Stores that cannot yet keep nothing.
    async fn remove_if_empty(&self, _repo: &RepoName) -> StoreResult<bool> {
        Ok(false)
    }
    /// [`MetaStore::put_pushed_manifest`], recording `events` (encoded, in order) in the
    /// same transaction, where this store keeps the event log ([`Store::events`]): the
    /// push and its events are stored together or not at all. Others ignore `events`; the
    /// registry passes them only to a store that keeps the log.
    async fn put_pushed_manifest_reporting(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
        now: SystemTime,
        _events: &[Vec<u8>],
    ) -> StoreResult<()> {
        self.put_pushed_manifest(repo, manifest, tag, now).await
    }
    /// [`MetaStore::delete_manifest`], recording `events` with it if it deleted anything.
    async fn delete_manifest_reporting(
        &self,
        repo: &RepoName,
        digest: &Digest,
        _events: &[Vec<u8>],
    ) -> StoreResult<bool> {
        self.delete_manifest(repo, digest).await
    }
    /// [`MetaStore::delete_tag`], recording `events` with it if it deleted anything.
    async fn delete_tag_reporting(
        &self,
        repo: &RepoName,
        tag: &Tag,
        _events: &[Vec<u8>],
    ) -> StoreResult<bool> {
        self.delete_tag(repo, tag).await
    }
    /// [`MetaStore::forget_repository`], the last step of a repository delete, recording
    /// the delete's `events` with it.
    async fn forget_repository_reporting(
        &self,
        repo: &RepoName,
        _events: &[Vec<u8>],
    ) -> StoreResult<()> {
        self.forget_repository(repo).await
    }
    /// The repositories whose name contains `needle`, sorted (the UI's search). A backend
    /// with an index on names overrides this scan of every name.
    async fn search_repos(&self, needle: &str) -> StoreResult<Vec<String>> {
        let all = self.list_repos(None, None).await?.items;
        Ok(all.into_iter().filter(|r| r.contains(needle)).collect())
    }

    /// Compare a backend's index of repository names with the repositories it holds,
    /// rewriting it with `repair`: Some(true) when it was missing or stale, None for a
    /// backend that keeps no such index (scrub).
    async fn check_name_index(&self, _repair: bool) -> StoreResult<Option<bool>> {
        Ok(None)
    }

    /// The review queues, where this store keeps them (PostgreSQL).
    fn review_queue(&self) -> Option<&dyn queue::ReviewQueue> {
        None
    }
}

/// A held lock; released when dropped.
pub type Guard = Box<dyn Send + Sync>;

/// How writers and a collector that run at the same time, in any process, stay out of
/// each other's way (the protocol is in `docs/storage.md`):
/// - every write that makes content reachable (blob commit and link, mount, manifest put)
///   holds [`Locks::writer`] while it retains what it references and publishes its links;
/// - the collector takes [`Locks::collector`] once to fix the instant its mark starts, and
///   again around each small batch it deletes, rechecking each victim inside it.
///
/// A waiting collector stops new writers, so a steady stream of them cannot starve it;
/// hence a writer must never take the writer lock again while it holds it.
#[async_trait]
pub trait Locks: Send + Sync + 'static {
    /// Shared with other writers, exclusive of a collector's batch.
    async fn writer(&self) -> StoreResult<Guard>;
    /// Exclusive of every writer.
    async fn collector(&self) -> StoreResult<Guard>;
    /// A background job's lock, so that one job of a name runs at a time across every
    /// process on the store. None when another holder has it.
    async fn try_job(&self, name: &str) -> StoreResult<Option<Guard>>;
    /// An exclusive lock on `name` (an immutable tag, a quota), waited for, across every
    /// process on the store: the check and the write it guards run alone. Take it before
    /// [`Locks::writer`], never while holding the writer lock, and several of them in
    /// sorted order, so that no two holders wait on each other.
    async fn exclusive(&self, name: &str) -> StoreResult<Guard>;
}

/// The storage a registry runs on.
#[derive(Clone)]
pub struct Store {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetaStore>,
    pub locks: Arc<dyn Locks>,
    /// What a person would call it in a message: a path, a bucket.
    pub describe: String,
    /// What is not content (the event log, job reports, UI sign-out stamps), where the
    /// backend keeps it: files under `_wharf/` on a filesystem, none in a bucket yet.
    pub state: Option<Arc<dyn state::State>>,
    /// Robot tokens and the audit log: under `_wharf/` on this host's root (shared by the
    /// processes on it), or in PostgreSQL with a database (shared by every replica).
    pub identity: Option<Arc<dyn state::IdentityState>>,
    /// Each repository's pull count: files under `_wharf/` on a filesystem, a table in
    /// PostgreSQL when `database:` is set, none in a bucket alone.
    pub pulls: Option<Arc<dyn state::PullCounts>>,
    /// The event log, where the metadata store keeps it in the transactions of the changes
    /// it reports (the `events` table with `database:`): the registry then hands each
    /// change its events (the `*_reporting` methods of [`MetaStore`]). None: the log is
    /// `state`'s (or this host's), appended to after each change.
    pub events: Option<Arc<dyn state::EventLog>>,
    /// Exact quota figures: files under `_wharf/quotas/` on this host's root (a bucket
    /// without a database has one process), a table in PostgreSQL with a database.
    pub quotas: Option<Arc<dyn state::QuotaLedger>>,
    /// When the pull-through cache last confirmed each tag upstream: files under
    /// `_wharf/` on a filesystem, a table in PostgreSQL, none in a bucket alone (the
    /// cache then keeps them in memory; a bucket without a database has one replica).
    pub tag_checks: Option<Arc<dyn tagchecks::TagChecks>>,
}

impl Store {
    /// The `now` a manifest put passes to [`MetaStore::put_manifest`], read under the writer
    /// lock: the blob store's clock, the one garbage collection reads its mark from (the
    /// bucket's, on S3), so that skew between hosts cannot make a put after the mark look
    /// older than it. Read only for a metadata store that records it.
    pub async fn put_time(&self) -> StoreResult<SystemTime> {
        if self.meta.records_put_time() {
            self.blobs.now().await
        } else {
            Ok(SystemTime::now())
        }
    }
}

/// Which storage `storage:` names.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// `storage.filesystem.rootdirectory`: holds `docker/registry/v2/`.
    Filesystem { root: PathBuf },
    /// `storage.s3`: a bucket in the same layout. The records wharf keeps for itself alone
    /// (the event log) have no place in the bucket, so they stay in `local` on this host.
    S3 { s3: s3::S3Config, local: PathBuf },
}

impl StorageConfig {
    /// What a message calls it: a path, a bucket at an endpoint.
    pub fn describe(&self) -> String {
        match self {
            StorageConfig::Filesystem { root } => format!("at {}", root.display()),
            StorageConfig::S3 { s3, .. } => s3.describe(),
        }
    }

    /// The directory on this host: the filesystem root, or beside a bucket the one for
    /// wharf's own records. `--root` names it either way.
    pub fn local_root(&self) -> &Path {
        match self {
            StorageConfig::Filesystem { root } | StorageConfig::S3 { local: root, .. } => root,
        }
    }

    pub fn local_root_mut(&mut self) -> &mut PathBuf {
        match self {
            StorageConfig::Filesystem { root } | StorageConfig::S3 { local: root, .. } => root,
        }
    }
}

/// What to tell someone whose configuration needs a backend this build of wharf left out.
pub fn built_without(feature: &str, what: &str) -> String {
    format!(
        "this wharf was built without the `{feature}` feature, so it cannot use {what}; \
         build it with default features (`cargo build --release -p wharf`) or with \
         `--features {feature}`"
    )
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
