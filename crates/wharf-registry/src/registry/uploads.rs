//! Finishing uploads and mounting blobs: the writes that make a blob servable from a
//! repository.

use uuid::Uuid;
use wharf_oci::{Digest, ErrorCode, RepoName};

use super::{Error, Registry, Result};
use crate::store::ByteStream;

impl Registry {
    /// Verify and commit an upload, then link its blob into `repo`.
    pub async fn finish_upload(&self, repo: &RepoName, id: Uuid, digest: &Digest) -> Result<u64> {
        let size = self.store.blobs.commit(repo, id, digest).await?;
        self.link_retained(repo, digest).await?;
        Ok(size)
    }

    /// A whole blob in one request: stream, verify, commit, link.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
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
