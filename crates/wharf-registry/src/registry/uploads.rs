//! Finishing uploads and mounting blobs: the writes that make a blob servable from a
//! repository.

use uuid::Uuid;
use wharf_oci::{Digest, ErrorCode, RepoName};

use super::{Error, Registry, Result};
use crate::store::ByteStream;

impl Registry {
    /// Verify and commit an upload, then link its blob into `repo`.
    pub async fn finish_upload(&self, repo: &RepoName, id: Uuid, digest: &Digest) -> Result<u64> {
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
    pub async fn put_blob(
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
                    return self.finish_upload(repo, id, digest).await;
                }
            }
        }
        let size = self.store.blobs.put_stream(digest, body).await?;
        self.link_retained(repo, digest).await?;
        Ok(size)
    }

    /// Link a just-committed blob, retaining it again under the writer lock: a collection
    /// whose grace is shorter than the moment since the commit could otherwise take the
    /// blob while its link is being written.
    async fn link_retained(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let _writing = self.store.locks.writer().await?;
        if !self.retain_one(digest).await? {
            return Err(Error::refused(
                ErrorCode::BlobUploadInvalid,
                format!("{digest} was garbage-collected as it was committed (is gc.grace shorter than a push?): push it again"),
            ));
        }
        self.store.meta.link_blob(repo, digest).await?;
        Ok(())
    }

    /// Retain one blob; false if it is gone. Call under the writer lock.
    async fn retain_one(&self, digest: &Digest) -> Result<bool> {
        let missing = self
            .store
            .blobs
            .retain(std::slice::from_ref(digest))
            .await?;
        Ok(missing.is_empty())
    }

    /// Link a blob `from` has into `repo`. False when `from` cannot serve it.
    pub async fn mount(&self, repo: &RepoName, digest: &Digest, from: &RepoName) -> Result<bool> {
        if !self.store.meta.blob_linked(from, digest).await? {
            return Ok(false);
        }
        if self.quota_applies(repo) {
            let size = self.store.blobs.stat(digest).await?.unwrap_or(0);
            self.check_quota(repo, digest, size).await?;
        }
        let _writing = self.store.locks.writer().await?;
        if !self.retain_one(digest).await? {
            return Ok(false);
        }
        self.store.meta.link_blob(repo, digest).await?;
        Ok(true)
    }

    /// The blob's size if `repo` may serve it and it exists.
    pub async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        if !self.store.meta.blob_linked(repo, digest).await? {
            return Ok(None);
        }
        Ok(self.store.blobs.stat(digest).await?)
    }

    /// Repository names after `last`, at most `n`, among those `visible` admits. Filtering
    /// comes before paging so that pages stay full.
    pub async fn catalog(
        &self,
        last: Option<&str>,
        n: Option<usize>,
        visible: Option<&(dyn Fn(&str) -> bool + Sync)>,
    ) -> Result<crate::store::Page> {
        Ok(match visible {
            None => self.store.meta.list_repos(last, n).await?,
            Some(f) => {
                let all = self.store.meta.list_repos(last, None).await?;
                crate::store::paginate(all.items.into_iter().filter(|r| f(r)), None, n)
            }
        })
    }
}
