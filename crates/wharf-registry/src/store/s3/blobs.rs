//! Blobs at registry:2's keys (`blobs/<alg>/<xx>/<hex>/data`), made visible only once their
//! digest is verified, and never streamed back through wharf to be moved.
//!
//! An object's LastModified is when it was written; a later retain (a manifest naming a blob
//! that exists) writes a small marker, `_wharf/retained/<alg>/<hex>`, since rewriting the
//! blob would cost a copy. A blob was last retained at the later of the two.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{stream, StreamExt, TryStreamExt};
use uuid::Uuid;
use wharf_oci::{Algorithm, Digest, DigestHasher, RepoName};

use super::bucket::{byte_stream, Bucket};
use super::upload::{part_size, Uploads};
use super::S3Config;
use crate::store::{
    BlobInfo, BlobRead, BlobStore, ByteStream, Locks, StoreError, StoreResult, UploadInfo,
};

/// Requests in flight when a write touches many objects.
const CONCURRENCY: usize = 8;

pub struct S3BlobStore {
    bucket: Arc<Bucket>,
    locks: Arc<dyn Locks>,
    chunk: u64,
    redirect: bool,
}

impl S3BlobStore {
    pub fn new(bucket: Arc<Bucket>, locks: Arc<dyn Locks>, config: S3Config) -> S3BlobStore {
        S3BlobStore {
            bucket,
            locks,
            chunk: config.chunksize,
            redirect: config.redirect,
        }
    }

    fn uploads(&self) -> Uploads<'_> {
        Uploads {
            bucket: &self.bucket,
            chunk: self.chunk,
        }
    }

    fn data(&self, d: &Digest) -> String {
        self.bucket.layout.blob_data(d)
    }

    fn marker(&self, d: &Digest) -> String {
        self.bucket.layout.retained_marker(d)
    }

    /// Parse `…/blobs/<alg>/<xx>/<hex>/data` or `…/retained/<alg>/<hex>` back to a digest.
    fn digest_in(key: &str, data: bool) -> Option<Digest> {
        let mut parts = key.rsplit('/');
        if data && parts.next()? != "data" {
            return None;
        }
        let hex = parts.next()?;
        let alg = if data { parts.nth(1)? } else { parts.next()? };
        format!("{alg}:{hex}").parse().ok()
    }

    /// Multipart uploads begun before `cutoff` that no upload's state names (an append or
    /// a monolithic push that died midway): S3 keeps, and bills, their parts until aborted.
    async fn abort_orphans(&self, cutoff: SystemTime) -> StoreResult<usize> {
        let root = self.bucket.layout.v2();
        let mut aborted = 0;
        for (key, mp, began) in self.bucket.list_multipart(&format!("{root}/")).await? {
            if began >= cutoff || self.multipart_in_use(&key, &mp).await? {
                continue;
            }
            self.bucket.abort_multipart(&key, &mp).await?;
            aborted += 1;
        }
        Ok(aborted)
    }

    /// Whether `mp` at `key` (`…/repositories/<name>/_uploads/<id>/data`) is the
    /// multipart upload of an upload still in progress.
    async fn multipart_in_use(&self, key: &str, mp: &str) -> StoreResult<bool> {
        let root = format!("{}/", self.bucket.layout.repositories());
        let Some((repo, rest)) = key
            .strip_prefix(&root)
            .and_then(|k| k.split_once("/_uploads/"))
        else {
            return Ok(false);
        };
        let (Ok(repo), Ok(id)) = (
            repo.parse::<RepoName>(),
            rest.trim_end_matches("/data").parse::<Uuid>(),
        ) else {
            return Ok(false);
        };
        match self.uploads().load(&repo, id).await {
            Ok(state) => Ok(state.multipart() == Some(mp)),
            Err(StoreError::UploadUnknown(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Write `bytes` as a verified blob: under the writer lock, as every publication is.
    async fn publish_small(&self, digest: &Digest, bytes: Bytes) -> StoreResult<()> {
        let _writing = self.locks.writer().await?;
        self.bucket.put(&self.data(digest), bytes).await
    }

    /// A monolithic body that outgrew one part: a multipart upload straight to the final
    /// key, which S3 shows only once it is completed, after the digest was checked.
    async fn put_multipart(
        &self,
        expected: &Digest,
        first: Bytes,
        mut hasher: DigestHasher,
        mut body: ByteStream,
    ) -> StoreResult<u64> {
        let key = self.data(expected);
        let id = self.bucket.create_multipart(&key).await?;
        let result: StoreResult<_> = async {
            let mut parts = Vec::new();
            let mut done = 0u64;
            let mut buf = BytesMut::from(&first[..]);
            loop {
                let chunk = body.next().await.transpose().map_err(StoreError::Body)?;
                if let Some(c) = &chunk {
                    hasher.update(c);
                    buf.extend_from_slice(c);
                }
                let want = part_size(self.chunk, done) as usize;
                while buf.len() >= want || (chunk.is_none() && !buf.is_empty()) {
                    let bytes = buf.split_to(want.min(buf.len())).freeze();
                    let n = parts.len() as i32 + 1;
                    done += bytes.len() as u64;
                    let etag = self.bucket.put_part(&key, &id, n, bytes).await?;
                    parts.push(
                        aws_sdk_s3::types::CompletedPart::builder()
                            .part_number(n)
                            .e_tag(etag)
                            .build(),
                    );
                }
                if chunk.is_none() {
                    return Ok((parts, done));
                }
            }
        }
        .await;
        let (parts, size) = match result {
            Ok(x) => x,
            Err(e) => {
                let _ = self.bucket.abort_multipart(&key, &id).await;
                return Err(e);
            }
        };
        let actual = hasher.finish();
        if &actual != expected {
            self.bucket.abort_multipart(&key, &id).await?;
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let _writing = self.locks.writer().await?;
        self.bucket.complete_multipart(&key, &id, parts).await?;
        // S3 may date a multipart object by when its upload began, before a collection
        // that started meanwhile: the marker says it was retained now.
        self.bucket
            .put(&self.marker(expected), Bytes::new())
            .await?;
        Ok(size)
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn start_upload(&self, repo: &RepoName) -> StoreResult<Uuid> {
        self.uploads().start(repo).await
    }

    async fn upload_size(&self, repo: &RepoName, id: Uuid) -> StoreResult<u64> {
        Ok(self.uploads().load(repo, id).await?.size)
    }

    async fn append(
        &self,
        repo: &RepoName,
        id: Uuid,
        at: Option<u64>,
        body: ByteStream,
    ) -> StoreResult<u64> {
        self.uploads().append(repo, id, at, body).await
    }

    async fn read_upload(
        &self,
        repo: &RepoName,
        id: Uuid,
        from: u64,
        to: u64,
    ) -> StoreResult<ByteStream> {
        self.uploads().read(repo, id, from, to).await
    }

    async fn upload_digest(&self, repo: &RepoName, id: Uuid) -> StoreResult<Option<Digest>> {
        let uploads = self.uploads();
        let state = uploads.load(repo, id).await?;
        Ok(Some(uploads.digest(&state).await?))
    }

    async fn commit(&self, repo: &RepoName, id: Uuid, expected: &Digest) -> StoreResult<u64> {
        let uploads = self.uploads();
        let state = uploads.load(repo, id).await?;
        // The running hash is SHA-256; another algorithm would mean reading the bytes back.
        let actual = uploads.digest(&state).await?;
        if &actual != expected || expected.algorithm() != Algorithm::Sha256 {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.data(expected);
        {
            let _writing = self.locks.writer().await?;
            if self.bucket.head(&target).await?.is_some() {
                // Already there (pushed by someone else): keep it as if written now.
                self.bucket
                    .put(&self.marker(expected), Bytes::new())
                    .await?;
            } else {
                uploads.publish(repo, id, &state, &target).await?;
            }
        }
        uploads.remove(repo, id).await?;
        Ok(state.size)
    }

    async fn cancel(&self, repo: &RepoName, id: Uuid) -> StoreResult<()> {
        self.uploads().load(repo, id).await?;
        self.uploads().remove(repo, id).await
    }

    async fn put_stream(&self, expected: &Digest, mut body: ByteStream) -> StoreResult<u64> {
        let mut hasher = DigestHasher::new(expected.algorithm());
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
            if buf.len() as u64 >= self.chunk {
                return self
                    .put_multipart(expected, buf.freeze(), hasher, body)
                    .await;
            }
        }
        let actual = hasher.finish();
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let size = buf.len() as u64;
        self.publish_small(expected, buf.freeze()).await?;
        Ok(size)
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> StoreResult<()> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        self.bucket.put(&self.data(digest), bytes).await
    }

    async fn stat(&self, digest: &Digest) -> StoreResult<Option<u64>> {
        Ok(self
            .bucket
            .head(&self.data(digest))
            .await?
            .map(|(size, _)| size))
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<RangeInclusive<u64>>,
    ) -> StoreResult<BlobRead> {
        let key = self.data(digest);
        let unknown = || StoreError::BlobUnknown(digest.clone());
        let Some(r) = range else {
            let (size, body) = self
                .bucket
                .get_stream(&key, None)
                .await?
                .ok_or_else(unknown)?;
            let range = 0..=size.saturating_sub(1);
            return Ok(BlobRead {
                size,
                range,
                body: byte_stream(body),
            });
        };
        let (size, _) = self.bucket.head(&key).await?.ok_or_else(unknown)?;
        if r.start() > r.end() || *r.end() >= size {
            return Err(StoreError::RangeInvalid {
                start: *r.start(),
                end: *r.end(),
                size,
            });
        }
        let (_, body) = self
            .bucket
            .get_stream(&key, Some((*r.start(), *r.end())))
            .await?
            .ok_or_else(unknown)?;
        Ok(BlobRead {
            size,
            range: r,
            body: byte_stream(body),
        })
    }

    async fn get(&self, digest: &Digest, limit: u64) -> StoreResult<Option<Bytes>> {
        let key = self.data(digest);
        match self.bucket.head(&key).await? {
            Some((size, _)) if size <= limit => self.bucket.get(&key).await,
            _ => Ok(None),
        }
    }

    async fn delete(&self, digest: &Digest) -> StoreResult<()> {
        self.bucket
            .delete_many(vec![self.data(digest), self.marker(digest)])
            .await?;
        Ok(())
    }

    /// One DeleteObjects request per 500 blobs (two keys each: the data and its retain
    /// marker), S3's limit being 1,000 keys; deleting a missing key is no error in S3.
    async fn delete_batch(&self, digests: &[Digest]) -> StoreResult<()> {
        let keys = digests
            .iter()
            .flat_map(|d| [self.data(d), self.marker(d)])
            .collect();
        self.bucket.delete_many(keys).await?;
        Ok(())
    }

    async fn purge_uploads(&self, age: Duration) -> StoreResult<usize> {
        let cutoff = SystemTime::now() - age;
        let mut removed = 0;
        for u in self.list_uploads().await? {
            if u.modified >= cutoff {
                continue;
            }
            if let (Ok(repo), Ok(id)) = (u.repo.parse::<RepoName>(), u.id.parse::<Uuid>()) {
                self.uploads().remove(&repo, id).await?;
                removed += 1;
            }
        }
        Ok(removed + self.abort_orphans(cutoff).await?)
    }

    async fn redirect(&self, digest: &Digest) -> StoreResult<Option<String>> {
        if !self.redirect {
            return Ok(None);
        }
        self.bucket.presign_get(&self.data(digest)).await.map(Some)
    }

    async fn list_blobs(&self) -> StoreResult<Vec<BlobInfo>> {
        let root = format!("{}/", self.bucket.layout.blobs_root());
        let markers = format!("{}/", self.bucket.layout.retained_markers());
        let retained: std::collections::HashMap<Digest, SystemTime> = self
            .bucket
            .list(&markers)
            .await?
            .into_iter()
            .filter_map(|o| Some((Self::digest_in(&o.key, false)?, o.modified)))
            .collect();
        Ok(self
            .bucket
            .list(&root)
            .await?
            .into_iter()
            .filter_map(|o| {
                let digest = Self::digest_in(&o.key, true)?;
                let marked = retained.get(&digest).copied();
                Some(BlobInfo {
                    retained: o.modified.max(marked.unwrap_or(o.modified)),
                    size: o.size,
                    digest,
                })
            })
            .collect())
    }

    async fn retain(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
        let checked: Vec<Option<Digest>> = stream::iter(digests.iter().cloned())
            .map(|d| async move {
                if self.bucket.head(&self.data(&d)).await?.is_none() {
                    return Ok(Some(d));
                }
                self.bucket.put(&self.marker(&d), Bytes::new()).await?;
                Ok::<_, StoreError>(None)
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        Ok(checked.into_iter().flatten().collect())
    }

    /// The bucket's clock, not this machine's: retains are stamped by the server, and a
    /// collection must compare like with like. Whole seconds, as S3's HEAD reports them.
    async fn now(&self) -> StoreResult<SystemTime> {
        let key = self.bucket.layout.clock();
        self.bucket.put(&key, Bytes::new()).await?;
        let (_, t) =
            self.bucket.head(&key).await?.ok_or_else(|| {
                StoreError::Io(std::io::Error::other("the clock object vanished"))
            })?;
        Ok(t)
    }

    async fn retained(&self, digest: &Digest) -> StoreResult<Option<SystemTime>> {
        let Some((_, written)) = self.bucket.head(&self.data(digest)).await? else {
            return Ok(None);
        };
        let marked = self.bucket.head(&self.marker(digest)).await?;
        Ok(Some(written.max(marked.map_or(written, |(_, t)| t))))
    }

    async fn delete_unless_retained(
        &self,
        digest: &Digest,
        since: SystemTime,
    ) -> StoreResult<bool> {
        match self.retained(digest).await? {
            Some(t) if t < since => {
                self.delete(digest).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn quarantine(&self, digest: &Digest) -> StoreResult<Option<String>> {
        let key = self.data(digest);
        let Some((size, _)) = self.bucket.head(&key).await? else {
            return Ok(None);
        };
        let dir = self.bucket.layout.quarantine();
        let to = format!("{dir}/{}/{}", digest.algorithm().as_str(), digest.hex());
        self.bucket.copy(&key, &to, size).await?;
        self.delete(digest).await?;
        Ok(Some(format!("s3://{}/{to}", self.bucket.name)))
    }

    async fn list_uploads(&self) -> StoreResult<Vec<UploadInfo>> {
        self.uploads().list().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_digest() {
        let d = Digest::sha256_of(b"x");
        let data = format!(
            "p/docker/registry/v2/blobs/sha256/{}/{}/data",
            &d.hex()[..2],
            d.hex()
        );
        assert_eq!(S3BlobStore::digest_in(&data, true), Some(d.clone()));
        let marker = format!("p/docker/registry/v2/_wharf/retained/sha256/{}", d.hex());
        assert_eq!(S3BlobStore::digest_in(&marker, false), Some(d));
        assert_eq!(S3BlobStore::digest_in("a/b/startedat", true), None);
    }
}
