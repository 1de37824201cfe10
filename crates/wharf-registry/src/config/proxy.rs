//! `proxy:` — registry:2's pull-through cache (`remoteurl`, `username`, `password`, `ttl`,
//! and `REGISTRY_PROXY_*`), and wharf's extension: several upstreams, each serving the
//! repositories under a path prefix, beside repositories that take pushes as usual; or,
//! with `host:` instead of `prefix:`, a transparent mirror that serves an upstream under its
//! own names, picked by containerd's `?ns=<host>` (`docker.io` without one).

use std::time::Duration;

use serde::Deserialize;

use super::{lenient, ConfigError};

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
    /// `proxy.maxsize` (wharf's): bytes of cached blobs to keep at most; the manifests
    /// fetched longest ago go first.
    pub maxsize: Option<u64>,
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
    /// `host: ghcr.io`: a transparent mirror of that registry. Requests whose `?ns=` names
    /// it (or, for `docker.io`, requests with no `?ns=`) are served under the upstream's
    /// own names; the cache keeps them under `<host>/`, which `prefix` then holds.
    pub host: Option<String>,
    /// `default: true` on a `host:` upstream: it serves requests whose `?ns=` names no
    /// configured host, and those without `?ns=` when no `docker.io` host is configured.
    pub default: bool,
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
    #[serde(default, deserialize_with = "lenient::u64")]
    maxsize: Option<u64>,
}

#[derive(Deserialize)]
struct UpstreamFile {
    prefix: Option<String>,
    /// A transparent mirror's upstream registry host (`ghcr.io`), instead of a prefix.
    host: Option<String>,
    #[serde(default)]
    default: bool,
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
                host: None,
                default: false,
            });
        } else if self.username.is_some() || self.password.is_some() {
            return Err(bad(
                "proxy.remoteurl".into(),
                "is required with proxy.username/password (the registry to mirror)".into(),
            ));
        }
        for (i, u) in self.upstreams.unwrap_or_default().into_iter().enumerate() {
            upstreams.push(u.into_upstream(i, self.ttl, &bad)?);
        }
        check_hosts(&upstreams, &bad)?;
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
            maxsize: self.maxsize,
        }))
    }
}

type Bad<'a> = dyn Fn(String, String) -> ConfigError + 'a;

impl UpstreamFile {
    /// The `i`th entry of `proxy.upstreams`, checked; `ttl` is the section's own.
    fn into_upstream(
        self,
        i: usize,
        ttl: Option<Duration>,
        bad: &Bad<'_>,
    ) -> Result<Upstream, ConfigError> {
        let u = self;
        let key = |k: &str| format!("proxy.upstreams[{i}].{k}");
        let (prefix, host) = match (u.prefix, u.host) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    key("host"),
                    "give either prefix: (repositories under a path) or host: (a transparent mirror of that registry), not both".into(),
                ))
            }
            (None, None) => {
                return Err(bad(
                    key("prefix"),
                    "is required, or host: for a transparent mirror (such as `host: ghcr.io`)".into(),
                ))
            }
            (Some(prefix), None) => (prefix.trim_start_matches('/').to_owned(), None),
            (None, Some(host)) => {
                let host = host.trim().to_ascii_lowercase();
                if host.is_empty() || host.contains('/') || host.contains("://") {
                    return Err(bad(
                        key("host"),
                        format!("{host:?} must be a registry host as containerd's ?ns= names it, such as `ghcr.io` or `registry.local:5000`"),
                    ));
                }
                (format!("{host}/"), Some(host))
            }
        };
        if prefix.is_empty() || !prefix.ends_with('/') {
            return Err(bad(
                key("prefix"),
                format!("{prefix:?} must be a repository path ending in `/`, such as `docker.io/`"),
            ));
        }
        if u.default && host.is_none() {
            return Err(bad(
                key("default"),
                "applies to a host: upstream (the transparent mirror's fallback)".into(),
            ));
        }
        Ok(Upstream {
            prefix,
            remoteurl: u.remoteurl,
            username: u.username,
            password: u.password,
            ttl: u.ttl.or(ttl).unwrap_or(DEFAULT_TTL),
            host,
            default: u.default,
        })
    }
}

/// At most one default, no host twice, and no `remoteurl` for everything beside hosts.
fn check_hosts(upstreams: &[Upstream], bad: &Bad<'_>) -> Result<(), ConfigError> {
    let defaults = upstreams.iter().filter(|u| u.default).count();
    if defaults > 1 {
        return Err(bad(
            "proxy.upstreams.*.default".into(),
            format!("{defaults} upstreams say default: true; at most one may"),
        ));
    }
    let hosts: Vec<_> = upstreams.iter().filter_map(|u| u.host.as_ref()).collect();
    if let Some(dup) = hosts
        .iter()
        .enumerate()
        .find(|(i, h)| hosts[..*i].contains(h))
    {
        return Err(bad(
            "proxy.upstreams.*.host".into(),
            format!("{} is named by two upstreams", dup.1),
        ));
    }
    if !hosts.is_empty() && upstreams.iter().any(|u| u.prefix.is_empty()) {
        return Err(bad(
            "proxy.remoteurl".into(),
            "mirrors every repository, which leaves nothing for the host: upstreams; give it as `host: docker.io` (or another host) among proxy.upstreams".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Option<ProxyConfig>, ConfigError> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        super::super::load(Some(f.path()), env).map(|(c, _)| c.proxy)
    }

    #[test]
    fn registry2_keys_and_environment_mirror_the_whole_registry() {
        let env = [
            ("REGISTRY_PROXY_REMOTEURL", "https://registry-1.docker.io"),
            ("REGISTRY_PROXY_USERNAME", "me"),
            ("REGISTRY_PROXY_PASSWORD", "secret"),
            ("REGISTRY_PROXY_TTL", "24h"),
        ];
        let proxy = load("version: 0.1\n", &env).unwrap().unwrap();
        let [one] = proxy.upstreams.as_slice() else {
            panic!("{proxy:?}")
        };
        assert_eq!(one.prefix, "");
        assert_eq!(one.remoteurl, "https://registry-1.docker.io");
        assert_eq!(one.username.as_deref(), Some("me"));
        assert_eq!(one.password.as_deref(), Some("secret"));
        assert_eq!(one.ttl, Duration::from_secs(24 * 3600));
        assert!(proxy.mirrors_everything());
        let defaults = load("proxy:\n  remoteurl: http://up:5000\n", &[])
            .unwrap()
            .unwrap();
        assert_eq!(defaults.upstreams[0].ttl, DEFAULT_TTL);
    }

    #[test]
    fn several_upstreams_by_prefix_with_retention_and_a_size_cap() {
        let yaml = "proxy:\n  ttl: 1h\n  retention: 720h\n  maxsize: 1000000\n  upstreams:\n    - prefix: docker.io/\n      remoteurl: https://registry-1.docker.io\n    - prefix: ghcr.io/\n      remoteurl: https://ghcr.io\n      ttl: 5m\n";
        let proxy = load(yaml, &[]).unwrap().unwrap();
        assert!(!proxy.mirrors_everything());
        let prefixes: Vec<_> = proxy.upstreams.iter().map(|u| u.prefix.as_str()).collect();
        assert_eq!(prefixes, ["docker.io/", "ghcr.io/"]);
        assert_eq!(proxy.upstreams[0].ttl, Duration::from_secs(3600));
        assert_eq!(proxy.upstreams[1].ttl, Duration::from_secs(300));
        assert_eq!(proxy.retention, Some(Duration::from_secs(720 * 3600)));
        assert_eq!(proxy.maxsize, Some(1_000_000));
    }

    #[test]
    fn host_upstreams_make_a_transparent_mirror() {
        let yaml = "proxy:\n  upstreams:\n    - host: GHCR.io\n      remoteurl: https://ghcr.io\n    - host: quay.io\n      remoteurl: https://quay.io\n      default: true\n    - prefix: hub/\n      remoteurl: https://registry-1.docker.io\n";
        let proxy = load(yaml, &[]).unwrap().unwrap();
        let hosts: Vec<_> = proxy.upstreams.iter().map(|u| u.host.clone()).collect();
        assert_eq!(
            hosts,
            [Some("ghcr.io".into()), Some("quay.io".into()), None]
        );
        assert_eq!(proxy.upstreams[0].prefix, "ghcr.io/");
        assert!(proxy.upstreams[1].default && !proxy.upstreams[0].default);
        for (bad, key) in [
            ("    - host: a.io\n      prefix: a/\n      remoteurl: https://a\n", "proxy.upstreams[0].host"),
            ("    - remoteurl: https://a\n", "proxy.upstreams[0].prefix"),
            ("    - host: https://a.io\n      remoteurl: https://a\n", "proxy.upstreams[0].host"),
            ("    - prefix: a/\n      remoteurl: https://a\n      default: true\n", "proxy.upstreams[0].default"),
            ("    - host: a.io\n      remoteurl: https://a\n    - host: a.io\n      remoteurl: https://b\n", "proxy.upstreams.*.host"),
        ] {
            let e = load(&format!("proxy:\n  upstreams:\n{bad}"), &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_prefixes_and_urls_name_their_key() {
        let no_slash =
            "proxy:\n  upstreams:\n    - prefix: docker.io\n      remoteurl: https://x\n";
        let e = load(no_slash, &[]).unwrap_err().to_string();
        assert!(e.contains("proxy.upstreams[0].prefix"), "{e}");
        let no_scheme = "proxy:\n  remoteurl: registry-1.docker.io\n";
        let e = load(no_scheme, &[]).unwrap_err().to_string();
        assert!(e.contains("https://"), "{e}");
        let no_url = "proxy:\n  username: me\n";
        let e = load(no_url, &[]).unwrap_err().to_string();
        assert!(e.contains("proxy.remoteurl"), "{e}");
    }
}
