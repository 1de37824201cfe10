//! The operations of the registry, as every front end asks for them, and how layers wrap
//! them.
//!
//! [`Service`] is what the core implements in full. A [`Layer`] wraps another service and
//! overrides only the operations it decides on, records or answers itself; every other
//! operation goes to the service it wraps, untouched. This is how Distribution wraps its
//! namespace with the pull-through cache and its repositories with notification
//! listeners: adding a policy means adding one layer, and no front end changes.
//!
//! Each operation takes the [`Origin`] of the request that caused it (who, from where),
//! so that a layer can emit or audit without the front end doing it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;
use wharf_oci::{Descriptor, Digest, Reference, RepoName};

use super::events::Origin;
use super::{ManifestContent, PutManifest, Result};
use crate::store::{ByteStream, Page};

/// Which repositories a catalog listing may show: filtering comes before paging so that
/// pages stay full.
pub type Visible<'a> = Option<&'a (dyn Fn(&str) -> bool + Sync)>;

/// Where a blob's bytes come from.
pub enum BlobSource {
    /// Stored: its size; the bytes are read (or redirected to) through the registry.
    Stored(u64),
    /// Being fetched from a pull-through upstream: its size, and the bytes as they arrive.
    Filling(u64, ByteStream),
}

impl BlobSource {
    pub fn size(&self) -> u64 {
        match self {
            BlobSource::Stored(n) | BlobSource::Filling(n, _) => *n,
        }
    }
}

/// What a repository delete removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepositoryDeleted {
    pub repository: String,
    pub manifests: Vec<Digest>,
    pub tags: Vec<String>,
}

/// A manifest answer, with the `Warning` to send when it is served stale.
pub struct Served {
    pub content: ManifestContent,
    pub warning: Option<String>,
    /// What a `trust:` rule found, for the `Wharf-Trust` header.
    pub trust: Option<String>,
}

impl Served {
    pub fn fresh(content: ManifestContent) -> Served {
        Served {
            content,
            warning: None,
            trust: None,
        }
    }
}

/// Declares the operations once: [`Service`] with each of them, [`Layer`] whose default for
/// each is the inner service's, and every layer a service through them.
macro_rules! operations {
    ($(
        $(#[$doc:meta])*
        async fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        /// Everything a client can ask of the registry. Implemented in full by the core;
        /// layers get it through [`Layer`].
        #[async_trait]
        pub trait Service: Send + Sync + 'static {
            $( $(#[$doc])* async fn $name(&self $(, $arg: $ty)*) -> $ret; )*
        }

        /// A service wrapped around another. Every operation defaults to the inner
        /// service's; a layer overrides what it acts on.
        #[async_trait]
        pub trait Layer: Send + Sync + 'static {
            /// The service this layer wraps.
            fn inner(&self) -> &dyn Service;
            $(
                $(#[$doc])*
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.inner().$name($($arg),*).await
                }
            )*
        }

        /// A layer is a service: the operations it does not override go inward.
        #[async_trait]
        impl<L: Layer> Service for L {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    Layer::$name(self $(, $arg)*).await
                }
            )*
        }
    };
}

operations! {
    /// The manifest `reference` names in `repo`, or None.
    async fn manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Served>>;
    /// Store a manifest under `reference` (a tag or its digest).
    async fn put_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest>;
    /// Delete a tag, or a manifest with every tag on it. False if there was none.
    async fn delete_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<bool>;
    /// Delete a whole repository: every tag and manifest, its blob links, and its name
    /// from the catalog (GC frees the bytes). Refused as a whole, before anything is
    /// deleted, when a tag in it is immutable. None when there is no such repository.
    async fn delete_repository(
        &self,
        o: &Origin,
        repo: &RepoName,
    ) -> Result<Option<RepositoryDeleted>>;
    /// The blob `digest` if `repo` may serve it. `want_body` false (a HEAD) only asks.
    async fn blob(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &Digest,
        want_body: bool,
    ) -> Result<Option<BlobSource>>;
    /// Unlink a blob from `repo`, as Distribution does; the bytes go at GC. False if absent.
    async fn delete_blob(&self, o: &Origin, repo: &RepoName, digest: &Digest) -> Result<bool>;
    async fn start_upload(&self, o: &Origin, repo: &RepoName) -> Result<Uuid>;
    /// Bytes an upload has received so far.
    async fn upload_size(&self, o: &Origin, repo: &RepoName, id: Uuid) -> Result<u64>;
    /// Append to an upload; with `at`, only if it is exactly that long. Returns its size.
    async fn append(
        &self,
        o: &Origin,
        repo: &RepoName,
        id: Uuid,
        at: Option<u64>,
        body: ByteStream,
    ) -> Result<u64>;
    async fn cancel_upload(&self, o: &Origin, repo: &RepoName, id: Uuid) -> Result<()>;
    /// Verify and commit an upload, and link its blob into `repo`. Returns the size.
    async fn finish_upload(
        &self,
        o: &Origin,
        repo: &RepoName,
        id: Uuid,
        digest: &Digest,
    ) -> Result<u64>;
    /// A whole blob in one request (`length` is its Content-Length, if sent).
    async fn put_blob(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64>;
    /// Link a blob `from` has into `repo`: its size, or None when `from` cannot serve it.
    async fn mount(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<Option<u64>>;
    /// Tags sorted, after `last`, at most `n`. None when the repository is unknown.
    async fn tags(
        &self,
        o: &Origin,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Option<Page>>;
    /// Manifests of `repo` whose subject is `subject`.
    async fn referrers(
        &self,
        o: &Origin,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>>;
    /// Repository names after `last`, at most `n`, among those `visible` admits.
    async fn catalog(
        &self,
        o: &Origin,
        last: Option<&str>,
        n: Option<usize>,
        visible: Visible<'_>,
    ) -> Result<Page>;
    /// Why a write (or, with `delete`, a delete) in `repo` (or anywhere, without one)
    /// would be refused, before it is attempted: what a front end asks before it reads a
    /// request's body, or to offer or hide an action.
    async fn writable(&self, repo: Option<&RepoName>, delete: bool) -> Result<()>;
}

/// How a layer is put around the service built so far.
pub type Wrap = Box<dyn FnOnce(Arc<dyn Service>) -> Arc<dyn Service> + Send>;
