//! Finishing uploads and mounting blobs: the writes that make a blob servable from a
//! repository.

use uuid::Uuid;
use wharf_oci::{Digest, ErrorCode, RepoName};

use super::{Core, Error, Result};
use crate::store::{ByteStream, StoreError};

impl Core {
    /// Verify and commit an upload, then link its blob into `repo`.
    pub(super) async fn commit_upload(
        &self,
        repo: &RepoName,
        id: Uuid,
        digest: &Digest,
    ) -> Result<u64> {
        self.admit_upload(repo, id, digest).await?;
        let size = self.store.blobs.commit(repo, id, digest).await?;
        self.link_retained(repo, digest).await?;
        Ok(size)
    }

    /// Under a quota, an upload is measured before it is committed; one that does not fit
    /// is discarded, so nothing over quota stays stored.
    async fn admit_upload(&self, repo: &RepoName, id: Uuid, digest: &Digest) -> Result<()> {
        if !self.quota_applies(repo) {
            return Ok(());
        }
        let size = self.store.blobs.upload_size(repo, id).await?;
        if let Err(e) = self.check_quota(repo, digest, size).await {
            self.store.blobs.cancel(repo, id).await?;
            return Err(e);
        }
        Ok(())
    }

    /// A whole blob in one request: stream, verify, commit, link. `length` is the
    /// request's Content-Length: under a quota it refuses the blob before reading it; a
    /// body of unknown length goes through an upload, measured before its commit.
    pub(super) async fn store_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        if self.quota_applies(repo) {
            match length {
                Some(n) => self.check_quota(repo, digest, n).await?,
                None => {
                    let id = self.store.blobs.start_upload(repo).await?;
                    self.store.blobs.append(repo, id, Some(0), body).await?;
                    return self.commit_upload(repo, id, digest).await;
                }
            }
        }
        let size = self.store.blobs.put_stream(digest, body).await?;
        self.link_retained(repo, digest).await?;
        Ok(size)
    }

    /// Link a just-committed blob. A collection whose grace is shorter than the moment
    /// since the commit could have taken it meanwhile: then the client pushes it again.
    async fn link_retained(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if !self.publish_link(repo, digest).await? {
            return Err(Error::refused(
                ErrorCode::BlobUploadInvalid,
                format!("{digest} was garbage-collected as it was committed (is gc.grace shorter than a push?): push it again"),
            ));
        }
        Ok(())
    }

    /// The one way a stored blob becomes servable from `repo`: retained again under the
    /// writer lock, then linked, so that a collection either saw the link or sees the
    /// blob retained after its mark began. False (and nothing linked) if the blob is gone.
    ///
    /// Under a quota, the blob is charged here, holding the quota's lock until this
    /// writer holds the writer lock: a blob that no longer fits is refused, and stays
    /// unlinked for garbage collection; one whose link then fails stays charged (the
    /// figure is high, never low, until a recount).
    pub(super) async fn publish_link(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let quotas = self.quota_locks(repo).await?;
        if !quotas.is_empty() {
            let Some(size) = self.store.blobs.stat(digest).await? else {
                return Ok(false);
            };
            self.charge_quotas(repo, digest, size).await?;
        }
        let _writing = self.store.locks.writer().await?;
        // Charged and now a writer: a recount (which takes the quota's lock, then the
        // collector's) waits for this link, so the next charge may go ahead meanwhile.
        drop(quotas);
        let gone = self
            .store
            .blobs
            .retain(std::slice::from_ref(digest))
            .await?;
        if !gone.is_empty() {
            return Ok(false);
        }
        match self.store.meta.link_blob(repo, digest).await {
            // Collected by a review queue between the retain and the link.
            Err(StoreError::BlobUnknown(_)) => Ok(false),
            other => other.map(|()| true).map_err(Error::from),
        }
    }

    /// Link a blob `from` has into `repo`: its size, or None when `from` cannot serve it.
    pub(super) async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<Option<u64>> {
        if !self.store.meta.blob_linked(from, digest).await? {
            return Ok(None);
        }
        let Some(size) = self.store.blobs.stat(digest).await? else {
            return Ok(None);
        };
        if self.quota_applies(repo) {
            self.check_quota(repo, digest, size).await?;
        }
        Ok(self.publish_link(repo, digest).await?.then_some(size))
    }

    /// The blob's size if `repo` may serve it and it exists.
    pub async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        if !self.store.meta.blob_linked(repo, digest).await? {
            return Ok(None);
        }
        Ok(self.store.blobs.stat(digest).await?)
    }
}
