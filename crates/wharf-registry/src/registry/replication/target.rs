//! A registry replication pushes to, or sync reads from, reached through wharf-client
//! with docker's trust and credential chain, as the pull-through cache reaches upstreams.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Context;
use wharf_client::client::insecure;
use wharf_client::{ClientOptions, Credential, CredentialSource, Registry, RegistryClient, Secret};
use wharf_oci::sync::lock;
use wharf_oci::{Digest, RepoName};

use crate::config::replication::{self, Rule};

/// Where dockerd reads `insecure-registries`; replication honours the same list.
const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// Blobs remembered per target as sent, to mount them into other repositories there
/// rather than send them again; forgotten wholesale past this many.
const REMEMBERED_BLOBS: usize = 100_000;

/// The `User-Agent` of every replicated push. The target's event log records it, and a
/// replicating registry never replicates an event that carries it: two registries that
/// replicate to each other do not loop.
pub const REPLICATOR_AGENT: &str = concat!("wharf-replicator/", env!("CARGO_PKG_VERSION"));
/// What every version's agent begins with.
pub const REPLICATOR_PRODUCT: &str = "wharf-replicator/";
/// Sync's, for the same reason in the upstream's logs (and to tell it from docker).
pub const SYNC_AGENT: &str = concat!("wharf-sync/", env!("CARGO_PKG_VERSION"));

pub struct Target {
    pub name: String,
    pub url: String,
    pub client: RegistryClient,
    pub peer: bool,
    /// The rules that name this target.
    pub rules: Vec<Rule>,
    /// Which repository there last received each blob (for cross-repository mounts).
    sent: Mutex<HashMap<Digest, RepoName>>,
}

impl Target {
    pub fn new(config: &replication::Target, rules: Vec<Rule>) -> anyhow::Result<Target> {
        let client = client_for(
            &config.url,
            config.username.as_deref(),
            config.password.as_deref(),
            REPLICATOR_AGENT,
        )
        .with_context(|| format!("replication target {}", config.name))?;
        Ok(Target {
            name: config.name.clone(),
            url: config.url.clone(),
            client,
            peer: config.peer,
            rules,
            sent: Mutex::default(),
        })
    }

    /// The first rule of this target that covers `repo`.
    pub fn rule_for(&self, repo: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.covers(repo))
    }

    pub fn sent_from(&self, digest: &Digest) -> Option<RepoName> {
        lock(&self.sent).get(digest).cloned()
    }

    pub fn remember(&self, digest: &Digest, repo: &RepoName) {
        let mut sent = lock(&self.sent);
        if sent.len() >= REMEMBERED_BLOBS {
            sent.clear();
        }
        sent.insert(digest.clone(), repo.clone());
    }
}

/// A client for the registry at `url`: the given credentials, else docker's config.json.
pub fn client_for(
    url: &str,
    username: Option<&str>,
    password: Option<&str>,
    agent: &str,
) -> anyhow::Result<RegistryClient> {
    let plain = url.starts_with("http://");
    let host = url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let registry = Registry::from_server_address(host).with_context(|| format!("url {url}"))?;
    let mut options = ClientOptions {
        insecure_registries: insecure::daemon_json_insecure_registries(std::path::Path::new(
            DAEMON_JSON,
        ))
        .map_err(anyhow::Error::msg)?,
        user_agent: Some(agent.to_owned()),
        ..ClientOptions::default()
    };
    if plain {
        options.plain_http.push(registry.api_host().to_owned());
    }
    let client = match (username, password) {
        (Some(username), Some(password)) => {
            let credential = Credential::Basic {
                username: username.to_owned(),
                password: Secret::new(password.to_owned()),
            };
            RegistryClient::with_credential(registry, &options, Some(credential))?
        }
        _ => {
            let source = CredentialSource::from_process_env()
                .context("reading docker credentials (config.json)")?;
            RegistryClient::new(registry, &options, source)?
        }
    };
    Ok(client)
}
