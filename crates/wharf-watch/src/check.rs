//! Change detection: one manifest HEAD per image reference per check, through
//! wharf-client (its credentials, trust and token cache), compared with the digests the
//! engine recorded for the running image.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use bollard::models::ImageInspect;
use wharf_client::client::insecure::is_loopback;
use wharf_client::{
    ClientError, ClientOptions, Credential, CredentialSource, Found, ImageRef, Registry,
    RegistryClient,
};
use wharf_oci::sync::lock;
use wharf_oci::{Digest, Reference};

/// How long a registry may take to answer one request of a check, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per HEAD when the failure is transient (rate limit, 5xx, network).
const ATTEMPTS: u32 = 3;
/// The longest we wait inside one check for a rate limit to pass; longer waits skip the
/// registry until the next check after it.
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Registry(#[from] ClientError),
    #[error("{registry} did not answer within {seconds} s while checking {image}; is it up and reachable? (--registry-timeout sets the limit)")]
    Timeout {
        image: String,
        registry: String,
        seconds: u64,
    },
    #[error("{source}; this watcher runs in a container, where {registry} is the container itself unless it shares the host's network: run it with --network host")]
    LoopbackInContainer {
        registry: String,
        source: ClientError,
    },
    #[error("{registry} failed just before (it rate-limited, erred or did not answer); not asked again for {seconds} s")]
    Backoff { registry: String, seconds: u64 },
}

/// The registries a watcher talks to, one client each for the life of the watcher so the
/// token cache lasts across checks.
pub struct Registries {
    options: ClientOptions,
    source: CredentialSource,
    clients: Mutex<HashMap<Registry, Arc<RegistryClient>>>,
    not_before: Mutex<HashMap<Registry, Instant>>,
    timeout: Duration,
    /// docker creates /.dockerenv in every container; there 127.0.0.1 is the container's own.
    in_container: bool,
}

impl Registries {
    /// `timeout` bounds each request of a check, so one unresponsive registry cannot hold
    /// up the session (reqwest itself only bounds connecting).
    pub fn new(options: ClientOptions, source: CredentialSource, timeout: Duration) -> Registries {
        Registries {
            options,
            source,
            clients: Mutex::new(HashMap::new()),
            not_before: Mutex::new(HashMap::new()),
            timeout,
            in_container: std::path::Path::new("/.dockerenv").exists(),
        }
    }

    /// Called before each check: config.json and helpers are consulted afresh, so an
    /// edited or re-mounted file applies without a restart.
    pub fn refresh_credentials(&self) {
        for client in lock(&self.clients).values() {
            client.forget_credentials();
        }
    }

    /// The registry's client; a new one first learns the registry's challenge, so each
    /// check's HEAD is one request.
    pub(crate) async fn client(
        &self,
        registry: &Registry,
    ) -> Result<Arc<RegistryClient>, ClientError> {
        if let Some(c) = lock(&self.clients).get(registry) {
            return Ok(c.clone());
        }
        // Off the async workers: matching the insecure CIDRs resolves the host name.
        let (r, options, source) = (registry.clone(), self.options.clone(), self.source.clone());
        let built = tokio::task::spawn_blocking(move || RegistryClient::new(r, &options, source));
        let client = match built.await {
            Ok(client) => Arc::new(client?),
            // Cancelled only when the runtime shuts down, which never resumes us.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        client.discover().await?;
        lock(&self.clients).insert(registry.clone(), client.clone());
        Ok(client)
    }

    /// The digest `image` has in its registry now. Transient failures are retried a
    /// bounded number of times; a refusal (401, 403, 404) never is, and a failed HEAD
    /// never turns into a pull.
    pub async fn latest_digest(&self, image: &ImageRef) -> Result<Digest, CheckError> {
        match self.latest_digest_once(image).await {
            Err(CheckError::Registry(source @ ClientError::Connect { .. }))
                if self.in_container && is_loopback(image.registry().api_host()) =>
            {
                Err(CheckError::LoopbackInContainer {
                    registry: image.registry().to_string(),
                    source,
                })
            }
            other => other,
        }
    }

    async fn latest_digest_once(&self, image: &ImageRef) -> Result<Digest, CheckError> {
        let registry = image.registry();
        if let Some(wait) = self.waiting(registry) {
            return Err(CheckError::Backoff {
                registry: registry.to_string(),
                seconds: wait.as_secs().max(1),
            });
        }
        let client = match self.within(image, self.client(registry)).await {
            Ok(client) => client?,
            Err(timeout) => return Err(self.timed_out(registry, timeout)),
        };
        let mut attempt = 1;
        loop {
            match self.head(&client, image).await {
                Err(timeout @ CheckError::Timeout { .. }) => {
                    return Err(self.timed_out(registry, timeout))
                }
                Err(CheckError::Registry(e)) if e.is_transient() && attempt < ATTEMPTS => {
                    let wait = e.retry_after().unwrap_or(Duration::from_secs(1 << attempt));
                    if wait > MAX_WAIT {
                        self.back_off(registry, wait);
                        return Err(CheckError::Registry(e));
                    }
                    tracing::warn!(%image, attempt, error = %e, "registry check failed; retrying in {} s", wait.as_secs());
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(CheckError::Registry(e)) if e.is_transient() => {
                    self.back_off(registry, e.retry_after().unwrap_or(MAX_WAIT));
                    return Err(CheckError::Registry(e));
                }
                other => return other,
            }
        }
    }

    async fn head(&self, client: &RegistryClient, image: &ImageRef) -> Result<Digest, CheckError> {
        let reference = image.manifest_reference();
        let head = client.head_digest(image.repository(), &reference);
        Ok(self.within(image, head).await??)
    }

    async fn within<T>(
        &self,
        image: &ImageRef,
        request: impl std::future::Future<Output = T>,
    ) -> Result<T, CheckError> {
        tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| CheckError::Timeout {
                image: image.to_string(),
                registry: image.registry().to_string(),
                seconds: self.timeout.as_secs(),
            })
    }

    /// Every tag of `image`'s repository, all pages (for tag-following policies).
    pub async fn tags(&self, image: &ImageRef) -> Result<Vec<String>, CheckError> {
        let client = self.within(image, self.client(image.registry())).await??;
        Ok(self
            .within(image, client.list_tags(image.repository()))
            .await??)
    }

    /// When the image `image` names was built: its config's `created` (of an index, the
    /// linux/amd64 entry's, else the first's). `None` when the config does not say.
    pub async fn created(&self, image: &ImageRef) -> Result<Option<String>, CheckError> {
        let client = self.within(image, self.client(image.registry())).await??;
        let repo = image.repository();
        let mut manifest = self
            .within(
                image,
                client.get_manifest(repo, &image.manifest_reference()),
            )
            .await??;
        let mut json: serde_json::Value =
            serde_json::from_slice(&manifest.bytes).unwrap_or_default();
        if let Some(entry) = platform_entry(&json) {
            let child = Reference::Digest(entry);
            manifest = self
                .within(image, client.get_manifest(repo, &child))
                .await??;
            json = serde_json::from_slice(&manifest.bytes).unwrap_or_default();
        }
        let Some(config) = json["config"]["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
        else {
            return Ok(None);
        };
        let blob = self.within(image, client.get_blob(repo, &config)).await??;
        let config: serde_json::Value = serde_json::from_slice(&blob).unwrap_or_default();
        Ok(config["created"].as_str().map(str::to_owned))
    }

    /// A registry that did not answer in time is not asked again for a while: every
    /// other image on it would wait out the same timeout, holding up the check.
    fn timed_out(&self, registry: &Registry, timeout: CheckError) -> CheckError {
        self.back_off(registry, MAX_WAIT);
        timeout
    }

    fn waiting(&self, registry: &Registry) -> Option<Duration> {
        let until = *lock(&self.not_before).get(registry)?;
        until.checked_duration_since(Instant::now())
    }

    fn back_off(&self, registry: &Registry, wait: Duration) {
        let wait = wait.min(Duration::from_secs(3600));
        lock(&self.not_before).insert(registry.clone(), Instant::now() + wait);
    }

    /// What to hand the engine for a pull: the same credential the check used, in the
    /// engine's X-Registry-Auth form.
    pub async fn docker_credentials(
        &self,
        registry: &Registry,
    ) -> Result<Option<DockerCredentials>, ClientError> {
        let Some(found) = self.lookup(registry).await? else {
            return Ok(None);
        };
        let serveraddress = Some(registry.config_key().to_owned());
        Ok(Some(match found.credential {
            Credential::Basic { username, password } => DockerCredentials {
                username: Some(username),
                password: Some(password.expose().to_owned()),
                serveraddress,
                ..Default::default()
            },
            Credential::IdentityToken { username, token } => DockerCredentials {
                username: Some(username),
                identitytoken: Some(token.expose().to_owned()),
                serveraddress,
                ..Default::default()
            },
        }))
    }

    /// Off the async workers: the lookup reads config.json and may wait for a
    /// credential helper's process.
    async fn lookup(&self, registry: &Registry) -> Result<Option<Found>, ClientError> {
        let (source, registry) = (self.source.clone(), registry.clone());
        match tokio::task::spawn_blocking(move || source.lookup(&registry)).await {
            Ok(found) => Ok(found?),
            // Cancelled only when the runtime shuts down, which never resumes us.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// The digest of an index's linux/amd64 manifest, else of its first; `None` for a manifest.
fn platform_entry(index: &serde_json::Value) -> Option<Digest> {
    let entries = index["manifests"].as_array()?;
    let amd64 = entries
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64");
    amd64.or(entries.first())?["digest"].as_str()?.parse().ok()
}

/// The digests the engine recorded for `image` in `reference`'s repository (docker
/// records the digest it pulled by: an index digest for a multi-arch image).
pub fn recorded_digests(image: &ImageInspect, reference: &ImageRef) -> Vec<Digest> {
    image
        .repo_digests
        .iter()
        .flatten()
        .filter_map(|entry| entry.parse::<ImageRef>().ok())
        .filter(|r| {
            r.registry() == reference.registry() && r.repository() == reference.repository()
        })
        .filter_map(|r| r.digest().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_digests_match_the_repository_as_docker_normalises_it() {
        let d = "sha256:".to_owned() + &"a".repeat(64);
        let image = ImageInspect {
            repo_digests: Some(vec![
                format!("localhost:5000/app@{d}"),
                format!("busybox@sha256:{}", "b".repeat(64)),
            ]),
            ..Default::default()
        };
        let app: ImageRef = "localhost:5000/app:latest".parse().unwrap();
        assert_eq!(recorded_digests(&image, &app), vec![d.parse().unwrap()]);
        let hub: ImageRef = "docker.io/library/busybox:1".parse().unwrap();
        assert_eq!(recorded_digests(&image, &hub).len(), 1);
        let other: ImageRef = "localhost:5000/other:latest".parse().unwrap();
        assert!(recorded_digests(&image, &other).is_empty());
    }
}
