//! Starting real processes for tests: wharf itself, Distribution, and checks for the
//! tools a test needs. A missing tool fails the test and names the package to install.

#![allow(dead_code)]

pub mod dockerd;
pub mod garage;
pub mod nginx;
pub mod oidc;
pub mod postgres;
pub mod slapd;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// Fail (never skip) when `tool` is missing, saying which Debian package provides it.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "`{tool}` is not installed: this test needs it. Install it with `apt-get install {package}` (or run .ci/run, which does).");
}

pub fn require_docker() {
    require("docker", "docker.io");
    let ok = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "the Docker Engine is not reachable (`docker info` failed): start dockerd, or give this user access to /var/run/docker.sock");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until_up(url: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = reqwest::blocking::Client::new();
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        if client.get(format!("{url}/v2/")).send().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not answer on {url} within 20 s");
}

/// A running `wharf serve` on a loopback port, killed when dropped.
pub struct Wharf {
    pub port: u16,
    pub root: PathBuf,
    pub child: Child,
    _dir: Option<tempfile::TempDir>,
    extra: Vec<String>,
}

impl Wharf {
    pub fn start() -> Wharf {
        Self::start_with(&[])
    }

    /// With extra `wharf serve` arguments.
    pub fn start_with(extra: &[&str]) -> Wharf {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut w = Self::spawn(free_port(), root, extra);
        w._dir = Some(dir);
        w
    }

    /// Deletes disabled, as registry:2 is by default.
    pub fn start_without_deletes() -> Wharf {
        Self::start_with(&["--delete-enabled=false"])
    }

    /// On an existing storage root (kept when dropped).
    pub fn start_on(root: &Path) -> Wharf {
        Self::spawn(free_port(), root.to_path_buf(), vec![])
    }

    /// On `root`, with `REGISTRY_*`-style variables set for the server.
    pub fn start_on_with_env(root: &Path, env: &[(&str, &str)]) -> Wharf {
        Self::spawn_env(free_port(), root.to_path_buf(), vec![], env)
    }

    fn spawn(port: u16, root: PathBuf, extra: Vec<String>) -> Wharf {
        Self::spawn_env(port, root, extra, &[])
    }

    fn spawn_env(port: u16, root: PathBuf, extra: Vec<String>, env: &[(&str, &str)]) -> Wharf {
        let mut cmd = Command::new(WHARF);
        cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--root"])
            .arg(&root)
            .args(&extra)
            .envs(env.iter().copied())
            .env("REGISTRY_STORAGE_DELETE_ENABLED", "true")
            .env("WHARF_LOG", "warn")
            .stdout(Stdio::null());
        let mut child = cmd.spawn().expect("start wharf");
        wait_until_up(&format!("http://127.0.0.1:{port}"), &mut child, "wharf");
        Wharf {
            port,
            root,
            child,
            _dir: None,
            extra,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `host:port` as image references spell it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Graceful stop: SIGTERM, then wait (at most 30 s) for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        signal(&self.child, "TERM");
        wait_for_exit(&mut self.child, Duration::from_secs(30))
            .expect("wharf did not exit within 30 s of SIGTERM")
    }

    /// kill -9, then start again on the same root and port.
    pub fn crash_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut fresh = Self::spawn(self.port, self.root.clone(), self.extra.clone());
        std::mem::swap(&mut self.child, &mut fresh.child);
        // `fresh` now holds the dead process; dropping it reaps nothing new.
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Distribution 2.8.2 (Debian's docker-registry) on a loopback port, on `root`.
pub struct Distribution {
    pub port: u16,
    child: Child,
    _config: tempfile::NamedTempFile,
}

impl Distribution {
    pub fn start_on(root: &Path) -> Distribution {
        Self::start_with(root, "")
    }

    /// With extra `http:` keys, e.g. `  secret: s3cret\n`.
    pub fn start_with(root: &Path, http_extra: &str) -> Distribution {
        let storage = format!("  filesystem:\n    rootdirectory: {}\n", root.display());
        Self::start_storage(&storage, http_extra)
    }

    /// On `storage` (the lines under `storage:`, indented), with `delete` enabled.
    pub fn start_storage(storage: &str, http_extra: &str) -> Distribution {
        require("docker-registry", "docker-registry");
        let port = free_port();
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n{storage}  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{http_extra}",
            ),
        )
        .unwrap();
        // Its Go AWS SDK panics on AWS_CA_BUNDLE with a custom transport (S3 storage).
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(config.path())
            .env_remove("AWS_CA_BUNDLE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        wait_until_up(
            &format!("http://127.0.0.1:{port}"),
            &mut child,
            "docker-registry",
        );
        Distribution {
            port,
            child,
            _config: config,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send `sig` (a name such as `TERM`, as kill(1) takes it) to a child process.
pub fn signal(child: &Child, sig: &str) {
    run(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string()));
}

/// The child's exit status once it has exited, or None if it is still running after `limit`.
pub fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run a command, panicking with its output if it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `cmd` with `input` on its stdin (a password, say), capturing its output.
/// `docker ARGS` with its client configuration in `config` (its own logins).
pub fn docker_with(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(args)
        .output()
        .unwrap()
}

/// `docker login HOST -u USER --password-stdin` into the client configuration `config`.
pub fn docker_login(config: &Path, host: &str, user: &str, password: &str) -> std::process::Output {
    output_with_stdin(
        Command::new("docker").env("DOCKER_CONFIG", config).args([
            "login",
            host,
            "-u",
            user,
            "--password-stdin",
        ]),
        password,
    )
}

/// A finished command's stdout and stderr, for an assertion's message.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn output_with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A unique suffix so tests sharing the Docker Engine never collide.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}-{}", std::process::id(), free_port())
}

/// A tiny image built locally (no pulls possible here): busybox-static as /bin/sh plus a
/// marker file, so every image has distinct layers. Returns the local image name.
pub fn build_busybox_image(name: &str, marker: &str) -> String {
    build_busybox_image_with(name, marker, &[], &["CMD [\"/bin/sh\"]"])
}

/// A busybox image with extra files (path, content) and `docker import --change` lines
/// (CMD, ENV, …): test images that differ in behaviour, built without any pull.
pub fn build_busybox_image_with(
    name: &str,
    marker: &str,
    files: &[(&str, &str)],
    changes: &[&str],
) -> String {
    require_docker();
    require("busybox", "busybox-static");
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    let busybox = run(Command::new("sh").args(["-c", "command -v busybox"]));
    std::fs::copy(busybox.trim(), rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "sleep", "true", "false", "ls"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("marker"), marker).unwrap();
    for (path, content) in files {
        std::fs::write(rootfs.join(path), content).unwrap();
    }
    let tar = dir.path().join("rootfs.tar");
    tar_dir(&rootfs, &tar);
    let mut import = Command::new("docker");
    import.arg("import");
    for change in changes {
        import.args(["--change", change]);
    }
    run(import.arg(&tar).arg(name));
    name.to_owned()
}

/// An htpasswd file with one bcrypt user, written by Apache's own `htpasswd -B`.
pub fn htpasswd(file: &Path, user: &str, password: &str) {
    require("htpasswd", "apache2-utils");
    run(Command::new("htpasswd")
        .args(["-c", "-B", "-b"])
        .arg(file)
        .args([user, password])
        .stderr(Stdio::null()));
}

/// A command's stdout, trimmed; it must have succeeded (`what` names it if not).
pub fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `wharf ARGS` with a private docker config, plain http allowed, and no credentials or
/// insecure registries from the environment.
pub fn wharf_insecure(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(WHARF)
        .env("DOCKER_CONFIG", config)
        .env_remove("REPO_USER")
        .env_remove("REPO_PASS")
        .env_remove("WHARF_INSECURE_REGISTRIES")
        .arg("--insecure")
        .args(args)
        .output()
        .unwrap()
}

/// As `wharf_insecure`, which must succeed: (stdout, stderr).
pub fn wharf_insecure_ok(config: &Path, args: &[&str]) -> (String, String) {
    let out = wharf_insecure(config, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "wharf {args:?}: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// Build a busybox image marked `marker` and `docker push` it as `host/repo:v1`; returns
/// that name (the local copies are removed, so a later pull really pulls).
pub fn docker_pushed(host: &str, repo: &str, marker: &str) -> String {
    let local = build_busybox_image(&unique("wharf-pushed:"), marker);
    let remote = format!("{host}/{repo}:v1");
    run(Command::new("docker").args(["tag", &local, &remote]));
    run(Command::new("docker").args(["push", &remote]));
    docker_rmi(&[&local, &remote]);
    remote
}

/// The interop proof: docker runs `image` and finds its marker.
pub fn docker_runs(image: &str, marker: &str) {
    let out = run(Command::new("docker").args(["run", "--rm", image, "cat", "/marker"]));
    assert_eq!(out.trim(), marker);
}

/// A raw-HTTP client that shows redirects instead of following them.
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The Docker v2 manifest at `url` (an anonymous GET), as JSON.
pub fn docker_manifest(url: &str) -> serde_json::Value {
    http_client()
        .get(url)
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// A response header as text, empty when absent.
pub fn header(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Tar up the contents of `dir` into `tar`, as an image layer or rootfs.
pub fn tar_dir(dir: &Path, tar: &Path) {
    run(Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(tar)
        .arg("."));
}

/// Remove local images by name, ignoring ones already gone.
pub fn docker_rmi(names: &[&str]) {
    let _ = Command::new("docker")
        .arg("rmi")
        .arg("-f")
        .args(names)
        .output();
}

/// A process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port} within 20 s");
}

/// Wait for a `wharf serve` to listen; if it exits instead, fail with its log.
fn wait_for_wharf(port: u16, child: &mut Child, log: &Path) {
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for_port(port, child, "wharf")
    }));
    if started.is_err() {
        panic!(
            "wharf serve did not start; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// `wharf serve CONFIG` with `yaml` as the config, storage in `dir`.
pub struct Served {
    pub port: u16,
    _proc: Proc,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Served {
    pub fn start(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> Served {
        let port = free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            yaml.replace("@PORT@", &port.to_string())
                .replace("@DIR@", &dir.display().to_string()),
        )
        .unwrap();
        let log = dir.join("wharf.log");
        let child = Command::new(WHARF)
            .arg("serve")
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Guard the process before waiting, so a failed start does not leave it running.
        let mut proc = Proc(child);
        // REGISTRY_HTTP_ADDR overrides the file, as in registry:2.
        let port = env
            .iter()
            .find(|(k, _)| *k == "REGISTRY_HTTP_ADDR")
            .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok())
            .unwrap_or(port);
        wait_for_wharf(port, &mut proc.0, &log);
        Served {
            port,
            _proc: proc,
            log,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kill the server, as a crash would.
    pub fn kill(&mut self) {
        let _ = self._proc.0.kill();
        let _ = self._proc.0.wait();
    }

    /// Start it again after `kill`: the same config (in `dir`), environment and port; its
    /// log goes on.
    pub fn restart(&mut self, dir: &Path) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(WHARF)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self._proc = Proc(child);
        wait_for_wharf(self.port, &mut self._proc.0, &self.log);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key).
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    require("openssl", "openssl");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // An end-entity certificate (openssl's default CA:TRUE is refused by strict verifiers).
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null()));
    (cert, key)
}

/// Push `list` as a Docker manifest list of an amd64 image and an arm64 one (both already
/// pushed to the same registry), with docker's own `manifest` commands.
pub fn push_manifest_list(list: &str, amd64: &str, arm64: &str) {
    let _ = Command::new("docker")
        .args(["manifest", "rm", list])
        .output();
    run(Command::new("docker").args(["manifest", "create", "--insecure", list, amd64, arm64]));
    run(Command::new("docker").args(["manifest", "annotate", "--arch", "arm64", list, arm64]));
    run(Command::new("docker").args(["manifest", "push", "--purge", "--insecure", list]));
}

/// `url` with `key=value` added to its query, as clients add `digest` to upload URLs that
/// may already carry registry:2's `_state`.
pub fn add_query(url: &str, key: &str, value: impl std::fmt::Display) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}
