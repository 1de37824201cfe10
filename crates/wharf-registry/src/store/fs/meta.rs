//! Repository metadata as registry:2 keeps it: link files under `repositories/<name>/`.
//! Tags are cached in memory (every write in this process goes through here); referrers
//! are indexed per repository on first use by reading its manifests, then kept current.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use tokio::sync::OnceCell;
use wharf_oci::{Descriptor, Digest, Manifest, RepoName, Tag};

use super::durable::{sync_parent, write_atomic};
use super::{blocking, not_found_is_ok, read_link, Layout};
use crate::store::{paginate, BlobStore, ManifestRecord, MetaStore, Page, StoreError, StoreResult};

/// Manifests larger than this are not read when indexing referrers (Distribution's limit).
const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;

type ReferrerIndex = std::sync::RwLock<HashMap<Digest, Vec<Descriptor>>>;

pub struct FsMetaStore {
    layout: Layout,
    blobs: Arc<dyn BlobStore>,
    tags: DashMap<(RepoName, Tag), Digest>,
    referrers: DashMap<RepoName, Arc<OnceCell<ReferrerIndex>>>,
}

impl FsMetaStore {
    /// `blobs` is where manifests' bytes are read from when indexing referrers.
    pub fn new(layout: Layout, blobs: Arc<dyn BlobStore>) -> FsMetaStore {
        FsMetaStore {
            layout,
            blobs,
            tags: DashMap::new(),
            referrers: DashMap::new(),
        }
    }

    async fn referrer_index(&self, repo: &RepoName) -> StoreResult<Arc<OnceCell<ReferrerIndex>>> {
        let cell = self.referrers.entry(repo.clone()).or_default().clone();
        cell.get_or_try_init(|| self.build_referrer_index(repo))
            .await?;
        Ok(cell)
    }

    async fn build_referrer_index(&self, repo: &RepoName) -> StoreResult<ReferrerIndex> {
        let revisions = self.layout.revisions(repo);
        let digests = blocking(move || list_digest_dirs(&revisions)).await?;
        let mut index: HashMap<Digest, Vec<Descriptor>> = HashMap::new();
        for digest in digests {
            let Some(bytes) = self.blobs.get(&digest, MANIFEST_LIMIT).await? else {
                continue;
            };
            let Ok(manifest) = Manifest::parse(&bytes, None) else {
                continue;
            };
            if let Some(subject) = &manifest.subject {
                let entry = manifest.referrer_descriptor(digest, bytes.len() as u64);
                index.entry(subject.digest.clone()).or_default().push(entry);
            }
        }
        Ok(std::sync::RwLock::new(index))
    }

    /// Keep a loaded referrers index current; an unloaded one will read the disk when needed.
    fn update_referrers(
        &self,
        repo: &RepoName,
        f: impl FnOnce(&mut HashMap<Digest, Vec<Descriptor>>),
    ) {
        if let Some(cell) = self.referrers.get(repo) {
            if let Some(index) = cell.get() {
                f(&mut index.write().expect("referrer index lock"));
            }
        }
    }

    fn forget_tags_of(&self, repo: &RepoName) {
        self.tags.retain(|(r, _), _| r != repo);
    }
}

/// Digests named by `<dir>/<algorithm>/<hex>/` entries.
fn list_digest_dirs(dir: &Path) -> io::Result<Vec<Digest>> {
    let mut out = Vec::new();
    let algorithms = match fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
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

/// Names of repositories under `root`, found without descending into registry-internal
/// (`_`-prefixed) directories. Distribution lists every directory holding `_layers`, so a
/// repository with blobs but no manifest yet is listed too; one holding `_manifests` is
/// listed as well.
fn walk_repos(root: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match fs::read_dir(root) {
        Ok(it) => it,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut listed = false;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "_layers" || name == "_manifests" {
            if !listed && !prefix.is_empty() {
                out.push(prefix.to_owned());
                listed = true;
            }
        } else if !name.starts_with('_') {
            let child = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            walk_repos(&entry.path(), &child, out)?;
        }
    }
    Ok(())
}

#[async_trait]
impl MetaStore for FsMetaStore {
    async fn repo_exists(&self, repo: &RepoName) -> StoreResult<bool> {
        Ok(self.layout.repo(repo).is_dir())
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<()> {
        let link = self.layout.layer_link(repo, digest);
        let content = digest.to_string();
        blocking(move || {
            if read_link(&link).ok().flatten().is_some() {
                return Ok(());
            }
            write_atomic(&link, content.as_bytes())
        })
        .await?;
        Ok(())
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        Ok(self.layout.layer_link(repo, digest).is_file())
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        let dir = self.layout.layer_link(repo, digest);
        let dir = dir.parent().expect("link has a parent").to_owned();
        Ok(blocking(move || remove_dir_durably(&dir)).await?)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
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
        blocking(move || {
            write_atomic(&revision, content.as_bytes())?;
            if let Some((index, current)) = tag_links {
                write_atomic(&index, content.as_bytes())?;
                // `current` last: the tag moves only once everything it needs is durable.
                write_atomic(&current, content.as_bytes())?;
            }
            Ok(())
        })
        .await?;
        if let Some(t) = tag {
            self.tags.insert((repo.clone(), t.clone()), digest.clone());
        }
        if let Some((subject, descriptor)) = &manifest.referrer {
            self.update_referrers(repo, |index| {
                let list = index.entry(subject.clone()).or_default();
                if !list.iter().any(|d| d.digest == descriptor.digest) {
                    list.push(descriptor.clone());
                }
            });
        }
        Ok(())
    }

    async fn manifest_linked(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        Ok(self.layout.revision_link(repo, digest).is_file())
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<Digest>> {
        let key = (repo.clone(), tag.clone());
        if let Some(d) = self.tags.get(&key) {
            return Ok(Some(d.clone()));
        }
        let found =
            read_link(&self.layout.tag_current(repo, tag)).map_err(|e| StoreError::Corrupt {
                what: format!("tag {repo}:{tag}"),
                why: e.to_string(),
            })?;
        if let Some(d) = &found {
            self.tags.insert(key, d.clone());
        }
        Ok(found)
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        let revision = self.layout.revision_link(repo, digest);
        let tags_dir = self.layout.tags(repo);
        let target = digest.clone();
        let deleted = blocking(move || {
            let dir = revision.parent().expect("link has a parent").to_owned();
            if !remove_dir_durably(&dir)? {
                return Ok(false);
            }
            // As Distribution does: a deleted manifest takes the tags pointing at it along.
            if let Ok(tags) = fs::read_dir(&tags_dir) {
                for tag in tags.flatten() {
                    if read_link(&tag.path().join("current/link"))
                        .ok()
                        .flatten()
                        .as_ref()
                        == Some(&target)
                    {
                        remove_dir_durably(&tag.path())?;
                    }
                }
            }
            Ok(true)
        })
        .await?;
        if deleted {
            self.forget_tags_of(repo);
            self.update_referrers(repo, |index| {
                for list in index.values_mut() {
                    list.retain(|d| &d.digest != digest);
                }
            });
        }
        Ok(deleted)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<bool> {
        let dir = self.layout.tag_dir(repo, tag);
        self.tags.remove(&(repo.clone(), tag.clone()));
        Ok(blocking(move || remove_dir_durably(&dir)).await?)
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> StoreResult<Option<Page>> {
        let repo_dir = self.layout.repo(repo);
        let tags_dir = self.layout.tags(repo);
        let names = blocking(move || {
            if !repo_dir.is_dir() {
                return Ok(None);
            }
            let mut names = Vec::new();
            if let Ok(entries) = fs::read_dir(&tags_dir) {
                for e in entries {
                    let e = e?;
                    if e.path().join("current/link").is_file() {
                        names.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
            names.sort_unstable();
            Ok(Some(names))
        })
        .await?;
        Ok(names.map(|names| paginate(names.into_iter(), last, n)))
    }

    async fn list_repos(&self, last: Option<&str>, n: Option<usize>) -> StoreResult<Page> {
        let root = self.layout.repositories();
        let mut names = blocking(move || {
            let mut out = Vec::new();
            walk_repos(&root, "", &mut out)?;
            Ok(out)
        })
        .await?;
        names.sort_unstable();
        Ok(paginate(names.into_iter(), last, n))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> StoreResult<Vec<Descriptor>> {
        let cell = self.referrer_index(repo).await?;
        let index = cell
            .get()
            .expect("initialised")
            .read()
            .expect("referrer index lock");
        Ok(index.get(subject).cloned().unwrap_or_default())
    }
}
