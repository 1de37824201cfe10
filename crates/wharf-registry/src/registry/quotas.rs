//! Exact quotas. Each quota's usage is a figure in the store (`store::state::QuotaLedger`:
//! files under `_wharf/quotas/`, or rows with a database): the bytes of the distinct blobs
//! linked in the repositories its globs match. A link into a quota's repository is charged
//! under the quota's exclusive lock, which every process and replica shares, held until
//! the charged writer holds the writer lock: racing pushes are charged one after the other
//! and can never take usage over the limit. A check reads two small records instead of
//! every link. A recount takes the quota's lock and then the collector's, so it counts
//! the links of every writer charged before it.
//!
//! Unlinks (a blob or repository deleted, garbage collection) recount the quotas they
//! touch, as `wharf scrub` recounts all of them and reports the drift it repaired. A
//! figure never counted (a new quota) is counted on first use.

use std::collections::HashSet;

use serde::Serialize;
use wharf_oci::units::human_bytes;
use wharf_oci::{Digest, ErrorCode, RepoName};

use super::{Core, Error, Result};
use crate::config::governance::{globs, QuotaRule};
use crate::store::Guard;

/// The key of a quota's figures: from its globs (sorted), so that reordering the rules
/// keeps each figure, and a rule whose globs change starts a fresh count.
pub fn quota_key(rule: &QuotaRule) -> String {
    let mut g: Vec<&str> = rule.repositories.iter().map(|g| g.as_str()).collect();
    g.sort_unstable();
    g.dedup();
    Digest::sha256_of(g.join("\n").as_bytes()).hex()[..32].to_owned()
}

/// A quota's figure before and after a recount.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuotaRecount {
    pub repositories: String,
    /// The stored figure; None if there was none.
    pub recorded: Option<u64>,
    pub counted: u64,
}

impl QuotaRecount {
    pub fn drifted(&self) -> bool {
        self.recorded != Some(self.counted)
    }
}

impl Core {
    /// Whether any quota covers `repo` (so uploads into it must be measured first).
    pub fn quota_applies(&self, repo: &RepoName) -> bool {
        self.governance
            .quotas
            .iter()
            .any(|q| q.matches(repo.as_str()))
    }

    fn quotas_of<'a>(&'a self, repo: &'a RepoName) -> impl Iterator<Item = &'a QuotaRule> + 'a {
        self.governance
            .quotas
            .iter()
            .filter(move |q| q.matches(repo.as_str()))
    }

    /// The exclusive locks of every quota covering `repo`, in key order (so that two
    /// holders never wait on each other). Take them before the writer lock.
    pub(super) async fn quota_locks(&self, repo: &RepoName) -> Result<Vec<Guard>> {
        let mut keys: Vec<String> = self.quotas_of(repo).map(quota_key).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut held = Vec::with_capacity(keys.len());
        for k in keys {
            held.push(self.store.locks.exclusive(&format!("quota/{k}")).await?);
        }
        Ok(held)
    }

    /// A refusal before a blob is committed, from the figures as they stand (no lock): a
    /// blob that cannot fit is not stored at all. The charge at link time decides.
    pub async fn check_quota(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let Some(ledger) = &self.store.quotas else {
            return Ok(());
        };
        for rule in self.quotas_of(repo) {
            let used = self.quota_figure(rule).await?;
            if used.saturating_add(size) > rule.bytes
                && !ledger.charged(&quota_key(rule), digest).await?
            {
                return Err(over_quota(rule, used, size));
            }
        }
        Ok(())
    }

    /// Charge a blob about to be linked into `repo` to every quota covering it, or refuse
    /// it. Call holding [`Core::quota_locks`]. All quotas are checked before any is
    /// charged, so a refusal charges nothing.
    pub(super) async fn charge_quotas(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let Some(ledger) = &self.store.quotas else {
            return Ok(());
        };
        let mut due = Vec::new();
        for rule in self.quotas_of(repo) {
            let key = quota_key(rule);
            if ledger.charged(&key, digest).await? {
                continue;
            }
            let used = match ledger.usage(&key).await? {
                Some(u) => u,
                None => {
                    self.recount_locked(rule).await?;
                    if ledger.charged(&key, digest).await? {
                        continue;
                    }
                    ledger.usage(&key).await?.unwrap_or(0)
                }
            };
            if used.saturating_add(size) > rule.bytes {
                return Err(over_quota(rule, used, size));
            }
            due.push(key);
        }
        for key in due {
            ledger.charge(&key, digest, size).await?;
        }
        Ok(())
    }

    /// The quota's usage: its figure, counted first if it never was.
    pub(super) async fn quota_figure(&self, rule: &QuotaRule) -> Result<u64> {
        if let Some(ledger) = &self.store.quotas {
            if let Some(used) = ledger.usage(&quota_key(rule)).await? {
                return Ok(used);
            }
            let _lock = self
                .store
                .locks
                .exclusive(&format!("quota/{}", quota_key(rule)))
                .await?;
            return Ok(self.recount_locked(rule).await?.counted);
        }
        Ok(self.count_quota(rule).await?.iter().map(|(_, s)| s).sum())
    }

    /// Recount every quota covering `repo`, after links into it went.
    pub(super) async fn recount_quotas_of(&self, repo: &RepoName) -> Result<()> {
        if !self.quota_applies(repo) {
            return Ok(());
        }
        let _locks = self.quota_locks(repo).await?;
        for rule in self.quotas_of(repo) {
            self.recount_locked(rule).await?;
        }
        Ok(())
    }

    /// Recount every quota from the links (scrub, and after a collection): each one's
    /// figure as it was and as counted, the figure replaced when `store` is set.
    pub async fn recount_quotas(&self, store: bool) -> Result<Vec<QuotaRecount>> {
        let mut out = Vec::new();
        for rule in &self.governance.quotas {
            let _lock = self
                .store
                .locks
                .exclusive(&format!("quota/{}", quota_key(rule)))
                .await?;
            out.push(match store {
                true => self.recount_locked(rule).await?,
                false => self.count_figure(rule).await?,
            });
        }
        Ok(out)
    }

    /// Recount after a collection deleted blobs (a deleted blob takes no space). A
    /// failure is logged: the collection itself succeeded, and scrub recounts.
    pub(super) async fn recount_after_gc(&self) {
        if self.governance.quotas.is_empty() {
            return;
        }
        if let Err(e) = self.recount_quotas(true).await {
            tracing::warn!(error = %e, "cannot recount the quotas after a collection");
        }
    }

    /// Count the quota from the links, and read its figure, changing nothing.
    async fn count_figure(&self, rule: &QuotaRule) -> Result<QuotaRecount> {
        let counted = self
            .count_quota(rule)
            .await?
            .iter()
            .fold(0u64, |t, (_, s)| t.saturating_add(*s));
        let recorded = match &self.store.quotas {
            Some(ledger) => ledger.usage(&quota_key(rule)).await?,
            None => Some(counted),
        };
        Ok(QuotaRecount {
            repositories: globs(&rule.repositories),
            recorded,
            counted,
        })
    }

    /// Count the quota from the links and store the figure. Call holding its lock, and
    /// never the writer lock: the count waits for the writers that were charged before it
    /// to link (they hold the writer lock), so that it sees their links.
    async fn recount_locked(&self, rule: &QuotaRule) -> Result<QuotaRecount> {
        let blobs = {
            let _settled = self.store.locks.collector().await?;
            self.count_quota(rule).await?
        };
        let counted = blobs.iter().fold(0u64, |t, (_, s)| t.saturating_add(*s));
        let recorded = match &self.store.quotas {
            Some(ledger) => ledger.replace(&quota_key(rule), &blobs).await?,
            None => Some(counted),
        };
        Ok(QuotaRecount {
            repositories: globs(&rule.repositories),
            recorded,
            counted,
        })
    }

    /// The distinct blobs linked in the rule's repositories that exist, with their sizes
    /// (a dangling link takes no space): every link read, as only a recount does.
    async fn count_quota(&self, rule: &QuotaRule) -> Result<Vec<(Digest, u64)>> {
        let all = self.store.meta.all_blob_links().await?;
        let mut linked: HashSet<&Digest> = HashSet::new();
        for (name, links) in &all {
            if rule.matches(name) {
                linked.extend(links.iter());
            }
        }
        let mut out = Vec::with_capacity(linked.len());
        for d in linked {
            let size = self.blob_size(d).await?;
            if size > 0 {
                out.push((d.clone(), size));
            }
        }
        Ok(out)
    }
}

fn over_quota(rule: &QuotaRule, used: u64, size: u64) -> Error {
    Error::refused(
        ErrorCode::Denied,
        format!(
            "quota {} for {}, used {}: a blob of {} does not fit",
            human_bytes(rule.bytes),
            globs(&rule.repositories),
            human_bytes(used),
            human_bytes(size)
        ),
    )
}
