//! Pull sync: a scheduled copy of whole repositories or namespaces from an upstream
//! registry into this one, as regsync and zot's sync do. Each tag is asked for with a
//! HEAD first (Docker Hub does not count HEADs against its limit) and copied only when
//! the digest here differs, so a second run moves nothing. Blobs already here are
//! skipped or mounted from the repository this run put them in; referrers come along
//! (the referrers API, and cosign's `sha256-<hex>.sig` tags of the digests copied).
//!
//! Pacing: a HEAD that says `RateLimit-Remaining: 0` makes the run wait its `Retry-After`
//! (or the limit's window, at most `MAX_PAUSE`); a 429 is waited out and retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use wharf_client::{ClientError, RegistryClient};
use wharf_oci::sync::lock;
use wharf_oci::{Descriptor, Digest, Manifest, ManifestKind, Reference, RepoName, Tag};

use super::push::is_referrer_tag;
use super::target::SYNC_AGENT;
use crate::config::replication::Sync;
use crate::registry::events::envelope::RequestRecord;
use crate::registry::events::Origin;
use crate::registry::{ByteStream, Registry};

/// The longest a run waits for an upstream's rate limit to reset before going on.
const MAX_PAUSE: Duration = Duration::from_secs(300);
const RATE_LIMIT_TRIES: u32 = 5;
/// Repositories synced at once: enough to hide each request's latency, few enough to be
/// gentle with an upstream.
const PARALLEL_REPOS: usize = 4;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncReport {
    pub name: String,
    pub repositories: usize,
    /// `repo:tag` copied (or, on a dry run, that would be).
    pub copied: Vec<String>,
    pub unchanged: usize,
    pub failed: Vec<String>,
    /// Bytes of blobs and manifests fetched from the upstream.
    pub bytes: u64,
}

pub struct SyncRun<'a> {
    pub registry: &'a Registry,
    pub entry: &'a Sync,
    pub client: &'a RegistryClient,
    /// Blobs this run stored, by the repository they went to, to mount elsewhere; shared
    /// by the repositories synced at once.
    stored: Arc<Mutex<HashMap<Digest, RepoName>>>,
    origin: Origin,
    report: SyncReport,
}

fn has_wildcard(glob: &str) -> bool {
    glob.contains(['*', '?', '[', '{'])
}

impl<'a> SyncRun<'a> {
    pub fn new(registry: &'a Registry, entry: &'a Sync, client: &'a RegistryClient) -> Self {
        let origin = Origin {
            request: RequestRecord {
                id: uuid::Uuid::new_v4().to_string(),
                method: "PUT".into(),
                useragent: SYNC_AGENT.into(),
                ..RequestRecord::default()
            },
            ..Origin::default()
        };
        SyncRun {
            registry,
            entry,
            client,
            stored: Arc::default(),
            origin,
            report: SyncReport {
                name: entry.name.clone(),
                ..SyncReport::default()
            },
        }
    }

    /// One pass over every repository the entry names, `PARALLEL_REPOS` at a time.
    pub async fn run(self, dry_run: bool) -> anyhow::Result<SyncReport> {
        let repos = self.repositories().await?;
        let mut report = SyncReport {
            repositories: repos.len(),
            ..self.report.clone()
        };
        let mut groups: Vec<Vec<RepoName>> = vec![Vec::new(); PARALLEL_REPOS];
        for (i, repo) in repos.into_iter().enumerate() {
            groups[i % PARALLEL_REPOS].push(repo);
        }
        let mut runs = Vec::new();
        for group in groups.into_iter().filter(|g| !g.is_empty()) {
            let mut run = SyncRun {
                registry: self.registry,
                entry: self.entry,
                client: self.client,
                stored: self.stored.clone(),
                origin: self.origin.clone(),
                report: SyncReport::default(),
            };
            runs.push(async move {
                for repo in group {
                    if let Err(e) = run.repository(&repo, dry_run).await {
                        run.report.failed.push(format!("{repo}: {e:#}"));
                    }
                }
                run.report
            });
        }
        for r in futures::future::join_all(runs).await {
            report.copied.extend(r.copied);
            report.unchanged += r.unchanged;
            report.failed.extend(r.failed);
            report.bytes += r.bytes;
        }
        report.copied.sort();
        Ok(report)
    }

    async fn repositories(&self) -> anyhow::Result<Vec<RepoName>> {
        let globs = &self.entry.repositories;
        let mut names: Vec<String> = if globs.iter().any(|g| has_wildcard(g.as_str())) {
            let catalog = self.client.catalog().await?;
            catalog
                .into_iter()
                .filter(|r| globs.iter().any(|g| g.is_match(r)))
                .collect()
        } else {
            globs.iter().map(|g| g.as_str().to_owned()).collect()
        };
        names.sort();
        names.dedup();
        names
            .iter()
            .map(|n| {
                n.parse()
                    .map_err(|e| anyhow::anyhow!("upstream repository {n:?}: {e}"))
            })
            .collect()
    }

    async fn repository(&mut self, repo: &RepoName, dry_run: bool) -> anyhow::Result<()> {
        let dest: RepoName = format!("{}{repo}", self.entry.destination)
            .parse()
            .map_err(|e| anyhow::anyhow!("destination for {repo}: {e}"))?;
        let all = self.client.list_tags(repo).await?;
        let mut copied_digests = Vec::new();
        for t in all
            .iter()
            .filter(|t| self.entry.takes_tag(t) && !is_referrer_tag(t))
        {
            let Ok(tag) = t.parse::<Tag>() else { continue };
            match self.tag(repo, &dest, &tag, dry_run).await {
                Ok(Some(digest)) => copied_digests.push(digest),
                Ok(None) => {}
                Err(e) => self.report.failed.push(format!("{repo}:{t}: {e:#}")),
            }
        }
        // cosign's signatures of what was kept here: `sha256-<hex>.sig` and the like.
        for t in all.iter().filter(|t| is_referrer_tag(t)) {
            let hex = &t["sha256-".len().."sha256-".len() + 64];
            if !copied_digests.iter().any(|d: &Digest| d.hex() == hex) {
                continue;
            }
            let Ok(tag) = t.parse::<Tag>() else { continue };
            if let Err(e) = self.tag(repo, &dest, &tag, dry_run).await {
                self.report.failed.push(format!("{repo}:{t}: {e:#}"));
            }
        }
        Ok(())
    }

    /// Copy `repo:tag` unless the same is here already; the upstream digest either way
    /// (None when the tag is gone upstream).
    async fn tag(
        &mut self,
        repo: &RepoName,
        dest: &RepoName,
        tag: &Tag,
        dry_run: bool,
    ) -> anyhow::Result<Option<Digest>> {
        let reference = Reference::Tag(tag.clone());
        let Some(upstream) = self.head(repo, &reference).await? else {
            return Ok(None);
        };
        let here = self
            .registry
            .stored_manifest(dest, &reference)
            .await
            .map_err(|e| anyhow::anyhow!("reading {dest}:{tag} here: {e}"))?
            .map(|c| c.digest);
        if here.as_ref() == Some(&upstream) {
            self.report.unchanged += 1;
            return Ok(Some(upstream));
        }
        let top = self
            .rate_limited(|| self.client.get_manifest(repo, &reference))
            .await?;
        self.report.bytes += top.bytes.len() as u64;
        let parsed = Manifest::parse(&top.bytes, Some(&top.media_type))?;
        let chosen = self.choose(&parsed, &top)?;
        if here.as_ref() == Some(&chosen.digest) {
            self.report.unchanged += 1;
            return Ok(Some(upstream));
        }
        self.report.copied.push(format!("{repo}:{tag}"));
        if dry_run {
            return Ok(Some(upstream));
        }
        for child in &chosen.children {
            self.manifest(repo, dest, &Reference::Digest(child.digest.clone()))
                .await?;
        }
        if parsed.kind == ManifestKind::Image {
            self.blobs(repo, dest, &parsed).await?;
        }
        let (bytes, media_type) = if chosen.bytes.is_empty() {
            // One platform's child: stored above by digest, now under the tag too.
            let child = Reference::Digest(chosen.digest.clone());
            let c = self
                .registry
                .stored_manifest(dest, &child)
                .await
                .map_err(|e| anyhow::anyhow!("reading {dest}@{} here: {e}", chosen.digest))?
                .ok_or_else(|| anyhow::anyhow!("{dest}@{} was not stored", chosen.digest))?;
            (c.bytes, c.media_type.to_string())
        } else {
            (chosen.bytes, chosen.media_type)
        };
        self.put(dest, &reference, bytes, &media_type).await?;
        self.referrers(repo, dest, &top.digest).await?;
        Ok(Some(upstream))
    }

    /// HEAD, pacing by the upstream's limit.
    async fn head(&self, repo: &RepoName, reference: &Reference) -> anyhow::Result<Option<Digest>> {
        let headed = self
            .rate_limited(|| self.client.head_manifest(repo, reference))
            .await?;
        if headed.remaining == Some(0) {
            let pause = headed
                .retry_after
                .unwrap_or(Duration::from_secs(60))
                .min(MAX_PAUSE);
            tracing::info!(sync = %self.entry.name, ?pause, "the upstream's rate limit is spent; pausing");
            tokio::time::sleep(pause).await;
        }
        Ok(headed.digest)
    }

    async fn rate_limited<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut tries = 0;
        loop {
            match call().await {
                Err(ClientError::TooManyRequests { retry_after, .. })
                    if tries < RATE_LIMIT_TRIES =>
                {
                    tries += 1;
                    let pause = retry_after
                        .unwrap_or(Duration::from_secs(30))
                        .min(MAX_PAUSE);
                    tracing::info!(sync = %self.entry.name, ?pause, "the upstream answered 429; waiting");
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// What goes under the tag here: the manifest as it is, or with `platforms`, from an
    /// index the one child for the one platform wanted (as `wharf copy --platform`), or an
    /// index of the children wanted.
    fn choose(
        &self,
        parsed: &Manifest,
        top: &wharf_client::client::Manifest,
    ) -> anyhow::Result<Chosen> {
        let whole = Chosen {
            children: parsed.manifests.clone(),
            bytes: Bytes::from(top.bytes.clone()),
            media_type: top.media_type.clone(),
            digest: top.digest.clone(),
        };
        if parsed.kind != ManifestKind::Index || self.entry.platforms.is_empty() {
            return Ok(whole);
        }
        let wanted: Vec<Descriptor> = parsed
            .manifests
            .iter()
            .filter(|d| self.entry.platforms.iter().any(|p| platform_matches(d, p)))
            .cloned()
            .collect();
        if let [one] = wanted.as_slice() {
            return Ok(Chosen {
                children: Vec::new(),
                bytes: Bytes::new(),
                media_type: one.media_type.clone(),
                digest: one.digest.clone(),
            }
            .single(one.clone()));
        }
        let mut index: serde_json::Value = serde_json::from_slice(&top.bytes)?;
        index["manifests"] = serde_json::to_value(&wanted)?;
        let bytes = Bytes::from(serde_json::to_vec(&index)?);
        Ok(Chosen {
            digest: Digest::sha256_of(&bytes),
            children: wanted,
            bytes,
            media_type: top.media_type.clone(),
        })
    }

    /// A manifest (an index's child, a referrer) stored here by digest, with its blobs.
    async fn manifest(
        &mut self,
        repo: &RepoName,
        dest: &RepoName,
        reference: &Reference,
    ) -> anyhow::Result<()> {
        if self
            .registry
            .stored_manifest(dest, reference)
            .await
            .map_err(|e| anyhow::anyhow!("reading {dest}@{reference} here: {e}"))?
            .is_some()
        {
            return Ok(());
        }
        let m = self
            .rate_limited(|| self.client.get_manifest(repo, reference))
            .await?;
        self.report.bytes += m.bytes.len() as u64;
        let parsed = Manifest::parse(&m.bytes, Some(&m.media_type))?;
        for child in &parsed.manifests {
            Box::pin(self.manifest(repo, dest, &Reference::Digest(child.digest.clone()))).await?;
        }
        self.blobs(repo, dest, &parsed).await?;
        self.put(dest, reference, Bytes::from(m.bytes), &m.media_type)
            .await
    }

    async fn referrers(
        &mut self,
        repo: &RepoName,
        dest: &RepoName,
        digest: &Digest,
    ) -> anyhow::Result<()> {
        let found = self
            .rate_limited(|| self.client.referrers(repo, digest))
            .await?;
        for r in found {
            self.manifest(repo, dest, &Reference::Digest(r.digest))
                .await?;
        }
        Ok(())
    }

    async fn blobs(
        &mut self,
        repo: &RepoName,
        dest: &RepoName,
        manifest: &Manifest,
    ) -> anyhow::Result<()> {
        for blob in manifest.config.iter().chain(&manifest.layers) {
            self.blob(repo, dest, blob).await?;
        }
        Ok(())
    }

    async fn blob(
        &mut self,
        repo: &RepoName,
        dest: &RepoName,
        blob: &Descriptor,
    ) -> anyhow::Result<()> {
        let d = &blob.digest;
        let o = &self.origin;
        let here = self.registry.blob(o, dest, d, false).await;
        if matches!(here, Ok(Some(_))) {
            return Ok(());
        }
        let from = lock(&self.stored).get(d).cloned();
        if let Some(from) = from {
            if let Ok(Some(_)) = self.registry.mount(o, dest, d, &from).await {
                return Ok(());
            }
        }
        let (stream, _) = self
            .rate_limited(|| self.client.blob_stream_unverified(repo, d))
            .await?;
        // This registry verifies the digest as it writes.
        let body: ByteStream = Box::pin(stream.map_err(std::io::Error::other));
        self.registry
            .put_blob(o, dest, d, Some(blob.size), body)
            .await
            .map_err(|e| anyhow::anyhow!("storing blob {d} in {dest}: {e}"))?;
        self.report.bytes += blob.size;
        lock(&self.stored).insert(d.clone(), dest.clone());
        Ok(())
    }

    async fn put(
        &self,
        dest: &RepoName,
        reference: &Reference,
        bytes: Bytes,
        media_type: &str,
    ) -> anyhow::Result<()> {
        self.registry
            .put_manifest(&self.origin, dest, reference, Some(media_type), bytes)
            .await
            .map_err(|e| anyhow::anyhow!("storing {dest}:{reference} here: {e}"))?;
        Ok(())
    }
}

/// Active-active: the peer's digest for `repo:tag` won the conflict rule, so it is stored
/// here too. Without this, a peer that kept its own digest earlier (ours was then higher)
/// and a later, lower push here would each keep their own. The write carries the
/// replicator's agent, so it is not replicated back.
pub async fn adopt(
    registry: &Registry,
    target: &super::target::Target,
    repo: &RepoName,
    tag: &Tag,
) -> anyhow::Result<()> {
    let entry = Sync {
        name: target.name.clone(),
        url: target.url.clone(),
        username: None,
        password: None,
        repositories: Vec::new(),
        tags: None,
        platforms: Vec::new(),
        destination: String::new(),
        interval: crate::config::replication::DEFAULT_SYNC_INTERVAL,
    };
    let mut run = SyncRun::new(registry, &entry, &target.client);
    run.origin.request.useragent = super::target::REPLICATOR_AGENT.into();
    run.tag(repo, repo, tag, false).await?;
    Ok(())
}

/// What a tag is stored as here.
struct Chosen {
    /// Manifests stored first, by digest.
    children: Vec<Descriptor>,
    bytes: Bytes,
    media_type: String,
    digest: Digest,
}

impl Chosen {
    /// One child of an index, stored under the tag itself: its bytes are fetched then.
    fn single(self, child: Descriptor) -> Chosen {
        Chosen {
            children: vec![child],
            ..self
        }
    }
}

fn platform_matches(d: &Descriptor, wanted: &str) -> bool {
    let mut parts = wanted.split('/');
    match (parts.next(), parts.next()) {
        (Some(os), Some(arch)) => d.is_for_platform(os, arch, parts.next()),
        _ => false,
    }
}
