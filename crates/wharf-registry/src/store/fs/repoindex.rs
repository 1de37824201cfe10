//! The names of a root's repositories, kept in the store (`_wharf/repositories.json`) so
//! that `_catalog` and the UI's search read one file instead of walking every directory.
//!
//! Every wharf process on the root keeps it, under one `flock` (`_wharf/repositories.lock`):
//! a repository's first link adds its name, its removal takes the name out. Other programs
//! (a Distribution on the same root) do not, so the index also records the mtime of
//! `repositories/` and of every namespace directory under it (one that holds repositories
//! without being one). A reader stats those; any change, or a missing or unreadable index,
//! means a walk that rewrites it. What neither catches (another program creating a
//! repository nested inside an existing repository's directory, in the same clock tick as
//! a wharf write) `wharf scrub` finds and rebuilds.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wharf_oci::sync::lock;

use super::durable::write_atomic;

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Index {
    /// Directory (relative to `repositories/`, "" for itself) → mtime in nanoseconds.
    dirs: BTreeMap<String, u128>,
    /// Sorted, bytewise.
    repos: Vec<String>,
}

pub struct RepoIndex {
    file: PathBuf,
    lock_file: PathBuf,
    top: PathBuf,
    /// The last index read, by the file's identity (replaced whole, so a new inode).
    cached: Mutex<Option<(FileId, Arc<Index>)>>,
}

/// A file's inode and mtime: what changes when it is replaced.
type FileId = (u64, u128);

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn mtime(path: &Path) -> io::Result<Option<u128>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(nanos(m.modified()?))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The repositories under `rel`, found without descending into registry-internal
/// (`_`-prefixed) directories. Distribution lists every directory holding `_layers`, so a
/// repository with blobs but no manifest yet is listed too; one holding `_manifests` is
/// listed as well. Namespace directories are recorded with their mtimes.
fn walk(top: &Path, rel: &str, index: &mut Index) -> io::Result<()> {
    let dir = if rel.is_empty() {
        top.to_owned()
    } else {
        top.join(rel)
    };
    let entries = match fs::read_dir(&dir) {
        Ok(it) => it,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if rel.is_empty() {
                // No tree yet: recorded as no mtime a directory has, so its creation shows.
                index.dirs.insert(String::new(), 0);
            }
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let before = mtime(&dir)?;
    let mut is_repo = false;
    let mut children = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "_layers" || name == "_manifests" {
            is_repo = true;
        } else if !name.starts_with('_') {
            children.push(name);
        }
    }
    if is_repo && !rel.is_empty() {
        index.repos.push(rel.to_owned());
    } else if let Some(t) = before {
        index.dirs.insert(rel.to_owned(), t);
    }
    for c in children {
        let child = if rel.is_empty() {
            c
        } else {
            format!("{rel}/{c}")
        };
        walk(top, &child, index)?;
    }
    Ok(())
}

impl RepoIndex {
    pub fn new(wharf_dir: &Path, repositories: PathBuf) -> RepoIndex {
        RepoIndex {
            file: wharf_dir.join("repositories.json"),
            lock_file: wharf_dir.join("repositories.lock"),
            top: repositories,
            cached: Mutex::new(None),
        }
    }

    fn locked(&self) -> io::Result<File> {
        if let Some(dir) = self.lock_file.parent() {
            fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_file)?;
        f.lock()?;
        Ok(f)
    }

    /// The stored index, if there is one that parses.
    fn load(&self) -> io::Result<Option<Arc<Index>>> {
        let meta = match fs::metadata(&self.file) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = (
            std::os::unix::fs::MetadataExt::ino(&meta),
            nanos(meta.modified()?),
        );
        if let Some((at, index)) = lock(&self.cached).as_ref() {
            if *at == id {
                return Ok(Some(index.clone()));
            }
        }
        let bytes = match fs::read(&self.file) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(index) = serde_json::from_slice::<Index>(&bytes) else {
            return Ok(None);
        };
        let index = Arc::new(index);
        *lock(&self.cached) = Some((id, index.clone()));
        Ok(Some(index))
    }

    fn fresh(&self, index: &Index) -> io::Result<bool> {
        for (rel, t) in &index.dirs {
            let dir = if rel.is_empty() {
                self.top.clone()
            } else {
                self.top.join(rel)
            };
            if mtime(&dir)? != Some(*t) {
                return Ok(false);
            }
        }
        Ok(!index.dirs.is_empty())
    }

    fn store(&self, index: &Index) -> io::Result<()> {
        let bytes = serde_json::to_vec(index).map_err(io::Error::other)?;
        write_atomic(&self.file, &bytes)
    }

    /// Walk the tree and store what it holds; the names. Call holding the lock.
    fn rebuild_locked(&self) -> io::Result<Index> {
        let index = walk_sorted(&self.top)?;
        self.store(&index)?;
        Ok(index)
    }

    /// Every repository's name, sorted: from the index while it is fresh, else walked
    /// (and the index rewritten).
    pub fn names(&self) -> io::Result<Arc<Vec<String>>> {
        if let Some(index) = self.load()? {
            if self.fresh(&index)? {
                return Ok(Arc::new(index.repos.clone()));
            }
        }
        let _held = match self.locked() {
            Ok(held) => held,
            // A root this process may only read (a read-only mount, another uid's tree):
            // list it by walking, as before there was an index.
            Err(e) if cannot_write(&e) => return Ok(Arc::new(walk_sorted(&self.top)?.repos)),
            Err(e) => return Err(e),
        };
        // Another process may have rebuilt it while this one waited.
        if let Some(index) = self.load()? {
            if self.fresh(&index)? {
                return Ok(Arc::new(index.repos.clone()));
            }
        }
        Ok(Arc::new(self.rebuild_locked()?.repos))
    }

    /// Record that `name` gained its first link (`add`) or went. The namespace directories
    /// above it are restated, since creating or removing it changed their mtimes.
    pub fn update(&self, name: &str, add: bool) -> io::Result<()> {
        let _held = self.locked()?;
        let Some(current) = self.load()? else {
            self.rebuild_locked()?;
            return Ok(());
        };
        if !self.fresh_but_for(&current, name)? {
            self.rebuild_locked()?;
            return Ok(());
        }
        let mut index = Index {
            dirs: current.dirs.clone(),
            repos: current.repos.clone(),
        };
        match (index.repos.binary_search_by(|r| r.as_str().cmp(name)), add) {
            (Err(at), true) => index.repos.insert(at, name.to_owned()),
            (Ok(at), false) => {
                index.repos.remove(at);
            }
            _ => {}
        }
        self.restat_above(&mut index, name)?;
        self.store(&index)
    }

    /// Fresh apart from the directories above `name` (which its own change touched).
    fn fresh_but_for(&self, index: &Index, name: &str) -> io::Result<bool> {
        let above = ancestors(name);
        for (rel, t) in &index.dirs {
            if above.contains(rel) {
                continue;
            }
            let dir = if rel.is_empty() {
                self.top.clone()
            } else {
                self.top.join(rel)
            };
            if mtime(&dir)? != Some(*t) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn restat_above(&self, index: &mut Index, name: &str) -> io::Result<()> {
        for rel in ancestors(name) {
            if index.repos.binary_search(&rel).is_ok() {
                continue; // a repository, not a namespace
            }
            let dir = if rel.is_empty() {
                self.top.clone()
            } else {
                self.top.join(&rel)
            };
            match mtime(&dir)? {
                Some(t) => index.dirs.insert(rel, t),
                None => index.dirs.remove(&rel),
            };
        }
        Ok(())
    }

    /// Compare the index with a walk, and rewrite it if they differ or it is missing
    /// (scrub, with `repair`). Whether it was stale: a missing one is not (the next
    /// listing builds it).
    pub fn check(&self, repair: bool) -> io::Result<bool> {
        let _held = match self.locked() {
            Ok(held) => Some(held),
            // A check that repairs nothing reads a root it cannot write (scrub of a
            // read-only mount); a repair must hold the lock.
            Err(e) if !repair && cannot_write(&e) => None,
            Err(e) => return Err(e),
        };
        let walked = walk_sorted(&self.top)?;
        let stored = self.load()?;
        let stale = stored.as_deref().is_some_and(|s| s.repos != walked.repos);
        if (stale || stored.is_none()) && repair {
            self.store(&walked)?;
        }
        Ok(stale)
    }
}

/// The tree's index, walked now, its names sorted.
fn walk_sorted(top: &Path) -> io::Result<Index> {
    let mut index = Index::default();
    walk(top, "", &mut index)?;
    index.repos.sort_unstable();
    Ok(index)
}

fn cannot_write(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
    )
}

/// "", "a", "a/b" for "a/b/c".
fn ancestors(name: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let parts: Vec<&str> = name.split('/').collect();
    for i in 1..parts.len() {
        out.push(parts[..i].join("/"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_repo(top: &Path, name: &str) {
        fs::create_dir_all(top.join(name).join("_layers")).unwrap();
    }

    #[test]
    fn follows_its_own_updates_and_other_writers() {
        let root = tempfile::tempdir().unwrap();
        let top = root.path().join("repositories");
        let wharf = root.path().join("_wharf");
        make_repo(&top, "a");
        make_repo(&top, "team/b");
        let one = RepoIndex::new(&wharf, top.clone());
        assert_eq!(*one.names().unwrap(), ["a", "team/b"]);
        // Another wharf process on the root, keeping the index.
        let two = RepoIndex::new(&wharf, top.clone());
        make_repo(&top, "team/c");
        two.update("team/c", true).unwrap();
        assert_eq!(*one.names().unwrap(), ["a", "team/b", "team/c"]);
        // Another program, not keeping it: a new namespace changes `repositories/`.
        make_repo(&top, "other/d");
        assert_eq!(*one.names().unwrap(), ["a", "other/d", "team/b", "team/c"]);
        fs::remove_dir_all(top.join("team/c")).unwrap();
        two.update("team/c", false).unwrap();
        assert_eq!(*one.names().unwrap(), ["a", "other/d", "team/b"]);
        // A corrupt index is rebuilt; scrub's check reports a stale one.
        fs::write(wharf.join("repositories.json"), b"{").unwrap();
        assert_eq!(one.names().unwrap().len(), 3);
        assert!(!one.check(false).unwrap());
        fs::remove_file(wharf.join("repositories.json")).unwrap();
        assert!(
            !one.check(true).unwrap(),
            "a missing index is built, not reported"
        );
        assert!(wharf.join("repositories.json").is_file());
        fs::write(
            wharf.join("repositories.json"),
            br#"{"dirs":{},"repos":[]}"#,
        )
        .unwrap();
        assert!(one.check(true).unwrap());
        assert!(!one.check(false).unwrap());
    }

    #[test]
    fn ancestors_of_a_name() {
        assert_eq!(ancestors("a/b/c"), ["", "a", "a/b"]);
        assert_eq!(ancestors("a"), [""]);
    }
}
