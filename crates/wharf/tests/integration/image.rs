//! The wharf container image, run under the Docker Engine like registry:2.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    build_busybox_image, docker_rmi, free_port, require, require_docker, run, unique, WHARF,
};

/// Local images removed when dropped (also when the test panics).
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        let names: Vec<&str> = self.0.iter().map(String::as_str).collect();
        docker_rmi(&names);
    }
}

/// A compose project, taken down with its volumes when dropped.
struct Compose {
    argv: Vec<&'static str>,
    project: String,
    file: PathBuf,
}

impl Compose {
    /// `docker compose` (the v2 plugin) when installed, else docker-compose v1.
    fn new(project: String, file: PathBuf) -> Compose {
        let plugin = Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        let argv = if plugin {
            vec!["docker", "compose"]
        } else {
            require("docker-compose", "docker-compose");
            vec!["docker-compose"]
        };
        Compose {
            argv,
            project,
            file,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.argv[0]);
        c.args(&self.argv[1..])
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.file)
            .args(args);
        c
    }

    fn container(&self, service: &str) -> String {
        let id = run(&mut self.cmd(&["ps", "-q", service]));
        assert!(!id.trim().is_empty(), "no container for {service}");
        id.trim().to_owned()
    }

    fn logs(&self) -> String {
        self.cmd(&["logs", "--no-color"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.cmd(&["down", "-v", "--remove-orphans"]).output();
    }
}

/// `docker/build-image` with the test's (debug, dynamically linked) wharf binary.
pub(crate) fn build_wharf_image(tag: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docker/build-image");
    run(Command::new(script).args(["--binary", WHARF, "--tag", tag]));
}

fn wait_for_registry(url: &str, compose: &Compose) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        // 200, or 401 from the htpasswd-protected service: either way it is up and answering.
        if reqwest::blocking::get(format!("{url}/v2/"))
            .is_ok_and(|r| r.status() == 200 || r.status() == 401)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{url}/v2/ did not answer within 30 s; logs:\n{}",
        compose.logs()
    );
}

/// The manifest docker pushed (schema2), and its digest.
fn manifest(url: &str, repo: &str, tag: &str) -> (String, Vec<u8>) {
    // The open registry ignores credentials, as registry:2 does; the other needs them.
    let r = reqwest::blocking::Client::new()
        .get(format!("{url}/v2/{repo}/manifests/{tag}"))
        .basic_auth("admin", Some("admin"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "GET {url}/v2/{repo}/manifests/{tag}");
    let digest = r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    (digest, r.bytes().unwrap().to_vec())
}

/// registry:2's layout under a storage root: every blob of the manifest at
/// docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data with the right bytes or size, and the
/// tag's current/link naming the manifest.
fn assert_registry2_layout(root: &Path, repo: &str, tag: &str, digest: &str, body: &[u8]) {
    let v2 = root.join("docker/registry/v2");
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        v2.join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    };
    assert_eq!(
        std::fs::read(blob(digest)).expect("manifest blob in the bind-mounted dir"),
        body
    );
    let m: Value = serde_json::from_slice(body).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for d in layers.iter().chain([&m["config"]]) {
        let path = blob(d["digest"].as_str().unwrap());
        let len = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        assert_eq!(len, d["size"].as_u64().unwrap(), "{}", path.display());
    }
    let link = v2
        .join("repositories")
        .join(repo)
        .join("_manifests/tags")
        .join(tag)
        .join("current/link");
    assert_eq!(std::fs::read_to_string(&link).unwrap(), digest);
}

#[test]
fn image_runs_like_registry_2_under_docker_compose() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let image = unique("wharf-image-test:");
    let mut images = Images(vec![image.clone()]);
    build_wharf_image(&image);

    // Seed 004's compose file with the image swapped, and seed 003's `docker run` as a
    // second service. Host ports are free ones instead of 5000 so tests can run in parallel.
    let (port, default_port) = (free_port(), free_port());
    let compose_file = dir.path().join("docker-compose.yml");
    std::fs::write(
        &compose_file,
        format!(
            r#"services:
  # Seed 004, verbatim but for the image, the host port and deletes being enabled.
  registry:
    image: {image}
    environment:
      REGISTRY_AUTH: htpasswd
      REGISTRY_AUTH_HTPASSWD_REALM: Registry Realm
      REGISTRY_AUTH_HTPASSWD_PATH: /auth/registry.password
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: /data
      REGISTRY_STORAGE_DELETE_ENABLED: "true"
    volumes:
      - ./registry/registry.password:/auth/registry.password
      - ./registry/data:/data
    ports:
      - "{port}:5000"
  # Seed 003: `docker run -p 5000:5000 -v /opt/data/registry:/var/lib/registry registry:2`,
  # the image's own storage path and defaults (deletes disabled).
  registry-default:
    image: {image}
    volumes:
      - ./opt/data/registry:/var/lib/registry
    ports:
      - "{default_port}:5000"
"#
        ),
    )
    .unwrap();
    let data = dir.path().join("registry/data");
    let default_data = dir.path().join("opt/data/registry");
    std::fs::create_dir_all(&data).unwrap();
    // Seed 003's way of making the password file: `htpasswd -Bbn admin admin`.
    require("htpasswd", "apache2-utils");
    let password_file = run(Command::new("htpasswd").args(["-Bbn", "admin", "admin"]));
    std::fs::write(dir.path().join("registry/registry.password"), password_file).unwrap();
    let docker_config = dir.path().join("docker-config");
    let docker_as_admin = |args: &[&str]| {
        run(Command::new("docker")
            .env("DOCKER_CONFIG", &docker_config)
            .args(args))
    };
    let compose = Compose::new(unique("wharfimage"), compose_file);
    run(&mut compose.cmd(&["up", "-d"]));
    let url = format!("http://127.0.0.1:{port}");
    let default_url = format!("http://127.0.0.1:{default_port}");
    wait_for_registry(&url, &compose);
    wait_for_registry(&default_url, &compose);

    // docker push to both, drop every local copy, pull back from the first and run it.
    let local = build_busybox_image(&unique("wharf-image-src:"), "served from the image");
    let remote = format!("127.0.0.1:{port}/seeds/busybox:v1");
    let default_remote = format!("127.0.0.1:{default_port}/seeds/busybox:v1");
    images
        .0
        .extend([local.clone(), remote.clone(), default_remote.clone()]);
    // The authenticated registry refuses an anonymous push, then takes it after login.
    run(Command::new("docker").args(["tag", &local, &remote]));
    let anonymous = Command::new("docker")
        .env("DOCKER_CONFIG", dir.path().join("nobody"))
        .args(["push", &remote])
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "anonymous push to the htpasswd registry"
    );
    docker_as_admin(&[
        "login",
        &format!("127.0.0.1:{port}"),
        "-u",
        "admin",
        "-p",
        "admin",
    ]);
    docker_as_admin(&["push", &remote]);
    run(Command::new("docker").args(["tag", &local, &default_remote]));
    run(Command::new("docker").args(["push", &default_remote]));
    docker_rmi(&[&local, &remote, &default_remote]);
    docker_as_admin(&["pull", &remote]);
    let out = run(Command::new("docker").args(["run", "--rm", &remote, "cat", "/marker"]));
    assert_eq!(out.trim(), "served from the image");

    let client = reqwest::blocking::Client::new();
    assert_eq!(
        client
            .get(format!("{url}/v2/_catalog"))
            .send()
            .unwrap()
            .status(),
        401
    );
    let catalog: Value = client
        .get(format!("{url}/v2/_catalog"))
        .basic_auth("admin", Some("admin"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        catalog,
        serde_json::json!({"repositories": ["seeds/busybox"]})
    );

    // The data is on the host, in registry:2's layout, in both bind-mounted dirs.
    let (digest, body) = manifest(&url, "seeds/busybox", "v1");
    assert_registry2_layout(&data, "seeds/busybox", "v1", &digest, &body);
    let (default_digest, default_body) = manifest(&default_url, "seeds/busybox", "v1");
    assert_eq!(default_digest, digest);
    assert_registry2_layout(&default_data, "seeds/busybox", "v1", &digest, &default_body);

    // REGISTRY_STORAGE_DELETE_ENABLED reaches the server; registry:2's default is off.
    let delete = |url: &str| {
        client
            .delete(format!("{url}/v2/seeds/busybox/manifests/{digest}"))
            .basic_auth("admin", Some("admin"))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(delete(&default_url), 405, "deletes are off by default");
    assert_eq!(delete(&url), 202, "REGISTRY_STORAGE_DELETE_ENABLED=true");

    // `docker stop` sends SIGTERM to PID 1, which the kernel ignores unless the process
    // handles it: a prompt exit with status 0 (not 137 after the 10 s timeout) is wharf's
    // own graceful shutdown.
    for service in ["registry", "registry-default"] {
        let id = compose.container(service);
        let started = Instant::now();
        run(Command::new("docker").args(["stop", "--time", "10", &id]));
        let took = started.elapsed();
        let state = run(Command::new("docker").args([
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.ExitCode}}",
            &id,
        ]));
        assert_eq!(state.trim(), "false 0", "{service} after docker stop");
        assert!(
            took < Duration::from_secs(5),
            "docker stop {service} took {took:?}"
        );
    }
}
