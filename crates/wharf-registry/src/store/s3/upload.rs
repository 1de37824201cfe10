//! Uploads as S3 multipart uploads whose whole state lives in the bucket, so that any
//! process (a replica behind a load balancer without sticky sessions) continues any upload:
//!
//! - `_uploads/<id>/startedat`: as registry:2 writes it;
//! - `_uploads/<id>/wharfstate`: size, the SHA-256 state (Go's marshalled form, as the
//!   filesystem keeps it), the multipart upload id and its parts;
//! - `_uploads/<id>/wharftail-<size>-<uuid>`: the last bytes received, fewer than a part;
//! - `_uploads/<id>/data`: the multipart upload itself, completed at commit.
//!
//! Each append writes whole parts as they fill and the remainder as a new tail object, then
//! replaces the state object: an append that fails midway leaves the previous state intact,
//! and its retry rewrites the same part numbers. Parts grow with the upload, so a blob of
//! S3's 5 TiB limit fits its 10,000 parts.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wharf_oci::{Digest, RepoName};

use super::bucket::{byte_stream, Bucket};
use super::MIN_PART;
use crate::store::hashstate::Sha256State;
use crate::store::{ByteStream, StoreError, StoreResult, UploadInfo};

const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// S3's limit on the parts of one upload.
const MAX_PARTS: usize = 10_000;

#[derive(Serialize, Deserialize, Default)]
pub struct UploadState {
    pub size: u64,
    /// Hex of the marshalled SHA-256 state after `size` bytes.
    hash: String,
    multipart: Option<String>,
    parts: Vec<Part>,
    /// Bytes at the end held in the tail object, not yet in a part.
    tail: u64,
    /// The tail object's name: unique to the append that wrote it, so that two appends
    /// racing on one upload can never pair one's hash state with the other's bytes.
    #[serde(default)]
    tail_name: String,
}

#[derive(Serialize, Deserialize, Clone)]
struct Part {
    n: i32,
    etag: String,
    size: u64,
}

impl UploadState {
    fn hasher(&self) -> StoreResult<Sha256State> {
        if self.hash.is_empty() {
            return Ok(Sha256State::default());
        }
        hex::decode(&self.hash)
            .ok()
            .and_then(|b| Sha256State::unmarshal(&b))
            .ok_or_else(|| StoreError::Corrupt {
                what: "upload state".into(),
                why: "its hash state does not decode".into(),
            })
    }

    pub fn multipart(&self) -> Option<&str> {
        self.multipart.as_deref()
    }

    fn in_parts(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }
}

/// How big the next part is once `done` bytes are in parts: the configured size at first,
/// then a thousandth of what is there, which reaches 5 TiB well within 10,000 parts.
pub fn part_size(chunk: u64, done: u64) -> u64 {
    chunk.max(done / 1000).clamp(MIN_PART, MAX_PART)
}

pub struct Uploads<'a> {
    pub bucket: &'a Bucket,
    pub chunk: u64,
}

impl Uploads<'_> {
    fn dir(&self, repo: &RepoName, id: Uuid) -> String {
        self.bucket.layout.upload_dir(repo, id)
    }

    fn state_key(&self, repo: &RepoName, id: Uuid) -> String {
        format!("{}/wharfstate", self.dir(repo, id))
    }

    pub fn data_key(&self, repo: &RepoName, id: Uuid) -> String {
        format!("{}/data", self.dir(repo, id))
    }

    fn tail_key(&self, repo: &RepoName, id: Uuid, state: &UploadState) -> String {
        format!("{}/{}", self.dir(repo, id), state.tail_name)
    }

    pub async fn start(&self, repo: &RepoName) -> StoreResult<Uuid> {
        let id = Uuid::new_v4();
        let dir = self.dir(repo, id);
        let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        self.bucket
            .put(&format!("{dir}/startedat"), Bytes::from(now))
            .await?;
        self.save(repo, id, &UploadState::default()).await?;
        Ok(id)
    }

    pub async fn load(&self, repo: &RepoName, id: Uuid) -> StoreResult<UploadState> {
        let Some(bytes) = self.bucket.get(&self.state_key(repo, id)).await? else {
            return Err(StoreError::UploadUnknown(id));
        };
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: format!("upload {id}"),
            why: e.to_string(),
        })
    }

    async fn save(&self, repo: &RepoName, id: Uuid, state: &UploadState) -> StoreResult<()> {
        let json = serde_json::to_vec(state).expect("upload state serialises");
        self.bucket
            .put(&self.state_key(repo, id), Bytes::from(json))
            .await
    }

    pub async fn append(
        &self,
        repo: &RepoName,
        id: Uuid,
        at: Option<u64>,
        mut body: ByteStream,
    ) -> StoreResult<u64> {
        let mut state = self.load(repo, id).await?;
        if let Some(at) = at.filter(|&at| at != state.size) {
            return Err(StoreError::UploadOffset {
                expected: at,
                actual: state.size,
            });
        }
        let mut hasher = state.hasher()?;
        let old_tail = (state.tail > 0).then(|| self.tail_key(repo, id, &state));
        let mut buf = BytesMut::new();
        if let Some(key) = &old_tail {
            let tail = self
                .bucket
                .get(key)
                .await?
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!("upload {id}"),
                    why: format!("its tail {key} is missing"),
                })?;
            buf.extend_from_slice(&tail);
        }
        let data = self.data_key(repo, id);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            hasher.update(&chunk);
            state.size += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            while buf.len() as u64 >= part_size(self.chunk, state.in_parts()) {
                let n = part_size(self.chunk, state.in_parts()) as usize;
                self.push_part(&mut state, &data, buf.split_to(n).freeze())
                    .await?;
            }
        }
        // A remainder big enough to be a part becomes one, sparing the next append a tail
        // written and read back; but only while half of S3's 10,000 parts are left, so a
        // client sending small chunks cannot spend them long before 5 TiB.
        if buf.len() as u64 >= MIN_PART && state.parts.len() < MAX_PARTS / 2 {
            self.push_part(&mut state, &data, buf.split().freeze())
                .await?;
        }
        state.tail = buf.len() as u64;
        state.tail_name = format!("wharftail-{}-{}", state.size, Uuid::new_v4());
        if !buf.is_empty() {
            let key = self.tail_key(repo, id, &state);
            self.bucket.put(&key, buf.freeze()).await?;
        }
        state.hash = hex::encode(hasher.marshal());
        self.save(repo, id, &state).await?;
        if let Some(key) = old_tail {
            // Superseded; a failure here only leaves a small object that cancel or commit removes.
            let _ = self.bucket.delete(&key).await;
        }
        Ok(state.size)
    }

    async fn push_part(
        &self,
        state: &mut UploadState,
        data: &str,
        bytes: Bytes,
    ) -> StoreResult<()> {
        let mp = match &state.multipart {
            Some(mp) => mp.clone(),
            None => {
                let mp = self.bucket.create_multipart(data).await?;
                state.multipart = Some(mp.clone());
                mp
            }
        };
        let n = state.parts.len() as i32 + 1;
        let size = bytes.len() as u64;
        let etag = self.bucket.put_part(data, &mp, n, bytes).await?;
        state.parts.push(Part { n, etag, size });
        Ok(())
    }

    /// The digest of everything appended.
    pub async fn digest(&self, state: &UploadState) -> StoreResult<Digest> {
        Ok(state.hasher()?.finish())
    }

    /// Put the upload's bytes at `to`, server-side: the tail alone is copied; otherwise it
    /// becomes the last part (copied too), the multipart upload completes, and is copied.
    pub async fn publish(
        &self,
        repo: &RepoName,
        id: Uuid,
        state: &UploadState,
        to: &str,
    ) -> StoreResult<()> {
        let tail = self.tail_key(repo, id, state);
        let Some(mp) = &state.multipart else {
            return if state.tail > 0 {
                self.bucket.copy(&tail, to, state.tail).await
            } else {
                self.bucket.put(to, Bytes::new()).await
            };
        };
        let data = self.data_key(repo, id);
        // A commit retried after the multipart upload completed but its copy failed: the
        // completed object is all there is to copy.
        let completed = self.bucket.head(&data).await?;
        if completed.is_none_or(|(size, _)| size != state.size) {
            self.complete(state, mp, &data, &tail).await?;
        }
        self.bucket.copy(&data, to, state.size).await
    }

    /// The tail becomes the last part (copied server-side) and the upload completes.
    async fn complete(
        &self,
        state: &UploadState,
        mp: &str,
        data: &str,
        tail: &str,
    ) -> StoreResult<()> {
        let part = |n: i32, etag: &str| {
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(etag)
                .build()
        };
        let mut parts: Vec<_> = state.parts.iter().map(|p| part(p.n, &p.etag)).collect();
        if state.tail > 0 {
            let n = parts.len() as i32 + 1;
            let etag = self.bucket.copy_part(data, mp, n, tail, None).await?;
            parts.push(part(n, &etag));
        }
        self.bucket.complete_multipart(data, mp, parts).await
    }

    /// Remove every trace of the upload, the multipart upload included.
    pub async fn remove(&self, repo: &RepoName, id: Uuid) -> StoreResult<()> {
        if let Ok(state) = self.load(repo, id).await {
            if let Some(mp) = &state.multipart {
                self.bucket
                    .abort_multipart(&self.data_key(repo, id), mp)
                    .await?;
            }
        }
        self.bucket
            .delete_prefix(&format!("{}/", self.dir(repo, id)))
            .await?;
        Ok(())
    }

    /// Bytes `from..to` of an upload in progress. Only its tail can be read: S3 does not
    /// serve the parts of an incomplete multipart upload.
    pub async fn read(
        &self,
        repo: &RepoName,
        id: Uuid,
        from: u64,
        to: u64,
    ) -> StoreResult<ByteStream> {
        let state = self.load(repo, id).await?;
        let tail_start = state.size - state.tail;
        if from < tail_start || to > state.size || from > to {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!(
                    "bytes {from}..{to} of upload {id} are in S3 multipart parts, which cannot be \
                     read before the upload completes"
                ),
            )));
        }
        if from == to {
            return Ok(futures::stream::empty().boxed());
        }
        let key = self.tail_key(repo, id, &state);
        let range = (from - tail_start, to - tail_start - 1);
        match self.bucket.get_stream(&key, Some(range)).await? {
            Some((_, body)) => Ok(byte_stream(body)),
            None => Err(StoreError::UploadUnknown(id)),
        }
    }

    /// Every upload in the bucket: a walk of the repositories, for maintenance.
    pub async fn list(&self) -> StoreResult<Vec<UploadInfo>> {
        let root = format!("{}/", self.bucket.layout.repositories());
        let mut found: std::collections::BTreeMap<(String, String), UploadInfo> =
            Default::default();
        for o in self.bucket.list(&root).await? {
            let Some((repo, rest)) = o.key[root.len()..].split_once("/_uploads/") else {
                continue;
            };
            let Some((id, _)) = rest.split_once('/') else {
                continue;
            };
            let entry = found
                .entry((repo.to_owned(), id.to_owned()))
                .or_insert_with(|| UploadInfo {
                    repo: repo.to_owned(),
                    id: id.to_owned(),
                    size: 0,
                    modified: o.modified,
                });
            entry.modified = entry.modified.max(o.modified);
        }
        let mut out: Vec<UploadInfo> = found.into_values().collect();
        for u in &mut out {
            if let (Ok(repo), Ok(id)) = (u.repo.parse::<RepoName>(), u.id.parse::<Uuid>()) {
                if let Ok(state) = self.load(&repo, id).await {
                    u.size = state.size;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_that_five_tebibytes_fit_ten_thousand() {
        let (mut done, mut parts) = (0u64, 0u32);
        while done < 5 * 1024 * 1024 * 1024 * 1024 {
            done += part_size(10 * 1024 * 1024, done);
            parts += 1;
        }
        assert!(parts < 10_000, "{parts} parts");
        assert_eq!(part_size(1, 0), MIN_PART, "no part below S3's minimum");
    }
}
