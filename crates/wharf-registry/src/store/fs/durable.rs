//! Durable writes: write a temporary file, fsync it, rename it into place, fsync the
//! directory. A reader sees the old content or the new, never a torn file, even after a crash.
//! Every file wharf replaces goes through [`AtomicWrite`]; what a caller may skip (the
//! hash states skip every fsync) is an option.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// Create `dir` and any missing parents without syncing; returns the parents of what was
/// created, which must be fsynced (see [`sync_all_dirs`]) before the new entries count.
/// Syncing them after the file inside is written lets one journal commit cover both.
pub fn create_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    create_dirs_into(dir, &mut created)?;
    Ok(created)
}

fn create_dirs_into(dir: &Path, created: &mut Vec<PathBuf>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_into(parent, created)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            created.extend(dir.parent().map(Path::to_path_buf));
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) => sync_dir(p),
        None => Ok(()),
    }
}

/// fsync `dir`, then each directory that gained a subdirectory, innermost first.
fn sync_all_dirs(dir: &Path, created_parents: &[PathBuf]) -> io::Result<()> {
    sync_dir(dir)?;
    for parent in created_parents.iter().rev() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// The error, naming the file it concerns: "No such file or directory" alone helps nobody.
pub fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// How [`AtomicWrite::replace`] and [`AtomicWrite::link_into`] write a file aside (under a
/// unique temporary name in its directory) and put it in place: the one way wharf replaces
/// a file, so that a reader sees the old content or the new, never a torn file.
#[derive(Debug, Clone, Copy)]
pub struct AtomicWrite {
    /// What of the file is fsynced before it takes its name.
    pub sync: Fsync,
    /// fsync the directory once the name is in place (and each directory that had to be
    /// created), so that the new name survives a crash too.
    pub sync_dir: bool,
    /// Create missing parent directories (otherwise a missing one is an error).
    pub create_dirs: bool,
    /// Set the file's mtime explicitly. The kernel stamps files from a coarse clock that
    /// can lag the one garbage collection reads its mark time from; an explicit time keeps
    /// "written after the mark" true for whatever is written after it.
    pub stamp: bool,
    /// Give the new file the permissions of the one it replaces (a provisioned htpasswd is
    /// 0600, one nginx reads is wider).
    pub keep_mode: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Not fsynced: for what a crash may lose at no more cost than redoing it.
    Skip,
    /// The bytes and what reading them needs (the size): `fdatasync`.
    Data,
    /// The bytes and all metadata (a mode set on it, its times): `fsync`.
    All,
}

impl AtomicWrite {
    /// The store's links and records: durable, stamped from the collector's clock.
    pub const DURABLE: AtomicWrite = AtomicWrite {
        sync: Fsync::Data,
        sync_dir: true,
        create_dirs: true,
        stamp: true,
        keep_mode: false,
    };

    /// Atomically replace (or create) `path` with `bytes`.
    pub fn replace(self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = dir_of(path);
        let created = self.dirs(dir)?;
        let tmp = self.write_aside(dir, bytes, Some(path))?;
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.synced(dir, &created)
    }

    /// Write `bytes` aside in `dir` and give the file a name with `link`, which gets the
    /// temporary path (a hard link that fails on a taken name, say, so that writers never
    /// replace each other's files). The temporary name is removed afterwards.
    pub fn link_into<T>(
        self,
        dir: &Path,
        bytes: &[u8],
        link: impl FnOnce(&Path) -> io::Result<T>,
    ) -> io::Result<T> {
        let created = self.dirs(dir)?;
        let tmp = self.write_aside(dir, bytes, None)?;
        let linked = link(&tmp);
        let _ = fs::remove_file(&tmp);
        let linked = linked?;
        self.synced(dir, &created)?;
        Ok(linked)
    }

    fn dirs(self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        if self.create_dirs {
            create_dirs(dir)
        } else {
            Ok(Vec::new())
        }
    }

    /// The complete, synced temporary file, to become `replacing` if given.
    fn write_aside(
        self,
        dir: &Path,
        bytes: &[u8],
        replacing: Option<&Path>,
    ) -> io::Result<PathBuf> {
        let tmp = dir.join(format!(".wharf-{}.tmp", Uuid::new_v4()));
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            if self.stamp {
                f.set_modified(std::time::SystemTime::now())?;
            }
            if let Some(old) = replacing.filter(|_| self.keep_mode) {
                if let Ok(old) = fs::metadata(old) {
                    f.set_permissions(old.permissions())?;
                }
            }
            match self.sync {
                Fsync::Skip => Ok(()),
                Fsync::Data => f.sync_data(),
                Fsync::All => f.sync_all(),
            }
        })();
        match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn synced(self, dir: &Path, created: &[PathBuf]) -> io::Result<()> {
        if self.sync_dir {
            sync_all_dirs(dir, created)
        } else {
            Ok(())
        }
    }
}

/// The directory a file is in; `.` for a bare file name.
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// [`AtomicWrite::DURABLE`], naming the file in an error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    AtomicWrite::DURABLE.replace(path, bytes).map_err(at(path))
}

/// Move a complete, fsynced file into place atomically.
pub fn rename_into(from: &Path, to: &Path) -> io::Result<()> {
    rename_into_inner(from, to).map_err(at(to))
}

fn rename_into_inner(from: &Path, to: &Path) -> io::Result<()> {
    let dir = to.parent().expect("layout paths have parents");
    let created = create_dirs(dir)?;
    fs::rename(from, to)?;
    sync_all_dirs(dir, &created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_atomically_and_leave_no_temp() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("a/b/link");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
