//! One upstream registry, reached through wharf-client: docker's credential chain (the
//! configured user and password, else config.json and its helpers), the token cache,
//! docker's CA directories and insecure-registry rules.

use std::time::Duration;

use anyhow::Context;
use wharf_client::client::insecure;
use wharf_client::{ClientOptions, Credential, CredentialSource, Registry, RegistryClient, Secret};
use wharf_oci::RepoName;

use crate::config::proxy::Upstream;

/// How long a manifest request to an upstream may take before the cache stops waiting
/// and serves what it has.
/// Where dockerd reads `insecure-registries`; the mirror honours the same list.
const DAEMON_JSON: &str = "/etc/docker/daemon.json";

pub const MANIFEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Remote {
    pub prefix: String,
    pub url: String,
    pub ttl: Duration,
    pub client: RegistryClient,
    /// Docker Hub names official images `library/<name>`.
    hub: bool,
}

impl Remote {
    pub fn new(upstream: &Upstream) -> anyhow::Result<Remote> {
        let plain = upstream.remoteurl.starts_with("http://");
        let host = upstream
            .remoteurl
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let registry = Registry::from_server_address(host)
            .with_context(|| format!("proxy remoteurl {}", upstream.remoteurl))?;
        // docker's trust: its certs.d CA directories, and the daemon's insecure-registries.
        let mut options = ClientOptions {
            insecure_registries: insecure::daemon_json_insecure_registries(std::path::Path::new(
                DAEMON_JSON,
            ))
            .map_err(anyhow::Error::msg)?,
            ..ClientOptions::default()
        };
        if plain {
            options.plain_http.push(registry.api_host().to_owned());
        }
        let client = match (&upstream.username, &upstream.password) {
            (Some(username), Some(password)) => {
                let credential = Credential::Basic {
                    username: username.clone(),
                    password: Secret::new(password.clone()),
                };
                RegistryClient::with_credential(registry.clone(), &options, Some(credential))?
            }
            _ => {
                let source = CredentialSource::from_process_env()
                    .context("reading docker credentials for the proxy upstream")?;
                RegistryClient::new(registry.clone(), &options, source)?
            }
        };
        Ok(Remote {
            prefix: upstream.prefix.clone(),
            url: upstream.remoteurl.clone(),
            ttl: upstream.ttl,
            hub: registry.is_docker_hub() || host == "registry-1.docker.io",
            client,
        })
    }

    /// The upstream's name for the local repository whose name after the prefix is `rest`.
    pub fn upstream_name(&self, rest: &str) -> Option<RepoName> {
        if rest.is_empty() {
            return None;
        }
        if self.hub && !rest.contains('/') {
            return format!("library/{rest}").parse().ok();
        }
        rest.parse().ok()
    }
}
