//! One upstream registry, reached through wharf-client: docker's credential chain (the
//! configured user and password, else config.json and its helpers), the token cache,
//! docker's CA directories and insecure-registry rules.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use wharf_client::client::insecure;
use wharf_client::{
    ClientError, ClientOptions, Credential, CredentialSource, Registry, RegistryClient, Secret,
};
use wharf_oci::sync::lock;
use wharf_oci::RepoName;

use super::UpstreamFailure;

use crate::config::proxy::Upstream;

/// How long a manifest request to an upstream may take before the cache stops waiting
/// and serves what it has.
/// Where dockerd reads `insecure-registries`; the mirror honours the same list.
const DAEMON_JSON: &str = "/etc/docker/daemon.json";

pub const MANIFEST_TIMEOUT: Duration = Duration::from_secs(10);

/// After the upstream refuses the mirror's credentials, it is not asked again for this
/// long: each retry with a wrong password counts towards the upstream's login limit and
/// would lock the account out for everyone who shares it.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(60);

pub struct Remote {
    pub prefix: String,
    pub url: String,
    pub ttl: Duration,
    pub client: RegistryClient,
    /// Docker Hub names official images `library/<name>`.
    hub: bool,
    /// `proxy.username`, to name in messages (never the password).
    username: Option<String>,
    /// When the upstream last refused the credentials, and the message that says so.
    refused: Mutex<Option<(Instant, String)>>,
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
            username: upstream.username.clone(),
            refused: Mutex::new(None),
        })
    }

    /// Ask the upstream through `call` (within `timeout`, if given), unless it refused the
    /// credentials within the backoff; a failure comes back classified.
    pub async fn ask<T>(
        &self,
        timeout: Option<Duration>,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, UpstreamFailure> {
        if let Some(why) = self.refused_recently() {
            return Err(UpstreamFailure::Refused(why));
        }
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, call)
                .await
                .map_err(|_| UpstreamFailure::timeout(self, t))?,
            None => call.await,
        };
        result.map_err(|e| self.failure(&e))
    }

    /// Check at start that the upstream takes the configured credentials; only a warning,
    /// since the upstream may merely be down for now.
    pub async fn check_credentials(&self) {
        if self.username.is_none() {
            return;
        }
        match self.client.ping().await {
            Ok(()) => {
                tracing::info!(upstream = %self.url, user = self.username.as_deref().unwrap_or_default(), "the proxy upstream accepts the configured credentials")
            }
            Err(e) => {
                let failure = self.failure(&e);
                if !matches!(failure, UpstreamFailure::Refused(_)) {
                    tracing::warn!(upstream = %self.url, error = %e, "cannot check the proxy upstream's credentials now");
                }
            }
        }
    }

    /// `e` as the cache passes it on. A refused password starts the backoff, and is logged
    /// once, naming the user and the upstream.
    pub fn failure(&self, e: &ClientError) -> UpstreamFailure {
        let refused = match e {
            ClientError::PasswordRefused { .. }
            | ClientError::Unauthorized { .. }
            | ClientError::EnvironmentRefused { .. } => Some(format!(
                "the upstream {} refused the password of {}: correct proxy.username and proxy.password (the mirror asks it again in {} s at the earliest)",
                self.url,
                self.who(),
                REFUSED_BACKOFF.as_secs()
            )),
            ClientError::NoCredentials { .. } => Some(format!(
                "the upstream {} requires credentials: set proxy.username and proxy.password",
                self.url
            )),
            _ => None,
        };
        if let Some(why) = refused {
            tracing::warn!(upstream = %self.url, user = %self.who(), "{why}");
            *lock(&self.refused) = Some((Instant::now(), why.clone()));
            return UpstreamFailure::Refused(why);
        }
        match e {
            ClientError::NotFound { .. } => UpstreamFailure::NotFound,
            ClientError::TooManyRequests { retry_after, .. } => {
                // Never advice to authenticate: the mirror may be authenticated already,
                // and a locked-out password is not fixed by more of it.
                let after = retry_after
                    .map(|d| format!(", retry after {} s", d.as_secs()))
                    .unwrap_or_default();
                let to = match &self.username {
                    Some(u) => format!(" (as user {u})"),
                    None => String::new(),
                };
                UpstreamFailure::RateLimited(format!(
                    "the upstream {} rate-limits this mirror{to}: 429 Too Many Requests{after}",
                    self.url
                ))
            }
            other => UpstreamFailure::Failed(other.to_string()),
        }
    }

    /// The refusal, while its backoff lasts.
    fn refused_recently(&self) -> Option<String> {
        let refused = lock(&self.refused);
        let (at, why) = refused.as_ref()?;
        (at.elapsed() < REFUSED_BACKOFF).then(|| why.clone())
    }

    /// Who the mirror is at the upstream, for messages.
    fn who(&self) -> String {
        match &self.username {
            Some(u) => format!("user {u}"),
            None => "the credentials docker's config.json holds for it".to_owned(),
        }
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
