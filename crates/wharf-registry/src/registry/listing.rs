//! What the web UI's lists show beyond names: each repository's tag count, size, last push
//! and pulls; a repository's tags sorted, filtered and paged, with their immutability.
//! Sizes come from the manifests the tags reach (layers, configs, an index's images and
//! the manifests themselves, each blob once), cached by manifest digest: content-addressed,
//! so an entry is never stale.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use futures::{StreamExt, TryStreamExt};
use wharf_oci::{Digest, Manifest, RepoName};

use super::{Registry, Result};
use crate::store::MANIFEST_LIMIT;

/// Repositories (or tags) read at once.
const AT_ONCE: usize = 8;
/// Manifests whose reach is remembered; past this the cache starts over.
const REACH_ENTRIES: usize = 50_000;

/// Blobs (with sizes) each manifest reaches, itself included.
#[derive(Default)]
pub struct ReachCache(DashMap<Digest, Arc<Vec<(Digest, u64)>>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepoSort {
    #[default]
    Name,
    /// Most recently pushed first.
    Pushed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagSort {
    /// Most recently pushed first.
    #[default]
    Pushed,
    Name,
}

/// One page of a longer list, and how long the list is.
pub struct Listing<T> {
    pub total: usize,
    pub items: Vec<T>,
}

pub struct RepoSummary {
    pub name: String,
    pub tags: usize,
    /// Bytes of every blob its tags reach, each once.
    pub size: u64,
    pub pushed: Option<SystemTime>,
    /// None where the store keeps no counts.
    pub pulls: Option<u64>,
}

pub struct TagSummary {
    pub name: String,
    pub digest: Digest,
    pub pushed: SystemTime,
    /// An `immutable:` rule covers it.
    pub immutable: bool,
}

type Pushes = Vec<(String, Digest, SystemTime)>;

fn page<T>(items: Vec<T>, offset: usize, n: usize) -> Vec<T> {
    items.into_iter().skip(offset).take(n).collect()
}

impl Registry {
    /// The repositories whose name contains `search` (all for "") that `visible` admits,
    /// sorted, `n` from `offset`, each summarised. The search is the store's (an index).
    pub async fn repository_list(
        &self,
        search: &str,
        visible: &(dyn Fn(&str) -> bool + Sync),
        sort: RepoSort,
        offset: usize,
        n: usize,
    ) -> Result<Listing<RepoSummary>> {
        let meta = &self.core().store.meta;
        let found = match search {
            "" => meta.list_repos(None, None).await?.items,
            s => meta.search_repos(s).await?,
        };
        let names: Vec<String> = found.into_iter().filter(|r| visible(r)).collect();
        let total = names.len();
        let mut known: HashMap<String, Pushes> = HashMap::new();
        let chosen = match sort {
            RepoSort::Name => page(names, offset, n),
            RepoSort::Pushed => {
                // Every visible repository's last push decides the order.
                known = futures::stream::iter(names)
                    .map(|name| async move {
                        let pushes = self.pushes_of(&name).await?;
                        Ok::<_, super::Error>((name, pushes))
                    })
                    .buffered(AT_ONCE)
                    .try_collect()
                    .await?;
                let mut order: Vec<(Option<SystemTime>, String)> = known
                    .iter()
                    .map(|(name, p)| (p.iter().map(|t| t.2).max(), name.clone()))
                    .collect();
                order.sort_by(|a, b| Reverse(a.0).cmp(&Reverse(b.0)).then(a.1.cmp(&b.1)));
                page(order.into_iter().map(|(_, n)| n).collect(), offset, n)
            }
        };
        let pulls = self.pull_counts(&chosen).await?;
        let known = &known;
        let mut items: Vec<RepoSummary> = futures::stream::iter(chosen)
            .map(|name| async move {
                let pushes = match known.get(&name) {
                    Some(p) => p.clone(),
                    None => self.pushes_of(&name).await?,
                };
                self.summarise(name, &pushes).await
            })
            .buffered(AT_ONCE)
            .try_collect()
            .await?;
        if let Some(pulls) = pulls {
            for (item, n) in items.iter_mut().zip(pulls) {
                item.pulls = Some(n);
            }
        }
        Ok(Listing { total, items })
    }

    async fn pushes_of(&self, name: &str) -> Result<Pushes> {
        match name.parse::<RepoName>() {
            Ok(repo) => Ok(self.core().store.meta.tag_pushes(&repo).await?),
            Err(_) => Ok(Vec::new()),
        }
    }

    async fn summarise(&self, name: String, pushes: &Pushes) -> Result<RepoSummary> {
        let targets: HashSet<&Digest> = pushes.iter().map(|t| &t.1).collect();
        let mut blobs: HashMap<Digest, u64> = HashMap::new();
        for d in targets {
            for (b, size) in self.reach(d).await?.iter() {
                blobs.insert(b.clone(), *size);
            }
        }
        Ok(RepoSummary {
            name,
            tags: pushes.len(),
            size: blobs.values().sum(),
            pushed: pushes.iter().map(|t| t.2).max(),
            pulls: None,
        })
    }

    /// Every blob `manifest` reaches, with sizes, itself included; nothing if its bytes
    /// are gone or do not parse (a page shows what it can).
    async fn reach(&self, manifest: &Digest) -> Result<Arc<Vec<(Digest, u64)>>> {
        if let Some(r) = self.reach_cache().0.get(manifest) {
            return Ok(r.clone());
        }
        let blobs = &self.core().store.blobs;
        let Some(bytes) = blobs.get(manifest, MANIFEST_LIMIT).await? else {
            return Ok(Arc::default());
        };
        let Ok(parsed) = Manifest::parse(&bytes, None) else {
            return Ok(Arc::default());
        };
        let mut out = vec![(manifest.clone(), bytes.len() as u64)];
        for d in parsed.config.iter().chain(&parsed.layers) {
            out.push((d.digest.clone(), d.size));
        }
        for child in &parsed.manifests {
            // An index names images, not indexes of indexes, in practice: one level.
            let reached = Box::pin(self.reach(&child.digest)).await?;
            out.extend(reached.iter().cloned());
        }
        let out = Arc::new(out);
        let cache = &self.reach_cache().0;
        if cache.len() >= REACH_ENTRIES {
            cache.clear();
        }
        cache.insert(manifest.clone(), out.clone());
        Ok(out)
    }

    /// `repo`'s tags whose names contain `filter`, sorted, `n` from `offset`; None when
    /// the repository is unknown.
    pub async fn tag_list(
        &self,
        repo: &RepoName,
        sort: TagSort,
        filter: &str,
        offset: usize,
        n: usize,
    ) -> Result<Option<Listing<TagSummary>>> {
        let core = self.core();
        if !core.store.meta.repo_exists(repo).await? {
            return Ok(None);
        }
        let mut tags: Pushes = core
            .store
            .meta
            .tag_pushes(repo)
            .await?
            .into_iter()
            .filter(|t| t.0.contains(filter))
            .collect();
        match sort {
            TagSort::Name => tags.sort_by(|a, b| a.0.cmp(&b.0)),
            TagSort::Pushed => tags.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0))),
        }
        let total = tags.len();
        let immutable = |t: &str| {
            core.governance
                .immutable
                .iter()
                .any(|r| r.matches(repo.as_str(), t))
        };
        let items = page(tags, offset, n)
            .into_iter()
            .map(|(name, digest, pushed)| TagSummary {
                immutable: immutable(&name),
                name,
                digest,
                pushed,
            })
            .collect();
        Ok(Some(Listing { total, items }))
    }
}
