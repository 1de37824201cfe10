//! Filesystem backends in registry:2's on-disk layout (`<root>/docker/registry/v2/...`), so
//! an existing `/var/lib/registry` is served in place and Distribution can serve ours.

mod blobs;
pub(crate) mod durable;
mod links;
mod locks;
mod meta;
mod upload;

use std::io;
use std::path::{Path, PathBuf};

pub use blobs::FsBlobStore;
pub use locks::FsLocks;
pub use meta::FsMetaStore;
use uuid::Uuid;
use wharf_oci::{Digest, RepoName, Tag};

/// Every path of the layout. Names, tags and digests are validated types, so no path built
/// here can leave the root.
#[derive(Debug, Clone)]
pub struct Layout {
    v2: PathBuf,
}

impl Layout {
    /// `rootdirectory` as registry:2 means it: the directory that holds `docker/registry/v2`.
    pub fn new(rootdirectory: &Path) -> Layout {
        Layout {
            v2: rootdirectory.join("docker/registry/v2"),
        }
    }

    fn digest_path(base: PathBuf, d: &Digest) -> PathBuf {
        base.join(d.algorithm().as_str()).join(d.hex())
    }

    pub fn blob_dir(&self, d: &Digest) -> PathBuf {
        self.v2
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    pub fn blob_data(&self, d: &Digest) -> PathBuf {
        self.blob_dir(d).join("data")
    }

    pub fn v2(&self) -> &Path {
        &self.v2
    }

    pub fn blobs_root(&self) -> PathBuf {
        self.v2.join("blobs")
    }

    /// wharf's own files beside registry:2's: locks, and blobs scrub moved aside.
    pub fn wharf_dir(&self) -> PathBuf {
        self.v2.join("_wharf")
    }

    pub fn quarantine(&self) -> PathBuf {
        self.wharf_dir().join("quarantine")
    }

    pub fn repositories(&self) -> PathBuf {
        self.v2.join("repositories")
    }

    pub fn repo(&self, r: &RepoName) -> PathBuf {
        self.repositories().join(r.as_str())
    }

    /// Where whole blobs pushed in one request are written before they are verified and
    /// renamed into `blobs/`. Distribution reads only `blobs/` and `repositories/`.
    pub fn staging(&self) -> PathBuf {
        self.v2.join("_wharf_staging")
    }

    pub fn upload_dir(&self, r: &RepoName, id: Uuid) -> PathBuf {
        self.repo(r).join("_uploads").join(id.to_string())
    }

    pub fn layer_link(&self, r: &RepoName, d: &Digest) -> PathBuf {
        Self::digest_path(self.repo(r).join("_layers"), d).join("link")
    }

    pub fn revisions(&self, r: &RepoName) -> PathBuf {
        self.repo(r).join("_manifests/revisions")
    }

    pub fn revision_link(&self, r: &RepoName, d: &Digest) -> PathBuf {
        Self::digest_path(self.revisions(r), d).join("link")
    }

    pub fn tags(&self, r: &RepoName) -> PathBuf {
        self.repo(r).join("_manifests/tags")
    }

    pub fn tag_dir(&self, r: &RepoName, t: &Tag) -> PathBuf {
        self.tags(r).join(t.as_str())
    }

    pub fn tag_current(&self, r: &RepoName, t: &Tag) -> PathBuf {
        self.tag_dir(r, t).join("current/link")
    }

    pub fn tag_index(&self, r: &RepoName, t: &Tag, d: &Digest) -> PathBuf {
        Self::digest_path(self.tag_dir(r, t).join("index"), d).join("link")
    }
}

/// The store in `root`. Without `create`, a root that holds no registry is an error that
/// says so, rather than an empty registry.
pub fn open(root: &Path, create: bool) -> crate::store::StoreResult<crate::store::Store> {
    open_with(root, create, None)
}

/// As [`open`], with `locks` from elsewhere (a database's, shared across hosts) instead of
/// the files under `_wharf/locks/`.
pub fn open_with(
    root: &Path,
    create: bool,
    locks: Option<std::sync::Arc<dyn crate::store::Locks>>,
) -> crate::store::StoreResult<crate::store::Store> {
    use std::sync::Arc;
    let layout = Layout::new(root);
    if create {
        std::fs::create_dir_all(root)?;
    } else if !layout.v2.is_dir() {
        let why = if root.is_dir() {
            format!(
                "{} is not a registry root: it has no docker/registry/v2 directory (point at the directory registry:2's storage.filesystem.rootdirectory names)",
                root.display()
            )
        } else {
            format!(
                "{} does not exist: point at a registry's storage root",
                root.display()
            )
        };
        return Err(crate::store::StoreError::NotAStore(why));
    }
    let locks: Arc<dyn crate::store::Locks> =
        locks.unwrap_or_else(|| Arc::new(FsLocks::new(layout.wharf_dir().join("locks"))));
    let blobs: Arc<dyn crate::store::BlobStore> =
        Arc::new(FsBlobStore::new(layout.clone(), locks.clone()));
    let meta = Arc::new(FsMetaStore::new(layout.clone(), blobs.clone()));
    Ok(crate::store::Store {
        blobs,
        meta,
        locks,
        describe: root.display().to_string(),
        state_dir: Some(layout.wharf_dir()),
    })
}

/// Read a link file (`sha256:...`). None if it does not exist.
fn read_link(path: &Path) -> io::Result<Option<Digest>> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse().map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Run blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// A directory's entries; none if it does not exist.
fn read_dir_if_any(dir: &Path) -> io::Result<Option<std::fs::ReadDir>> {
    match std::fs::read_dir(dir) {
        Ok(it) => Ok(Some(it)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn not_found_is_ok(r: io::Result<()>) -> io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
