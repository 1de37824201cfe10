//! The pull-through cache as a layer: a repository a remote serves is read through the
//! cache and refuses every write; any other goes to the service inside, untouched.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;
use wharf_oci::{Digest, ErrorCode, Reference, RepoName};

use super::Proxy;
use crate::registry::events::Origin;
use crate::registry::service::{BlobSource, Layer, Served, Service};
use crate::registry::{Core, Error, PutManifest, Result};
use crate::store::{ByteStream, Page};

pub struct ProxyLayer {
    inner: Arc<dyn Service>,
    /// The store the cache fills: fetched content is published as the core publishes.
    pub(super) core: Arc<Core>,
    pub(super) proxy: Proxy,
}

impl ProxyLayer {
    pub fn new(inner: Arc<dyn Service>, core: Arc<Core>, proxy: Proxy) -> ProxyLayer {
        ProxyLayer { inner, core, proxy }
    }

    /// registry:2 refuses every push when it mirrors; wharf refuses them only for the
    /// repositories a remote serves.
    /// Read-only mode is said first, as registry:2 says it for every write.
    fn refuse_writes(&self, repo: &RepoName) -> Result<()> {
        self.core.check_write()?;
        if !self.proxy.refuses_writes(repo) {
            return Ok(());
        }
        Err(Error::refused(
            ErrorCode::Unsupported,
            format!("{repo} is a pull-through cache of an upstream registry (proxy:); it cannot be pushed to or deleted from"),
        ))
    }
}

#[async_trait]
impl Layer for ProxyLayer {
    fn inner(&self) -> &dyn Service {
        &*self.inner
    }

    async fn manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Served>> {
        match self.proxy.route(repo) {
            Some(route) => self.proxied_manifest(repo, reference, &route).await,
            None => self.inner.manifest(o, repo, reference).await,
        }
    }

    async fn blob(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &Digest,
        want_body: bool,
    ) -> Result<Option<BlobSource>> {
        match self.proxy.route(repo) {
            Some(route) => self.proxied_blob(repo, digest, &route, want_body).await,
            None => self.inner.blob(o, repo, digest, want_body).await,
        }
    }

    async fn tags(
        &self,
        o: &Origin,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Option<Page>> {
        let upstream = match self.proxy.route(repo) {
            Some(route) => self.proxied_tags(&route).await,
            None => None,
        };
        match upstream {
            Some(mut tags) => {
                tags.sort();
                Ok(Some(crate::store::paginate(tags.into_iter(), last, n)))
            }
            None => self.inner.tags(o, repo, last, n).await,
        }
    }

    async fn put_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest> {
        self.refuse_writes(repo)?;
        let inner = &self.inner;
        inner
            .put_manifest(o, repo, reference, content_type, bytes)
            .await
    }

    async fn delete_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<bool> {
        self.refuse_writes(repo)?;
        self.inner.delete_manifest(o, repo, reference).await
    }

    async fn delete_blob(&self, o: &Origin, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.refuse_writes(repo)?;
        self.inner.delete_blob(o, repo, digest).await
    }

    async fn start_upload(&self, o: &Origin, repo: &RepoName) -> Result<Uuid> {
        self.refuse_writes(repo)?;
        self.inner.start_upload(o, repo).await
    }

    async fn append(
        &self,
        o: &Origin,
        repo: &RepoName,
        id: Uuid,
        at: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        self.refuse_writes(repo)?;
        self.inner.append(o, repo, id, at, body).await
    }

    async fn cancel_upload(&self, o: &Origin, repo: &RepoName, id: Uuid) -> Result<()> {
        self.refuse_writes(repo)?;
        self.inner.cancel_upload(o, repo, id).await
    }

    async fn finish_upload(
        &self,
        o: &Origin,
        repo: &RepoName,
        id: Uuid,
        digest: &Digest,
    ) -> Result<u64> {
        self.refuse_writes(repo)?;
        self.inner.finish_upload(o, repo, id, digest).await
    }

    async fn put_blob(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        self.refuse_writes(repo)?;
        self.inner.put_blob(o, repo, digest, length, body).await
    }

    async fn mount(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<Option<u64>> {
        self.refuse_writes(repo)?;
        self.inner.mount(o, repo, digest, from).await
    }

    async fn writable(&self, repo: Option<&RepoName>, delete: bool) -> Result<()> {
        if let Some(repo) = repo {
            self.refuse_writes(repo)?;
        }
        self.inner.writable(repo, delete).await
    }
}
