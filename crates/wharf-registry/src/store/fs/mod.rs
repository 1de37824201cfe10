//! Filesystem backends in registry:2's on-disk layout (`<root>/docker/registry/v2/...`), so
//! an existing `/var/lib/registry` is served in place and Distribution can serve ours.

mod blobs;
pub mod durable;
mod eventlog;
mod identity;
mod links;
mod locks;
mod meta;
mod pulls;
mod state;
mod upload;

use std::io;
use std::path::{Path, PathBuf};

pub use blobs::FsBlobStore;
pub use locks::FsLocks;
pub use meta::FsMetaStore;
pub use state::FsState;
use wharf_oci::Digest;

/// registry:2's layout as paths under a root directory.
pub type Layout = crate::store::layout::Layout<PathBuf>;

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
    } else if !layout.v2().is_dir() {
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
    let state = Arc::new(FsState::new(layout.wharf_dir()));
    Ok(crate::store::Store {
        blobs,
        meta,
        locks,
        describe: root.display().to_string(),
        state: Some(state.clone()),
        identity: Some(state.clone()),
        pulls: Some(state),
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

/// A whole (small) file; None if it does not exist.
fn read_if_any(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(durable::at(path)(e)),
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
