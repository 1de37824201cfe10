//! [`Registry`], the only door: the API, the web UI and the maintenance commands call it
//! and nothing below it. Client operations go through the layers ([`Service`], reached by
//! deref); what only an operator or a page asks (GC, scrub, retention, what is stored)
//! goes to the core.

use std::ops::{Deref, RangeInclusive};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use wharf_oci::{Descriptor, Digest, Reference, RepoName, Tag};

use super::audit::{Audit, AuditLayer};
use super::base::Rules;
use super::events::{Events, EventsLayer};
use super::gc::{GcOptions, GcReport};
use super::governance::GovernanceSummary;
use super::listing::ReachCache;
use super::proxy::{Evicted, Hosts, Proxy, ProxyLayer, ProxyStats};
use super::pulls::{PullCounter, PullsLayer};
use super::replication::Replication;
use super::retention::RetentionReport;
use super::scrub::{ScrubOptions, ScrubReport};
use super::service::{Service, Wrap};
use super::trust::{Trust, TrustLayer, TrustRules};
use super::{Core, ManifestContent, Result};
use crate::config::governance::Governance;
use crate::config::proxy::ProxyConfig;
use crate::store::{BlobRead, Page, Store};

/// A registry: its layers around the core.
pub struct Registry {
    /// The outermost layer: where every client operation enters.
    service: Arc<dyn Service>,
    core: Arc<Core>,
    events: Option<Arc<Events>>,
    proxy_stats: Option<Arc<ProxyStats>>,
    /// The transparent mirror's upstreams by `?ns=` host, when any is given with `host:`.
    mirror_hosts: Option<Arc<Hosts>>,
    pub(super) audit: Option<Arc<Audit>>,
    pulls: Option<Arc<PullCounter>>,
    reach: ReachCache,
    replication: Option<Arc<Replication>>,
    /// The `trust:` rules, and the service below events and pull counts they read
    /// signatures through.
    trust: Option<(Arc<Trust>, Arc<dyn Service>)>,
}

/// Client operations enter through the outermost layer.
impl Deref for Registry {
    type Target = dyn Service;

    fn deref(&self) -> &Self::Target {
        &*self.service
    }
}

/// How a registry is put together. Layers go on in a fixed order whatever the order of
/// the calls, outermost first: those added with [`RegistryBuilder::layer`] (the last one
/// outermost), audit, trust, events, pull counts (where the store keeps them), the pull-through cache,
/// then the core.
pub struct RegistryBuilder {
    core: Core,
    proxy: Option<Proxy>,
    events: Option<Arc<Events>>,
    audit: Option<Arc<Audit>>,
    trust: Option<TrustRules>,
    wraps: Vec<Wrap>,
    replication: Option<Arc<Replication>>,
}

impl RegistryBuilder {
    pub fn governance(mut self, governance: Arc<Governance>) -> Self {
        self.core.governance = governance;
        self
    }

    pub fn rules(mut self, rules: Rules) -> Self {
        self.core.rules = rules;
        self
    }

    /// Serve the repositories `proxy` routes from their upstreams.
    pub fn proxy(mut self, proxy: Option<Proxy>) -> Self {
        self.proxy = proxy;
        self
    }

    /// Record what clients push, pull, mount and delete.
    pub fn events(mut self, events: Option<Arc<Events>>) -> Self {
        self.events = events;
        self
    }

    /// Record who changed what in the audit log.
    pub fn audit(mut self, audit: Option<Arc<Audit>>) -> Self {
        self.audit = audit;
        self
    }

    /// Replicate to other registries and sync from upstreams (`replication:`).
    pub fn replication(mut self, replication: Option<Arc<Replication>>) -> Self {
        self.replication = replication;
        self
    }

    /// Refuse (or flag) pulls no trusted signature covers, as `trust:` says.
    pub fn trust(mut self, trust: Option<TrustRules>) -> Self {
        self.trust = trust;
        self
    }

    /// Wrap the service in one more layer, outside every other.
    pub fn layer(
        mut self,
        wrap: impl FnOnce(Arc<dyn Service>) -> Arc<dyn Service> + Send + 'static,
    ) -> Self {
        self.wraps.push(Box::new(wrap));
        self
    }

    pub fn build(mut self) -> Registry {
        self.core.events = self.events.clone();
        let core = Arc::new(self.core);
        let mut service: Arc<dyn Service> = core.clone();
        let mut proxy_stats = None;
        let mut mirror_hosts = None;
        if let Some(proxy) = self.proxy {
            proxy_stats = Some(proxy.stats.clone());
            mirror_hosts = proxy.hosts.clone();
            service = Arc::new(ProxyLayer::new(service, core.clone(), proxy));
        }
        // What the trust layer reads signatures through: its reads are no client's pulls.
        let below = service.clone();
        // A read-only registry writes nothing to its storage, counts included.
        let pulls = match core.rules().read_only {
            true => None,
            false => core
                .store
                .pulls
                .clone()
                .map(|p| Arc::new(PullCounter::new(p))),
        };
        if let Some(counter) = &pulls {
            service = Arc::new(PullsLayer::new(service, counter.clone()));
        }
        if let Some(events) = &self.events {
            service = Arc::new(EventsLayer::new(service, events.clone()));
        }
        // Outside events and pull counts: a refused pull is neither.
        let trust = self.trust.map(|t| Arc::new(Trust::new(t, core.clone())));
        if let Some(t) = &trust {
            service = Arc::new(TrustLayer::new(service, below.clone(), t.clone()));
        }
        // Outside events: a record notes how the whole operation ended.
        if let Some(audit) = &self.audit {
            service = Arc::new(AuditLayer::new(service, audit.clone()));
        }
        for wrap in self.wraps {
            service = wrap(service);
        }
        Registry {
            service,
            core,
            events: self.events,
            proxy_stats,
            mirror_hosts,
            audit: self.audit,
            pulls,
            reach: ReachCache::default(),
            replication: self.replication,
            trust: trust.map(|t| (t, below)),
        }
    }
}

/// What the store holds, for an operator's page.
pub struct StorageSummary {
    /// What a person would call the storage: a path, a bucket.
    pub describe: String,
    pub repositories: usize,
    pub blobs: usize,
    pub blob_bytes: u64,
    pub uploads: usize,
    pub upload_bytes: u64,
    pub rules: Rules,
}

impl Registry {
    pub fn builder(store: Store) -> RegistryBuilder {
        RegistryBuilder {
            core: Core::new(store),
            proxy: None,
            events: None,
            audit: None,
            trust: None,
            wraps: Vec::new(),
            replication: None,
        }
    }

    /// The core, for the background jobs that run over it.
    pub(super) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The event log, where one is kept (for `/v2/_events` and deliveries).
    pub fn events(&self) -> Option<&Arc<Events>> {
        self.events.as_ref()
    }

    /// Replication and sync, when `replication:` configures them.
    pub fn replication(&self) -> Option<&Arc<Replication>> {
        self.replication.as_ref()
    }

    /// Whether an event of `action` would be recorded, so that front ends build the
    /// origin of a request only when something will use it.
    pub fn wants_event(&self, action: &str) -> bool {
        self.events.as_ref().is_some_and(|e| e.wants(action))
    }

    /// Whether reads need their origin built: an event or an audit record of pulls.
    pub fn records_pulls(&self) -> bool {
        self.wants_event(super::events::envelope::PULL)
            || self.audit.as_ref().is_some_and(|a| a.audits_pulls())
    }

    pub(super) fn reach_cache(&self) -> &ReachCache {
        &self.reach
    }

    /// The pull counter, where the store keeps counts.
    pub(super) fn pull_counter(&self) -> Option<&Arc<PullCounter>> {
        self.pulls.as_ref()
    }

    /// The pull-through cache's counters, when there is one.
    pub fn proxy_stats(&self) -> Option<Arc<ProxyStats>> {
        self.proxy_stats.clone()
    }

    /// The transparent mirror's hosts (`proxy.upstreams[].host`), when there are any.
    pub fn mirror_hosts(&self) -> Option<&Hosts> {
        self.mirror_hosts.as_deref()
    }

    pub fn rules(&self) -> Rules {
        self.core.rules()
    }

    /// Where a client may fetch a stored blob itself (a presigned URL), if anywhere.
    pub async fn blob_redirect(&self, digest: &Digest) -> Result<Option<String>> {
        Ok(self.core.store.blobs.redirect(digest).await?)
    }

    /// A stored blob's bytes, or a range of them.
    pub async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<RangeInclusive<u64>>,
    ) -> Result<BlobRead> {
        Ok(self.core.store.blobs.read(digest, range).await?)
    }

    /// Small stored content (an image config) whole, or None if unknown or over `limit`.
    pub async fn small_blob(&self, digest: &Digest, limit: u64) -> Result<Option<Bytes>> {
        Ok(self.core.store.blobs.get(digest, limit).await?)
    }

    /// The manifest as stored here, whatever an upstream holds: what a page shows.
    pub async fn stored_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestContent>> {
        self.core.stored_manifest(repo, reference).await
    }

    /// The tags stored here, sorted, after `last`, at most `n`.
    pub async fn stored_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Option<Page>> {
        Ok(self.core.store.meta.list_tags(repo, last, n).await?)
    }

    pub async fn stored_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>> {
        Ok(self.core.store.meta.referrers(repo, subject).await?)
    }

    /// When `tag` was last pushed, if the store knows.
    pub async fn tag_pushed(&self, repo: &RepoName, tag: &Tag) -> Result<Option<SystemTime>> {
        Ok(self.core.store.meta.tag_pushed(repo, tag).await?)
    }

    /// What the `trust:` rules say of a stored manifest, for a page; None without rules.
    pub async fn trust_status(
        &self,
        repo: &RepoName,
        content: &ManifestContent,
    ) -> Result<Option<super::trust::TrustStatus>> {
        match &self.trust {
            Some((trust, below)) => Ok(Some(trust.status(&**below, repo, content).await?)),
            None => Ok(None),
        }
    }

    pub async fn storage_summary(&self) -> Result<StorageSummary> {
        let store = &self.core.store;
        let (repos, blobs, uploads) = tokio::join!(
            store.meta.list_repos(None, None),
            store.blobs.list_blobs(),
            store.blobs.list_uploads()
        );
        let (repos, blobs, uploads) = (repos?, blobs?, uploads?);
        Ok(StorageSummary {
            describe: store.describe.clone(),
            repositories: repos.items.len(),
            blobs: blobs.len(),
            blob_bytes: blobs.iter().map(|b| b.size).sum(),
            uploads: uploads.len(),
            upload_bytes: uploads.iter().map(|u| u.size).sum(),
            rules: self.rules(),
        })
    }

    pub async fn collect_garbage(&self, opts: &GcOptions) -> Result<GcReport> {
        let report = self.core.collect_garbage(opts).await;
        self.job_ran("gc", &report, gc_outcome).await;
        report
    }

    /// A collection as an operator's page asks for it: from the review queues where the
    /// store keeps them (so its cost follows the garbage), else mark-and-sweep.
    pub async fn collect(&self, opts: &GcOptions) -> Result<GcReport> {
        if !self.has_review_queue() {
            return self.collect_garbage(opts).await;
        }
        let drain = super::gc_queue::DrainOptions {
            dry_run: opts.dry_run,
            delete_untagged: opts.delete_untagged,
            due: crate::store::queue::Due::QueuedBefore(opts.grace),
        };
        self.drain_review_queues(&drain).await
    }

    /// Whether garbage collection runs from review queues here (a store with `database:`).
    pub fn has_review_queue(&self) -> bool {
        self.core.review_queue().is_some()
    }

    pub async fn drain_review_queues(
        &self,
        opts: &super::gc_queue::DrainOptions,
    ) -> Result<GcReport> {
        let report = self.core.drain_review_queues(opts).await;
        self.job_ran("gc", &report, gc_outcome).await;
        report
    }

    pub async fn scrub(&self, opts: &ScrubOptions) -> Result<ScrubReport> {
        let report = self.core.scrub(opts).await;
        let done = |r: &ScrubReport| format!("ok: {} problems", r.problems());
        self.job_ran("scrub", &report, done).await;
        report
    }

    pub async fn apply_retention(&self, dry_run: bool) -> Result<RetentionReport> {
        let report = self.core.apply_retention(dry_run).await;
        let done = |r: &RetentionReport| {
            let verb = if r.dry_run { "would delete" } else { "deleted" };
            format!(
                "ok: {verb} {} tags, {} manifests",
                r.tags.len(),
                r.manifests.len()
            )
        };
        self.job_ran("retention", &report, done).await;
        report
    }

    pub async fn evict_cached(&self, config: &ProxyConfig) -> Result<Evicted> {
        self.core.evict_cached(config).await
    }

    pub async fn governance_summary(&self) -> Result<GovernanceSummary> {
        self.core.governance_summary().await
    }
}

/// A collection's line in the audit log.
fn gc_outcome(r: &GcReport) -> String {
    let verb = if r.dry_run { "would free" } else { "freed" };
    format!(
        "ok: {} blobs, {} bytes {verb}",
        r.blobs.len(),
        r.bytes_freed
    )
}
