//! The Docker Engine, through bollard: connecting with a negotiated API version, and the
//! handful of calls the updater makes, each turning bollard's errors into ones that say
//! what failed and where.

use std::path::Path;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, EndpointSettings, ExecConfig,
    ImageInspect, NetworkConnectRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
    RemoveImageOptions, RenameContainerOptions, StartContainerOptions, StopContainerOptions,
    TagImageOptions,
};
use bollard::{ClientVersion, Docker};
use futures::StreamExt;
use wharf_client::ImageRef;
use wharf_oci::Digest;

/// Where docker listens unless `DOCKER_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// Per-request timeout on the engine socket. Pulls are streams and take as long as they take.
const ENGINE_TIMEOUT_SECS: u64 = 120;
/// Beyond its stop timeout, how long a stop may take: the kill, and the exit after it.
pub const STOP_MARGIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("Docker socket {path} not found: is the Docker Engine running? When wharf watch runs in a container, mount it (-v /var/run/docker.sock:/var/run/docker.sock); or set DOCKER_HOST")]
    SocketMissing { path: String },
    #[error("cannot reach the Docker Engine at {host}: {detail}; check DOCKER_HOST and that the daemon runs (and that this user may use its socket)")]
    Unreachable { host: String, detail: String },
    #[error(
        "DOCKER_HOST={host} is not supported: use unix:///path/to/docker.sock or tcp://host:port"
    )]
    UnsupportedHost { host: String },
    #[error("DOCKER_TLS_VERIFY is set but {path} cannot be read ({detail}): DOCKER_CERT_PATH must hold the engine's ca.pem and this client's cert.pem and key.pem, as for `docker --tlsverify`")]
    TlsFile { path: String, detail: String },
    #[error("DOCKER_TLS_VERIFY needs a tcp:// DOCKER_HOST, not {host}")]
    TlsNeedsTcp { host: String },
    #[error("DOCKER_API_VERSION={0:?} is not a version like 1.44")]
    BadApiVersion(String),
    #[error("Docker Engine refused to {what}: {detail}")]
    Api {
        what: String,
        detail: String,
        /// The HTTP status, when the engine answered with one.
        status: Option<u16>,
    },
    #[error("{what} did not finish within {seconds} s")]
    Timeout { what: String, seconds: u64 },
}

/// Whether the engine reports `container` as running (an absent state is not).
pub fn is_running(container: &ContainerInspectResponse) -> bool {
    container
        .state
        .as_ref()
        .and_then(|s| s.running)
        .unwrap_or(false)
}

fn insecure_entries(config: Option<&bollard::models::RegistryServiceConfig>) -> Vec<String> {
    let Some(config) = config else {
        return Vec::new();
    };
    let mut entries = config.insecure_registry_cidrs.clone().unwrap_or_default();
    let mut names: Vec<String> = config
        .index_configs
        .iter()
        .flatten()
        .filter(|(_, index)| index.secure == Some(false))
        .map(|(name, index)| index.name.clone().unwrap_or_else(|| name.clone()))
        .collect();
    names.sort();
    entries.extend(names);
    entries
}

/// How long a pull may go without a progress message from the engine.
const PULL_IDLE: Duration = Duration::from_secs(300);

/// The engine and the API version agreed with it.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

/// The result of running a command inside a container.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub exit_code: i64,
    pub output: String,
}

impl Engine {
    /// Connect to `host` (a `DOCKER_HOST` value; the default socket when `None`). The API
    /// version is negotiated with the engine unless `api_version` pins one: pinning was
    /// what broke watchtower on Docker 29 and on old Synology engines, so only a user's
    /// explicit `DOCKER_API_VERSION` does it.
    /// `tls`: the directory of `ca.pem`, `cert.pem` and `key.pem` when the engine is to be
    /// reached over TLS with a client certificate (`DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`).
    pub async fn connect(
        host: Option<&str>,
        api_version: Option<&str>,
        tls: Option<&Path>,
    ) -> Result<Engine, EngineError> {
        let files = tls.map(TlsFiles::in_dir);
        Engine::connect_with(host, api_version, files.as_ref()).await
    }

    /// As `connect`, with the three TLS files named one by one (`--tlscacert`,
    /// `--tlscert`, `--tlskey`).
    pub async fn connect_with(
        host: Option<&str>,
        api_version: Option<&str>,
        tls: Option<&TlsFiles>,
    ) -> Result<Engine, EngineError> {
        let host = host
            .filter(|h| !h.is_empty())
            .unwrap_or(DEFAULT_HOST)
            .to_owned();
        let pinned = api_version
            .filter(|v| !v.is_empty())
            .map(parse_api_version)
            .transpose()?;
        let version = pinned.unwrap_or(*bollard::API_DEFAULT_VERSION);
        let docker = match tls {
            Some(files) => open_tls(&host, files, &version)?,
            None => open(&host, &version)?,
        };
        let docker = match pinned {
            Some(_) => docker,
            None => docker
                .negotiate_version()
                .await
                .map_err(|e| unreachable(&host, e))?,
        };
        docker.ping().await.map_err(|e| unreachable(&host, e))?;
        let v = docker.client_version();
        tracing::info!(%host, api = %format!("{}.{}", v.major_version, v.minor_version), "connected to the Docker Engine");
        Ok(Engine { docker })
    }

    /// An engine that did not answer at start, in a fleet: every call fails as an
    /// unreachable engine would until it is back (bollard dials per request). The API
    /// version is pinned (`DOCKER_API_VERSION`) or the bollard default, as it cannot be
    /// negotiated with an engine that does not answer.
    pub fn offline(
        host: &str,
        api_version: Option<&str>,
        tls: Option<&TlsFiles>,
    ) -> Result<Engine, EngineError> {
        let pinned = api_version
            .filter(|v| !v.is_empty())
            .map(parse_api_version)
            .transpose()?;
        let version = pinned.unwrap_or(*bollard::API_DEFAULT_VERSION);
        let docker = match (tls, host.strip_prefix("unix://")) {
            (Some(files), _) => open_tls(host, files, &version)?,
            // The socket may come back: no check that it exists now.
            (None, Some(_)) => Docker::connect_with_unix(host, ENGINE_TIMEOUT_SECS, &version)
                .map_err(|e| unreachable(host, e))?,
            (None, None) => open(host, &version)?,
        };
        Ok(Engine { docker })
    }

    /// Whether the engine answers now.
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.docker
            .ping()
            .await
            .map(drop)
            .map_err(|e| api("ping the engine", e))
    }

    /// The registries the engine treats as insecure (`docker info`'s "Insecure
    /// Registries"): its CIDRs and the names of its non-secure index configs, so the
    /// watcher reaches each registry the way the engine pulls from it.
    pub async fn insecure_registries(&self) -> Result<Vec<String>, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| api("read the engine's info", e))?;
        Ok(insecure_entries(info.registry_config.as_ref()))
    }

    /// The API version in use, as `(major, minor)`.
    pub fn api_version(&self) -> (usize, usize) {
        let v = self.docker.client_version();
        (v.major_version, v.minor_version)
    }

    /// Containers, running ones only unless `all`.
    pub async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>, EngineError> {
        let options = ListContainersOptions {
            all,
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| api("list containers", e))
    }

    pub async fn inspect_container(
        &self,
        id: &str,
    ) -> Result<ContainerInspectResponse, EngineError> {
        self.docker
            .inspect_container(id, None)
            .await
            .map_err(|e| api(&format!("inspect container {id}"), e))
    }

    pub async fn inspect_image(&self, image: &str) -> Result<ImageInspect, EngineError> {
        self.docker
            .inspect_image(image)
            .await
            .map_err(|e| api(&format!("inspect image {image}"), e))
    }

    /// Pull `reference` (`repo@sha256:…` to get exactly what was checked) with the given
    /// registry credentials; the engine runs its own token flow with them.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), EngineError> {
        let options = CreateImageOptions {
            from_image: Some(reference.to_owned()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        loop {
            // The engine reports progress every few seconds while layers move; a pull
            // silent for this long is stuck and would hold up the whole check.
            let next = tokio::time::timeout(PULL_IDLE, progress.next())
                .await
                .map_err(|_| EngineError::Timeout {
                    what: format!("pull {reference}: the next progress report"),
                    seconds: PULL_IDLE.as_secs(),
                })?;
            let Some(item) = next else { break };
            let info = item.map_err(|e| api(&format!("pull {reference}"), e))?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Api {
                    what: format!("pull {reference}"),
                    detail,
                    status: None,
                });
            }
        }
        Ok(())
    }

    /// Pull `image@digest` (exactly what was checked, whatever the tag says by now) and
    /// point `image`'s tag at it. Returns the local image id.
    pub async fn pull_checked(
        &self,
        image: &ImageRef,
        digest: &Digest,
        credentials: Option<DockerCredentials>,
    ) -> Result<String, EngineError> {
        let repo = repository_name(image);
        let by_digest = format!("{repo}@{digest}");
        self.pull(&by_digest, credentials).await?;
        let tag = image.tag().map(|t| t.as_str()).unwrap_or("latest");
        self.tag(&by_digest, &repo, tag).await?;
        self.inspect_image(&by_digest)
            .await?
            .id
            .ok_or_else(|| EngineError::Api {
                what: format!("inspect image {by_digest}"),
                detail: "the engine reported no id".into(),
                status: None,
            })
    }

    /// Point `repo:tag` at `image`.
    pub async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<(), EngineError> {
        let options = TagImageOptions {
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
        };
        self.docker
            .tag_image(image, Some(options))
            .await
            .map_err(|e| api(&format!("tag {image} as {repo}:{tag}"), e))
    }

    /// Create a container; returns its id.
    pub async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, EngineError> {
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .map(|r| r.id)
            .map_err(|e| api(&format!("create container {name}"), e))
    }

    pub async fn connect_network(
        &self,
        network: &str,
        container: &str,
        endpoint: EndpointSettings,
    ) -> Result<(), EngineError> {
        let request = NetworkConnectRequest {
            container: container.to_owned(),
            endpoint_config: Some(endpoint),
        };
        self.docker
            .connect_network(network, request)
            .await
            .map_err(|e| api(&format!("connect {container} to network {network}"), e))
    }

    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| api(&format!("start container {id}"), e))
    }

    /// Stop with the container's signal and timeout (the engine's defaults when `None`).
    /// An already stopped container is not an error (bollard takes the engine's 304 as
    /// success).
    pub async fn stop(
        &self,
        id: &str,
        signal: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(), EngineError> {
        let options = StopContainerOptions {
            signal: signal.map(str::to_owned),
            t: timeout.map(|t| t.as_secs().min(i32::MAX as u64) as i32),
        };
        // The engine answers only once the container is gone, so the request must be
        // allowed the whole stop timeout; cut short, the stop goes on without us.
        let limit = timeout.map_or(Duration::ZERO, |t| t.saturating_add(STOP_MARGIN));
        self.docker
            .clone()
            .with_timeout(limit.max(Duration::from_secs(ENGINE_TIMEOUT_SECS)))
            .stop_container(id, Some(options))
            .await
            .map_err(|e| api(&format!("stop container {id}"), e))
    }

    pub async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        let options = RenameContainerOptions {
            name: name.to_owned(),
        };
        self.docker
            .rename_container(id, options)
            .await
            .map_err(|e| api(&format!("rename container {id} to {name}"), e))
    }

    /// Remove a container (force: it may be running). Anonymous volumes stay: the
    /// replacement container mounts them by name.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        self.remove_with(id, false).await
    }

    /// Remove a container, and its anonymous volumes too if `volumes` (`docker rm -v`).
    pub async fn remove_with(&self, id: &str, volumes: bool) -> Result<(), EngineError> {
        let options = RemoveContainerOptions {
            force: true,
            v: volumes,
            link: false,
        };
        self.docker
            .remove_container(id, Some(options))
            .await
            .map_err(|e| api(&format!("remove container {id}"), e))
    }

    /// Remove an image by id, as watchtower's cleanup does. `force` is needed when several
    /// repositories name it (a local build tag beside the registry's name), which the
    /// engine otherwise refuses by id; the caller has checked that no container uses it.
    pub async fn remove_image(&self, id: &str, force: bool) -> Result<(), EngineError> {
        let options = RemoveImageOptions {
            force,
            noprune: false,
            ..Default::default()
        };
        self.docker
            .remove_image(id, Some(options), None)
            .await
            .map(drop)
            .map_err(|e| api(&format!("remove image {id}"), e))
    }

    /// Run `sh -c command` in a running container, up to `timeout`.
    pub async fn exec(
        &self,
        container: &str,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutcome, EngineError> {
        let what = format!("run `{command}` in {container}");
        let run = self.exec_inner(container, command, &what);
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(EngineError::Timeout {
                what,
                seconds: timeout.as_secs(),
            }),
        }
    }

    async fn exec_inner(
        &self,
        container: &str,
        command: &str,
        what: &str,
    ) -> Result<ExecOutcome, EngineError> {
        let config = ExecConfig {
            cmd: Some(vec!["sh".into(), "-c".into(), command.into()]),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(container, config)
            .await
            .map_err(|e| api(what, e))?;
        let mut output = String::new();
        if let bollard::exec::StartExecResults::Attached {
            output: mut stream, ..
        } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| api(what, e))?
        {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| api(what, e))?;
                if output.len() < 4096 {
                    output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
        }
        let inspected = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| api(what, e))?;
        Ok(ExecOutcome {
            exit_code: inspected.exit_code.unwrap_or(-1),
            output,
        })
    }
}

fn open(host: &str, version: &ClientVersion) -> Result<Docker, EngineError> {
    let result = if let Some(path) = host.strip_prefix("unix://") {
        if !Path::new(path).exists() {
            return Err(EngineError::SocketMissing {
                path: path.to_owned(),
            });
        }
        Docker::connect_with_unix(host, ENGINE_TIMEOUT_SECS, version)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, ENGINE_TIMEOUT_SECS, version)
    } else if host.starts_with('/') {
        return open(&format!("unix://{host}"), version);
    } else {
        return Err(EngineError::UnsupportedHost {
            host: host.to_owned(),
        });
    };
    result.map_err(|e| unreachable(host, e))
}

/// The files `docker --tlsverify` reads: the engine's CA, and this client's certificate
/// and key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `cert.pem` and `key.pem` in `dir` (`DOCKER_CERT_PATH`).
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// A tcp:// engine over TLS, both sides verified, as `docker --tlsverify` connects.
fn open_tls(host: &str, files: &TlsFiles, version: &ClientVersion) -> Result<Docker, EngineError> {
    if !host.starts_with("tcp://") && !host.starts_with("https://") {
        return Err(EngineError::TlsNeedsTcp {
            host: host.to_owned(),
        });
    }
    let file = |path: &Path| {
        std::fs::metadata(path)
            .map(|_| path.to_path_buf())
            .map_err(|e| EngineError::TlsFile {
                path: path.display().to_string(),
                detail: e.to_string(),
            })
    };
    let (key, cert, ca) = (file(&files.key)?, file(&files.cert)?, file(&files.ca)?);
    Docker::connect_with_ssl(host, &key, &cert, &ca, ENGINE_TIMEOUT_SECS, version)
        .map_err(|e| unreachable(host, e))
}

fn parse_api_version(text: &str) -> Result<ClientVersion, EngineError> {
    let bad = || EngineError::BadApiVersion(text.to_owned());
    let (major, minor) = text
        .trim_start_matches('v')
        .split_once('.')
        .ok_or_else(bad)?;
    Ok(ClientVersion {
        major_version: major.parse().map_err(|_| bad())?,
        minor_version: minor.parse().map_err(|_| bad())?,
    })
}

fn unreachable(host: &str, e: bollard::errors::Error) -> EngineError {
    EngineError::Unreachable {
        host: host.to_owned(),
        detail: e.to_string(),
    }
}

fn api(what: &str, e: bollard::errors::Error) -> EngineError {
    let (detail, status) = match e {
        bollard::errors::Error::DockerResponseServerError {
            message,
            status_code,
        } => (message, Some(status_code)),
        other => (other.to_string(), None),
    };
    EngineError::Api {
        what: what.to_owned(),
        detail,
        status,
    }
}

/// `host/repo` as docker names it (`busybox` for Docker Hub's `library/busybox`).
fn repository_name(image: &ImageRef) -> String {
    if image.registry().is_docker_hub() {
        let repo = image.repository().as_str();
        repo.strip_prefix("library/").unwrap_or(repo).to_owned()
    } else {
        format!("{}/{}", image.registry(), image.repository())
    }
}

/// Whether an engine error is the engine saying the thing does not exist.
pub fn is_not_found(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Api {
            status: Some(404),
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries_as_the_engine_reports_them() {
        let info: bollard::models::SystemInfo = serde_json::from_value(serde_json::json!({
            "RegistryConfig": {
                "InsecureRegistryCIDRs": ["127.0.0.0/8", "10.9.0.0/16"],
                "IndexConfigs": {
                    "docker.io": {"Name": "docker.io", "Secure": true, "Official": true},
                    "reg.lan:5000": {"Name": "reg.lan:5000", "Secure": false}
                }
            }
        }))
        .unwrap();
        assert_eq!(
            insecure_entries(info.registry_config.as_ref()),
            ["127.0.0.0/8", "10.9.0.0/16", "reg.lan:5000"]
        );
        assert!(insecure_entries(None).is_empty());
    }

    #[test]
    fn api_versions_parse_like_docker_writes_them() {
        let v = parse_api_version("1.44").unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 44));
        assert!(parse_api_version("v1.41").is_ok());
        assert!(matches!(
            parse_api_version("latest"),
            Err(EngineError::BadApiVersion(_))
        ));
    }

    #[test]
    fn not_found_is_the_engines_404_whatever_its_wording() {
        let answer = |status_code: u16, message: &str| {
            let e = bollard::errors::Error::DockerResponseServerError {
                status_code,
                message: message.into(),
            };
            api("inspect container x", e)
        };
        assert!(is_not_found(&answer(404, "No such container: x")));
        assert!(is_not_found(&answer(404, "container x: not found")));
        assert!(!is_not_found(&answer(409, "No such thing, but a conflict")));
    }
}
