//! The core service: every operation over the store, with the rules that belong to the
//! registry itself (the delete switch, read-only mode, immutable tags, quotas). Layers
//! wrap it; nothing here knows about them.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;
use wharf_oci::{Descriptor, Digest, ErrorCode, Reference, RepoName};

use super::events::{Event, Events, Origin};
use super::governance::SizeCache;
use super::service::{BlobSource, RepositoryDeleted, Served, Service, Visible};
use super::{Error, ManifestCache, PutManifest, Result};
use crate::config::governance::Governance;
use crate::store::{ByteStream, Page, Store};

/// The registry over its store.
pub struct Core {
    pub store: Store,
    pub manifests: ManifestCache,
    /// Retention, immutable tags and quotas; empty unless configured.
    pub governance: Arc<Governance>,
    pub(super) sizes: SizeCache,
    pub(super) rules: Rules,
    /// Where a job records what it changed for clients (retention's deletes), as the
    /// events layer records what clients change. None where nothing listens.
    pub(super) events: Option<Arc<Events>>,
}

/// The switches a registry:2 config sets for every write.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// `storage.delete.enabled`.
    pub delete_enabled: bool,
    /// `storage.maintenance.readonly`: every write is refused.
    pub read_only: bool,
}

impl Core {
    pub fn new(store: Store) -> Core {
        Core {
            store,
            manifests: ManifestCache::default(),
            governance: Arc::default(),
            sizes: SizeCache::default(),
            rules: Rules::default(),
            events: None,
        }
    }

    /// Record events of a job's changes, if anything listens.
    pub(super) async fn emit(&self, events: Vec<Event>) {
        if let Some(e) = &self.events {
            e.emit(events).await;
        }
    }

    /// The events a change reports, encoded for its own transaction, where the metadata
    /// store keeps the event log; empty otherwise (the events layer appends them after
    /// the change), so nothing is built for nothing.
    pub(super) fn reports(&self, build: impl FnOnce(&Events) -> Vec<Event>) -> Vec<Vec<u8>> {
        match &self.events {
            Some(e) if e.in_transaction() => e.encode(build(e)),
            _ => Vec::new(),
        }
    }

    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// Refuse any write while the registry is read-only.
    pub(super) fn check_write(&self) -> Result<()> {
        if self.rules.read_only {
            return Err(Error::refused(
                ErrorCode::Unsupported,
                "the registry is in read-only mode (storage.maintenance.readonly)",
            ));
        }
        Ok(())
    }

    /// Refuse a delete unless deletes are enabled (and the registry is writable).
    pub(super) fn check_delete(&self) -> Result<()> {
        self.check_write()?;
        if !self.rules.delete_enabled {
            return Err(Error::refused(
                ErrorCode::Unsupported,
                "deletes are disabled: set storage.delete.enabled (REGISTRY_STORAGE_DELETE_ENABLED=true)",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Service for Core {
    async fn manifest(
        &self,
        _: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Served>> {
        Ok(self
            .stored_manifest(repo, reference)
            .await?
            .map(Served::fresh))
    }

    async fn put_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest> {
        self.check_write()?;
        self.store_manifest(o, repo, reference, content_type, bytes)
            .await
    }

    async fn delete_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<bool> {
        self.check_delete()?;
        self.remove_manifest(o, repo, reference).await
    }

    async fn delete_repository(
        &self,
        o: &Origin,
        repo: &RepoName,
    ) -> Result<Option<RepositoryDeleted>> {
        self.check_delete()?;
        let deleted = self.remove_repository(o, repo).await?;
        if deleted.is_some() {
            self.recount_quotas_of(repo).await?;
        }
        Ok(deleted)
    }

    async fn blob(
        &self,
        _: &Origin,
        repo: &RepoName,
        digest: &Digest,
        _want_body: bool,
    ) -> Result<Option<BlobSource>> {
        Ok(self
            .blob_in_repo(repo, digest)
            .await?
            .map(BlobSource::Stored))
    }

    async fn delete_blob(&self, _: &Origin, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.check_delete()?;
        let unlinked = self.store.meta.unlink_blob(repo, digest).await?;
        if unlinked {
            self.recount_quotas_of(repo).await?;
        }
        Ok(unlinked)
    }

    async fn start_upload(&self, _: &Origin, repo: &RepoName) -> Result<Uuid> {
        self.check_write()?;
        Ok(self.store.blobs.start_upload(repo).await?)
    }

    async fn upload_size(&self, _: &Origin, repo: &RepoName, id: Uuid) -> Result<u64> {
        Ok(self.store.blobs.upload_size(repo, id).await?)
    }

    async fn append(
        &self,
        _: &Origin,
        repo: &RepoName,
        id: Uuid,
        at: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        self.check_write()?;
        Ok(self.store.blobs.append(repo, id, at, body).await?)
    }

    async fn cancel_upload(&self, _: &Origin, repo: &RepoName, id: Uuid) -> Result<()> {
        self.check_write()?;
        Ok(self.store.blobs.cancel(repo, id).await?)
    }

    async fn finish_upload(
        &self,
        _: &Origin,
        repo: &RepoName,
        id: Uuid,
        digest: &Digest,
    ) -> Result<u64> {
        self.check_write()?;
        self.commit_upload(repo, id, digest).await
    }

    async fn put_blob(
        &self,
        _: &Origin,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        self.check_write()?;
        self.store_blob(repo, digest, length, body).await
    }

    async fn mount(
        &self,
        _: &Origin,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<Option<u64>> {
        self.check_write()?;
        self.mount_blob(repo, digest, from).await
    }

    async fn tags(
        &self,
        _: &Origin,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Option<Page>> {
        Ok(self.store.meta.list_tags(repo, last, n).await?)
    }

    async fn referrers(
        &self,
        _: &Origin,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>> {
        Ok(self.store.meta.referrers(repo, subject).await?)
    }

    async fn catalog(
        &self,
        _: &Origin,
        last: Option<&str>,
        n: Option<usize>,
        visible: Visible<'_>,
    ) -> Result<Page> {
        Ok(match visible {
            None => self.store.meta.list_repos(last, n).await?,
            Some(f) => {
                let all = self.store.meta.list_repos(last, None).await?;
                crate::store::paginate(all.items.into_iter().filter(|r| f(r)), None, n)
            }
        })
    }

    async fn writable(&self, _: Option<&RepoName>, delete: bool) -> Result<()> {
        match delete {
            true => self.check_delete(),
            false => self.check_write(),
        }
    }
}
