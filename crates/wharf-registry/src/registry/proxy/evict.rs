//! Eviction of cached content: manifests of proxied repositories fetched longer ago than
//! `proxy.retention`, then the oldest until the cache fits `proxy.maxsize`. Only the
//! manifests (with their tags) are removed here; their blobs go with the next garbage
//! collection, the same sweep as the rest of the store, which keeps anything retained
//! within its grace. A client reading a blob as it is swept keeps its open file (the fs
//! store unlinks; it never truncates), so no read is cut short.

use std::time::SystemTime;

use wharf_oci::{Digest, RepoName};

use crate::config::proxy::ProxyConfig;
use crate::registry::{Core, Result};

/// What an eviction removed.
#[derive(Debug, Default)]
pub struct Evicted {
    pub manifests: usize,
    /// Bytes of blobs the evicted manifests referenced (shared layers counted each time).
    pub bytes: u64,
}

/// A cached manifest with when it was fetched and what its blobs weigh.
struct Cached {
    repo: RepoName,
    digest: Digest,
    fetched: SystemTime,
    bytes: u64,
}

impl Core {
    /// Drop cached manifests past `retention` or beyond `maxsize`, oldest first.
    pub async fn evict_cached(&self, config: &ProxyConfig) -> Result<Evicted> {
        let mut evicted = Evicted::default();
        if config.retention.is_none() && config.maxsize.is_none() {
            return Ok(evicted);
        }
        let mut cached = self.cached_manifests(config).await?;
        cached.sort_by_key(|c| c.fetched);
        let mut total: u64 = cached.iter().map(|c| c.bytes).sum();
        let cutoff = config
            .retention
            .and_then(|r| SystemTime::now().checked_sub(r));
        for c in cached {
            let expired = cutoff.is_some_and(|cut| c.fetched < cut);
            let too_big = config.maxsize.is_some_and(|max| total > max);
            if !expired && !too_big {
                break; // sorted oldest first: the rest are newer and fit
            }
            let _writing = self.store.locks.writer().await?;
            if self.store.meta.delete_manifest(&c.repo, &c.digest).await? {
                evicted.manifests += 1;
                evicted.bytes += c.bytes;
                total = total.saturating_sub(c.bytes);
                tracing::info!(repository = %c.repo, digest = %c.digest, bytes = c.bytes, expired, "evicted a cached manifest");
            }
        }
        Ok(evicted)
    }

    async fn cached_manifests(&self, config: &ProxyConfig) -> Result<Vec<Cached>> {
        let meta = &self.store.meta;
        let mut out = Vec::new();
        for name in meta.list_repos(None, None).await?.items {
            let proxied = config
                .upstreams
                .iter()
                .any(|u| name.starts_with(u.prefix.as_str()));
            let Ok(repo) = name.parse::<RepoName>() else {
                continue;
            };
            if !proxied {
                continue;
            }
            for (digest, fetched) in meta.list_manifests(&repo).await? {
                let mut bytes = 0;
                if let Some(record) = meta.manifest_record(&digest).await? {
                    for blob in &record.blobs {
                        bytes += self.store.blobs.stat(blob).await?.unwrap_or(0);
                    }
                }
                out.push(Cached {
                    repo: repo.clone(),
                    digest,
                    fetched,
                    bytes,
                });
            }
        }
        Ok(out)
    }
}
