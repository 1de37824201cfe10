//! Retention: per repository glob, keep the last N tags by push time, the top N by semver
//! and tags matching a regex (a tag is kept if any keep rule keeps it), and delete
//! manifests no kept tag reaches once they are older than a given age. Immutable tags are
//! always kept. Tags are deleted through the service layer, as an API delete would be, so
//! events fire; the blobs they free are left to garbage collection.

use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use wharf_oci::{Digest, Reference, RepoName, Tag};

use super::events::Origin;
use super::gc::{reachable, read_records};
use super::{Core, Error, Result};
use crate::config::governance::RetentionRule;
use crate::store::StoreError;

#[derive(Debug, Default, Serialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    /// Tags deleted (or that would be).
    pub tags: Vec<TagEntry>,
    /// Untagged manifests deleted (or that would be).
    pub manifests: Vec<super::gc::ManifestEntry>,
    /// Tags kept only because an immutable rule covers them.
    pub immutable_kept: usize,
}

#[derive(Debug, Serialize)]
pub struct TagEntry {
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
}

/// A tag as retention sees it.
struct Pushed {
    name: String,
    digest: Digest,
    at: SystemTime,
}

impl Core {
    /// Apply `retention:` to every repository a rule matches (the first matching rule
    /// applies). A real run holds the store's `retention` job lock, so it runs once across
    /// every process sharing the store.
    pub async fn apply_retention(&self, dry_run: bool) -> Result<RetentionReport> {
        let started = Instant::now();
        let mut report = RetentionReport {
            dry_run,
            ..RetentionReport::default()
        };
        let Some(retention) = self.governance.retention.clone() else {
            return Ok(report);
        };
        let _job = match dry_run {
            true => None,
            false => Some(
                self.store
                    .locks
                    .try_job("retention")
                    .await?
                    .ok_or_else(|| {
                        Error::Store(StoreError::NotAStore(
                            "another retention run is going on this store; wait for it to finish"
                                .into(),
                        ))
                    })?,
            ),
        };
        for name in self.store.meta.list_repos(None, None).await?.items {
            let Some(rule) = retention
                .rules
                .iter()
                .find(|r| r.repositories.iter().any(|g| g.is_match(&name)))
            else {
                continue;
            };
            let Ok(repo) = name.parse::<RepoName>() else {
                continue;
            };
            self.retain_repo(&repo, rule, &mut report).await?;
        }
        if !dry_run {
            let figures = [
                ("tags_deleted", report.tags.len() as u64),
                ("manifests_deleted", report.manifests.len() as u64),
            ];
            self.record_run("retention", started.elapsed(), &figures)
                .await;
        }
        Ok(report)
    }

    async fn retain_repo(
        &self,
        repo: &RepoName,
        rule: &RetentionRule,
        report: &mut RetentionReport,
    ) -> Result<()> {
        let tags: Vec<Pushed> = self
            .store
            .meta
            .tag_pushes(repo)
            .await?
            .into_iter()
            .map(|(name, digest, at)| Pushed { name, digest, at })
            .collect();
        let immutable = |t: &str| {
            self.governance
                .immutable
                .iter()
                .any(|r| r.matches(repo.as_str(), t))
        };
        let kept = match rule.prunes_tags() {
            true => tags_to_keep(rule, &tags),
            false => tags.iter().map(|t| t.name.clone()).collect(),
        };
        let origin = Origin::default();
        let mut live: HashSet<Digest> = HashSet::new();
        for t in &tags {
            if kept.contains(&t.name) {
                live.insert(t.digest.clone());
                continue;
            }
            if immutable(&t.name) {
                report.immutable_kept += 1;
                live.insert(t.digest.clone());
                continue;
            }
            if !report.dry_run
                && !self
                    .delete_tag_for_retention(&origin, repo, &t.name)
                    .await?
            {
                live.insert(t.digest.clone());
                continue;
            }
            // Recorded with the delete where the store keeps the log in its transactions.
            let recorded = self.events.as_ref().is_some_and(|e| e.in_transaction());
            if !report.dry_run && !recorded {
                let e = origin.tag_deleted(repo, &t.name);
                self.emit(vec![e]).await;
            }
            report.tags.push(TagEntry {
                repository: repo.to_string(),
                tag: t.name.clone(),
                digest: t.digest.clone(),
            });
        }
        if let Some(age) = rule.untaggedolderthan {
            self.prune_untagged(repo, live, age, report).await?;
        }
        Ok(())
    }

    /// Delete one tag as an API delete would; false if it could not be (gone already, or
    /// made immutable meanwhile).
    async fn delete_tag_for_retention(
        &self,
        origin: &Origin,
        repo: &RepoName,
        name: &str,
    ) -> Result<bool> {
        let Ok(tag) = name.parse::<Tag>() else {
            return Ok(false);
        };
        match self
            .remove_manifest(origin, repo, &Reference::Tag(tag))
            .await
        {
            Ok(deleted) => Ok(deleted),
            Err(Error::Refused { message, .. }) => {
                tracing::info!(%repo, tag = name, message, "retention kept a tag");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Delete manifests older than `age` that no kept tag reaches (directly, as an index's
    /// child, or as a referrer of a reached manifest).
    async fn prune_untagged(
        &self,
        repo: &RepoName,
        live: HashSet<Digest>,
        age: std::time::Duration,
        report: &mut RetentionReport,
    ) -> Result<()> {
        let meta = &self.store.meta;
        // Fix the instant first, with no writer in flight, as a collection's mark does: a
        // manifest put (or re-tagged) after it is spared below.
        let since = match report.dry_run {
            true => SystemTime::now(),
            false => {
                let _exclusive = self.store.locks.collector().await?;
                self.store.blobs.now().await?
            }
        };
        let cutoff = since.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        let manifests = meta.list_manifests(repo).await?;
        let records = read_records(&self.store, repo, &manifests).await?;
        let reached = reachable(live, &records);
        let origin = Origin::default();
        for (digest, put) in manifests {
            if reached.contains(&digest) || put >= cutoff {
                continue;
            }
            if !report.dry_run {
                let _exclusive = self.store.locks.collector().await?;
                if !meta
                    .delete_manifest_unless_put(repo, &digest, since)
                    .await?
                {
                    continue;
                }
                drop(_exclusive);
                self.emit(vec![origin.deleted(repo, &digest)]).await;
            }
            report.manifests.push(super::gc::ManifestEntry {
                repository: repo.to_string(),
                digest,
            });
        }
        Ok(())
    }
}

/// The names any keep rule keeps.
fn tags_to_keep(rule: &RetentionRule, tags: &[Pushed]) -> HashSet<String> {
    let mut keep = HashSet::new();
    if let Some(n) = rule.keeplast {
        let mut by_time: Vec<&Pushed> = tags.iter().collect();
        // Newest first; equal times (one push moving several tags) by name, for stability.
        by_time.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.name.cmp(&b.name)));
        keep.extend(by_time.iter().take(n as usize).map(|t| t.name.clone()));
    }
    if let Some(n) = rule.keepsemver {
        let mut versions: Vec<(semver::Version, &str)> = tags
            .iter()
            .filter_map(|t| {
                let v = t.name.strip_prefix('v').unwrap_or(&t.name);
                semver::Version::parse(v).ok().map(|v| (v, t.name.as_str()))
            })
            .collect();
        versions.sort_by(|a, b| b.cmp(a));
        keep.extend(versions.iter().take(n as usize).map(|(_, t)| t.to_string()));
    }
    if let Some(p) = &rule.keepmatching {
        keep.extend(
            tags.iter()
                .filter(|t| p.0.is_match(&t.name))
                .map(|t| t.name.clone()),
        );
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rule(yaml: &str) -> RetentionRule {
        serde_norway::from_str(yaml).unwrap()
    }

    fn pushed(names: &[&str]) -> Vec<Pushed> {
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Pushed {
                name: (*n).into(),
                digest: d.clone(),
                at: SystemTime::UNIX_EPOCH + Duration::from_secs(i as u64),
            })
            .collect()
    }

    fn sorted(s: HashSet<String>) -> Vec<String> {
        let mut v: Vec<String> = s.into_iter().collect();
        v.sort();
        v
    }

    #[test]
    fn a_tag_is_kept_if_any_keep_rule_keeps_it() {
        // Pushed in this order: v1.10.0 is newest by time but 1.2.0 is not highest by semver.
        let tags = pushed(&["latest", "v1.2.0", "v1.9.0", "dev-3", "v1.10.0", "dev-4"]);
        let r = rule("repositories: ['a/*']\nkeeplast: 2\n");
        assert_eq!(sorted(tags_to_keep(&r, &tags)), ["dev-4", "v1.10.0"]);
        let r = rule("repositories: ['a/*']\nkeepsemver: 2\n");
        assert_eq!(sorted(tags_to_keep(&r, &tags)), ["v1.10.0", "v1.9.0"]);
        let r =
            rule("repositories: ['a/*']\nkeeplast: 1\nkeepsemver: 1\nkeepmatching: '^latest$'\n");
        assert_eq!(
            sorted(tags_to_keep(&r, &tags)),
            ["dev-4", "latest", "v1.10.0"]
        );
        assert!(!rule("repositories: ['a/*']\nuntaggedolderthan: 1h\n").prunes_tags());
    }
}
