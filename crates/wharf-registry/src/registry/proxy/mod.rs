//! The pull-through cache: repositories under a configured prefix are served from the
//! store when it has their content, and fetched from their upstream when it does not.
//!
//! - Single flight: one fetch per uncached blob (`fill.rs`) or manifest (`manifests.rs`)
//!   at a time in this process, however many clients ask; the others follow it. Across
//!   processes and replicas, a lease in the store (`lease.rs`) makes it one per cluster.
//! - Streaming: a blob's bytes reach every waiting client as they are appended to an
//!   upload of the BlobStore. The last byte goes out once the upload's running hash
//!   matches the digest; the commit that makes the blob durable and visible follows.
//! - Freshness: content by digest is never fetched twice; a tag is re-checked with a HEAD
//!   once its `ttl` has passed (check times are kept in the store, for every replica), and
//!   served stale (with a `Warning`) when the upstream rate-limits or fails.
//! - Transparent mirror: upstreams given with `host:` are picked by `?ns=` (`hosts.rs`).

mod evict;
mod fill;
mod hosts;
mod layer;
mod lease;
mod manifests;
pub mod upstream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wharf_oci::sync::lock;
use wharf_oci::{ErrorCode, RepoName};

pub use evict::Evicted;
pub use fill::Fill;
pub use hosts::{Hosts, UnknownHost};
pub use layer::ProxyLayer;
pub use upstream::Remote;

use super::Error;
use crate::config::proxy::ProxyConfig;

/// What the cache did, for the log now and for metrics once they are exported: plain
/// counters that an exporter reads (`ProxyStats::snapshot`).
#[derive(Default, Debug)]
pub struct ProxyStats {
    /// Requests answered from the store.
    pub hits: AtomicU64,
    /// Requests that needed the upstream (each fetch once, however many waited on it).
    pub misses: AtomicU64,
    /// Blob and manifest bytes received from upstreams.
    pub upstream_bytes: AtomicU64,
    /// Upstream failures: refused, rate-limited, unreachable, corrupt content.
    pub errors: AtomicU64,
    /// Tags served stale because the upstream could not be asked.
    pub stale: AtomicU64,
}

impl ProxyStats {
    /// (hits, misses, upstream bytes, errors, stale) at this instant.
    pub fn snapshot(&self) -> [u64; 5] {
        [
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.upstream_bytes.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.stale.load(Ordering::Relaxed),
        ]
    }

    fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The pull-through cache's figures on the metrics page, read when scraped.
impl prometheus_client::collector::Collector for ProxyStats {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let [hits, misses, bytes, errors, stale] = self.snapshot();
        for (name, help, n) in [
            (
                "proxy_hits",
                "Proxied requests answered from the store.",
                hits,
            ),
            (
                "proxy_misses",
                "Proxied requests that fetched from an upstream (once per fetch).",
                misses,
            ),
            (
                "proxy_upstream_bytes",
                "Blob and manifest bytes received from upstreams.",
                bytes,
            ),
            (
                "proxy_upstream_errors",
                "Upstream failures: refused, rate-limited, unreachable, corrupt.",
                errors,
            ),
            (
                "proxy_stale",
                "Cached tags served because the upstream could not be asked.",
                stale,
            ),
        ] {
            let c = ConstCounter::new(n);
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        Ok(())
    }
}

use crate::registry::flight::{Flights, Landing};

pub struct Proxy {
    remotes: Vec<Arc<Remote>>,
    /// Blob fills in progress, by digest.
    fills: Flights<wharf_oci::Digest, Arc<Fill>>,
    /// Manifest fetches in progress, by `repo@digest` or `repo:tag`.
    fetches: Flights<String, manifests::Flight>,
    /// When this process last confirmed each cached tag upstream: the store's record
    /// (`Store::tag_checks`) is what other processes read; this spares reading it back.
    checked: Mutex<HashMap<(String, String), Instant>>,
    /// The transparent mirror's hosts, when any upstream is given with `host:`.
    pub hosts: Option<Arc<Hosts>>,
    /// This process's share of the cluster-wide fetch leases (`lease::MAX_HELD`).
    leases: Arc<tokio::sync::Semaphore>,
    pub retention: Option<Duration>,
    pub stats: Arc<ProxyStats>,
}

/// A local repository that a remote serves, and its name there.
pub struct Route {
    pub remote: Arc<Remote>,
    pub upstream_repo: RepoName,
}

impl Proxy {
    pub fn new(config: &ProxyConfig) -> anyhow::Result<Proxy> {
        let mut remotes = config
            .upstreams
            .iter()
            .map(|u| Remote::new(u).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Longest prefix first, so `docker.io/library/` can override `docker.io/`.
        remotes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Proxy {
            remotes,
            fills: Default::default(),
            fetches: Default::default(),
            checked: Mutex::default(),
            hosts: Hosts::of(config).map(Arc::new),
            leases: Arc::new(tokio::sync::Semaphore::new(lease::MAX_HELD)),
            retention: config.retention,
            stats: Arc::default(),
        })
    }

    /// The remote serving `repo`, or None for a repository of this registry's own.
    pub fn route(&self, repo: &RepoName) -> Option<Route> {
        let name = repo.as_str();
        self.remotes.iter().find_map(|remote| {
            let rest = name.strip_prefix(remote.prefix.as_str())?;
            let upstream_repo = remote.upstream_name(rest)?;
            Some(Route {
                remote: remote.clone(),
                upstream_repo,
            })
        })
    }

    /// Check each upstream's credentials (a warning for each it refuses), off the start.
    pub fn check_credentials(&self) {
        for remote in self.remotes.clone() {
            tokio::spawn(async move { remote.check_credentials().await });
        }
    }

    /// registry:2 refuses every push when it mirrors; wharf refuses them only for the
    /// repositories a remote serves.
    pub fn refuses_writes(&self, repo: &RepoName) -> bool {
        self.route(repo).is_some()
    }
}

impl ProxyLayer {
    /// Whether `repo:tag` was confirmed upstream within `ttl`, by this process or any
    /// other on the store.
    async fn fresh(&self, repo: &RepoName, tag: &str, ttl: Duration) -> bool {
        let key = (repo.as_str().to_owned(), tag.to_owned());
        if lock(&self.proxy.checked)
            .get(&key)
            .is_some_and(|at| at.elapsed() < ttl)
        {
            return true;
        }
        let Some(checks) = &self.core.store.tag_checks else {
            return false;
        };
        match checks.checked_ago(repo.as_str(), tag).await {
            Ok(Some(ago)) if ago < ttl => {
                if let Some(at) = Instant::now().checked_sub(ago) {
                    lock(&self.proxy.checked).insert(key, at);
                }
                true
            }
            Ok(_) => false,
            Err(e) => {
                // Not knowing costs one HEAD upstream, never wrong content.
                tracing::warn!(repository = %repo, tag, error = %e, "could not read when the tag was last checked upstream");
                false
            }
        }
    }

    /// Record that `repo:tag` was confirmed upstream just now, for every process.
    async fn confirm(&self, repo: &RepoName, tag: &str) {
        let key = (repo.as_str().to_owned(), tag.to_owned());
        lock(&self.proxy.checked).insert(key, Instant::now());
        if let Some(checks) = &self.core.store.tag_checks {
            if let Err(e) = checks.confirm(repo.as_str(), tag).await {
                tracing::warn!(repository = %repo, tag, error = %e, "could not record that the tag was checked upstream; other replicas will check it again");
            }
        }
    }
}

/// Why the upstream could not give what was asked, as it is passed on to the client.
#[derive(Debug, Clone)]
pub enum UpstreamFailure {
    /// The upstream answered 404: passed on as this registry's own unknown.
    NotFound,
    /// 429, passed on.
    RateLimited(String),
    /// Unreachable, 5xx, bad content: a 502 that says which.
    Failed(String),
    /// The upstream refused the mirror's credentials: a 403 DENIED that names them, since
    /// clients (docker) show the message of a 4xx but only the status of a 5xx.
    Refused(String),
}

impl UpstreamFailure {
    fn timeout(remote: &Remote, after: Duration) -> UpstreamFailure {
        UpstreamFailure::Failed(format!(
            "{} did not answer within {} s",
            remote.url,
            after.as_secs()
        ))
    }

    /// The error a client gets when nothing cached can stand in.
    fn into_error(self, remote: &Remote) -> Error {
        match self {
            UpstreamFailure::NotFound => {
                Error::refused(ErrorCode::ManifestUnknown, "unknown upstream")
            }
            UpstreamFailure::RateLimited(m) => Error::Upstream {
                code: ErrorCode::Toomanyrequests,
                status: 429,
                message: format!("not cached, and {m}"),
            },
            UpstreamFailure::Refused(m) => Error::Upstream {
                code: ErrorCode::Denied,
                status: 403,
                message: format!("not cached, and {m}"),
            },
            UpstreamFailure::Failed(m) => Error::Upstream {
                code: ErrorCode::Unknown,
                status: 502,
                message: format!(
                    "not cached, and the upstream {} could not provide it: {m}",
                    remote.url
                ),
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            UpstreamFailure::NotFound => "not found".into(),
            UpstreamFailure::RateLimited(m)
            | UpstreamFailure::Failed(m)
            | UpstreamFailure::Refused(m) => m.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::proxy::Upstream;

    fn upstream(prefix: &str, remoteurl: &str) -> Upstream {
        Upstream {
            prefix: prefix.into(),
            remoteurl: remoteurl.into(),
            username: Some("u".into()),
            password: Some("p".into()),
            ttl: Duration::from_secs(60),
            host: None,
            default: false,
        }
    }

    fn route(proxy: &Proxy, repo: &str) -> Option<(String, String)> {
        proxy
            .route(&repo.parse().unwrap())
            .map(|r| (r.remote.url.clone(), r.upstream_repo.to_string()))
    }

    #[test]
    fn repositories_route_by_the_longest_prefix_and_hub_names_get_library() {
        let config = ProxyConfig {
            upstreams: vec![
                upstream("docker.io/", "https://registry-1.docker.io"),
                upstream("docker.io/team/", "http://127.0.0.1:5001"),
                upstream("ghcr.io/", "https://ghcr.io"),
            ],
            ..ProxyConfig::default()
        };
        let proxy = Proxy::new(&config).unwrap();
        let hub = "https://registry-1.docker.io".to_owned();
        assert_eq!(
            route(&proxy, "docker.io/alpine"),
            Some((hub.clone(), "library/alpine".into()))
        );
        assert_eq!(
            route(&proxy, "docker.io/bitnami/redis"),
            Some((hub, "bitnami/redis".into()))
        );
        assert_eq!(
            route(&proxy, "docker.io/team/app"),
            Some(("http://127.0.0.1:5001".into(), "app".into()))
        );
        assert_eq!(
            route(&proxy, "ghcr.io/owner/tool"),
            Some(("https://ghcr.io".into(), "owner/tool".into()))
        );
        // The team's own repositories take pushes.
        assert_eq!(route(&proxy, "team/app"), None);
        assert!(!proxy.refuses_writes(&"team/app".parse().unwrap()));
        assert!(proxy.refuses_writes(&"ghcr.io/owner/tool".parse().unwrap()));
    }

    #[test]
    fn one_remoteurl_mirrors_every_repository_as_registry2_does() {
        let config = ProxyConfig {
            upstreams: vec![upstream("", "https://registry-1.docker.io")],
            ..ProxyConfig::default()
        };
        let proxy = Proxy::new(&config).unwrap();
        let hub = "https://registry-1.docker.io".to_owned();
        // What a daemon's registry-mirrors entry asks for.
        assert_eq!(
            route(&proxy, "library/alpine"),
            Some((hub.clone(), "library/alpine".into()))
        );
        assert_eq!(
            route(&proxy, "alpine"),
            Some((hub, "library/alpine".into()))
        );
    }
}
