//! Blob bytes on the filesystem. Uploads (see `upload.rs`) stream into
//! `_uploads/<id>/data`; commit verifies, fsyncs and renames into `blobs/`, so a blob is
//! visible only when complete and durable. A blob file's modification time is when it was
//! last retained: garbage collection keeps anything retained after its mark began.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;
use wharf_oci::{Algorithm, Digest, DigestHasher, RepoName};

use super::durable::{rename_into, write_atomic};
use super::upload::{write_stream, Uploads, READ_CHUNK};
use super::{blocking, not_found_is_ok, read_dir_if_any, Layout};
use crate::store::{
    BlobInfo, BlobRead, BlobStore, ByteStream, Locks, StoreError, StoreResult, UploadInfo,
};

/// A slow client pins at most this many read chunks in memory.
const READ_AHEAD: usize = 2;

pub struct FsBlobStore {
    layout: Layout,
    uploads: Uploads,
    /// Publishing a blob retains it under the writer lock, so that a collector's check and
    /// delete of the same blob cannot interleave with it.
    locks: Arc<dyn Locks>,
}

impl FsBlobStore {
    pub fn new(layout: Layout, locks: Arc<dyn Locks>) -> FsBlobStore {
        FsBlobStore {
            uploads: Uploads::new(layout.clone()),
            layout,
            locks,
        }
    }
}

pub fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<(u64, Digest)> {
    let mut f = File::open(path)?;
    let mut hasher = DigestHasher::new(algorithm);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hasher.finish()));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Mark a file as retained now. Fails with NotFound if it is gone.
fn retain_file(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // Setting a time needs the file's owner: name the file, since a root written by
    // another user (registry:2 as root, say) fails here.
    file.set_modified(SystemTime::now())
        .map_err(super::durable::at(path))
}

/// Make verified bytes at `from` the blob at `to`: retained now, durable, then renamed into
/// place. If the blob exists already (a concurrent or earlier push) it is retained instead
/// and `from` is removed.
/// `file` must be synced already: this runs under the writer lock, which is no place for
/// an fsync of a whole blob.
fn publish(file: &File, from: &Path, to: &Path) -> io::Result<()> {
    match retain_file(to) {
        Ok(()) => return not_found_is_ok(fs::remove_file(from)).map(drop),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    file.set_modified(SystemTime::now())?;
    rename_into(from, to)
}

/// Upload directories (`<repo>/_uploads/<id>`) under `dir`, with the repository name.
fn find_uploads(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "_uploads" {
            for upload in fs::read_dir(entry.path())?.flatten() {
                out.push((prefix.to_owned(), upload.path()));
            }
        } else if !name.starts_with('_') {
            let child = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            find_uploads(&entry.path(), &child, out)?;
        }
    }
    Ok(())
}

fn upload_info(repo: String, dir: &Path) -> io::Result<UploadInfo> {
    let m = fs::metadata(dir.join("data")).or_else(|_| fs::metadata(dir))?;
    Ok(UploadInfo {
        repo,
        id: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size: if m.is_file() { m.len() } else { 0 },
        modified: m.modified()?,
    })
}

/// Every `blobs/<alg>/<xx>/<hex>/data` with its size and mtime.
fn walk_blobs(root: &Path) -> io::Result<Vec<BlobInfo>> {
    let mut out = Vec::new();
    let Some(algorithms) = read_dir_if_any(root)? else {
        return Ok(out);
    };
    for alg in algorithms {
        let alg = alg?;
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        for prefix in fs::read_dir(alg.path())? {
            for blob in fs::read_dir(prefix?.path())? {
                let blob = blob?;
                let Ok(digest) =
                    format!("{alg_name}:{}", blob.file_name().to_string_lossy()).parse()
                else {
                    continue;
                };
                match fs::metadata(blob.path().join("data")) {
                    Ok(m) => out.push(BlobInfo {
                        digest,
                        size: m.len(),
                        retained: m.modified()?,
                    }),
                    // A blob directory without data: Distribution leaves these after deletes.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn start_upload(&self, repo: &RepoName) -> StoreResult<Uuid> {
        self.uploads.start(repo).await
    }

    async fn upload_size(&self, repo: &RepoName, id: Uuid) -> StoreResult<u64> {
        let slot = self.uploads.slot(id);
        let mut cached = slot.lock().await;
        let open = self.uploads.open(repo, id, cached.take()).await?;
        let size = open.state.size;
        *cached = Some(open.state);
        Ok(size)
    }

    async fn read_upload(
        &self,
        repo: &RepoName,
        id: Uuid,
        from: u64,
        to: u64,
    ) -> StoreResult<ByteStream> {
        let path = self.uploads.data_path(repo, id);
        let file = match blocking(move || File::open(&path)).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::UploadUnknown(id))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(stream_file(file, from, to.saturating_sub(from)))
    }

    async fn append(
        &self,
        repo: &RepoName,
        id: Uuid,
        at: Option<u64>,
        body: ByteStream,
    ) -> StoreResult<u64> {
        let slot = self.uploads.slot(id);
        let mut cached = slot.lock().await;
        let open = self.uploads.open(repo, id, cached.take()).await?;
        let size = open.state.size;
        if let Some(expected) = at.filter(|&at| at != size) {
            *cached = Some(open.state);
            return Err(StoreError::UploadOffset {
                expected,
                actual: size,
            });
        }
        // On failure the cache stays empty: the next use reloads what is really there.
        let state = self.uploads.append(repo, id, open, body).await?;
        let new_size = state.size;
        *cached = Some(state);
        Ok(new_size)
    }

    async fn upload_digest(&self, repo: &RepoName, id: Uuid) -> StoreResult<Option<Digest>> {
        let slot = self.uploads.slot(id);
        let mut cached = slot.lock().await;
        let open = self.uploads.open(repo, id, cached.take()).await?;
        let digest = open.state.hasher.clone().finish();
        *cached = Some(open.state);
        Ok(Some(digest))
    }

    async fn commit(&self, repo: &RepoName, id: Uuid, expected: &Digest) -> StoreResult<u64> {
        let slot = self.uploads.slot(id);
        let mut cached = slot.lock().await;
        let open = self.uploads.open(repo, id, cached.take()).await?;
        let size = open.state.size;
        let data = open.data.clone();
        let actual = if expected.algorithm() == Algorithm::Sha256 {
            open.state.hasher.clone().finish()
        } else {
            let data = data.clone();
            let alg = expected.algorithm();
            blocking(move || hash_file(&data, alg)).await?.1
        };
        if &actual != expected {
            *cached = Some(open.state);
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.layout.blob_data(expected);
        let upload_dir = self.layout.upload_dir(repo, id);
        let open = blocking(move || open.file.sync_data().map(|()| open)).await?;
        let writing = self.locks.writer().await?;
        blocking(move || {
            publish(&open.file, &data, &target)?;
            drop(writing);
            drop(open);
            not_found_is_ok(fs::remove_dir_all(&upload_dir)).map(drop)
        })
        .await?;
        self.uploads.forget(id);
        Ok(size)
    }

    async fn cancel(&self, repo: &RepoName, id: Uuid) -> StoreResult<()> {
        let slot = self.uploads.slot(id);
        let _cached = slot.lock().await;
        let dir = self.layout.upload_dir(repo, id);
        let removed = blocking(move || not_found_is_ok(fs::remove_dir_all(&dir))).await?;
        self.uploads.forget(id);
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
        let hasher = DigestHasher::new(expected.algorithm());
        let (file, written) = write_stream(file, hasher, body).await;
        let target = self.layout.blob_data(expected);
        let expected = expected.clone();
        let checked = blocking(move || {
            let (file, (size, hasher)) = match (file, written) {
                (Ok(file), Ok(w)) => (file, w),
                (_, Err(e)) => {
                    let _ = fs::remove_file(&tmp);
                    return Ok(Err(e));
                }
                (Err(e), _) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            let actual = hasher.finish();
            if actual != expected {
                fs::remove_file(&tmp)?;
                return Ok(Err(StoreError::DigestMismatch { expected, actual }));
            }
            file.sync_data()?;
            Ok(Ok((file, tmp, size)))
        })
        .await?;
        let (file, tmp, size) = checked?;
        let writing = self.locks.writer().await?;
        blocking(move || {
            publish(&file, &tmp, &target)?;
            drop(writing);
            Ok(size)
        })
        .await
        .map_err(Into::into)
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
        blocking(move || match retain_file(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => write_atomic(&target, &bytes),
            other => other,
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
        let (file, size) = match opened {
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
        let body = stream_file(file, *range.start(), len);
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
        let staging = self.layout.staging();
        let stale: Vec<UploadInfo> = self
            .list_uploads()
            .await?
            .into_iter()
            .filter(|u| u.modified.elapsed().unwrap_or_default() > age)
            .collect();
        blocking(move || {
            // Whole-blob pushes cut off by a crash leave their staging file behind.
            for entry in fs::read_dir(&staging).into_iter().flatten().flatten() {
                if entry.metadata()?.modified()?.elapsed().unwrap_or_default() > age {
                    fs::remove_file(entry.path())?;
                }
            }
            Ok(())
        })
        .await?;
        let mut removed = 0;
        for upload in stale {
            let (Ok(repo), Ok(id)) = (upload.repo.parse::<RepoName>(), Uuid::parse_str(&upload.id))
            else {
                continue;
            };
            // Hold the upload's lock so a request in flight is not cut from under itself.
            let slot = self.uploads.slot(id);
            let _cached = slot.lock().await;
            let dir = self.layout.upload_dir(&repo, id);
            let gone = blocking(move || {
                // Another process may be appending right now: skip what is locked, and
                // recheck the age under the lock.
                if let Ok(data) = File::open(dir.join("data")) {
                    match data.try_lock() {
                        Ok(()) => {}
                        Err(fs::TryLockError::WouldBlock) => return Ok(false),
                        Err(fs::TryLockError::Error(e)) => return Err(e),
                    }
                    if data.metadata()?.modified()?.elapsed().unwrap_or_default() <= age {
                        return Ok(false);
                    }
                }
                not_found_is_ok(fs::remove_dir_all(&dir))
            })
            .await?;
            if gone {
                removed += 1;
            }
            self.uploads.forget(id);
        }
        Ok(removed)
    }

    async fn delete(&self, digest: &Digest) -> StoreResult<()> {
        let dir = self.layout.blob_dir(digest);
        if blocking(move || not_found_is_ok(fs::remove_dir_all(&dir))).await? {
            Ok(())
        } else {
            Err(StoreError::BlobUnknown(digest.clone()))
        }
    }

    async fn list_blobs(&self) -> StoreResult<Vec<BlobInfo>> {
        let root = self.layout.blobs_root();
        Ok(blocking(move || walk_blobs(&root)).await?)
    }

    async fn retain(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
        let paths: Vec<(Digest, PathBuf)> = digests
            .iter()
            .map(|d| (d.clone(), self.layout.blob_data(d)))
            .collect();
        Ok(blocking(move || {
            let mut missing = Vec::new();
            for (digest, path) in paths {
                match retain_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(digest),
                    Err(e) => return Err(e),
                }
            }
            Ok(missing)
        })
        .await?)
    }

    async fn now(&self) -> StoreResult<SystemTime> {
        let probe = self.layout.clock();
        Ok(blocking(move || {
            let file = match File::create(&probe) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(probe.parent().expect("a parent"))?;
                    File::create(&probe)?
                }
                other => other?,
            };
            file.set_modified(SystemTime::now())?;
            file.metadata()?.modified()
        })
        .await?)
    }

    async fn retained(&self, digest: &Digest) -> StoreResult<Option<SystemTime>> {
        match fs::metadata(self.layout.blob_data(digest)) {
            Ok(m) => Ok(Some(m.modified()?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_unless_retained(
        &self,
        digest: &Digest,
        since: SystemTime,
    ) -> StoreResult<bool> {
        let dir = self.layout.blob_dir(digest);
        Ok(blocking(move || {
            match fs::metadata(dir.join("data")) {
                Ok(m) if m.modified()? >= since => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
            // Not fsynced: a deletion lost to a power cut brings back garbage, nothing more.
            not_found_is_ok(fs::remove_dir_all(&dir))
        })
        .await?)
    }

    async fn quarantine(&self, digest: &Digest) -> StoreResult<Option<String>> {
        let from = self.layout.blob_data(digest);
        let to = self.layout.quarantine().join(format!(
            "{}-{}",
            digest.algorithm().as_str(),
            digest.hex()
        ));
        let blob_dir = self.layout.blob_dir(digest);
        Ok(blocking(move || {
            if !from.exists() {
                return Ok(None);
            }
            rename_into(&from, &to)?;
            let _ = fs::remove_dir(&blob_dir);
            Ok(Some(to.display().to_string()))
        })
        .await?)
    }

    async fn list_uploads(&self) -> StoreResult<Vec<UploadInfo>> {
        let root = self.layout.repositories();
        Ok(blocking(move || {
            let mut dirs = Vec::new();
            find_uploads(&root, "", &mut dirs)?;
            dirs.into_iter()
                .map(|(repo, dir)| upload_info(repo, &dir))
                .collect()
        })
        .await?)
    }
}

/// `len` bytes of `file` from `start`, read ahead on a blocking thread.
fn stream_file(mut file: File, start: u64, len: u64) -> ByteStream {
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
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}
