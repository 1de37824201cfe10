//! Repository metadata as registry:2 keeps it: link files under `repositories/<name>/`.
//! Nothing here is trusted from memory alone, since other processes (more wharfs, a
//! Distribution) write the same directory: tags are read from their link each time, and a
//! repository's referrers index is rebuilt whenever its revisions directory has changed.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use dashmap::DashMap;
use wharf_oci::{Descriptor, Digest, Manifest, RepoName, Tag};

use super::durable::{sync_parent, write_atomic};
use super::{blocking, not_found_is_ok, read_dir_if_any, read_link, Layout};
use crate::store::{
    paginate, BlobStore, ManifestRecord, MetaStore, Page, StoreError, StoreResult, MANIFEST_LIMIT,
};

/// A directory's mtime proves nothing changed only once it is older than the clock's
/// granularity plus some margin; until then a change in the same tick could hide (git's
/// "racy clean" problem).
pub(super) const RACY: Duration = Duration::from_secs(2);

struct ReferrerIndex {
    stamp: SystemTime,
    by_subject: HashMap<Digest, Vec<Descriptor>>,
}

pub struct FsMetaStore {
    layout: Layout,
    blobs: Arc<dyn BlobStore>,
    referrers: DashMap<RepoName, Arc<ReferrerIndex>>,
    /// Sorted tag names with the tags directory's mtime when they were read.
    tag_lists: DashMap<RepoName, (SystemTime, Arc<Vec<String>>)>,
    /// Every repository's blob links, for quota checks.
    links: Arc<super::links::LinkTree>,
    /// One rebuild at a time per process; others wait and reuse it.
    rebuilding: tokio::sync::Mutex<()>,
    /// The repositories' names, kept in the store (`_wharf/repositories.json`).
    names: Arc<super::repoindex::RepoIndex>,
}

impl FsMetaStore {
    /// `blobs` is where manifests' bytes are read from.
    pub fn new(layout: Layout, blobs: Arc<dyn BlobStore>) -> FsMetaStore {
        FsMetaStore {
            blobs,
            referrers: DashMap::new(),
            tag_lists: DashMap::new(),
            links: Arc::default(),
            rebuilding: tokio::sync::Mutex::new(()),
            names: Arc::new(super::repoindex::RepoIndex::new(
                &layout.wharf_dir(),
                layout.repositories(),
            )),
            layout,
        }
    }

    /// Whether `_catalog` lists the repository yet (as `repoindex::walk` decides).
    fn listed(&self, repo: &RepoName) -> bool {
        let dir = self.layout.repo(repo);
        dir.join("_layers").is_dir() || dir.join("_manifests").is_dir()
    }

    /// Record in the name index that `repo` gained its first link, or went.
    async fn index_name(&self, repo: &RepoName, add: bool) -> StoreResult<()> {
        let (names, name) = (self.names.clone(), repo.to_string());
        Ok(blocking(move || names.update(&name, add)).await?)
    }

    /// The newest mtime of the repository's revision directories, or None if it has none.
    async fn revisions_stamp(&self, repo: &RepoName) -> StoreResult<Option<SystemTime>> {
        let dir = self.layout.revisions(repo);
        Ok(blocking(move || {
            let mut newest = None;
            for alg in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let t = alg.metadata()?.modified()?;
                newest = newest.max(Some(t));
            }
            Ok(newest)
        })
        .await?)
    }

    async fn referrer_index(&self, repo: &RepoName) -> StoreResult<Arc<ReferrerIndex>> {
        let Some(stamp) = self.revisions_stamp(repo).await? else {
            return Ok(Arc::new(ReferrerIndex {
                stamp: SystemTime::UNIX_EPOCH,
                by_subject: HashMap::new(),
            }));
        };
        let settled = |i: &ReferrerIndex| i.stamp == stamp;
        // Only a listing taken once the directory had settled may be trusted later: a
        // change in the tick the listing saw could hide behind the same mtime.
        let cacheable = stamp.elapsed().is_ok_and(|age| age > RACY);
        if let Some(i) = self.referrers.get(repo).filter(|i| settled(i)) {
            return Ok(i.clone());
        }
        let _one = self.rebuilding.lock().await;
        if let Some(i) = self.referrers.get(repo).filter(|i| settled(i)) {
            return Ok(i.clone());
        }
        let mut by_subject: HashMap<Digest, Vec<Descriptor>> = HashMap::new();
        for (digest, _) in self.list_manifests(repo).await? {
            let Some(bytes) = self.blobs.get(&digest, MANIFEST_LIMIT).await? else {
                continue;
            };
            let Ok(manifest) = Manifest::parse(&bytes, None) else {
                continue;
            };
            if let Some(subject) = &manifest.subject {
                let entry = manifest.referrer_descriptor(digest, bytes.len() as u64);
                by_subject
                    .entry(subject.digest.clone())
                    .or_default()
                    .push(entry);
            }
        }
        let index = Arc::new(ReferrerIndex { stamp, by_subject });
        if cacheable {
            self.referrers.insert(repo.clone(), index.clone());
        }
        Ok(index)
    }
}

/// Digests named by `<dir>/<algorithm>/<hex>/` entries.
fn list_digest_dirs(dir: &Path) -> io::Result<Vec<Digest>> {
    let mut out = Vec::new();
    let Some(algorithms) = read_dir_if_any(dir)? else {
        return Ok(out);
    };
    for alg in algorithms {
        let alg = alg?;
        for hex in fs::read_dir(alg.path())? {
            let name = format!(
                "{}:{}",
                alg.file_name().to_string_lossy(),
                hex?.file_name().to_string_lossy()
            );
            if let Ok(d) = name.parse() {
                out.push(d);
            }
        }
    }
    Ok(out)
}

fn remove_dir_durably(dir: &Path) -> io::Result<bool> {
    let removed = not_found_is_ok(fs::remove_dir_all(dir))?;
    if removed {
        sync_parent(dir)?;
    }
    Ok(removed)
}

/// `<dir>/<name>/current/link` targets, for every tag directory in `dir`.
fn read_tags(dir: &Path) -> io::Result<Vec<(String, Result<Digest, String>)>> {
    let mut out = Vec::new();
    let Some(entries) = read_dir_if_any(dir)? else {
        return Ok(out);
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let target = match read_link(&e.path().join("current/link")) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err("its current/link is missing".to_owned()),
            Err(err) => Err(err.to_string()),
        };
        out.push((name, target));
    }
    Ok(out)
}

/// When a link file was last written, or None if it does not exist.
fn link_mtime(path: &Path) -> io::Result<Option<SystemTime>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.modified()?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl MetaStore for FsMetaStore {
    async fn repo_exists(&self, repo: &RepoName) -> StoreResult<bool> {
        Ok(self.layout.repo(repo).is_dir())
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<()> {
        let link = self.layout.layer_link(repo, digest);
        let content = digest.to_string();
        let first = !self.listed(repo);
        blocking(move || {
            if read_link(&link).ok().flatten().is_some() {
                return Ok(());
            }
            write_atomic(&link, content.as_bytes())
        })
        .await?;
        if first {
            self.index_name(repo, true).await?;
        }
        Ok(())
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        Ok(self.layout.layer_link(repo, digest).is_file())
    }

    async fn missing_links(
        &self,
        repo: &RepoName,
        blobs: &[Digest],
        manifests: &[Digest],
    ) -> StoreResult<Vec<Digest>> {
        let links: Vec<(Digest, std::path::PathBuf)> = blobs
            .iter()
            .map(|d| (d.clone(), self.layout.layer_link(repo, d)))
            .chain(
                manifests
                    .iter()
                    .map(|d| (d.clone(), self.layout.revision_link(repo, d))),
            )
            .collect();
        Ok(blocking(move || {
            Ok(links
                .into_iter()
                .filter(|(_, path)| !path.is_file())
                .map(|(d, _)| d)
                .collect())
        })
        .await?)
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        let dir = self.layout.layer_link(repo, digest);
        let dir = dir.parent().expect("link has a parent").to_owned();
        // Not fsynced: an unlink lost to a power cut leaves a link to a blob no manifest
        // needs, which scrub counts as garbage and the next collection removes; an fsync
        // per link made collection slower than Distribution's.
        Ok(blocking(move || not_found_is_ok(fs::remove_dir_all(&dir))).await?)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
        // Each link's mtime is its put time, from the clock the collector's mark is read
        // from (see `durable::write_atomic`).
        _now: SystemTime,
    ) -> StoreResult<()> {
        let digest = manifest.digest.clone();
        let content = digest.to_string();
        let revision = self.layout.revision_link(repo, &digest);
        let tag_links = tag.map(|t| {
            (
                self.layout.tag_index(repo, t, &digest),
                self.layout.tag_current(repo, t),
            )
        });
        let children: Vec<_> = manifest
            .children
            .iter()
            .map(|c| self.layout.revision_link(repo, c))
            .collect();
        let first = !self.listed(repo);
        blocking(move || {
            // An index retains its children's revisions, so a collection racing this put
            // does not take a child that only this index keeps.
            for child in children {
                fs::File::open(&child)?.set_modified(SystemTime::now())?;
            }
            // Rewritten even when present: its mtime says when the manifest was last put,
            // which is what garbage collection's untagged sweep checks.
            write_atomic(&revision, content.as_bytes())?;
            if let Some((index, current)) = tag_links {
                write_atomic(&index, content.as_bytes())?;
                // `current` last: the tag moves only once everything it needs is durable.
                write_atomic(&current, content.as_bytes())?;
            }
            Ok(())
        })
        .await?;
        if first {
            self.index_name(repo, true).await?;
        }
        Ok(())
    }

    async fn manifest_linked(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        Ok(self.layout.revision_link(repo, digest).is_file())
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<Digest>> {
        let path = self.layout.tag_current(repo, tag);
        read_link(&path).map_err(|e| match e.kind() {
            // Only a link that does not parse is corrupt; a refused read is the storage's.
            std::io::ErrorKind::InvalidData => StoreError::Corrupt {
                what: format!("tag {repo}:{tag}"),
                why: e.to_string(),
            },
            _ => StoreError::Io(super::durable::at(&path)(e)),
        })
    }

    /// The tag's `current/link` is rewritten (renamed into place) at each push.
    async fn tag_pushed(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<SystemTime>> {
        let path = self.layout.tag_current(repo, tag);
        Ok(blocking(move || match std::fs::metadata(&path) {
            Ok(m) => Ok(m.modified().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await?)
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        let revision = self.layout.revision_link(repo, digest);
        let tags_dir = self.layout.tags(repo);
        let target = digest.clone();
        Ok(blocking(move || {
            let dir = revision.parent().expect("link has a parent").to_owned();
            if !dir.exists() {
                return Ok(false);
            }
            // As Distribution does: a deleted manifest takes the tags pointing at it along.
            // Tags first: a crash in between leaves an untagged manifest, never a tag to
            // a manifest the repository lacks.
            for (name, current) in read_tags(&tags_dir)? {
                if current.as_ref() == Ok(&target) {
                    remove_dir_durably(&tags_dir.join(name))?;
                }
            }
            remove_dir_durably(&dir)
        })
        .await?)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<bool> {
        let dir = self.layout.tag_dir(repo, tag);
        Ok(blocking(move || remove_dir_durably(&dir)).await?)
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> StoreResult<Option<Page>> {
        let tags_dir = self.layout.tags(repo);
        // One stat, not a walk, while the tags directory is settled: every tag's creation
        // and removal changes its mtime (see RACY for why a fresh mtime proves nothing).
        let stamp = match fs::metadata(&tags_dir) {
            Ok(m) => Some(m.modified()?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let cached = stamp.and_then(|stamp| {
            self.tag_lists
                .get(repo)
                .filter(|c| c.0 == stamp)
                .map(|c| c.1.clone())
        });
        let names = match cached {
            Some(names) => names,
            None => {
                // Cached only if the directory had settled before it was read (RACY).
                let settled = stamp.filter(|s| s.elapsed().is_ok_and(|age| age > RACY));
                let repo_dir = self.layout.repo(repo);
                let listed = blocking(move || {
                    if !repo_dir.is_dir() {
                        return Ok(None);
                    }
                    let mut names = Vec::new();
                    // A tag directory without its current link (a crash between the two
                    // writes) gains one without touching the tags directory: such a
                    // listing must not be cached.
                    let mut complete = true;
                    if let Ok(entries) = fs::read_dir(&tags_dir) {
                        for e in entries {
                            let e = e?;
                            if e.path().join("current/link").is_file() {
                                names.push(e.file_name().to_string_lossy().into_owned());
                            } else {
                                complete = false;
                            }
                        }
                    }
                    names.sort_unstable();
                    Ok(Some((Arc::new(names), complete)))
                })
                .await?;
                let Some((names, complete)) = listed else {
                    return Ok(None);
                };
                if let Some(stamp) = settled.filter(|_| complete) {
                    self.tag_lists.insert(repo.clone(), (stamp, names.clone()));
                }
                names
            }
        };
        Ok(Some(paginate(names.iter().cloned(), last, n)))
    }

    async fn list_repos(&self, last: Option<&str>, n: Option<usize>) -> StoreResult<Page> {
        let index = self.names.clone();
        let names = blocking(move || index.names()).await?;
        Ok(paginate(names.iter().cloned(), last, n))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> StoreResult<Vec<Descriptor>> {
        let index = self.referrer_index(repo).await?;
        Ok(index.by_subject.get(subject).cloned().unwrap_or_default())
    }

    async fn list_manifests(&self, repo: &RepoName) -> StoreResult<Vec<(Digest, SystemTime)>> {
        let revisions = self.layout.revisions(repo);
        Ok(blocking(move || {
            let mut out = Vec::new();
            for d in list_digest_dirs(&revisions)? {
                let link = revisions
                    .join(d.algorithm().as_str())
                    .join(d.hex())
                    .join("link");
                if let Some(t) = link_mtime(&link)? {
                    out.push((d, t));
                }
            }
            Ok(out)
        })
        .await?)
    }

    async fn tag_targets(
        &self,
        repo: &RepoName,
    ) -> StoreResult<Vec<(String, Result<Digest, String>)>> {
        let dir = self.layout.tags(repo);
        Ok(blocking(move || read_tags(&dir)).await?)
    }

    async fn tag_pushes(&self, repo: &RepoName) -> StoreResult<Vec<(String, Digest, SystemTime)>> {
        let dir = self.layout.tags(repo);
        // The current link is rewritten by every push of the tag: its mtime is the push
        // time, as registry:2 would have it too.
        Ok(blocking(move || {
            let mut out = Vec::new();
            for (name, target) in read_tags(&dir)? {
                let Ok(digest) = target else { continue };
                if let Some(t) = link_mtime(&dir.join(&name).join("current/link"))? {
                    out.push((name, digest, t));
                }
            }
            Ok(out)
        })
        .await?)
    }

    async fn all_blob_links(&self) -> StoreResult<Vec<(String, Arc<Vec<Digest>>)>> {
        let (tree, root) = (self.links.clone(), self.layout.repositories());
        Ok(blocking(move || tree.scan(&root)).await?)
    }

    async fn list_blob_links(&self, repo: &RepoName) -> StoreResult<Vec<Digest>> {
        let layers = self.layout.layers(repo);
        Ok(blocking(move || list_digest_dirs(&layers)).await?)
    }

    async fn manifest_record(&self, digest: &Digest) -> StoreResult<Option<ManifestRecord>> {
        crate::store::read_manifest_record(&*self.blobs, digest).await
    }

    async fn delete_manifest_unless_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        since: SystemTime,
    ) -> StoreResult<bool> {
        let revision = self.layout.revision_link(repo, digest);
        let tags_dir = self.layout.tags(repo);
        let target = digest.clone();
        Ok(blocking(move || {
            match link_mtime(&revision)? {
                Some(t) if t < since => {}
                _ => return Ok(false),
            }
            // A tag that came to point at it since the mark keeps it too.
            if read_tags(&tags_dir)?
                .iter()
                .any(|(_, current)| current.as_ref() == Ok(&target))
            {
                return Ok(false);
            }
            let dir = revision.parent().expect("link has a parent").to_owned();
            let removed = remove_dir_durably(&dir)?;
            // Distribution's untagged sweep also drops the tags' history entries for it.
            for (name, _) in read_tags(&tags_dir)? {
                let index = tags_dir
                    .join(&name)
                    .join("index")
                    .join(target.algorithm().as_str())
                    .join(target.hex());
                remove_dir_durably(&index)?;
            }
            Ok(removed)
        })
        .await?)
    }

    async fn delete_tag_link(&self, repo: &RepoName, tag: &str) -> StoreResult<bool> {
        let Ok(tag) = tag.parse::<Tag>() else {
            return Ok(false);
        };
        self.delete_tag(repo, &tag).await
    }

    async fn forget_repository(&self, repo: &RepoName) -> StoreResult<()> {
        let (dir, top) = (self.layout.repo(repo), self.layout.repositories());
        blocking(move || {
            // Only the repository's own directories: a nested repository (`a/b` under
            // `a`) lives beside them and stays.
            for own in ["_manifests", "_layers", "_uploads"] {
                remove_dir_durably(&dir.join(own))?;
            }
            let mut at = Some(dir.as_path());
            while let Some(d) = at.filter(|d| *d != top && d.starts_with(&top)) {
                if fs::remove_dir(d).is_err() {
                    break; // not empty: something else lives there
                }
                at = d.parent();
            }
            Ok(())
        })
        .await?;
        self.referrers.remove(repo);
        self.tag_lists.remove(repo);
        self.index_name(repo, false).await
    }

    async fn remove_if_empty(&self, repo: &RepoName) -> StoreResult<bool> {
        let (dir, top) = (self.layout.repo(repo), self.layout.repositories());
        let removed = blocking(move || super::remove_empty_repo(&dir, &top)).await?;
        if removed {
            self.index_name(repo, false).await?;
        }
        Ok(removed)
    }

    async fn check_name_index(&self, repair: bool) -> StoreResult<Option<bool>> {
        let index = self.names.clone();
        Ok(Some(blocking(move || index.check(repair)).await?))
    }
}
