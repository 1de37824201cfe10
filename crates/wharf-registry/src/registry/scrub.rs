//! Scrub: re-hash every blob and check every link, tag and manifest against what is
//! really stored; with repair, move corrupt bytes aside and remove what points at nothing.
//!
//! Findings are problems (damage a client would hit) or garbage (space that garbage
//! collection or upload purging reclaims). A store is clean when it has no problems.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use wharf_oci::{Digest, DigestHasher, RepoName};

use super::{Core, Result};
use crate::store::{ManifestRecord, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A blob whose bytes do not hash to its digest.
    CorruptBlob,
    /// A blob that could not be read (permissions, I/O errors): never repaired, since its
    /// bytes may be fine.
    UnreadableBlob,
    /// A repository link to a blob that is not stored, which a manifest needs.
    LinkToMissingBlob,
    /// A link to a blob that is not stored and that no manifest needs: what Distribution's
    /// collector leaves behind, or an unlink a power cut undid.
    StaleLink,
    /// A manifest whose bytes are gone.
    ManifestMissing,
    /// A manifest that does not parse.
    ManifestUnparseable,
    /// A manifest that needs a blob or child manifest that is not stored.
    ManifestIncomplete,
    /// A tag whose link cannot be read, or names a manifest the repository lacks.
    DanglingTag,
    /// A blob nothing references (garbage collection reclaims it).
    OrphanBlob,
    /// An upload untouched for longer than upload purging allows.
    StaleUpload,
    /// A quota's stored usage that differs from a count of its links (a push that failed
    /// between its charge and its link, files edited by hand): repair stores the count.
    QuotaDrift,
    /// The store's index of repository names disagrees with the repositories it holds
    /// (another program wrote the tree): repair rewrites it.
    StaleNameIndex,
}

impl Kind {
    pub fn is_problem(self) -> bool {
        !matches!(
            self,
            Kind::OrphanBlob
                | Kind::StaleUpload
                | Kind::StaleLink
                | Kind::QuotaDrift
                | Kind::StaleNameIndex
        )
    }
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// None for blobs, which belong to no single repository.
    pub repository: Option<String>,
    /// The digest, tag or upload id concerned.
    pub subject: String,
    pub detail: String,
    /// What repair did about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct ScrubReport {
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    pub repositories: usize,
    pub findings: Vec<Finding>,
}

impl ScrubReport {
    pub fn problems(&self) -> usize {
        self.findings.iter().filter(|f| f.kind.is_problem()).count()
    }

    fn add(&mut self, kind: Kind, repo: Option<&RepoName>, subject: String, detail: String) {
        self.findings.push(Finding {
            kind,
            repository: repo.map(|r| r.to_string()),
            subject,
            detail,
            repaired: None,
        });
    }
}

pub struct ScrubOptions {
    pub repair: bool,
    /// Uploads older than this are reported as stale.
    pub stale_uploads: Duration,
    /// Called with the size of each blob once it is hashed (for a progress bar).
    pub progress: Option<Box<dyn Fn(u64) + Send + Sync>>,
    /// Called once with the total bytes to hash.
    pub total: Option<Box<dyn Fn(u64) + Send + Sync>>,
}

enum Verdict {
    Sound,
    Corrupt(String),
    Unreadable(String),
}

/// What one repository holds, as scrub reads it.
struct RepoView {
    name: RepoName,
    manifests: Vec<Digest>,
    tags: Vec<(String, std::result::Result<Digest, String>)>,
    links: Vec<Digest>,
}

impl Core {
    pub async fn scrub(&self, opts: &ScrubOptions) -> Result<ScrubReport> {
        let started = std::time::Instant::now();
        let mut report = ScrubReport::default();
        let suspects = self.check_blobs(opts, &mut report).await?;
        // Repairs act on a store that holds still: no writer runs from here on, so nothing
        // pushed since the blobs were hashed is mistaken for damage. Hashing, the long part,
        // ran without the lock.
        let still = match opts.repair {
            true => Some(self.store.locks.collector().await?),
            false => None,
        };
        let bad = self
            .confirm_corrupt(suspects, opts.repair, &mut report)
            .await?;
        let stored: HashSet<Digest> = self
            .store
            .blobs
            .list_blobs()
            .await?
            .into_iter()
            .map(|b| b.digest)
            .filter(|d| !bad.contains(d))
            .collect();
        let mut views = Vec::new();
        for name in self.store.meta.list_repos(None, None).await?.items {
            let Ok(repo) = name.parse::<RepoName>() else {
                continue;
            };
            let meta = &self.store.meta;
            views.push(RepoView {
                manifests: meta
                    .list_manifests(&repo)
                    .await?
                    .into_iter()
                    .map(|(d, _)| d)
                    .collect(),
                tags: meta.tag_targets(&repo).await?,
                links: meta.list_blob_links(&repo).await?,
                name: repo,
            });
        }
        report.repositories = views.len();
        let mut referenced: HashSet<Digest> = HashSet::new();
        for view in &views {
            self.check_repo(view, &stored, opts.repair, &mut referenced, &mut report)
                .await?;
        }
        for digest in &stored {
            if !referenced.contains(digest) {
                report.add(
                    Kind::OrphanBlob,
                    None,
                    digest.to_string(),
                    "no manifest references it: `wharf garbage-collect` reclaims it".into(),
                );
            }
        }
        for u in self.store.blobs.list_uploads().await? {
            if u.modified.elapsed().unwrap_or_default() > opts.stale_uploads {
                report.findings.push(Finding {
                    kind: Kind::StaleUpload,
                    repository: Some(u.repo),
                    subject: u.id,
                    detail: format!(
                        "{} bytes, untouched longer than upload purging allows; purging removes it",
                        u.size
                    ),
                    repaired: None,
                });
            }
        }
        // Quota locks come before the writer lock, so never under the collector's.
        drop(still);
        self.check_quotas(opts.repair, &mut report).await?;
        if self.store.meta.check_name_index(opts.repair).await? == Some(true) {
            report.findings.push(Finding {
                kind: Kind::StaleNameIndex,
                repository: None,
                subject: "_wharf/repositories.json".into(),
                detail: "the index of repository names differs from the repositories stored".into(),
                repaired: opts.repair.then(|| "rebuilt from the tree".into()),
            });
        }
        let figures = [
            ("blobs_checked", report.blobs_checked as u64),
            ("bytes_checked", report.bytes_checked),
            ("problems", report.problems() as u64),
        ];
        self.record_run("scrub", started.elapsed(), &figures).await;
        Ok(report)
    }

    /// Recount every quota and report each figure that drifted (storing the count with
    /// repair).
    async fn check_quotas(&self, repair: bool, report: &mut ScrubReport) -> Result<()> {
        for q in self.recount_quotas(repair).await? {
            let Some(recorded) = q.recorded.filter(|_| q.drifted()) else {
                continue;
            };
            report.findings.push(Finding {
                kind: Kind::QuotaDrift,
                repository: None,
                subject: q.repositories.clone(),
                detail: format!(
                    "usage recorded as {recorded} bytes, counted {} bytes from the links",
                    q.counted
                ),
                repaired: repair.then(|| format!("usage set to {} bytes", q.counted)),
            });
        }
        Ok(())
    }

    /// Re-hash every blob. Returns the ones whose bytes do not match, with why; unreadable
    /// ones are reported here and left alone.
    async fn check_blobs(
        &self,
        opts: &ScrubOptions,
        report: &mut ScrubReport,
    ) -> Result<Vec<(Digest, String)>> {
        let blobs = self.store.blobs.list_blobs().await?;
        if let Some(total) = &opts.total {
            total(blobs.iter().map(|b| b.size).sum());
        }
        let checked: Vec<(Digest, u64, Verdict)> = futures::stream::iter(blobs)
            .map(|b| async move {
                let verdict = self.verify_blob(&b.digest).await;
                if let Some(p) = &opts.progress {
                    p(b.size);
                }
                (b.digest, b.size, verdict)
            })
            .buffer_unordered(2)
            .collect()
            .await;
        let mut suspects = Vec::new();
        for (digest, size, verdict) in checked {
            report.blobs_checked += 1;
            report.bytes_checked += size;
            match verdict {
                Verdict::Sound => {}
                Verdict::Corrupt(why) => suspects.push((digest, why)),
                Verdict::Unreadable(why) => {
                    report.add(Kind::UnreadableBlob, None, digest.to_string(), why)
                }
            }
        }
        Ok(suspects)
    }

    /// Hash the suspects again (under the collector lock when repairing) and report, and
    /// with repair move aside, those still corrupt.
    async fn confirm_corrupt(
        &self,
        suspects: Vec<(Digest, String)>,
        repair: bool,
        report: &mut ScrubReport,
    ) -> Result<HashSet<Digest>> {
        let mut bad = HashSet::new();
        for (digest, why) in suspects {
            let why = match repair {
                false => why,
                true => match self.verify_blob(&digest).await {
                    Verdict::Corrupt(why) => why,
                    _ => continue,
                },
            };
            let repaired = if repair {
                self.store
                    .blobs
                    .quarantine(&digest)
                    .await?
                    .map(|to| format!("moved aside to {to}"))
            } else {
                None
            };
            report.findings.push(Finding {
                kind: Kind::CorruptBlob,
                repository: None,
                subject: digest.to_string(),
                detail: why,
                repaired,
            });
            bad.insert(digest);
        }
        Ok(bad)
    }

    async fn verify_blob(&self, digest: &Digest) -> Verdict {
        let read = match self.store.blobs.read(digest, None).await {
            Ok(r) => r,
            Err(StoreError::BlobUnknown(_)) => return Verdict::Sound, // deleted meanwhile
            Err(e) => return Verdict::Unreadable(format!("cannot be read: {e}")),
        };
        let mut hasher = DigestHasher::new(digest.algorithm());
        let mut body = read.body;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => hasher.update(&c),
                Err(e) => return Verdict::Unreadable(format!("cannot be read: {e}")),
            }
        }
        let actual = hasher.finish();
        match &actual == digest {
            true => Verdict::Sound,
            false => Verdict::Corrupt(format!("its bytes hash to {actual}")),
        }
    }

    /// One repository's manifests, tags and links against what is stored; `referenced`
    /// gathers what its manifests reach, for the orphan count.
    async fn check_repo(
        &self,
        view: &RepoView,
        stored: &HashSet<Digest>,
        repair: bool,
        referenced: &mut HashSet<Digest>,
        report: &mut ScrubReport,
    ) -> Result<()> {
        let (records, mut broken) = self.read_manifests(view, stored, referenced).await?;
        let listed: HashSet<&Digest> = view.manifests.iter().collect();
        mark_incomplete(&records, &listed, stored, &mut broken);
        self.report_broken(&view.name, &broken, repair, report)
            .await?;
        self.check_tags(view, &listed, &broken, repair, report)
            .await?;
        self.check_links(view, stored, &records, repair, report)
            .await
    }

    /// Read every manifest; a broken one is named once, with why.
    async fn read_manifests(
        &self,
        view: &RepoView,
        stored: &HashSet<Digest>,
        referenced: &mut HashSet<Digest>,
    ) -> Result<(Records, Broken)> {
        let meta = &self.store.meta;
        let mut records: Records = HashMap::new();
        let mut broken: Broken = HashMap::new();
        for d in &view.manifests {
            referenced.insert(d.clone());
            if !stored.contains(d) {
                broken.insert(
                    d.clone(),
                    (
                        Kind::ManifestMissing,
                        "its bytes are not stored (or were corrupt)".into(),
                    ),
                );
                continue;
            }
            match meta.manifest_record(d).await {
                Ok(Some(r)) => {
                    referenced.extend(r.blobs.iter().chain(&r.foreign).cloned());
                    records.insert(d.clone(), r);
                }
                Ok(None) => {
                    broken.insert(
                        d.clone(),
                        (Kind::ManifestMissing, "its bytes are not stored".into()),
                    );
                }
                Err(StoreError::Corrupt { why, .. }) => {
                    broken.insert(d.clone(), (Kind::ManifestUnparseable, why));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok((records, broken))
    }

    /// Report the broken manifests; with repair, remove them (and so their tags).
    async fn report_broken(
        &self,
        repo: &RepoName,
        broken: &Broken,
        repair: bool,
        report: &mut ScrubReport,
    ) -> Result<()> {
        for (d, (kind, why)) in broken {
            let repaired = if repair && self.store.meta.delete_manifest(repo, d).await? {
                Some("removed from the repository, with its tags: push it again".into())
            } else {
                None
            };
            report.findings.push(Finding {
                kind: *kind,
                repository: Some(repo.to_string()),
                subject: d.to_string(),
                detail: why.clone(),
                repaired,
            });
        }
        Ok(())
    }

    /// Tags whose link cannot be read or names a manifest the repository lacks. A tag on a
    /// broken manifest is not named again: its manifest's finding covers it.
    async fn check_tags(
        &self,
        view: &RepoView,
        listed: &HashSet<&Digest>,
        broken: &Broken,
        repair: bool,
        report: &mut ScrubReport,
    ) -> Result<()> {
        let repo = &view.name;
        for (tag, target) in &view.tags {
            let why = match target {
                Err(e) => format!("its link cannot be read: {e}"),
                Ok(d) if !listed.contains(d) => {
                    format!("points at {d}, which the repository does not have")
                }
                Ok(d) if broken.contains_key(d) => continue, // named with its manifest
                Ok(_) => continue,
            };
            let repaired = if repair && self.store.meta.delete_tag_link(repo, tag).await? {
                Some("tag removed".into())
            } else {
                None
            };
            report.findings.push(Finding {
                kind: Kind::DanglingTag,
                repository: Some(repo.to_string()),
                subject: tag.clone(),
                detail: why,
                repaired,
            });
        }
        Ok(())
    }

    /// Links to blobs that are not stored: a problem when a manifest needs the blob, garbage
    /// otherwise.
    async fn check_links(
        &self,
        view: &RepoView,
        stored: &HashSet<Digest>,
        records: &Records,
        repair: bool,
        report: &mut ScrubReport,
    ) -> Result<()> {
        let repo = &view.name;
        let needed: HashSet<&Digest> = records.values().flat_map(|r| &r.blobs).collect();
        for d in view.links.iter().filter(|d| !stored.contains(*d)) {
            let (kind, detail) = match needed.contains(d) {
                true => (
                    Kind::LinkToMissingBlob,
                    "the repository links a blob that is not stored",
                ),
                false => (
                    Kind::StaleLink,
                    "a link to a blob that is gone and that no manifest needs",
                ),
            };
            let repaired = if repair && self.store.meta.unlink_blob(repo, d).await? {
                Some("link removed".into())
            } else {
                None
            };
            report.findings.push(Finding {
                kind,
                repository: Some(repo.to_string()),
                subject: d.to_string(),
                detail: detail.into(),
                repaired,
            });
        }
        Ok(())
    }
}

/// A repository's readable manifests, by digest.
type Records = HashMap<Digest, ManifestRecord>;
/// Its broken manifests, with what is wrong and why.
type Broken = HashMap<Digest, (Kind, String)>;

/// Mark incomplete manifests, to a fixed point: an index over a broken child is broken.
fn mark_incomplete(
    records: &Records,
    listed: &HashSet<&Digest>,
    stored: &HashSet<Digest>,
    broken: &mut Broken,
) {
    loop {
        let mut newly = Vec::new();
        for (d, r) in records {
            if broken.contains_key(d) {
                continue;
            }
            let missing_blob = r.blobs.iter().find(|b| !stored.contains(*b));
            let bad_child = r
                .children
                .iter()
                .find(|c| !listed.contains(c) || broken.contains_key(*c));
            if let Some(b) = missing_blob {
                newly.push((d.clone(), format!("needs blob {b}, which is not stored")));
            } else if let Some(c) = bad_child {
                newly.push((
                    d.clone(),
                    format!("needs manifest {c}, which is missing or broken"),
                ));
            }
        }
        if newly.is_empty() {
            return;
        }
        for (d, why) in newly {
            broken.insert(d, (Kind::ManifestIncomplete, why));
        }
    }
}
