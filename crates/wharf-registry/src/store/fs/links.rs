//! Every repository's blob links, for quota checks, without re-reading what has not
//! changed. Other processes write the same tree, so nothing is trusted from memory alone:
//! each directory's listing is kept with the directory's mtime and reused only while a
//! `stat` shows the same mtime, and only once that mtime had settled (older than RACY)
//! when it was read, as the tag and referrer caches do. A check then costs a few stats per
//! repository instead of directory reads.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use wharf_oci::sync::lock;
use wharf_oci::Digest;

use super::meta::RACY;

/// A directory under `repositories/`: its subdirectories that may hold repositories, and
/// whether it is a repository itself.
struct Listing {
    mtime: SystemTime,
    children: Arc<Vec<String>>,
    is_repo: bool,
}

/// A repository's `_layers` links, with the mtimes of `_layers` and `_layers/sha256`.
struct Links {
    stamp: (SystemTime, SystemTime),
    digests: Arc<Vec<Digest>>,
}

#[derive(Default)]
pub struct LinkTree {
    dirs: Mutex<HashMap<PathBuf, Listing>>,
    links: Mutex<HashMap<PathBuf, Links>>,
}

fn settled(t: SystemTime) -> bool {
    t.elapsed().is_ok_and(|age| age > RACY)
}

fn mtime(path: &Path) -> io::Result<Option<SystemTime>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.modified()?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl LinkTree {
    /// (repository, its blob links) for every repository under `root`.
    pub fn scan(&self, root: &Path) -> io::Result<Vec<(String, Arc<Vec<Digest>>)>> {
        let mut out = Vec::new();
        self.walk(root, "", &mut out)?;
        Ok(out)
    }

    fn walk(
        &self,
        dir: &Path,
        prefix: &str,
        out: &mut Vec<(String, Arc<Vec<Digest>>)>,
    ) -> io::Result<()> {
        let Some((children, is_repo)) = self.listing(dir)? else {
            return Ok(());
        };
        if is_repo && !prefix.is_empty() {
            out.push((prefix.to_owned(), self.links(dir)?));
        }
        for name in children.iter() {
            let child = match prefix {
                "" => name.clone(),
                p => format!("{p}/{name}"),
            };
            self.walk(&dir.join(name), &child, out)?;
        }
        Ok(())
    }

    /// The directory's children and whether it is a repository (as `repoindex::walk` decides:
    /// it holds `_layers` or `_manifests`); None if it does not exist.
    fn listing(&self, dir: &Path) -> io::Result<Option<(Arc<Vec<String>>, bool)>> {
        let Some(now) = mtime(dir)? else {
            return Ok(None);
        };
        if let Some(l) = lock(&self.dirs).get(dir).filter(|l| l.mtime == now) {
            return Ok(Some((l.children.clone(), l.is_repo)));
        }
        let mut children = Vec::new();
        let mut is_repo = false;
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            if !e.file_type()?.is_dir() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "_layers" || name == "_manifests" {
                is_repo = true;
            } else if !name.starts_with('_') {
                children.push(name);
            }
        }
        let children = Arc::new(children);
        if settled(now) {
            let listing = Listing {
                mtime: now,
                children: children.clone(),
                is_repo,
            };
            lock(&self.dirs).insert(dir.to_owned(), listing);
        }
        Ok(Some((children, is_repo)))
    }

    fn links(&self, repo: &Path) -> io::Result<Arc<Vec<Digest>>> {
        let layers = repo.join("_layers");
        let sha = layers.join("sha256");
        let (Some(a), Some(b)) = (mtime(&layers)?, mtime(&sha)?) else {
            // No sha256 links (or none at all): read whatever is there, uncached.
            return Ok(Arc::new(read_links(&layers)?.0));
        };
        let stamp = (a, b);
        if let Some(l) = lock(&self.links).get(repo).filter(|l| l.stamp == stamp) {
            return Ok(l.digests.clone());
        }
        let (digests, only_sha256) = read_links(&layers)?;
        let digests = Arc::new(digests);
        // Another algorithm's directory would change without touching sha256's mtime.
        if only_sha256 && settled(a) && settled(b) {
            let links = Links {
                stamp,
                digests: digests.clone(),
            };
            lock(&self.links).insert(repo.to_owned(), links);
        }
        Ok(digests)
    }
}

/// Digests linked under `_layers/<algorithm>/<hex>/`, and whether sha256 was the only
/// algorithm.
fn read_links(layers: &Path) -> io::Result<(Vec<Digest>, bool)> {
    let mut out = Vec::new();
    let mut only_sha256 = true;
    let algorithms = match fs::read_dir(layers) {
        Ok(a) => a,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((out, true)),
        Err(e) => return Err(e),
    };
    for alg in algorithms {
        let alg = alg?;
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        only_sha256 &= alg_name == "sha256";
        for hex in fs::read_dir(alg.path())? {
            let name = format!("{alg_name}:{}", hex?.file_name().to_string_lossy());
            if let Ok(d) = name.parse() {
                out.push(d);
            }
        }
    }
    Ok((out, only_sha256))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wharf_oci::RepoName;

    use crate::store::MetaStore;

    /// Set every directory's mtime under `dir` to 10 s ago, so listings get cached.
    fn backdate(dir: &std::path::Path) {
        let then = SystemTime::now() - Duration::from_secs(10);
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                backdate(&e.path());
            }
        }
        fs::File::open(dir).unwrap().set_modified(then).unwrap();
    }

    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    async fn links(meta: &dyn MetaStore) -> Vec<(String, Vec<Digest>)> {
        let mut all: Vec<(String, Vec<Digest>)> = meta
            .all_blob_links()
            .await
            .unwrap()
            .into_iter()
            .map(|(r, l)| {
                let mut l = l.to_vec();
                l.sort();
                (r, l)
            })
            .collect();
        all.sort();
        all
    }

    #[tokio::test]
    async fn cached_links_follow_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let writer = crate::store::fs::open(dir.path(), true).unwrap().meta;
        let reader = crate::store::fs::open(dir.path(), true).unwrap().meta;
        let (a, b): (RepoName, RepoName) = ("t/a".parse().unwrap(), "t/a/b".parse().unwrap());
        writer.link_blob(&a, &digest(1)).await.unwrap();
        backdate(dir.path());
        let mut one = vec![digest(1)];
        one.sort();
        assert_eq!(links(&*reader).await, [("t/a".to_owned(), one.clone())]);
        // Cached now; each change made elsewhere is seen.
        writer.link_blob(&a, &digest(2)).await.unwrap();
        let mut two = vec![digest(1), digest(2)];
        two.sort();
        assert_eq!(links(&*reader).await, [("t/a".to_owned(), two.clone())]);
        backdate(dir.path());
        links(&*reader).await;
        writer.link_blob(&b, &digest(3)).await.unwrap();
        assert_eq!(
            links(&*reader).await,
            [
                ("t/a".to_owned(), two),
                ("t/a/b".to_owned(), vec![digest(3)])
            ]
        );
        backdate(dir.path());
        links(&*reader).await;
        writer.unlink_blob(&a, &digest(1)).await.unwrap();
        assert_eq!(
            links(&*reader).await,
            [
                ("t/a".to_owned(), vec![digest(2)]),
                ("t/a/b".to_owned(), vec![digest(3)])
            ]
        );
    }
}
