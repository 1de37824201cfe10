//! Manifests through the cache: by digest from the store once fetched; by tag from the
//! store while the tag is fresh, re-checked upstream with a HEAD after its `ttl`, and
//! served stale (with a `Warning`) when the upstream cannot be asked.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use wharf_oci::{Digest, Manifest, Reference, RepoName, Tag};

use super::upstream::MANIFEST_TIMEOUT;
use super::{lease, ProxyLayer, ProxyStats, Remote, Route, UpstreamFailure};
use crate::registry::{Core, ManifestContent, Result, Served};
use crate::store::ManifestRecord;

/// A manifest fetch in flight: the second asker awaits the first one's fetch.
pub(super) type Flight = Shared<BoxFuture<'static, Result<Arc<Fetched>, UpstreamFailure>>>;

/// A manifest fetched from upstream and stored.
#[derive(Debug)]
pub(super) struct Fetched {
    digest: Digest,
    bytes: Bytes,
    media_type: Arc<str>,
}

impl ProxyLayer {
    /// The manifest `reference` names in the proxied `repo`, fetched and cached on a miss.
    pub async fn proxied_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        route: &Route,
    ) -> Result<Option<Served>> {
        let proxy = &self.proxy;
        let stats = &proxy.stats;
        let local = self.core.stored_manifest(repo, reference).await?;
        let tag = match reference {
            Reference::Digest(_) => {
                if let Some(content) = local {
                    ProxyStats::count(&stats.hits, 1);
                    return Ok(Some(Served::fresh(content)));
                }
                return self.fetch(repo, reference, None, route).await;
            }
            Reference::Tag(t) => t,
        };
        let remote = &route.remote;
        if local.is_some() && self.fresh(repo, tag.as_str(), remote.ttl).await {
            ProxyStats::count(&stats.hits, 1);
            return Ok(local.map(Served::fresh));
        }
        let upstream = remote
            .ask(
                Some(MANIFEST_TIMEOUT),
                remote.client.head_digest(&route.upstream_repo, reference),
            )
            .await;
        match (upstream, local) {
            (Ok(d), Some(content)) if d == content.digest => {
                self.confirm(repo, tag.as_str()).await;
                ProxyStats::count(&stats.hits, 1);
                Ok(Some(Served::fresh(content)))
            }
            (Ok(d), _) => {
                let by_digest = Reference::Digest(d);
                // The tag moved to a manifest cached already: retag it, fetch nothing.
                if let Some(content) = self.core.stored_manifest(repo, &by_digest).await? {
                    self.retag(repo, tag, &content).await?;
                    self.confirm(repo, tag.as_str()).await;
                    ProxyStats::count(&stats.hits, 1);
                    return Ok(Some(Served::fresh(content)));
                }
                let served = self.fetch(repo, &by_digest, Some(tag), route).await?;
                self.confirm(repo, tag.as_str()).await;
                Ok(served)
            }
            (Err(UpstreamFailure::NotFound), _) => Ok(None),
            (Err(failure), Some(content)) => {
                ProxyStats::count(&stats.errors, 1);
                ProxyStats::count(&stats.stale, 1);
                let why = failure.describe();
                tracing::warn!(repository = %repo, tag = tag.as_str(), upstream = %remote.url, error = %why, "serving a cached tag stale: the upstream could not confirm it");
                Ok(Some(Served {
                    content,
                    warning: Some(format!(
                        "110 - \"Response is Stale: the upstream {} could not be asked ({})\"",
                        remote.url,
                        header_text(&why)
                    )),
                    trust: None,
                }))
            }
            (Err(failure), None) => {
                ProxyStats::count(&stats.errors, 1);
                tracing::warn!(repository = %repo, tag = tag.as_str(), upstream = %remote.url, error = %failure.describe(), "upstream failed on an uncached tag");
                Err(failure.into_error(remote))
            }
        }
    }

    /// Point `tag` at a manifest the cache holds.
    async fn retag(&self, repo: &RepoName, tag: &Tag, content: &ManifestContent) -> Result<()> {
        retag(&self.core, repo, tag, content).await
    }

    /// The upstream's tags for a proxied repository, as registry:2's proxy lists them;
    /// None when the upstream cannot say (the cached tags are listed then).
    pub async fn proxied_tags(&self, route: &Route) -> Option<Vec<String>> {
        let remote = &route.remote;
        let listed = remote
            .ask(
                Some(MANIFEST_TIMEOUT),
                remote.client.list_tags(&route.upstream_repo),
            )
            .await;
        match listed {
            Ok(tags) => Some(tags),
            Err(e) => {
                tracing::warn!(upstream = %remote.url, error = %e.describe(), "listing tags upstream failed; listing the cached ones");
                None
            }
        }
    }

    /// Fetch `reference` (a digest) from upstream once however many ask, store it in
    /// `repo` (under `tag` when given) and serve it.
    async fn fetch(
        &self,
        repo: &RepoName,
        reference: &Reference,
        tag: Option<&Tag>,
        route: &Route,
    ) -> Result<Option<Served>> {
        let proxy = &self.proxy;
        let key = format!("{repo}@{reference}:{}", tag.map_or("", |t| t.as_str()));
        let flight = proxy.fetches.join_or_start(key, |landing| {
            let job = FetchJob {
                remote: route.remote.clone(),
                leases: proxy.leases.clone(),
                core: self.core.clone(),
                stats: proxy.stats.clone(),
                repo: repo.clone(),
                upstream_repo: route.upstream_repo.clone(),
                reference: reference.clone(),
                tag: tag.cloned(),
            };
            // Its own task: a client that hangs up does not stop the fetch.
            let task = tokio::spawn(async move {
                let fetched = job.run().await;
                drop(landing);
                fetched
            });
            async move {
                task.await.unwrap_or_else(|e| {
                    Err(UpstreamFailure::Failed(format!("the fetch failed: {e}")))
                })
            }
            .boxed()
            .shared()
        });
        let result = flight.await;
        match result {
            Ok(f) => {
                self.core
                    .manifests
                    .insert(f.digest.clone(), f.bytes.clone(), f.media_type.clone());
                Ok(Some(Served::fresh(ManifestContent {
                    digest: f.digest.clone(),
                    bytes: f.bytes.clone(),
                    media_type: f.media_type.clone(),
                })))
            }
            Err(UpstreamFailure::NotFound) => Ok(None),
            Err(failure) => {
                ProxyStats::count(&proxy.stats.errors, 1);
                tracing::warn!(repository = %repo, reference = %reference, upstream = %route.remote.url, error = %failure.describe(), "upstream manifest fetch failed");
                Err(failure.into_error(&route.remote))
            }
        }
    }
}

/// Text fit for inside a quoted header value: printable ASCII without quotes.
fn header_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => ' ',
        })
        .collect()
}

/// Point `tag` at a manifest the cache holds.
async fn retag(core: &Core, repo: &RepoName, tag: &Tag, content: &ManifestContent) -> Result<()> {
    let parsed = Manifest::parse(&content.bytes, Some(&content.media_type)).map_err(|e| {
        crate::registry::Error::refused(wharf_oci::ErrorCode::ManifestInvalid, e.to_string())
    })?;
    let mut record =
        ManifestRecord::of(&parsed, content.digest.clone(), content.bytes.len() as u64);
    record.children.clear(); // as when it was fetched: children come per platform
    let _writing = core.store.locks.writer().await?;
    core.publish_manifest(repo, &record, None, Some(tag)).await
}

/// One upstream manifest fetch, owned so it can be shared by every waiter.
struct FetchJob {
    remote: Arc<Remote>,
    leases: Arc<tokio::sync::Semaphore>,
    core: Arc<Core>,
    stats: Arc<ProxyStats>,
    repo: RepoName,
    upstream_repo: RepoName,
    reference: Reference,
    tag: Option<Tag>,
}

impl FetchJob {
    async fn run(self) -> Result<Arc<Fetched>, UpstreamFailure> {
        let failed = |e: crate::registry::Error| {
            UpstreamFailure::Failed(format!("the cache could not store it: {e}"))
        };
        // One fetch of this manifest into this repository across every process: another
        // one's fetch is waited for, and its result served.
        let name = lease::name("manifest", &format!("{}@{}", self.repo, self.reference));
        let ready = || self.core.stored_manifest(&self.repo, &self.reference);
        let leased = lease::lease_or_wait(&*self.core.store.locks, &self.leases, &name, ready)
            .await
            .map_err(failed)?;
        let _lease = match leased {
            lease::Leased::Mine(held) => held,
            lease::Leased::Done(content) => {
                if let Some(tag) = &self.tag {
                    retag(&self.core, &self.repo, tag, &content)
                        .await
                        .map_err(failed)?;
                }
                return Ok(Arc::new(Fetched {
                    digest: content.digest,
                    bytes: content.bytes,
                    media_type: content.media_type,
                }));
            }
        };
        let got = self
            .remote
            .ask(
                Some(MANIFEST_TIMEOUT),
                self.remote
                    .client
                    .get_manifest(&self.upstream_repo, &self.reference),
            )
            .await?;
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        self.stats
            .upstream_bytes
            .fetch_add(got.bytes.len() as u64, Ordering::Relaxed);
        let parsed = Manifest::parse(&got.bytes, Some(&got.media_type)).map_err(|e| {
            UpstreamFailure::Failed(format!("it served a manifest wharf cannot store: {e}"))
        })?;
        let bytes = Bytes::from(got.bytes);
        let mut record = ManifestRecord::of(&parsed, got.digest.clone(), bytes.len() as u64);
        // An index's children arrive later, one platform at a time, if ever: the store is
        // not asked to keep them alive now (GC reads an index's children from its bytes).
        record.children.clear();
        // Only the manifest: its blobs (and an index's children) are fetched when asked
        // for, so a pull of one platform fetches that platform alone.
        let stored = async {
            let _writing = self.core.store.locks.writer().await?;
            let (tag, bytes) = (self.tag.as_ref(), Some(bytes.clone()));
            self.core
                .publish_manifest(&self.repo, &record, bytes, tag)
                .await
        };
        stored.await.map_err(|e: crate::registry::Error| {
            UpstreamFailure::Failed(format!("the cache could not store it: {e}"))
        })?;
        tracing::info!(repository = %self.repo, digest = %got.digest, upstream = %self.remote.url, bytes = bytes.len(), "cached a manifest from upstream");
        Ok(Arc::new(Fetched {
            digest: got.digest,
            bytes,
            media_type: parsed.media_type.as_str().into(),
        }))
    }
}
