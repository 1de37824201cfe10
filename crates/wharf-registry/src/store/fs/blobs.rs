//! Blob bytes on the filesystem. Uploads stream into `_uploads/<id>/data` on a dedicated
//! blocking thread that writes and hashes each chunk once; commit verifies, fsyncs and
//! renames into `blobs/`, so a blob is visible only when complete and durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use futures::StreamExt;
use tokio::sync::{mpsc, Mutex};
use uuid::Uuid;
use wharf_oci::{Algorithm, Digest, DigestHasher, RepoName};

use super::durable::{rename_into, write_atomic};
use super::{blocking, Layout};
use crate::store::{BlobRead, BlobStore, ByteStream, StoreError, StoreResult};

/// Reads of blobs are sent in chunks this large: big enough that per-chunk overhead vanishes,
/// small enough that a slow client pins little memory (at most `READ_AHEAD` chunks).
const READ_CHUNK: usize = 256 * 1024;
const READ_AHEAD: usize = 2;
/// Request body frames queued for the writer thread.
const WRITE_QUEUE: usize = 16;

/// What is known of an upload in progress. Lost on restart; rebuilt by rehashing the data.
struct UploadState {
    size: u64,
    hasher: DigestHasher,
}

type UploadSlot = Arc<Mutex<Option<UploadState>>>;

pub struct FsBlobStore {
    layout: Layout,
    uploads: DashMap<Uuid, UploadSlot>,
}

impl FsBlobStore {
    pub fn new(layout: Layout) -> FsBlobStore {
        FsBlobStore {
            layout,
            uploads: DashMap::new(),
        }
    }

    fn upload_data(&self, repo: &RepoName, id: Uuid) -> PathBuf {
        self.layout.upload_dir(repo, id).join("data")
    }

    fn slot(&self, id: Uuid) -> UploadSlot {
        self.uploads.entry(id).or_default().clone()
    }

    /// The upload's state, rehashing its data if this process has not seen it (a restart).
    async fn load_state(
        &self,
        repo: &RepoName,
        id: Uuid,
        state: &mut Option<UploadState>,
    ) -> StoreResult<()> {
        if state.is_some() {
            return Ok(());
        }
        let path = self.upload_data(repo, id);
        let rebuilt = blocking(move || hash_file(&path, Algorithm::Sha256)).await;
        match rebuilt {
            Ok((size, hasher)) => {
                *state = Some(UploadState { size, hasher });
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.uploads.remove(&id);
                Err(StoreError::UploadUnknown(id))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn hash_file(path: &std::path::Path, algorithm: Algorithm) -> io::Result<(u64, DigestHasher)> {
    let mut f = File::open(path)?;
    let mut hasher = DigestHasher::new(algorithm);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hasher));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Upload directories (`<repo>/_uploads/<id>`) under `dir` whose data was last written
/// more than `age` ago.
fn find_stale_uploads(
    dir: &std::path::Path,
    age: std::time::Duration,
    out: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        if name == "_uploads" {
            for upload in fs::read_dir(entry.path())?.flatten() {
                let touched = fs::metadata(upload.path().join("data"))
                    .or_else(|_| upload.metadata())?
                    .modified()?;
                if touched.elapsed().unwrap_or_default() > age {
                    out.push(upload.path());
                }
            }
        } else if !name.to_string_lossy().starts_with('_') {
            find_stale_uploads(&entry.path(), age, out)?;
        }
    }
    Ok(())
}

/// Stream `body` onto the end of `file`, hashing as it goes, on one blocking thread.
/// On any failure the file is cut back to where it was, so the upload stays consistent.
async fn write_stream(
    file: File,
    start: UploadState,
    mut body: ByteStream,
) -> StoreResult<UploadState> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut state = start;
        let result = (|| {
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
                state.hasher.update(&chunk);
                state.size += chunk.len() as u64;
            }
            Ok::<_, io::Error>(())
        })();
        (file, state, result)
    });
    let mut body_error = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                body_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let (_file, state, result) = writer.await.map_err(io::Error::other)?;
    match (body_error, result) {
        (Some(e), _) => Err(StoreError::Body(e)),
        (None, Err(e)) => Err(e.into()),
        (None, Ok(())) => Ok(state),
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn start_upload(&self, repo: &RepoName) -> StoreResult<Uuid> {
        let id = Uuid::new_v4();
        let dir = self.layout.upload_dir(repo, id);
        // No fsync here: an upload lost in a crash is restarted by the client; durability
        // is paid once, at commit.
        blocking(move || {
            fs::create_dir_all(&dir)?;
            File::create(dir.join("data"))?;
            // registry:2 keeps the start time beside the data; its resume and purge read it.
            fs::write(
                dir.join("startedat"),
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            )?;
            Ok(())
        })
        .await?;
        self.uploads.insert(
            id,
            Arc::new(Mutex::new(Some(UploadState {
                size: 0,
                hasher: DigestHasher::new(Algorithm::Sha256),
            }))),
        );
        Ok(id)
    }

    async fn upload_size(&self, repo: &RepoName, id: Uuid) -> StoreResult<u64> {
        let slot = self.slot(id);
        let mut state = slot.lock().await;
        self.load_state(repo, id, &mut state).await?;
        Ok(state.as_ref().map_or(0, |s| s.size))
    }

    async fn append(
        &self,
        repo: &RepoName,
        id: Uuid,
        at: Option<u64>,
        body: ByteStream,
    ) -> StoreResult<u64> {
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        self.load_state(repo, id, &mut guard).await?;
        let current = guard.take().expect("loaded");
        let size = current.size;
        if let Some(expected) = at.filter(|&at| at != size) {
            *guard = Some(current);
            return Err(StoreError::UploadOffset {
                expected,
                actual: size,
            });
        }
        let path = self.upload_data(repo, id);
        let file = match OpenOptions::new().append(true).open(&path) {
            Ok(f) => f,
            Err(e) => {
                *guard = Some(current);
                return Err(e.into());
            }
        };
        let rollback = UploadState {
            size,
            hasher: current.hasher.clone(),
        };
        match write_stream(file, current, body).await {
            Ok(state) => {
                let new_size = state.size;
                *guard = Some(state);
                Ok(new_size)
            }
            Err(e) => {
                let truncated =
                    blocking(move || OpenOptions::new().write(true).open(&path)?.set_len(size))
                        .await;
                if truncated.is_ok() {
                    *guard = Some(rollback);
                } // else: leave the state unloaded so the next use rehashes what is really there
                Err(e)
            }
        }
    }

    async fn commit(&self, repo: &RepoName, id: Uuid, expected: &Digest) -> StoreResult<u64> {
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        self.load_state(repo, id, &mut guard).await?;
        let state = guard.as_ref().expect("loaded");
        let size = state.size;
        let data = self.upload_data(repo, id);
        let actual = if expected.algorithm() == state.hasher.algorithm() {
            state.hasher.clone().finish()
        } else {
            let data = data.clone();
            let alg = expected.algorithm();
            blocking(move || hash_file(&data, alg)).await?.1.finish()
        };
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.layout.blob_data(expected);
        let upload_dir = self.layout.upload_dir(repo, id);
        blocking(move || {
            if !target.exists() {
                File::open(&data)?.sync_data()?;
                rename_into(&data, &target)?;
            }
            fs::remove_dir_all(&upload_dir)
        })
        .await?;
        *guard = None;
        self.uploads.remove(&id);
        Ok(size)
    }

    async fn cancel(&self, repo: &RepoName, id: Uuid) -> StoreResult<()> {
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        let dir = self.layout.upload_dir(repo, id);
        let removed = blocking(move || super::not_found_is_ok(fs::remove_dir_all(&dir))).await?;
        *guard = None;
        self.uploads.remove(&id);
        if removed {
            Ok(())
        } else {
            Err(StoreError::UploadUnknown(id))
        }
    }

    async fn put_stream(&self, expected: &Digest, body: ByteStream) -> StoreResult<u64> {
        let staging = self.layout.staging();
        let tmp = staging.join(Uuid::new_v4().to_string());
        let file = {
            let tmp = tmp.clone();
            blocking(move || {
                fs::create_dir_all(&staging)?;
                File::create(&tmp)
            })
            .await?
        };
        let start = UploadState {
            size: 0,
            hasher: DigestHasher::new(expected.algorithm()),
        };
        let written = write_stream(file, start, body).await;
        let target = self.layout.blob_data(expected);
        let expected = expected.clone();
        blocking(move || {
            let state = match written {
                Ok(state) => state,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Ok(Err(e));
                }
            };
            let size = state.size;
            let actual = state.hasher.finish();
            if actual != expected {
                fs::remove_file(&tmp)?;
                return Ok(Err(StoreError::DigestMismatch { expected, actual }));
            }
            if target.exists() {
                fs::remove_file(&tmp)?;
            } else {
                File::open(&tmp)?.sync_data()?;
                rename_into(&tmp, &target)?;
            }
            Ok(Ok(size))
        })
        .await?
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> StoreResult<()> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let target = self.layout.blob_data(digest);
        blocking(move || {
            if target.exists() {
                Ok(())
            } else {
                write_atomic(&target, &bytes)
            }
        })
        .await?;
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> StoreResult<Option<u64>> {
        match fs::metadata(self.layout.blob_data(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<RangeInclusive<u64>>,
    ) -> StoreResult<BlobRead> {
        let path = self.layout.blob_data(digest);
        let opened = blocking(move || {
            let f = File::open(&path)?;
            let size = f.metadata()?.len();
            Ok((f, size))
        })
        .await;
        let (mut file, size) = match opened {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobUnknown(digest.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        let range = match range {
            None if size == 0 => 0..=0,
            None => 0..=size - 1,
            Some(r) if *r.start() <= *r.end() && *r.end() < size => r,
            Some(r) => {
                return Err(StoreError::RangeInvalid {
                    start: *r.start(),
                    end: *r.end(),
                    size,
                })
            }
        };
        let len = if size == 0 {
            0
        } else {
            range.end() - range.start() + 1
        };
        let start = *range.start();
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(SeekFrom::Start(start)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut left = len;
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(want);
                let result = file.read_exact(&mut buf).map(|()| buf.freeze());
                let failed = result.is_err();
                if tx.blocking_send(result).is_err() || failed {
                    return; // client went away, or the read failed and was reported
                }
                left -= want as u64;
            }
        });
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        Ok(BlobRead { size, range, body })
    }

    async fn get(&self, digest: &Digest, limit: u64) -> StoreResult<Option<Bytes>> {
        let path = self.layout.blob_data(digest);
        blocking(move || {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let len = f.metadata()?.len();
            if len > limit {
                return Ok(None);
            }
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf)?;
            Ok(Some(Bytes::from(buf)))
        })
        .await
        .map_err(Into::into)
    }

    async fn purge_uploads(&self, age: std::time::Duration) -> StoreResult<usize> {
        let root = self.layout.repositories();
        let staging = self.layout.staging();
        let stale = blocking(move || {
            let mut stale = Vec::new();
            find_stale_uploads(&root, age, &mut stale)?;
            // Whole-blob pushes cut off by a crash leave their staging file behind.
            for entry in fs::read_dir(&staging).into_iter().flatten().flatten() {
                if entry.metadata()?.modified()?.elapsed().unwrap_or_default() > age {
                    fs::remove_file(entry.path())?;
                }
            }
            Ok(stale)
        })
        .await?;
        let mut removed = 0;
        for dir in stale {
            let id = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| Uuid::parse_str(n).ok());
            // Hold the upload's lock so a request in flight is not cut from under itself.
            let slot = id.map(|id| self.slot(id));
            let _guard = match &slot {
                Some(s) => Some(s.lock().await),
                None => None,
            };
            if blocking(move || super::not_found_is_ok(fs::remove_dir_all(&dir))).await? {
                removed += 1;
            }
            if let Some(id) = id {
                self.uploads.remove(&id);
            }
        }
        Ok(removed)
    }

    async fn delete(&self, digest: &Digest) -> StoreResult<()> {
        let dir = self.layout.blob_dir(digest);
        if blocking(move || super::not_found_is_ok(fs::remove_dir_all(&dir))).await? {
            Ok(())
        } else {
            Err(StoreError::BlobUnknown(digest.clone()))
        }
    }
}
