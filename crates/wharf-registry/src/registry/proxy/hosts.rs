//! The transparent mirror: upstreams given with `host:` serve clients under the upstream's
//! own repository names. containerd names the upstream a request is for in `?ns=<host>`
//! (since 1.4); the docker daemon's `registry-mirrors` send nothing, and mean Docker Hub.
//! Each request is renamed to `<host>/<name>` at the edge, before authorization, so that
//! everything below (routing by prefix, single flight, the cache, access rules, events)
//! works as it does for prefixed upstreams, and each upstream's content stays apart.

use std::collections::HashMap;

use wharf_oci::RepoName;

use crate::config::proxy::ProxyConfig;

/// Docker Hub's names for itself, as `?ns=` may carry them.
const HUB_ALIASES: [&str; 3] = ["docker.io", "registry-1.docker.io", "index.docker.io"];

/// Which configured host serves a request, by its `?ns=`.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    /// Host to its cache prefix (`ghcr.io` → `ghcr.io/`).
    by_host: HashMap<String, String>,
    /// The upstream with `default: true`, if any.
    default: Option<String>,
}

/// A request's `?ns=` names a host this mirror has no upstream for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownHost(pub String);

impl std::fmt::Display for UnknownHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = &self.0;
        write!(
            f,
            "this mirror has no upstream for ?ns={host}: add `{{host: {host}, remoteurl: https://{host}}}` to proxy.upstreams, or `default: true` on the upstream that should serve other hosts"
        )
    }
}

impl Hosts {
    /// The hosts of `config`; None when no upstream is given with `host:`.
    pub fn of(config: &ProxyConfig) -> Option<Hosts> {
        let mut hosts = Hosts::default();
        for u in &config.upstreams {
            let Some(host) = &u.host else { continue };
            let host = canonical(host);
            hosts.by_host.insert(host.clone(), u.prefix.clone());
            if u.default {
                hosts.default = Some(u.prefix.clone());
            }
        }
        (!hosts.by_host.is_empty()).then_some(hosts)
    }

    /// The name the cache serves `repo` under for a request with `ns`; None to serve it
    /// as it is (a request without `?ns=` when neither `docker.io` nor a default is
    /// configured: the registry's own repositories, and the prefixed names of the cache).
    pub fn local_name(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
    ) -> Result<Option<RepoName>, UnknownHost> {
        let prefix = match ns.map(canonical) {
            Some(host) => match self.by_host.get(&host).or(self.default.as_ref()) {
                Some(prefix) => prefix,
                None => return Err(UnknownHost(host)),
            },
            None => match self.by_host.get("docker.io").or(self.default.as_ref()) {
                Some(prefix) => prefix,
                None => return Ok(None),
            },
        };
        // A name too long with the prefix is left alone: it then reaches no upstream, and
        // is answered as unknown, not as invalid.
        Ok(format!("{prefix}{repo}").parse().ok())
    }
}

/// Host names compare without case, and Docker Hub's aliases as `docker.io`.
fn canonical(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if HUB_ALIASES.contains(&host.as_str()) {
        "docker.io".to_owned()
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::proxy::Upstream;

    fn host(h: &str, default: bool) -> Upstream {
        Upstream {
            prefix: format!("{h}/"),
            remoteurl: format!("https://{h}"),
            username: None,
            password: None,
            ttl: Duration::from_secs(60),
            host: Some(h.into()),
            default,
        }
    }

    fn name(hosts: &Hosts, repo: &str, ns: Option<&str>) -> Result<Option<String>, UnknownHost> {
        hosts
            .local_name(&repo.parse().unwrap(), ns)
            .map(|n| n.map(|n| n.to_string()))
    }

    #[test]
    fn ns_picks_the_upstream_and_docker_io_serves_requests_without_one() {
        let config = ProxyConfig {
            upstreams: vec![host("ghcr.io", false), host("docker.io", false)],
            ..ProxyConfig::default()
        };
        let hosts = Hosts::of(&config).unwrap();
        assert_eq!(
            name(&hosts, "team/app", Some("ghcr.io")),
            Ok(Some("ghcr.io/team/app".into()))
        );
        assert_eq!(
            name(&hosts, "library/alpine", None),
            Ok(Some("docker.io/library/alpine".into()))
        );
        assert_eq!(
            name(&hosts, "alpine", Some("registry-1.docker.io")),
            Ok(Some("docker.io/alpine".into()))
        );
        let e = name(&hosts, "x", Some("Quay.io")).unwrap_err();
        assert_eq!(e, UnknownHost("quay.io".into()));
        assert!(e
            .to_string()
            .contains("{host: quay.io, remoteurl: https://quay.io}"));
    }

    #[test]
    fn a_default_serves_other_hosts_and_without_one_names_stay_local() {
        let config = ProxyConfig {
            upstreams: vec![host("ghcr.io", false), host("quay.io", true)],
            ..ProxyConfig::default()
        };
        let hosts = Hosts::of(&config).unwrap();
        assert_eq!(
            name(&hosts, "x/y", Some("gcr.io")),
            Ok(Some("quay.io/x/y".into()))
        );
        assert_eq!(name(&hosts, "x/y", None), Ok(Some("quay.io/x/y".into())));
        let config = ProxyConfig {
            upstreams: vec![host("ghcr.io", false)],
            ..ProxyConfig::default()
        };
        let hosts = Hosts::of(&config).unwrap();
        assert_eq!(name(&hosts, "team/own", None), Ok(None));
        assert!(Hosts::of(&ProxyConfig::default()).is_none());
    }
}
