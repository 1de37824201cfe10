//! Durable writes: write a temporary file, fsync it, rename it into place, fsync the
//! directory. A reader sees the old content or the new, never a torn file, even after a crash.

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

pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_inner(path, bytes).map_err(at(path))
}

fn write_atomic_inner(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("layout paths have parents");
    let created = create_dirs(dir)?;
    let tmp = dir.join(format!(".wharf-{}.tmp", Uuid::new_v4()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        // The kernel stamps files from a coarse clock that can lag the one garbage
        // collection reads its mark time from; an explicit time keeps "written after the
        // mark" true for whatever is written after it.
        f.set_modified(std::time::SystemTime::now())?;
        f.sync_data()?;
        fs::rename(&tmp, path)?;
        sync_all_dirs(dir, &created)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
