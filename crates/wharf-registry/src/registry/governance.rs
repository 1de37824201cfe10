//! Immutable tags and byte quotas: the rules a push or delete must pass, and a read-only
//! summary of every governance rule for front ends (the web UI).
//!
//! Quota usage is a figure kept in the store (see `registry::quotas`); only blob sizes are
//! cached in memory, and those never change (a digest names its bytes).

use dashmap::DashMap;
use serde::Serialize;
use wharf_oci::{Digest, ErrorCode, RepoName, Tag};

use super::{Core, Error, Result};

use crate::config::governance::globs;

/// Sizes of blobs seen, by digest: content-addressed, so never stale.
#[derive(Default)]
pub struct SizeCache(DashMap<Digest, u64>);

impl Core {
    /// Refuse to move or delete `tag` if an immutable rule covers it. `to` is the digest a
    /// put would move it to (None: a delete); an unchanged put, or a first push, is allowed.
    pub(super) async fn check_tag_mutable(
        &self,
        repo: &RepoName,
        tag: &Tag,
        to: Option<&Digest>,
    ) -> Result<()> {
        let Some((i, rule)) = self
            .governance
            .immutable
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(repo.as_str(), tag.as_str()))
        else {
            return Ok(());
        };
        let current = self.store.meta.resolve_tag(repo, tag).await?;
        let allowed = match (current, to) {
            (None, _) => true,
            (Some(c), Some(to)) => &c == to,
            (Some(_), None) => false,
        };
        if allowed {
            return Ok(());
        }
        Err(Error::refused(
            ErrorCode::Denied,
            format!(
                "tag {tag} of {repo} is immutable (immutable rule {}: {}, {})",
                i + 1,
                globs(&rule.repositories),
                rule.tags.as_str()
            ),
        ))
    }

    /// The exclusive lock of `tag` when an immutable rule covers it: held from the check
    /// of its current target to the put that moves it. None for a mutable tag.
    pub(super) async fn immutable_tag_lock(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<crate::store::Guard>> {
        let covered = self
            .governance
            .immutable
            .iter()
            .any(|r| r.matches(repo.as_str(), tag.as_str()));
        if !covered {
            return Ok(None);
        }
        let name = format!("tag/{repo}:{tag}");
        Ok(Some(self.store.locks.exclusive(&name).await?))
    }

    /// Refuse deleting a manifest that an immutable tag points at (the delete would take
    /// the tag with it).
    pub(super) async fn check_manifest_deletable(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<()> {
        if self.governance.immutable.is_empty() {
            return Ok(());
        }
        for (name, target, _) in self.store.meta.tag_pushes(repo).await? {
            if &target != digest {
                continue;
            }
            if let Ok(tag) = name.parse::<Tag>() {
                self.check_tag_mutable(repo, &tag, None).await?;
            }
        }
        Ok(())
    }

    /// A blob's size, 0 if it is gone (a dangling link takes no space).
    pub(super) async fn blob_size(&self, digest: &Digest) -> Result<u64> {
        if let Some(s) = self.sizes.0.get(digest) {
            return Ok(*s);
        }
        match self.store.blobs.stat(digest).await? {
            Some(s) => {
                self.sizes.0.insert(digest.clone(), s);
                Ok(s)
            }
            None => Ok(0),
        }
    }

    /// Every governance rule with the current usage of each quota: what the web UI shows.
    pub async fn governance_summary(&self) -> Result<GovernanceSummary> {
        let g = &self.governance;
        let mut quotas = Vec::new();
        for q in &g.quotas {
            let used = self.quota_figure(q).await?;
            quotas.push(QuotaSummary {
                repositories: q.repositories.iter().map(|r| r.as_str().into()).collect(),
                bytes: q.bytes,
                used,
            });
        }
        let immutable = g
            .immutable
            .iter()
            .map(|r| ImmutableSummary {
                repositories: r.repositories.iter().map(|r| r.as_str().into()).collect(),
                tags: r.tags.as_str().into(),
            })
            .collect();
        let retention = g.retention.as_ref().map(|r| RetentionSummary {
            schedule_secs: r.schedule.map(|s| s.as_secs()),
            rules: r
                .rules
                .iter()
                .map(|r| RetentionRuleSummary {
                    repositories: r.repositories.iter().map(|g| g.as_str().into()).collect(),
                    keeplast: r.keeplast,
                    keepsemver: r.keepsemver,
                    keepmatching: r.keepmatching.as_ref().map(|p| p.as_str().into()),
                    untaggedolderthan_secs: r.untaggedolderthan.map(|d| d.as_secs()),
                })
                .collect(),
        });
        Ok(GovernanceSummary {
            retention,
            immutable,
            quotas,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct GovernanceSummary {
    pub retention: Option<RetentionSummary>,
    pub immutable: Vec<ImmutableSummary>,
    pub quotas: Vec<QuotaSummary>,
}

#[derive(Debug, Serialize)]
pub struct RetentionSummary {
    pub schedule_secs: Option<u64>,
    pub rules: Vec<RetentionRuleSummary>,
}

#[derive(Debug, Serialize)]
pub struct RetentionRuleSummary {
    pub repositories: Vec<String>,
    pub keeplast: Option<u64>,
    pub keepsemver: Option<u64>,
    pub keepmatching: Option<String>,
    pub untaggedolderthan_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ImmutableSummary {
    pub repositories: Vec<String>,
    pub tags: String,
}

#[derive(Debug, Serialize)]
pub struct QuotaSummary {
    pub repositories: Vec<String>,
    pub bytes: u64,
    pub used: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::governance::{Governance, QuotaRule};
    use crate::store::ByteStream;
    use bytes::Bytes;
    use std::sync::Arc;

    fn body(b: &[u8]) -> ByteStream {
        let b = Bytes::copy_from_slice(b);
        Box::pin(futures::stream::once(async move { Ok(b) }))
    }

    #[tokio::test]
    async fn usage_counts_shared_blobs_once_and_the_summary_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Core::new(crate::store::fs::open(dir.path(), true).unwrap());
        let yaml = "- repositories: ['t/*']\n  bytes: 100\n";
        let quotas: Vec<QuotaRule> = serde_norway::from_str(yaml).unwrap();
        registry.governance = Arc::new(Governance {
            quotas,
            ..Governance::default()
        });
        let (a, b) = ("t/a".parse().unwrap(), "t/b".parse().unwrap());
        let sixty = [1u8; 60];
        let d = Digest::sha256_of(&sixty);
        registry
            .store_blob(&a, &d, Some(60), body(&sixty))
            .await
            .unwrap();
        // The same blob into another repository of the glob costs nothing.
        registry
            .store_blob(&b, &d, None, body(&sixty))
            .await
            .unwrap();
        let forty = [2u8; 40];
        let d40 = Digest::sha256_of(&forty);
        registry
            .store_blob(&b, &d40, None, body(&forty))
            .await
            .unwrap();
        let one = [3u8; 1];
        let d1 = Digest::sha256_of(&one);
        let refused = registry.store_blob(&a, &d1, None, body(&one)).await;
        match refused {
            Err(Error::Refused { code, message, .. }) => {
                assert_eq!(code, ErrorCode::Denied);
                assert_eq!(
                    message,
                    "quota 100 B for t/*, used 100 B: a blob of 1 B does not fit"
                );
            }
            other => panic!("expected DENIED, got {:?}", other.map(|_| ())),
        }
        assert_eq!(registry.store.blobs.stat(&d1).await.unwrap(), None);
        let summary = registry.governance_summary().await.unwrap();
        assert_eq!(summary.quotas[0].used, 100);
        assert_eq!(summary.quotas[0].bytes, 100);
        assert_eq!(summary.quotas[0].repositories, ["t/*"]);
    }
}
