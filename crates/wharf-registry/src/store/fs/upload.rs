//! Upload sessions as registry:2 keeps them, so that any process continues any upload:
//! `_uploads/<id>/data`, `startedat`, and after every append the SHA-256 state at that
//! offset in `hashstates/sha256/<offset>` (Go's marshalled form, which Distribution reads).
//!
//! A process keeps the state of uploads it touched in memory, but trusts it only while the
//! data file still has the size and modification time it left there; anything else (another
//! process appended, a restart) reloads the stored state or rehashes what is missing. An
//! `flock` on the data file serialises appends and commits across processes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use tokio::sync::{mpsc, Mutex};
use uuid::Uuid;
use wharf_oci::RepoName;

use super::durable::{AtomicWrite, Fsync};
use super::{blocking, Layout};
use crate::store::hashstate::Sha256State;
use crate::store::{ByteStream, StoreError, StoreResult};

/// Reads of files are done in chunks this large.
pub const READ_CHUNK: usize = 256 * 1024;
/// Request body frames queued for the writer thread.
const WRITE_QUEUE: usize = 16;

/// What an upload holds: its size, the hash of those bytes, and the data file's
/// (length, mtime) when this process last saw it.
#[derive(Clone)]
pub struct UploadState {
    pub size: u64,
    pub hasher: Sha256State,
    stamp: Option<(u64, SystemTime)>,
}

type Slot = Arc<Mutex<Option<UploadState>>>;

pub struct Uploads {
    layout: Layout,
    slots: DashMap<Uuid, Slot>,
}

/// An upload opened for a change: its state is current and its data file is locked
/// against other processes until this is dropped.
pub struct Open {
    pub state: UploadState,
    pub file: File,
    pub data: PathBuf,
}

impl Uploads {
    pub fn new(layout: Layout) -> Uploads {
        Uploads {
            layout,
            slots: DashMap::new(),
        }
    }

    pub fn data_path(&self, repo: &RepoName, id: Uuid) -> PathBuf {
        self.layout.upload_dir(repo, id).join("data")
    }

    pub fn slot(&self, id: Uuid) -> Slot {
        self.slots.entry(id).or_default().clone()
    }

    pub fn forget(&self, id: Uuid) {
        self.slots.remove(&id);
    }

    pub async fn start(&self, repo: &RepoName) -> StoreResult<Uuid> {
        let id = Uuid::new_v4();
        let dir = self.layout.upload_dir(repo, id);
        // No fsync: an upload lost in a crash is restarted by its client; durability is
        // paid once, at commit.
        blocking(move || {
            fs::create_dir_all(&dir)?;
            File::create(dir.join("data"))?;
            // registry:2 keeps the start time beside the data; its resume and purge read it.
            fs::write(
                dir.join("startedat"),
                humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            )?;
            Ok(())
        })
        .await?;
        Ok(id)
    }

    /// Open the upload locked, with its state made current. `cached` is this process's copy.
    pub async fn open(
        &self,
        repo: &RepoName,
        id: Uuid,
        cached: Option<UploadState>,
    ) -> StoreResult<Open> {
        let data = self.data_path(repo, id);
        let states = self.layout.upload_dir(repo, id).join("hashstates/sha256");
        let opened = blocking(move || {
            let file = OpenOptions::new().read(true).append(true).open(&data)?;
            file.lock()?;
            // While this waited, another process may have committed the upload (renaming
            // this very inode into blobs/) or cancelled it: then it is no upload any more.
            if !same_file(&file, &data)? {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            let state = current_state(&file, &states, cached)?;
            Ok(Open { state, file, data })
        })
        .await;
        match opened {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(id);
                Err(StoreError::UploadUnknown(id))
            }
            other => Ok(other?),
        }
    }

    /// Stream `body` onto the end of the upload; record the new hash state. On failure the
    /// data is cut back to where it was, so the upload stays consistent.
    pub async fn append(
        &self,
        repo: &RepoName,
        id: Uuid,
        open: Open,
        body: ByteStream,
    ) -> StoreResult<UploadState> {
        let Open { state, file, .. } = open;
        let before = state.size;
        let (file, written) = write_stream(file, state.hasher, body).await;
        let states = self.layout.upload_dir(repo, id).join("hashstates/sha256");
        blocking(move || {
            let file = file?;
            match written {
                Ok((n, hasher)) => {
                    let mut state = UploadState {
                        size: before + n,
                        hasher,
                        stamp: None,
                    };
                    save_state(&states, &state, before)?;
                    state.stamp = Some(stamp(&file)?);
                    Ok(Ok(state))
                }
                Err(e) => {
                    file.set_len(before)?;
                    Ok(Err(e))
                }
            }
        })
        .await?
    }
}

/// Whether the open `file` is still the one at `path`.
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata()?;
    match fs::metadata(path) {
        Ok(now) => Ok(open.dev() == now.dev() && open.ino() == now.ino() && open.nlink() > 0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The data file's length and modification time: what proves a cached state current.
fn stamp(file: &File) -> io::Result<(u64, SystemTime)> {
    let m = file.metadata()?;
    Ok((m.len(), m.modified()?))
}

/// The hash of everything in `file`: the cached state if the file is as this process left
/// it, else the stored state at the file's length, else the nearest earlier one plus the
/// bytes after it.
fn current_state(
    file: &File,
    states: &Path,
    cached: Option<UploadState>,
) -> io::Result<UploadState> {
    let now = stamp(file)?;
    if let Some(c) = cached.filter(|c| c.stamp == Some(now) && c.size == now.0) {
        return Ok(c);
    }
    let len = now.0;
    let mut best = Sha256State::default();
    for (offset, path) in stored_states(states)? {
        if offset > len || offset <= best.len() {
            continue;
        }
        if let Some(s) = fs::read(&path)
            .ok()
            .and_then(|b| Sha256State::unmarshal(&b))
            .filter(|s| s.len() == offset)
        {
            best = s;
        }
    }
    let mut hasher = best;
    if hasher.len() < len {
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::Start(hasher.len()))?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut left = len - hasher.len();
        while left > 0 {
            let n = f.read(&mut buf[..(left.min(READ_CHUNK as u64) as usize)])?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
    }
    Ok(UploadState {
        size: hasher.len(),
        hasher,
        stamp: Some(now),
    })
}

fn stored_states(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        if let Some(offset) = e.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.push((offset, e.path()));
        }
    }
    Ok(out)
}

/// Hash states are written aside and renamed (never a torn state), but not fsynced: after
/// a crash a missing state only costs a rehash, and this runs after every append.
const STATE_WRITE: AtomicWrite = AtomicWrite {
    sync: Fsync::Skip,
    sync_dir: false,
    create_dirs: true,
    stamp: false,
    keep_mode: false,
};

/// Write the state at its offset and drop the one it replaces.
fn save_state(dir: &Path, state: &UploadState, previous: u64) -> io::Result<()> {
    let at = dir.join(state.size.to_string());
    STATE_WRITE.replace(&at, &state.hasher.marshal())?;
    if previous != state.size {
        let _ = fs::remove_file(dir.join(previous.to_string()));
    }
    Ok(())
}

/// Anything that hashes bytes as they stream past.
pub trait Absorb: Send + 'static {
    fn absorb(&mut self, bytes: &[u8]);
}

impl Absorb for Sha256State {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes)
    }
}

impl Absorb for wharf_oci::DigestHasher {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes)
    }
}

/// Stream `body` onto the end of `file`, hashing as it goes, on one blocking thread.
/// Returns the file back (so a lock on it is held until the caller is done), and the
/// number of bytes written with the hasher.
pub async fn write_stream<H: Absorb>(
    file: File,
    hasher: H,
    mut body: ByteStream,
) -> (io::Result<File>, StoreResult<(u64, H)>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut hasher = hasher;
        let mut written = 0u64;
        let result = (|| {
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
                hasher.absorb(&chunk);
                written += chunk.len() as u64;
            }
            Ok::<_, io::Error>(())
        })();
        (file, written, hasher, result)
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
    let (file, written, hasher, result) = match writer.await {
        Ok(x) => x,
        Err(e) => {
            let e = io::Error::other(e);
            return (Err(io::Error::other("writer thread died")), Err(e.into()));
        }
    };
    let outcome = match (body_error, result) {
        (Some(e), _) => Err(StoreError::Body(e)),
        (None, Err(e)) => Err(e.into()),
        (None, Ok(())) => Ok((written, hasher)),
    };
    (Ok(file), outcome)
}
