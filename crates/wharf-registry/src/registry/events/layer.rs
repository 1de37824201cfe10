//! Events as a layer: what the service inside did for a client (pushed, pulled, mounted,
//! deleted) is recorded once it has happened, in registry:2's envelope, whichever front
//! end asked.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;
use wharf_oci::{Digest, Reference, RepoName};

use super::envelope::{MOUNT, PULL, PUSH};
use super::{Events, Origin};
use crate::registry::service::{BlobSource, Layer, RepositoryDeleted, Served, Service};
use crate::registry::{PutManifest, Result};
use crate::store::ByteStream;

pub struct EventsLayer {
    inner: Arc<dyn Service>,
    events: Arc<Events>,
}

impl EventsLayer {
    pub fn new(inner: Arc<dyn Service>, events: Arc<Events>) -> EventsLayer {
        EventsLayer { inner, events }
    }

    async fn blob_pushed(&self, o: &Origin, repo: &RepoName, digest: &Digest, size: u64) {
        // Durable with the manifest push that follows (see Events::emit_queued).
        let e = o.blob(PUSH, repo, digest, size, None);
        self.events.emit_queued(vec![e]).await;
    }
}

fn tag_of(reference: &Reference) -> Option<&str> {
    match reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    }
}

#[async_trait]
impl Layer for EventsLayer {
    fn inner(&self) -> &dyn Service {
        &*self.inner
    }

    /// Distribution reports a HEAD as a pull too: both read the manifest.
    async fn manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Served>> {
        let served = self.inner.manifest(o, repo, reference).await?;
        if let Some(m) = served.as_ref().map(|s| &s.content) {
            // A pull costs a write only when an endpoint wants pulls.
            if self.events.wants(PULL) {
                let size = m.bytes.len() as u64;
                let tag = tag_of(reference);
                let mut e = o.manifest(PULL, repo, &m.media_type, &m.digest, size, tag);
                if self.events.include_references {
                    if let Ok(parsed) = wharf_oci::Manifest::parse(&m.bytes, None) {
                        e.target.references = super::envelope::references(&parsed);
                    }
                }
                self.events.emit(vec![e]).await;
            }
        }
        Ok(served)
    }

    async fn blob(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &Digest,
        want_body: bool,
    ) -> Result<Option<BlobSource>> {
        let source = self.inner.blob(o, repo, digest, want_body).await?;
        if let Some(s) = &source {
            if self.events.wants(PULL) {
                let e = o.blob(PULL, repo, digest, s.size(), None);
                self.events.emit(vec![e]).await;
            }
        }
        Ok(source)
    }

    async fn put_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest> {
        let inner = &self.inner;
        let put = inner
            .put_manifest(o, repo, reference, content_type, bytes)
            .await?;
        // Where the log is the database's, the core recorded it in the put's transaction.
        if !self.events.in_transaction() {
            let tag = tag_of(reference);
            let mut e = o.manifest(PUSH, repo, &put.media_type, &put.digest, put.size, tag);
            if self.events.include_references {
                e.target.references = put.references.clone();
            }
            self.events.emit(vec![e]).await;
        }
        Ok(put)
    }

    async fn delete_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<bool> {
        let deleted = self.inner.delete_manifest(o, repo, reference).await?;
        if deleted && !self.events.in_transaction() {
            let e = match reference {
                Reference::Tag(t) => o.tag_deleted(repo, t.as_str()),
                Reference::Digest(d) => o.deleted(repo, d),
            };
            self.events.emit(vec![e]).await;
        }
        Ok(deleted)
    }

    /// A delete event for each manifest, as deleting them one by one would send.
    async fn delete_repository(
        &self,
        o: &Origin,
        repo: &RepoName,
    ) -> Result<Option<RepositoryDeleted>> {
        let deleted = self.inner.delete_repository(o, repo).await?;
        if let Some(d) = deleted.as_ref().filter(|_| !self.events.in_transaction()) {
            let events = d.manifests.iter().map(|m| o.deleted(repo, m)).collect();
            self.events.emit(events).await;
        }
        Ok(deleted)
    }

    async fn delete_blob(&self, o: &Origin, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let deleted = self.inner.delete_blob(o, repo, digest).await?;
        if deleted {
            self.events.emit(vec![o.deleted(repo, digest)]).await;
        }
        Ok(deleted)
    }

    async fn finish_upload(
        &self,
        o: &Origin,
        repo: &RepoName,
        id: Uuid,
        digest: &Digest,
    ) -> Result<u64> {
        let size = self.inner.finish_upload(o, repo, id, digest).await?;
        self.blob_pushed(o, repo, digest, size).await;
        Ok(size)
    }

    async fn put_blob(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        let size = self.inner.put_blob(o, repo, digest, length, body).await?;
        self.blob_pushed(o, repo, digest, size).await;
        Ok(size)
    }

    async fn mount(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<Option<u64>> {
        let mounted = self.inner.mount(o, repo, digest, from).await?;
        if let Some(size) = mounted {
            let e = o.blob(MOUNT, repo, digest, size, Some(from));
            self.events.emit_queued(vec![e]).await;
        }
        Ok(mounted)
    }
}
