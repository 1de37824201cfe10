//! Plain-http registries reached as docker reaches them: loopback with no flag, others
//! when daemon.json, `--insecure-registry` or the engine lists them, and a message that
//! names the fix otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::watch::{container_line, image_id, inspect, report_of, serving_image, Cleanup};

const USER: &str = "plain";
const PASSWORD: &str = "plain pass";

/// A plain-http wharf on 127.0.0.1 with htpasswd auth, and a private docker config.
struct Plain {
    dir: tempfile::TempDir,
    served: Served,
}

impl Plain {
    fn start() -> Plain {
        let dir = tempfile::tempdir().unwrap();
        htpasswd(&dir.path().join("htpasswd"), USER, PASSWORD);
        let yaml = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  htpasswd:\n    realm: wharf\n    path: @DIR@/htpasswd\n";
        let served = Served::start(dir.path(), yaml, &[]);
        Plain { dir, served }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// `wharf ARGS` as a user types it: no flag, no insecure list anywhere.
    fn wharf(&self) -> Command {
        let mut cmd = Command::new(WHARF);
        cmd.env("DOCKER_CONFIG", self.config())
            .env("WHARF_DAEMON_JSON", self.dir.path().join("no-daemon.json"))
            .env_remove("REPO_USER")
            .env_remove("REPO_PASS")
            .env_remove("WHARF_INSECURE_REGISTRIES");
        cmd
    }

    fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_CONFIG", self.config());
        cmd
    }
}

fn stdout_ok(out: Output, what: &str) -> String {
    ok(out, what)
}

#[test]
fn a_plain_http_wharf_on_loopback_needs_no_flag() {
    require_docker();
    let plain = Plain::start();
    let host = plain.served.host();
    let mut cleanup = Cleanup::default();

    let login = output_with_stdin(
        plain
            .wharf()
            .args(["login", "-u", USER, "--password-stdin=true", &host]),
        PASSWORD,
    );
    assert_eq!(stdout_ok(login, "wharf login"), "Login Succeeded");

    // docker uses the login wharf stored, and the engine reaches 127.0.0.1 over http.
    let v1 = serving_image(&mut cleanup, "plain1", &[]);
    let v2 = serving_image(&mut cleanup, "plain2", &[]);
    let image = format!("{host}/apps/plain:latest");
    cleanup.images.push(image.clone());
    run(plain.docker().args(["tag", &v1, &image]));
    run(plain.docker().args(["push", &image]));

    let tags = stdout_ok(
        plain.wharf().args(["tags", &image]).output().unwrap(),
        "tags",
    );
    assert_eq!(tags, "latest");
    let catalog = stdout_ok(
        plain.wharf().args(["catalog", &host]).output().unwrap(),
        "catalog",
    );
    assert_eq!(catalog, "apps/plain");
    let url = format!("http://{host}");
    let catalog = stdout_ok(
        plain.wharf().args(["catalog", &url]).output().unwrap(),
        "catalog http://",
    );
    assert_eq!(catalog, "apps/plain");
    let copied = stdout_ok(
        plain
            .wharf()
            .args(["copy", "--quiet=true", "--json=false", &image])
            .arg(format!("{host}/apps/copy:v1"))
            .output()
            .unwrap(),
        "copy",
    );
    assert!(copied.starts_with("sha256:"), "{copied}");

    // The watcher, also with no flag, checks it and has the engine pull the update.
    let name = unique("wharf-plain-");
    cleanup.containers.push(name.clone());
    run(plain.docker().args(["run", "-d", "--name", &name, &image]));
    run(plain.docker().args(["tag", &v2, &image]));
    run(plain.docker().args(["push", &image]));
    let out = plain
        .wharf()
        .args(["watch", "--run-once", "--rollback-grace", "2s", &name])
        .output()
        .unwrap();
    let report = report_of(&out);
    assert!(out.status.success(), "{report:#}");
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(inspect(&name)["Image"].as_str().unwrap(), image_id(&v2));
}

/// A network namespace of the test's own, with 192.0.2.1 (TEST-NET-1) on its loopback
/// device: a registry address that is not loopback, with no traffic leaving the machine.
/// `/etc/netns/<name>/hosts` maps `registry.test` there for commands run in it.
struct Netns {
    name: String,
    etc: PathBuf,
}

impl Netns {
    fn create() -> Netns {
        require("ip", "iproute2");
        let uid = run(Command::new("id").arg("-u"));
        assert_eq!(
            uid.trim(),
            "0",
            "creating a network namespace (ip netns add) needs root: run this test as root"
        );
        let name = unique("wharf-test-");
        run(Command::new("ip").args(["netns", "add", &name]));
        let etc = Path::new("/etc/netns").join(&name);
        let ns = Netns { name, etc };
        std::fs::create_dir_all(&ns.etc).unwrap();
        std::fs::write(
            ns.etc.join("hosts"),
            "127.0.0.1 localhost\n192.0.2.1 registry.test\n",
        )
        .unwrap();
        run(ns.exec("ip").args(["link", "set", "lo", "up"]));
        run(ns
            .exec("ip")
            .args(["addr", "add", "192.0.2.1/32", "dev", "lo"]));
        ns
    }

    fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.etc);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn another_address_is_plain_http_when_daemon_json_lists_it_and_named_when_not() {
    require("curl", "curl");
    let ns = Netns::create();
    let root = tempfile::tempdir().unwrap();
    let server = ns
        .exec(WHARF)
        .args(["serve", "--addr", "192.0.2.1:5000", "--root"])
        .arg(root.path())
        .env("WHARF_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Proc(server);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ns
        .exec("curl")
        .args(["-sf", "http://192.0.2.1:5000/v2/"])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "wharf did not start in the netns"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let daemon_json = root.path().join("daemon.json");
    let catalog = |host: &str, extra: &[&str]| {
        ns.exec(WHARF)
            .env("WHARF_DAEMON_JSON", &daemon_json)
            .env("DOCKER_CONFIG", root.path().join("docker-config"))
            .env_remove("WHARF_INSECURE_REGISTRIES")
            .args(extra)
            .args(["catalog", host])
            .output()
            .unwrap()
    };

    for host in ["192.0.2.1:5000", "registry.test:5000"] {
        let refused = catalog(host, &[]);
        assert!(!refused.status.success());
        assert_eq!(
            String::from_utf8_lossy(&refused.stderr),
            format!("Error: {host} answered in plain http: add it to insecure-registries in daemon.json, or pass --insecure-registry {host}\n")
        );
        let flagged = catalog(host, &["--insecure-registry", host]);
        assert!(flagged.status.success(), "{flagged:?}");
    }

    std::fs::write(
        &daemon_json,
        r#"{"mtu": 1400, "insecure-registries": ["192.0.2.1:5000"]}"#,
    )
    .unwrap();
    assert!(catalog("192.0.2.1:5000", &[]).status.success());
    assert!(!catalog("registry.test:5000", &[]).status.success());

    // A CIDR covers a host name that resolves into it, as dockerd resolves it.
    std::fs::write(&daemon_json, r#"{"insecure-registries": ["192.0.2.0/24"]}"#).unwrap();
    let by_name = catalog("registry.test:5000", &[]);
    assert!(by_name.status.success(), "{by_name:?}");
}

#[test]
fn a_watcher_in_a_container_reads_the_engines_insecure_list_and_hints_at_host_network() {
    require_docker();
    let plain = Plain::start();
    let host = plain.served.host();
    let mut cleanup = Cleanup::default();
    let login = output_with_stdin(
        plain
            .docker()
            .args(["login", "-u", USER, "--password-stdin", &host]),
        PASSWORD,
    );
    assert!(login.status.success(), "docker login: {login:?}");
    let wharf_image = unique("wharf-plain-self:");
    crate::image::build_wharf_image(&wharf_image);
    cleanup.images.push(wharf_image.clone());
    let v1 = serving_image(&mut cleanup, "pw1", &[]);
    let v2 = serving_image(&mut cleanup, "pw2", &[]);
    let image = format!("{host}/apps/boxed-plain:latest");
    cleanup.images.push(image.clone());
    run(plain.docker().args(["tag", &v1, &image]));
    run(plain.docker().args(["push", &image]));
    let name = unique("wharf-plain-boxed-");
    cleanup.containers.push(name.clone());
    let scope = format!("com.centurylinklabs.watchtower.scope={name}");
    run(plain
        .docker()
        .args(["run", "-d", "--name", &name, "-l", &scope, &image]));
    run(plain.docker().args(["tag", &v2, &image]));
    run(plain.docker().args(["push", &image]));

    let mut watch = |network: &str| {
        let watcher = unique("wharf-plain-watcher-");
        cleanup.containers.push(watcher.clone());
        Command::new("docker")
            .args([
                "run",
                "--name",
                &watcher,
                "--network",
                network,
                "-l",
                &scope,
            ])
            .args(["-e", "WATCHTOWER_DEBUG=true"])
            .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
            .arg("-v")
            .arg(format!(
                "{}:/config.json:ro",
                plain.config().join("config.json").display()
            ))
            .args([
                &wharf_image,
                "watch",
                "--run-once",
                "--rollback-grace",
                "2s",
            ])
            .args(["--scope", &name])
            .output()
            .unwrap()
    };

    // On the default bridge, 127.0.0.1 is the watcher's own container.
    let bridged = watch("bridge");
    let report = report_of(&bridged);
    assert_eq!(bridged.status.code(), Some(1), "{report:#}");
    assert!(
        String::from_utf8_lossy(&bridged.stderr)
            .ends_with("Error: 1 of 1 containers failed their check or update (see the report)\n"),
        "{}",
        String::from_utf8_lossy(&bridged.stderr)
    );
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "failed", "{report:#}");
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.ends_with(&format!("; this watcher runs in a container, where {host} is the container itself unless it shares the host's network: run it with --network host")),
        "{detail}"
    );

    // With the host's network it reaches the registry over http, as the engine does.
    let hosted = watch("host");
    let report = report_of(&hosted);
    assert!(hosted.status.success(), "{report:#}");
    let log = String::from_utf8_lossy(&hosted.stderr);
    let engine_list = log
        .lines()
        .find(|l| l.contains("the engine's insecure registries"))
        .unwrap_or_else(|| panic!("the watcher did not ask the engine: {log}"));
    assert!(engine_list.contains(r#""127.0.0.0/8""#), "{engine_list}");
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(inspect(&name)["Image"].as_str().unwrap(), image_id(&v2));
}
