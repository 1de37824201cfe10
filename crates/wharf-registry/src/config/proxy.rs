//! `proxy:` — registry:2's pull-through cache (`remoteurl`, `username`, `password`, `ttl`,
//! and `REGISTRY_PROXY_*`), and wharf's extension: several upstreams, each serving the
//! repositories under a path prefix, beside repositories that take pushes as usual.

use std::time::Duration;

use serde::Deserialize;

use super::file::{lenient, ConfigError};

/// registry:2's default `proxy.ttl`: a cached tag is re-checked after a week.
pub const DEFAULT_TTL: Duration = Duration::from_secs(168 * 3600);

/// Where cached content comes from and how long it stays.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// Matched in order; the longest prefix wins. A single `remoteurl` is one upstream
    /// with the empty prefix: the whole registry is a mirror, as with registry:2.
    pub upstreams: Vec<Upstream>,
    /// `proxy.retention` (wharf's): cached manifests fetched longer ago than this are
    /// dropped by the GC, their blobs with them.
    pub retention: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// `docker.io/`: the local repository `docker.io/library/alpine` is the upstream's
    /// `library/alpine`. Empty: every repository.
    pub prefix: String,
    /// `https://registry-1.docker.io`, or `http://host:port` for a plain-http upstream.
    pub remoteurl: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long a cached tag is served before the upstream is asked again (a HEAD).
    pub ttl: Duration,
}

impl ProxyConfig {
    /// registry:2 semantics: one upstream for the whole registry, which then refuses pushes.
    pub fn mirrors_everything(&self) -> bool {
        self.upstreams.iter().any(|u| u.prefix.is_empty())
    }
}

/// The YAML model.
#[derive(Deserialize, Default)]
pub(super) struct ProxyFile {
    remoteurl: Option<String>,
    username: Option<String>,
    password: Option<String>,
    #[serde(default, deserialize_with = "lenient::duration")]
    ttl: Option<Duration>,
    /// wharf's: more upstreams, each under a prefix.
    upstreams: Option<Vec<UpstreamFile>>,
    #[serde(default, deserialize_with = "lenient::duration")]
    retention: Option<Duration>,
}

#[derive(Deserialize)]
struct UpstreamFile {
    prefix: String,
    remoteurl: String,
    username: Option<String>,
    password: Option<String>,
    #[serde(default, deserialize_with = "lenient::duration")]
    ttl: Option<Duration>,
}

impl ProxyFile {
    pub(super) fn into_config(self, origin: &str) -> Result<Option<ProxyConfig>, ConfigError> {
        let bad = |key: String, message: String| ConfigError::Value {
            origin: origin.to_owned(),
            key,
            message,
        };
        let mut upstreams = Vec::new();
        if let Some(remoteurl) = self.remoteurl {
            upstreams.push(Upstream {
                prefix: String::new(),
                remoteurl,
                username: self.username,
                password: self.password,
                ttl: self.ttl.unwrap_or(DEFAULT_TTL),
            });
        } else if self.username.is_some() || self.password.is_some() {
            return Err(bad(
                "proxy.remoteurl".into(),
                "is required with proxy.username/password (the registry to mirror)".into(),
            ));
        }
        for (i, u) in self.upstreams.unwrap_or_default().into_iter().enumerate() {
            let prefix = u.prefix.trim_start_matches('/').to_owned();
            if prefix.is_empty() || !prefix.ends_with('/') {
                return Err(bad(
                    format!("proxy.upstreams[{i}].prefix"),
                    format!(
                        "{:?} must be a repository path ending in `/`, such as `docker.io/`",
                        u.prefix
                    ),
                ));
            }
            upstreams.push(Upstream {
                prefix,
                remoteurl: u.remoteurl,
                username: u.username,
                password: u.password,
                ttl: u.ttl.or(self.ttl).unwrap_or(DEFAULT_TTL),
            });
        }
        for (i, u) in upstreams.iter().enumerate() {
            let scheme_ok =
                u.remoteurl.starts_with("https://") || u.remoteurl.starts_with("http://");
            if !scheme_ok {
                return Err(bad(
                    format!("proxy upstream {i} remoteurl"),
                    format!("{:?} must start with https:// or http://", u.remoteurl),
                ));
            }
        }
        if upstreams.is_empty() {
            return Ok(None);
        }
        Ok(Some(ProxyConfig {
            upstreams,
            retention: self.retention,
        }))
    }
}
