//! Online garbage collection: mark what tags (or every manifest) reach, sweep the rest,
//! while pushes go on. Why it is safe is written down in `docs/storage.md`; in short:
//! - the mark's start `m` is fixed under the collector lock, so every write either
//!   finished before it (and the mark sees it) or retains what it needs at or after `m`;
//! - only content last retained before `m - grace` is a candidate, which protects pushes
//!   whose blobs are up but whose manifest is not yet;
//! - each deletion rechecks, under the collector lock, that its victim was not retained
//!   since `m`, and removes a blob's links before the blob, so a crash leaves at most an
//!   unlinked orphan for the next run.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use wharf_oci::{Digest, RepoName};

use super::{Core, Error, Result};
use crate::store::{ManifestRecord, StoreError};

/// Deletions made under one hold of the collector lock: small, so writers wait little.
const BATCH: usize = 64;
/// The pause between batches, for writers that waited.
const WRITERS_TURN: Duration = Duration::from_millis(2);
/// Blobs deleted at once within a batch.
const PARALLEL_DELETES: usize = 8;
/// Manifests read at once while marking.
const READ_AHEAD: usize = 16;

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub dry_run: bool,
    /// registry:2's `--delete-untagged`: manifests no tag reaches are deleted too.
    pub delete_untagged: bool,
    /// Content retained more recently than this before the mark is kept.
    pub grace: Duration,
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: usize,
    pub manifests_marked: usize,
    pub blobs_marked: usize,
    /// Untagged manifests deleted (or, dry run, eligible).
    pub manifests: Vec<ManifestEntry>,
    /// Blobs deleted (or eligible), with their sizes.
    pub blobs: Vec<BlobEntry>,
    pub bytes_freed: u64,
    /// Repository links removed because their blob went.
    pub links_removed: usize,
    /// Unreferenced blobs kept because they were retained within the grace period.
    pub blobs_held: usize,
    /// Candidates a writer retained after the mark began; from the review queues, blobs
    /// found referenced again.
    pub blobs_rescued: usize,
    /// Untagged manifests kept because they were put within the grace period.
    pub manifests_held: usize,
    /// Repositories left with nothing (no tag, manifest, link or upload), dropped from
    /// the catalog. Not in a dry run.
    pub repositories_removed: Vec<String>,
    /// Review-queue rows reviewed (a drain with a database; 0 for mark-and-sweep).
    pub reviewed: usize,
}

#[derive(Debug, Serialize)]
pub struct ManifestEntry {
    pub repository: String,
    pub digest: Digest,
}

#[derive(Debug, Serialize)]
pub struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
}

/// What the mark found.
#[derive(Default)]
struct Marked {
    blobs: HashSet<Digest>,
    manifests: usize,
    untagged: Vec<(RepoName, Digest)>,
    /// Untagged manifests within the grace period.
    held: usize,
    links: HashMap<Digest, Vec<RepoName>>,
}

/// The records of `manifests`, read a few at a time. Owned futures, so that the
/// collection can run on a spawned task.
pub(super) async fn read_records(
    store: &crate::store::Store,
    repo: &RepoName,
    manifests: &[(Digest, SystemTime)],
) -> Result<HashMap<Digest, ManifestRecord>> {
    let reads = manifests.iter().map(|(d, _)| {
        let (meta, d, repo) = (store.meta.clone(), d.clone(), repo.to_string());
        async move {
            match meta.manifest_record(&d).await {
                Ok(r) => Ok(r.map(|r| (d, r))),
                Err(StoreError::Corrupt { why, .. }) => Err(Error::Store(StoreError::Corrupt {
                    what: format!("manifest {d} in {repo}"),
                    why: format!("{why}; garbage collection cannot tell what it needs, so it stops: run `wharf scrub` to find and repair it"),
                })),
                Err(e) => Err(Error::from(e)),
            }
        }
    });
    let found: Vec<Option<(Digest, ManifestRecord)>> =
        futures::stream::iter(reads.collect::<Vec<_>>())
            .buffer_unordered(READ_AHEAD)
            .try_collect()
            .await?;
    Ok(found.into_iter().flatten().collect())
}

impl Core {
    pub async fn collect_garbage(&self, opts: &GcOptions) -> Result<GcReport> {
        let started = Instant::now();
        let store = &self.store;
        // A dry run deletes nothing, so it needs no locks, and works on a read-only store.
        let _job = match opts.dry_run {
            true => None,
            false => Some(store.locks.try_job("gc").await?.ok_or_else(|| {
                Error::Store(StoreError::NotAStore(
                    "another garbage collection is running on this store; wait for it to finish"
                        .into(),
                ))
            })?),
        };
        let mark_start = match opts.dry_run {
            true => SystemTime::now(),
            false => {
                let _exclusive = store.locks.collector().await?;
                store.blobs.now().await?
            }
        };
        let cutoff = mark_start
            .checked_sub(opts.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let repos = store.meta.list_repos(None, None).await?.items;
        let mut marked = Marked::default();
        for name in &repos {
            let Ok(repo) = name.parse::<RepoName>() else {
                continue;
            };
            self.mark_repo(&repo, opts, cutoff, &mut marked).await?;
        }
        let mut report = GcReport {
            dry_run: opts.dry_run,
            repositories: repos.len(),
            manifests_marked: marked.manifests,
            manifests_held: marked.held,
            ..GcReport::default()
        };
        self.sweep_manifests(&marked.untagged, mark_start, opts.dry_run, &mut report)
            .await?;
        let mut candidates = Vec::new();
        for blob in store.blobs.list_blobs().await? {
            if marked.blobs.contains(&blob.digest) {
                continue;
            }
            if blob.retained >= cutoff {
                report.blobs_held += 1;
            } else {
                candidates.push((blob.digest, blob.size));
            }
        }
        report.blobs_marked = marked.blobs.len();
        self.sweep_blobs(
            candidates,
            &marked.links,
            mark_start,
            opts.dry_run,
            &mut report,
        )
        .await?;
        if !opts.dry_run {
            self.remove_empty_repos(&repos, &mut report).await?;
            let figures = [
                ("blobs_deleted", report.blobs.len() as u64),
                ("manifests_deleted", report.manifests.len() as u64),
                ("bytes_freed", report.bytes_freed),
            ];
            self.record_run("gc", started.elapsed(), &figures).await;
            if !report.blobs.is_empty() {
                self.recount_after_gc().await;
            }
        }
        Ok(report)
    }

    async fn mark_repo(
        &self,
        repo: &RepoName,
        opts: &GcOptions,
        cutoff: SystemTime,
        marked: &mut Marked,
    ) -> Result<()> {
        let meta = &self.store.meta;
        let manifests = meta.list_manifests(repo).await?;
        let records = read_records(&self.store, repo, &manifests).await?;
        let keep: HashSet<Digest> = if opts.delete_untagged {
            meta.tag_targets(repo)
                .await?
                .into_iter()
                .filter_map(|(_, target)| target.ok())
                .collect()
        } else {
            manifests.iter().map(|(d, _)| d.clone()).collect()
        };
        let keep = reachable(keep, &records);
        let listed: HashSet<&Digest> = manifests.iter().map(|(d, _)| d).collect();
        for d in &keep {
            marked.blobs.insert(d.clone());
            match records.get(d) {
                Some(r) => {
                    marked.manifests += 1;
                    marked.blobs.extend(r.blobs.iter().chain(&r.foreign).cloned());
                }
                // Without its bytes nobody can say what it keeps alive: stop, not guess.
                None if listed.contains(d) => {
                    return Err(Error::Store(StoreError::Corrupt {
                        what: format!("manifest {d} in {repo}"),
                        why: "its bytes are missing, so garbage collection cannot tell what it needs and stops: run `wharf scrub --repair`".into(),
                    }))
                }
                None => {}
            }
        }
        for (d, put) in manifests {
            match (keep.contains(&d), put < cutoff) {
                (true, _) => {}
                (false, true) => marked.untagged.push((repo.clone(), d)),
                (false, false) => marked.held += 1,
            }
        }
        for d in meta.list_blob_links(repo).await? {
            marked.links.entry(d).or_default().push(repo.clone());
        }
        Ok(())
    }

    /// Repositories the sweep left with nothing leave the catalog, as they would had they
    /// never been pushed to; each checked and removed under the collector lock.
    async fn remove_empty_repos(&self, repos: &[String], report: &mut GcReport) -> Result<()> {
        for batch in repos.chunks(BATCH) {
            let held = Instant::now();
            let exclusive = self.store.locks.collector().await?;
            for name in batch {
                let Ok(repo) = name.parse::<RepoName>() else {
                    continue;
                };
                if self.store.meta.remove_if_empty(&repo).await? {
                    report.repositories_removed.push(name.clone());
                }
            }
            drop(exclusive);
            tokio::time::sleep(held.elapsed().min(WRITERS_TURN)).await;
        }
        Ok(())
    }

    async fn sweep_manifests(
        &self,
        untagged: &[(RepoName, Digest)],
        mark_start: SystemTime,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<()> {
        for batch in untagged.chunks(BATCH) {
            let held = Instant::now();
            let exclusive = match dry_run {
                true => None,
                false => Some(self.store.locks.collector().await?),
            };
            for (repo, digest) in batch {
                let gone = dry_run
                    || self
                        .store
                        .meta
                        .delete_manifest_unless_put(repo, digest, mark_start)
                        .await?;
                if gone {
                    report.manifests.push(ManifestEntry {
                        repository: repo.to_string(),
                        digest: digest.clone(),
                    });
                }
            }
            if exclusive.is_some() {
                drop(exclusive);
                tokio::time::sleep(held.elapsed().min(WRITERS_TURN)).await; // as in sweep_blobs
            }
        }
        Ok(())
    }

    async fn sweep_blobs(
        &self,
        candidates: Vec<(Digest, u64)>,
        links: &HashMap<Digest, Vec<RepoName>>,
        mark_start: SystemTime,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<()> {
        if dry_run {
            for (digest, size) in candidates {
                report.bytes_freed += size;
                report.blobs.push(BlobEntry { digest, size });
            }
            return Ok(());
        }
        for batch in candidates.chunks(BATCH) {
            let held = Instant::now();
            let swept: Vec<Swept> = {
                let _exclusive = self.store.locks.collector().await?;
                // Deletions of a batch overlap: the filesystem's latency, not its
                // throughput, is what a one-at-a-time sweep waits on.
                let deletes: Vec<_> = batch
                    .iter()
                    .map(|(digest, size)| self.sweep_blob(digest.clone(), *size, links, mark_start))
                    .collect();
                futures::stream::iter(deletes)
                    .buffer_unordered(PARALLEL_DELETES)
                    .try_collect()
                    .await?
            };
            for s in swept {
                report.links_removed += s.links;
                match s.outcome {
                    Outcome::Deleted(size) => {
                        report.bytes_freed += size;
                        report.blobs.push(BlobEntry {
                            digest: s.digest,
                            size,
                        });
                    }
                    Outcome::Rescued => report.blobs_rescued += 1,
                    Outcome::Gone => {}
                }
            }
            // Let the writers that queued behind this batch in before the next one takes
            // the lock again (waiters woken by a release need a moment to run).
            tokio::time::sleep(held.elapsed().min(WRITERS_TURN)).await;
        }
        Ok(())
    }

    /// One candidate, under the collector lock: recheck, then links, then the blob.
    async fn sweep_blob(
        &self,
        digest: Digest,
        size: u64,
        links: &HashMap<Digest, Vec<RepoName>>,
        mark_start: SystemTime,
    ) -> Result<Swept> {
        let (blobs, meta) = (&self.store.blobs, &self.store.meta);
        let mut swept = Swept {
            digest: digest.clone(),
            links: 0,
            outcome: Outcome::Gone,
        };
        let digest = &digest;
        match blobs.retained(digest).await? {
            Some(t) if t < mark_start => {}
            Some(_) => {
                swept.outcome = Outcome::Rescued;
                return Ok(swept);
            }
            None => return Ok(swept),
        }
        // Links first: a killed collector leaves an unlinked orphan, which the next run
        // takes, never a link to nothing.
        for repo in links.get(digest).into_iter().flatten() {
            if meta.unlink_blob(repo, digest).await? {
                swept.links += 1;
            }
        }
        if blobs.delete_unless_retained(digest, mark_start).await? {
            swept.outcome = Outcome::Deleted(size);
        }
        Ok(swept)
    }
}

struct Swept {
    digest: Digest,
    links: usize,
    outcome: Outcome,
}

enum Outcome {
    Deleted(u64),
    Rescued,
    Gone,
}

/// `roots` with every child of a reached index and every referrer of a reached manifest.
pub(super) fn reachable(
    mut keep: HashSet<Digest>,
    records: &HashMap<Digest, ManifestRecord>,
) -> HashSet<Digest> {
    loop {
        let before = keep.len();
        let children: Vec<Digest> = keep
            .iter()
            .filter_map(|d| records.get(d))
            .flat_map(|r| r.children.iter().cloned())
            .collect();
        keep.extend(children);
        for (d, r) in records {
            if r.subject().is_some_and(|s| keep.contains(s)) {
                keep.insert(d.clone());
            }
        }
        if keep.len() == before {
            return keep;
        }
    }
}
