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
mod quotas;
mod repoindex;
mod state;
mod upload;

use std::io;
use std::path::{Path, PathBuf};

pub use blobs::FsBlobStore;
pub use locks::FsLocks;
pub use meta::FsMetaStore;
pub use quotas::FsQuotas;
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
        // The layout's root too, not only the directory: commands run beside a server
        // (`wharf token create`, `wharf scrub`) know the root by it, and with a database
        // nothing else may write under it before they run.
        std::fs::create_dir_all(layout.v2())?;
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
    let quotas = Arc::new(FsQuotas::new(layout.wharf_dir().join("quotas")));
    Ok(crate::store::Store {
        blobs,
        meta,
        locks,
        describe: root.display().to_string(),
        state: Some(state.clone()),
        identity: Some(state.clone()),
        pulls: Some(state),
        events: None,
        quotas: Some(quotas),
        tag_checks: Some(Arc::new(crate::store::tagchecks::FsTagChecks::new(
            layout.wharf_dir().join("proxy-checked"),
        ))),
    })
}

/// A server's root must be readable (and, unless `read_only`, writable) by this process:
/// otherwise every push, or every pull, would fail later. The probe writes a file, since
/// mode bits do not tell (root ignores them; a read-only mount or an immutable directory
/// refuses root too). The parts of an existing registry are probed as well: a root copied
/// in by another user often has a writable top and foreign subdirectories.
pub fn check_root(root: &Path, read_only: bool) -> crate::store::StoreResult<()> {
    let layout = Layout::new(root);
    let refuse = |path: &Path, doing: &str, e: io::Error| {
        let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
        crate::store::StoreError::NotAStore(format!(
            "storage root {}: cannot {doing} {} as uid {} (gid {}): {e}; give that user the \
             directory (chown -R {} {}) or point storage.filesystem.rootdirectory elsewhere",
            root.display(),
            path.display(),
            uid.as_raw(),
            gid.as_raw(),
            uid.as_raw(),
            root.display(),
        ))
    };
    std::fs::create_dir_all(root).map_err(|e| refuse(root, "create", e))?;
    let v2 = layout.v2();
    let parts = [root.to_owned(), v2.join("repositories"), v2.join("blobs")];
    for dir in parts.iter().filter(|d| d.is_dir() || d.as_path() == root) {
        std::fs::read_dir(dir).map_err(|e| refuse(dir, "read", e))?;
        if read_only {
            continue;
        }
        let probe = dir.join(format!(".wharf-write-check-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| refuse(dir, "write in", e))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
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

/// Remove a repository's directories if they hold no file, directories only, bottom up,
/// so that a file written meanwhile keeps its directory: nothing but empty directories is
/// ever removed. A repository is what has `_manifests` or `_layers` (Distribution's
/// catalog reads `_manifests`), so one nested below (`team/app` under `team`) keeps its
/// own directory, and a parent that is not a repository goes once empty.
fn remove_empty_repo(dir: &Path, top: &Path) -> io::Result<bool> {
    let parts = ["_manifests", "_layers", "_uploads"].map(|p| dir.join(p));
    for part in &parts {
        if holds_a_file(part)? {
            return Ok(false);
        }
    }
    // Listed as a repository only with one of these (see `repoindex::walk`).
    if !parts[0].is_dir() && !parts[1].is_dir() {
        return Ok(false);
    }
    for part in &parts {
        if !remove_empty_dirs(part)? {
            return Ok(false);
        }
    }
    // The repository's own directory and its parents, while empty (`team/` for `team/app`).
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| d.starts_with(top) && *d != top) {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        at = d.parent();
    }
    Ok(true)
}

/// Whether any non-directory lies under `dir`.
fn holds_a_file(dir: &Path) -> io::Result<bool> {
    let Some(entries) = read_dir_if_any(dir)? else {
        return Ok(false);
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() || holds_a_file(&entry.path())? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Remove `dir` and the directories under it, deepest first; false if one was not empty.
fn remove_empty_dirs(dir: &Path) -> io::Result<bool> {
    let Some(entries) = read_dir_if_any(dir)? else {
        return Ok(true);
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() || !remove_empty_dirs(&entry.path())? {
            return Ok(false);
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(false),
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
