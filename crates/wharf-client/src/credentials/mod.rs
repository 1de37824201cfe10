//! Registry credentials, found as watchtower finds them (seeds 000/001), in this order:
//!
//! 1. `REPO_USER` and `REPO_PASS` in the environment, both set: used for every registry.
//! 2. Docker's `config.json` in `$DOCKER_CONFIG` (default `~/.docker`), re-read on every
//!    lookup so a `docker login` while wharf runs takes effect at the next check:
//!    `credHelpers[<registry>]`, else `credsStore` — that helper alone answers, as in
//!    docker — else `auths[<registry>]` (`auth`, `identitytoken`, or `username`/`password`).
//!
//! `store` and `erase` change config.json the way `docker login` and `docker logout` do.

mod config_file;
pub mod helper;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::reference::Registry;
use config_file::{auths_mut, encode_auth, read_object, write_atomic, DockerConfig};
use helper::Helper;

/// A secret that never shows itself in `Debug` output, logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a registry (or its token server) is shown to prove who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or an API key, or gcloud's `_json_key` + key file).
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token from `docker login` (config.json's `identitytoken`), traded
    /// for access tokens with `grant_type=refresh_token`.
    IdentityToken { username: String, token: Secret },
}

impl Credential {
    pub fn username(&self) -> &str {
        match self {
            Credential::Basic { username, .. } | Credential::IdentityToken { username, .. } => {
                username
            }
        }
    }
}

/// Where a credential came from, for logs and error messages (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Environment,
    Helper { helper: String },
    ConfigFile { path: PathBuf, key: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Environment => f.write_str("REPO_USER/REPO_PASS"),
            Origin::Helper { helper } => write!(f, "credential helper {helper}"),
            Origin::ConfigFile { path, key } => write!(f, "auths[{key:?}] in {}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub credential: Credential,
    pub origin: Origin,
}

/// Where `store` put a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredIn {
    ConfigFile { path: PathBuf, key: String },
    Helper { helper: String, key: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{set} is set but {missing} is not: set both (they are used for every registry) or neither (to use config.json)")]
    HalfEnvironment {
        set: &'static str,
        missing: &'static str,
    },
    #[error("neither DOCKER_CONFIG nor HOME is set, so there is no docker config to read: set DOCKER_CONFIG to the directory holding config.json")]
    NoConfigDir,
    #[error("cannot read docker config {path}: {source}; fix its permissions or point DOCKER_CONFIG at another directory")]
    ConfigUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("docker config {path} is not valid JSON ({source}); fix it, or move it away and run `docker login` again")]
    ConfigInvalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("docker config {path} is not a JSON object (or its \"auths\" is not); fix it, or move it away and run `docker login` again")]
    ConfigNotObject { path: PathBuf },
    #[error("auths[{key:?}].auth in {path} is not base64 of user:password; regenerate it with `echo -n 'user:password' | base64 -w0` or run `docker login`")]
    BadAuthField { path: PathBuf, key: String },
    #[error("cannot write docker config {path}: {source}; check that the directory is writable")]
    ConfigWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credential helper {helper} (set by {configured_by} in {config}) for registry {registry} is not an executable on PATH; install it, or remove {configured_by} from the config")]
    HelperNotFound {
        helper: String,
        registry: String,
        configured_by: &'static str,
        config: PathBuf,
    },
    #[error("credential helper {helper} failed to {action} credentials for registry {registry} ({status}): {message}")]
    HelperFailed {
        helper: String,
        registry: String,
        action: &'static str,
        status: String,
        message: String,
    },
    #[error("credential helper {helper} answered `{action}` for registry {registry} with invalid JSON ({detail}); it does not speak the docker-credential-helpers protocol")]
    HelperOutput {
        helper: String,
        registry: String,
        action: &'static str,
        detail: String,
    },
    #[error("credential helper {helper} did not finish `{action}` for registry {registry} within {seconds} s and was stopped; check its network access and configuration")]
    HelperTimeout {
        helper: String,
        registry: String,
        action: &'static str,
        seconds: u64,
    },
}

/// Everything a lookup depends on, injected so tests never touch the real home directory
/// or process environment.
#[derive(Debug, Clone)]
pub struct CredentialSource {
    /// The environment: `REPO_USER`/`REPO_PASS`, and the `PATH` and variables helpers see.
    pub env: HashMap<String, String>,
    /// The directory holding `config.json`.
    pub docker_config_dir: PathBuf,
    /// How long a credential helper may take before it is stopped.
    pub helper_timeout: Duration,
}

impl CredentialSource {
    pub const DEFAULT_HELPER_TIMEOUT: Duration = Duration::from_secs(30);

    /// From this process's environment.
    pub fn from_process_env() -> Result<CredentialSource, CredentialError> {
        Self::from_env(std::env::vars().collect())
    }

    /// `docker_config_dir` from `env` as docker finds it: `$DOCKER_CONFIG`, else `$HOME/.docker`.
    pub fn from_env(env: HashMap<String, String>) -> Result<CredentialSource, CredentialError> {
        let dir = match (env.get("DOCKER_CONFIG"), env.get("HOME")) {
            (Some(d), _) if !d.is_empty() => PathBuf::from(d),
            (_, Some(home)) if !home.is_empty() => Path::new(home).join(".docker"),
            _ => return Err(CredentialError::NoConfigDir),
        };
        Ok(Self::new(env, dir))
    }

    pub fn new(env: HashMap<String, String>, docker_config_dir: PathBuf) -> CredentialSource {
        CredentialSource {
            env,
            docker_config_dir,
            helper_timeout: Self::DEFAULT_HELPER_TIMEOUT,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.docker_config_dir.join("config.json")
    }

    /// The credential for `registry`, or `None` to go anonymous.
    pub fn lookup(&self, registry: &Registry) -> Result<Option<Found>, CredentialError> {
        if let Some(credential) = self.environment_credential()? {
            tracing::debug!(%registry, "credentials from REPO_USER/REPO_PASS");
            return Ok(Some(Found {
                credential,
                origin: Origin::Environment,
            }));
        }
        let path = self.config_path();
        let Some(config) = DockerConfig::read(&path)? else {
            return Ok(None);
        };
        if let Some(choice) = config.helper_for(registry) {
            let helper = self.helper(&choice.name, choice.configured_by, registry)?;
            let found = helper.get(registry.config_key())?;
            tracing::debug!(%registry, helper = helper.name(), found = found.is_some(), "credential helper");
            return Ok(found.map(|credential| Found {
                credential,
                origin: Origin::Helper {
                    helper: helper.name().to_owned(),
                },
            }));
        }
        Ok(config
            .auth_for(registry, &path)?
            .map(|(key, credential)| Found {
                credential,
                origin: Origin::ConfigFile {
                    path: path.clone(),
                    key,
                },
            }))
    }

    /// Keep `credential` for `registry` as `docker login` does: in the helper config.json
    /// names for it (leaving an empty `auths` entry, as docker does), else base64 in
    /// `auths[<key>].auth`. Every other key of the file is kept.
    pub fn store(
        &self,
        registry: &Registry,
        credential: &Credential,
    ) -> Result<StoredIn, CredentialError> {
        let path = self.config_path();
        let key = registry.config_key().to_owned();
        let helper_choice = DockerConfig::read(&path)?
            .unwrap_or_default()
            .helper_for(registry);
        let mut config = read_object(&path)?;
        let (entry, stored) = match helper_choice {
            Some(choice) => {
                let helper = self.helper(&choice.name, choice.configured_by, registry)?;
                helper.store(&key, credential)?;
                let stored = StoredIn::Helper {
                    helper: helper.name().to_owned(),
                    key: key.clone(),
                };
                (json!({}), stored)
            }
            None => {
                let entry = match credential {
                    Credential::Basic { username, password } => {
                        json!({ "auth": encode_auth(username, password.expose()) })
                    }
                    // docker login keeps `user:` as auth next to the refresh token.
                    Credential::IdentityToken { username, token } => json!({
                        "auth": encode_auth(username, ""),
                        "identitytoken": token.expose(),
                    }),
                };
                let stored = StoredIn::ConfigFile {
                    path: path.clone(),
                    key: key.clone(),
                };
                (entry, stored)
            }
        };
        auths_mut(&mut config, &path)?.insert(key, entry);
        write_atomic(&path, &config)?;
        Ok(stored)
    }

    /// Forget `registry` as `docker logout` does: erase it from its helper, and remove the
    /// keys docker logout removes (`host`, `http://host`, `https://host`; for Docker Hub,
    /// `https://index.docker.io/v1/`). Returns whether anything was removed.
    pub fn erase(&self, registry: &Registry) -> Result<bool, CredentialError> {
        let path = self.config_path();
        let Some(parsed) = DockerConfig::read(&path)? else {
            return Ok(false);
        };
        let keys: Vec<String> = if registry.is_docker_hub() {
            vec![registry.config_key().to_owned()]
        } else {
            let host = registry.as_str();
            vec![
                host.to_owned(),
                format!("http://{host}"),
                format!("https://{host}"),
            ]
        };
        let mut removed = false;
        if let Some(choice) = parsed.helper_for(registry) {
            let helper = self.helper(&choice.name, choice.configured_by, registry)?;
            for key in &keys {
                removed |= helper.erase(key)?;
            }
        }
        let mut config = read_object(&path)?;
        let auths = match config.get_mut("auths") {
            Some(Value::Object(auths)) => auths,
            _ => return Ok(removed),
        };
        let before = auths.len();
        auths.retain(|k, _| !keys.contains(k));
        if auths.len() != before {
            write_atomic(&path, &config)?;
            removed = true;
        }
        Ok(removed)
    }

    /// The helper config.json names for `registry`, if any, to `list` what it holds.
    pub fn helper_for(&self, registry: &Registry) -> Result<Option<Helper<'_>>, CredentialError> {
        let path = self.config_path();
        let Some(choice) = DockerConfig::read(&path)?.and_then(|c| c.helper_for(registry)) else {
            return Ok(None);
        };
        self.helper(&choice.name, choice.configured_by, registry)
            .map(Some)
    }

    fn helper(
        &self,
        name: &str,
        configured_by: &'static str,
        registry: &Registry,
    ) -> Result<Helper<'_>, CredentialError> {
        Helper::find(
            name,
            configured_by,
            registry.as_str(),
            &self.config_path(),
            &self.env,
            self.helper_timeout,
        )
    }

    /// Watchtower's rule: both variables set and non-empty, for every registry. One
    /// without the other is a mistake to report, not a reason to go anonymous.
    fn environment_credential(&self) -> Result<Option<Credential>, CredentialError> {
        let get = |k: &str| self.env.get(k).filter(|s| !s.is_empty());
        match (get("REPO_USER"), get("REPO_PASS")) {
            (Some(user), Some(pass)) => Ok(Some(Credential::Basic {
                username: user.clone(),
                password: Secret::new(pass.clone()),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(CredentialError::HalfEnvironment {
                set: "REPO_USER",
                missing: "REPO_PASS",
            }),
            (None, Some(_)) => Err(CredentialError::HalfEnvironment {
                set: "REPO_PASS",
                missing: "REPO_USER",
            }),
        }
    }
}

#[cfg(test)]
mod tests;
