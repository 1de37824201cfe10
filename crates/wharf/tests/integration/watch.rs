//! `wharf watch` against the machine's real Docker Engine and a real wharf registry with
//! TLS (a self-signed CA), htpasswd and token auth: images built locally, pushed, run,
//! replaced by a newer push, and checked for what the updater did.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

pub(crate) const USER: &str = "watcher";
pub(crate) const PASSWORD: &str = "watch pass";
/// A long-running command that stops at once on SIGTERM.
pub(crate) const SERVE_CMD: &str =
    r#"CMD ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#;

/// The registry a test's containers pull from, with `docker login` done into a private
/// docker config directory.
pub(crate) struct Registry {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) served: Served,
    pub(crate) cert: PathBuf,
}

impl Registry {
    pub(crate) fn start() -> Registry {
        require_docker();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "wharf-watch-test");
        htpasswd(&dir.path().join("htpasswd"), USER, PASSWORD);
        let yaml = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: wharf\n    path: @DIR@/htpasswd\n    token:\n      service: wharf-watch-test\n      expiration: 300s\n",
            cert.display(),
            key.display()
        );
        let served = Served::start(dir.path(), &yaml, &[]);
        let registry = Registry { dir, served, cert };
        let login = output_with_stdin(
            registry
                .docker()
                .args(["login", "-u", USER, "--password-stdin", &registry.host()]),
            PASSWORD,
        );
        assert!(login.status.success(), "docker login: {login:?}");
        registry
    }

    pub(crate) fn host(&self) -> String {
        self.served.host()
    }

    pub(crate) fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    pub(crate) fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_CONFIG", self.docker_config());
        cmd
    }

    /// Tag a local image as `repo:tag` here and push it; returns the manifest digest.
    pub(crate) fn push(&self, local: &str, repo_tag: &str) -> String {
        let remote = format!("{}/{repo_tag}", self.host());
        run(self.docker().args(["tag", local, &remote]));
        let out = run(self.docker().args(["push", &remote]));
        out.split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap_or_else(|| panic!("no digest in docker push output: {out}"))
            .to_owned()
    }

    /// `wharf watch` with this registry's credentials and CA; returns its report.
    pub(crate) fn watch(&self, args: &[&str]) -> Value {
        let out = self.watch_output(args);
        assert!(
            out.status.success(),
            "wharf watch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        report_of(&out)
    }

    /// As `watch`, for a check in which some container fails: the exit code says so.
    pub(crate) fn watch_failing(&self, args: &[&str]) -> Value {
        let out = self.watch_output(args);
        let report = report_of(&out);
        assert!(
            !out.status.success(),
            "wharf watch exited 0 although a container failed: {report:#}"
        );
        report
    }

    pub(crate) fn watch_output(&self, args: &[&str]) -> Output {
        self.watch_command(&[&["--run-once"][..], args].concat())
            .output()
            .unwrap()
    }

    pub(crate) fn watch_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(WHARF);
        cmd.env("DOCKER_CONFIG", self.docker_config())
            .env_remove("REPO_USER")
            .env_remove("REPO_PASS")
            .env_remove("WATCHTOWER_POLL_INTERVAL")
            .env("WHARF_LOG", "info")
            // Rolled-back images are remembered here, not in the tester's home.
            .env("WHARF_WATCH_STATE_DIR", self.dir.path().join("watch-state"))
            .arg("watch")
            .arg("--registry-ca")
            .arg(&self.cert)
            .args(["--stop-timeout", "5s"]);
        // Short, so updates that succeed finish quickly; a test may give its own.
        if !args.contains(&"--rollback-grace") {
            cmd.args(["--rollback-grace", "4s"]);
        }
        cmd.args(args);
        cmd
    }

    /// Token requests: GET with a password, POST with docker's refresh token.
    pub(crate) fn token_requests(&self) -> usize {
        self.requests("GET", "/auth/token") + self.requests("POST", "/auth/token")
    }

    /// Access-log lines of requests whose method and path are these.
    pub(crate) fn requests(&self, method: &str, path: &str) -> usize {
        self.served
            .log()
            .lines()
            .filter(|l| {
                l.contains(&format!("method={method} ")) && l.contains(&format!("path={path} "))
            })
            .count()
    }
}

/// Containers, networks, volumes and images a test made, removed however it ends.
#[derive(Default)]
pub(crate) struct Cleanup {
    pub(crate) containers: Vec<String>,
    pub(crate) networks: Vec<String>,
    pub(crate) volumes: Vec<String>,
    pub(crate) images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("docker")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        // By id as well as by name: an image pulled by digest keeps no tag, and removing
        // its names alone would leave it behind.
        let field = |args: &[&str]| {
            Command::new("docker")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let mut ids: Vec<String> = Vec::new();
        for c in &self.containers {
            for suffix in ["", "-wharf-next", "-wharf-prev"] {
                let name = format!("{c}{suffix}");
                let container = ["container", "inspect", "-f", "{{.Image}}", &name];
                ids.extend(field(&container));
                quiet(&["rm", "-f", &name]);
            }
        }
        for n in &self.networks {
            quiet(&["network", "rm", n]);
        }
        for v in &self.volumes {
            quiet(&["volume", "rm", v]);
        }
        for i in &self.images {
            ids.extend(field(&["image", "inspect", "-f", "{{.Id}}", i]));
            quiet(&["rmi", "-f", i]);
        }
        for id in ids.iter().filter(|id| id.starts_with("sha256:")) {
            quiet(&["rmi", "-f", id]);
        }
    }
}

/// Images `<marker>1` and `<marker>2`, the first pushed as `repo:latest`:
/// (v1, v2, the reference containers run).
pub(crate) fn v1_pushed(
    registry: &Registry,
    cleanup: &mut Cleanup,
    marker: &str,
    repo: &str,
) -> (String, String, String) {
    let v1 = serving_image(cleanup, &format!("{marker}1"), &[]);
    let v2 = serving_image(cleanup, &format!("{marker}2"), &[]);
    let image = format!("{}/{repo}:latest", registry.host());
    cleanup.images.push(image.clone());
    registry.push(&v1, &format!("{repo}:latest"));
    (v1, v2, image)
}

/// A busybox image that runs until stopped, with `VERSION=<marker>` in its environment.
pub(crate) fn serving_image(cleanup: &mut Cleanup, marker: &str, files: &[(&str, &str)]) -> String {
    let name = unique(&format!("wharf-watch-{marker}:"));
    let env = format!("ENV VERSION={marker}");
    build_busybox_image_with(&name, marker, files, &[SERVE_CMD, &env]);
    cleanup.images.push(name.clone());
    name
}

pub(crate) fn inspect(what: &str) -> Value {
    let out = run(Command::new("docker").args(["inspect", what]));
    let all: Value = serde_json::from_str(&out).unwrap();
    all[0].clone()
}

pub(crate) fn image_id(reference: &str) -> String {
    run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", reference]))
        .trim()
        .to_owned()
}

pub(crate) fn container_line<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the report: {report:#}"))
}

pub(crate) fn docker_run(registry: &Registry, args: &[&str]) -> String {
    run(registry.docker().arg("run").arg("-d").args(args))
        .trim()
        .to_owned()
}

/// `State.StartedAt` with its fraction padded to nanoseconds, so text order is time order
/// (docker trims trailing zeros: `.1Z` would sort after `.10001Z`).
fn started_at(container: &Value) -> String {
    let text = container["State"]["StartedAt"].as_str().unwrap();
    let (seconds, fraction) = text
        .trim_end_matches('Z')
        .split_once('.')
        .unwrap_or((text, ""));
    format!("{seconds}.{fraction:0<9}Z")
}

pub(crate) fn env_of(container: &Value) -> Vec<String> {
    container["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Creates `name` with a subnet of its own (the engine takes static IPs only there) and
/// returns the subnet's first three octets. The subnets lie in 10.213.0.0/16, outside the
/// engine's default pools, so networks other tests create at the same time cannot take
/// them; one a concurrent run holds is passed over.
fn network_with_own_subnet(name: &str) -> String {
    let first = std::process::id() % 200;
    for step in 0..50 {
        let prefix = format!("10.213.{}", (first + step) % 250);
        let out = Command::new("docker")
            .args([
                "network",
                "create",
                "--subnet",
                &format!("{prefix}.0/24"),
                name,
            ])
            .output()
            .expect("cannot run docker");
        if out.status.success() {
            return prefix;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("overlaps"),
            "docker network create {name}: {stderr}"
        );
    }
    panic!("no free /24 in 10.213.0.0/16 for network {name}");
}

#[test]
fn an_update_keeps_the_whole_configuration_and_cleans_up_the_old_image() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (v1, v2, image) = v1_pushed(&registry, &mut cleanup, "v", "apps/web");
    let v1_digest = inspect(&image)["RepoDigests"][0]
        .as_str()
        .unwrap()
        .split('@')
        .nth(1)
        .unwrap()
        .to_owned();

    let name = unique("wharf-watch-web-");
    let (front, back, volume) = (
        format!("{name}-front"),
        format!("{name}-back"),
        format!("{name}-data"),
    );
    cleanup.containers.push(name.clone());
    cleanup.networks.extend([front.clone(), back.clone()]);
    cleanup.volumes.push(volume.clone());
    run(Command::new("docker").args(["network", "create", &front]));
    let static_ip = network_with_own_subnet(&back) + ".77";
    let host_port = free_port().to_string();
    docker_run(
        &registry,
        &[
            "--name",
            &name,
            "--network",
            &front,
            "--network-alias",
            "web",
            "--hostname",
            "webhost",
            "-e",
            "MODE=prod",
            "-l",
            "team=storefront",
            "-v",
            &format!("{volume}:/data"),
            "-p",
            &format!("127.0.0.1:{host_port}:8080"),
            "--restart",
            "unless-stopped",
            "--memory",
            "64m",
            "--user",
            "1000:1000",
            &image,
        ],
    );
    run(Command::new("docker").args([
        "network",
        "connect",
        "--alias",
        "web-internal",
        "--ip",
        &static_ip,
        &back,
        &name,
    ]));
    run(Command::new("docker").args([
        "exec",
        "-u",
        "0",
        &name,
        "sh",
        "-c",
        "echo kept > /data/state",
    ]));
    // Only the registry's name for v1 remains, so --cleanup may remove it once unused.
    run(Command::new("docker").args(["rmi", &v1]));
    let before = inspect(&name);

    // Nothing newer yet: nothing changes.
    let report = registry.watch(&["--cleanup", &name]);
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "fresh",
        "{report:#}"
    );
    assert_eq!(inspect(&name)["Id"], before["Id"]);

    let v2_digest = registry.push(&v2, "apps/web:latest");
    let report = registry.watch(&["--cleanup", &name]);
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "updated", "{report:#}");
    assert_eq!(line["old_digest"], v1_digest.as_str());
    assert_eq!(line["new_digest"], v2_digest.as_str());

    let after = inspect(&name);
    assert_ne!(after["Id"], before["Id"], "the container was not replaced");
    assert_eq!(after["Image"].as_str().unwrap(), image_id(&v2));
    assert_eq!(
        after["Config"]["Image"],
        image.as_str(),
        "the reference the user wrote is kept"
    );
    assert_eq!(after["State"]["Running"], true);
    let env = env_of(&after);
    assert!(env.contains(&"MODE=prod".to_owned()), "{env:?}");
    assert!(
        env.contains(&"VERSION=v2".to_owned()),
        "the new image's defaults apply: {env:?}"
    );
    assert!(!env.contains(&"VERSION=v1".to_owned()), "{env:?}");
    assert_eq!(after["Config"]["Labels"]["team"], "storefront");
    assert_eq!(after["Config"]["Hostname"], "webhost");
    assert_eq!(after["Config"]["User"], "1000:1000");
    for field in ["PortBindings", "RestartPolicy", "Memory", "Binds"] {
        assert_eq!(
            after["HostConfig"][field], before["HostConfig"][field],
            "{field}"
        );
    }
    let nets = &after["NetworkSettings"]["Networks"];
    let aliases = nets[&front]["Aliases"].to_string();
    assert!(aliases.contains("\"web\""), "{aliases}");
    assert!(nets[&back]["Aliases"].to_string().contains("web-internal"));
    assert_eq!(nets[&back]["IPAddress"], static_ip.as_str());
    assert_eq!(nets[&back]["IPAMConfig"]["IPv4Address"], static_ip.as_str());
    let state = run(Command::new("docker").args(["exec", &name, "cat", "/data/state"]));
    assert_eq!(state.trim(), "kept", "the volume's data must survive");
    // The side containers are gone, and with --cleanup so is v1 (nothing uses it).
    for suffix in ["-wharf-next", "-wharf-prev"] {
        let gone = Command::new("docker")
            .args(["inspect", &format!("{name}{suffix}")])
            .output()
            .unwrap();
        assert!(!gone.status.success(), "{suffix} left behind");
    }
    let v1_id = before["Image"].as_str().unwrap();
    let kept = Command::new("docker")
        .args(["image", "inspect", v1_id])
        .output()
        .unwrap();
    assert!(!kept.status.success(), "--cleanup kept the old image");
}

#[test]
fn a_broken_update_is_rolled_back_to_the_old_container() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let v1 = serving_image(&mut cleanup, "ok", &[("healthy", "yes")]);
    let crashing = unique("wharf-watch-crash:");
    build_busybox_image_with(
        &crashing,
        "crash",
        &[],
        &[r#"CMD ["/bin/sh", "-c", "exit 3"]"#],
    );
    cleanup.images.push(crashing.clone());
    let unhealthy = serving_image(&mut cleanup, "sick", &[]);

    // One container exits at once on the new image, the other fails its healthcheck
    // (the new image lacks the file the check reads).
    let crash_image = format!("{}/apps/crash:1", registry.host());
    let sick_image = format!("{}/apps/sick:1", registry.host());
    cleanup
        .images
        .extend([crash_image.clone(), sick_image.clone()]);
    registry.push(&v1, "apps/crash:1");
    registry.push(&v1, "apps/sick:1");
    let crash_name = unique("wharf-watch-crash-");
    let sick_name = unique("wharf-watch-sick-");
    cleanup
        .containers
        .extend([crash_name.clone(), sick_name.clone()]);
    docker_run(&registry, &["--name", &crash_name, &crash_image]);
    docker_run(
        &registry,
        &[
            "--name",
            &sick_name,
            "--health-cmd",
            "cat /healthy",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--health-timeout",
            "1s",
            &sick_image,
        ],
    );
    let crash_before = inspect(&crash_name);
    let sick_before = inspect(&sick_name);
    registry.push(&crashing, "apps/crash:1");
    registry.push(&unhealthy, "apps/sick:1");

    // A grace long enough for the healthcheck to fail even on a loaded machine.
    let report = registry.watch_failing(&[
        "--rolling-restart",
        "--rollback-grace",
        "30s",
        &crash_name,
        &sick_name,
    ]);
    for (name, before, why) in [
        (&crash_name, &crash_before, "stopped"),
        (&sick_name, &sick_before, "unhealthy"),
    ] {
        let line = container_line(&report, name);
        assert_eq!(line["outcome"], "rolled_back", "{report:#}");
        assert!(line["detail"].as_str().unwrap().contains(why), "{line}");
        let now = inspect(name);
        assert_eq!(
            now["Id"], before["Id"],
            "{name}: the old container must be back"
        );
        assert_eq!(now["State"]["Running"], true, "{name} is not running");
        assert_eq!(now["Image"], before["Image"]);
    }
    // Checking again (another --run-once) does not try the same broken image: the
    // rollback is remembered, so the healthy container is not even stopped.
    let started = inspect(&crash_name)["State"]["StartedAt"].clone();
    let again = registry.watch(&[&crash_name]);
    let line = container_line(&again, &crash_name);
    assert_eq!(line["outcome"], "skipped", "{again:#}");
    assert!(
        line["detail"]
            .as_str()
            .unwrap()
            .contains("not retried until"),
        "{again:#}"
    );
    let now = inspect(&crash_name);
    assert_eq!(now["Id"], crash_before["Id"]);
    assert_eq!(now["State"]["StartedAt"], started);
}

#[test]
fn monitor_only_and_label_enable_choose_what_changes() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (v1, v2, image) = v1_pushed(&registry, &mut cleanup, "m", "apps/labels");
    let labelled = unique("wharf-watch-labelled-");
    let plain = unique("wharf-watch-plain-");
    let watching = unique("wharf-watch-monitored-");
    cleanup
        .containers
        .extend([labelled.clone(), plain.clone(), watching.clone()]);
    let enable = "com.centurylinklabs.watchtower.enable=true";
    docker_run(&registry, &["--name", &labelled, "-l", enable, &image]);
    docker_run(&registry, &["--name", &plain, &image]);
    docker_run(
        &registry,
        &[
            "--name",
            &watching,
            "-l",
            enable,
            "-l",
            "com.centurylinklabs.watchtower.monitor-only=true",
            &image,
        ],
    );
    let v1_id = image_id(&v1);
    registry.push(&v2, "apps/labels:latest");

    // Global monitor-only: a newer image is reported (and notified), nothing is touched.
    let hook = WebhookReceiver::start();
    let url = format!("generic+http://{}/hook", hook.addr);
    let report = registry.watch(&[
        "--monitor-only",
        "--notification-url",
        &url,
        &labelled,
        &plain,
        &watching,
    ]);
    let sent: Value = serde_json::from_str(&hook.next_body()).unwrap();
    assert_eq!(
        sent["containers"], report["containers"],
        "the webhook got another report"
    );
    let line = container_line(&sent, &plain);
    assert_eq!(line["outcome"], "stale");
    assert!(line["old_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_ne!(line["old_digest"], line["new_digest"]);
    for name in [&labelled, &plain, &watching] {
        assert_eq!(
            container_line(&report, name)["outcome"],
            "stale",
            "{report:#}"
        );
        assert_eq!(inspect(name)["Image"].as_str().unwrap(), v1_id);
    }
    // --label-enable: only the labelled one changes, and the monitor-only label holds.
    let names = [labelled.as_str(), plain.as_str(), watching.as_str()];
    let report = registry.watch(&[&["--label-enable"][..], &names[..]].concat());
    assert_eq!(
        container_line(&report, &labelled)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(container_line(&report, &watching)["outcome"], "stale");
    assert!(report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] != plain.as_str()));
    assert_eq!(inspect(&labelled)["Image"].as_str().unwrap(), image_id(&v2));
    assert_eq!(inspect(&plain)["Image"].as_str().unwrap(), v1_id);
    assert_eq!(inspect(&watching)["Image"].as_str().unwrap(), v1_id);
}

#[test]
fn dependants_stop_before_and_start_after_their_dependency() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let v1 = serving_image(&mut cleanup, "d1", &[]);
    let v2 = serving_image(&mut cleanup, "d2", &[]);
    let db_image = format!("{}/apps/db:latest", registry.host());
    let web_image = format!("{}/apps/front:latest", registry.host());
    cleanup.images.extend([db_image.clone(), web_image.clone()]);
    registry.push(&v1, "apps/db:latest");
    registry.push(&v1, "apps/front:latest");
    let db = unique("wharf-watch-db-");
    let web = unique("wharf-watch-front-");
    cleanup.containers.extend([db.clone(), web.clone()]);
    docker_run(&registry, &["--name", &db, &db_image]);
    docker_run(
        &registry,
        &[
            "--name",
            &web,
            "-l",
            &format!("com.centurylinklabs.watchtower.depends-on={db}"),
            &web_image,
        ],
    );
    let web_started = started_at(&inspect(&web));
    registry.push(&v2, "apps/db:latest");
    std::thread::sleep(Duration::from_secs(1));

    let report = registry.watch(&[&db, &web]);
    assert_eq!(
        container_line(&report, &db)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(container_line(&report, &web)["outcome"], "fresh");
    let db_now = inspect(&db);
    let web_now = inspect(&web);
    assert_eq!(
        web_now["State"]["Running"], true,
        "the dependant was not started again"
    );
    let web_restarted = started_at(&web_now);
    assert!(
        web_restarted > web_started,
        "the dependant was not restarted"
    );
    let db_started = started_at(&db_now);
    assert!(
        web_restarted > db_started,
        "the dependant started before its dependency ({web_restarted} vs {db_started})"
    );
}

#[test]
fn a_container_on_a_replaced_containers_network_is_recreated_on_the_new_one() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let v1 = serving_image(&mut cleanup, "n1", &[]);
    let v2 = serving_image(&mut cleanup, "n2", &[]);
    let vpn_image = format!("{}/apps/vpn:latest", registry.host());
    let client_image = format!("{}/apps/client:latest", registry.host());
    cleanup
        .images
        .extend([vpn_image.clone(), client_image.clone()]);
    registry.push(&v1, "apps/vpn:latest");
    registry.push(&v1, "apps/client:latest");
    let vpn = unique("wharf-watch-vpn-");
    let client = unique("wharf-watch-vpnclient-");
    let parked = unique("wharf-watch-parked-");
    let idle = unique("wharf-watch-idle-");
    cleanup
        .containers
        .extend([vpn.clone(), client.clone(), parked.clone(), idle.clone()]);
    docker_run(&registry, &["--name", &vpn, &vpn_image]);
    // As behind a VPN sidecar (gluetun and the like): no network of their own.
    let shared = format!("container:{vpn}");
    let env = ["-e", "ROLE=client"];
    docker_run(
        &registry,
        &[
            &["--name", &client, "--network", &shared][..],
            &env,
            &[&client_image],
        ]
        .concat(),
    );
    docker_run(
        &registry,
        &["--name", &parked, "--network", &shared, &client_image],
    );
    // Dependants their user stopped stay stopped.
    let depends = format!("com.centurylinklabs.watchtower.depends-on={vpn}");
    docker_run(&registry, &["--name", &idle, "-l", &depends, &client_image]);
    run(Command::new("docker").args(["stop", "-t", "1", &idle, &parked]));
    let before = inspect(&client);
    // Both images have a v2 in the registry; the engine's client tag still names v1.
    registry.push(&v2, "apps/vpn:latest");
    registry.push(&v2, "apps/client:latest");
    run(Command::new("docker").args(["tag", &v1, &client_image]));

    let report = registry.watch(&[&vpn, &client]);
    let line = container_line(&report, &vpn);
    assert_eq!(line["outcome"], "updated", "{report:#}");
    assert!(line["detail"].is_null(), "{report:#}");
    let deferred = container_line(&report, &client);
    assert_eq!(deferred["outcome"], "skipped", "{report:#}");
    assert!(
        deferred["detail"].as_str().unwrap().contains("next check"),
        "{report:#}"
    );
    let vpn_now = inspect(&vpn);
    let on_new_vpn = format!("container:{}", vpn_now["Id"].as_str().unwrap());
    let after = inspect(&client);
    assert_eq!(after["State"]["Running"], true, "{after:#}");
    assert_ne!(after["Id"], before["Id"], "it was not recreated");
    assert_eq!(after["HostConfig"]["NetworkMode"], on_new_vpn.as_str());
    assert_eq!(after["Image"], before["Image"], "its own image is kept");
    assert_eq!(after["Config"]["Image"], client_image.as_str());
    assert!(env_of(&after).contains(&"ROLE=client".to_owned()));
    // The namespace it joined has the new container's interface, not just loopback.
    let interfaces = run(Command::new("docker").args(["exec", &client, "ls", "/sys/class/net"]));
    assert!(interfaces.contains("eth0"), "{interfaces}");
    // The stopped ones stay stopped; the one on the network can still be started.
    assert_eq!(
        inspect(&idle)["State"]["Running"],
        false,
        "a stopped dependant was started"
    );
    let parked_now = inspect(&parked);
    assert_eq!(parked_now["State"]["Running"], false);
    assert_eq!(parked_now["HostConfig"]["NetworkMode"], on_new_vpn.as_str());
    run(Command::new("docker").args(["start", &parked]));
    for name in [&client, &parked] {
        let gone = Command::new("docker")
            .args(["inspect", &format!("{name}-wharf-prev")])
            .output()
            .unwrap();
        assert!(!gone.status.success(), "the old {name} was left behind");
    }

    // The next check updates the client itself, on the network it shares now.
    let report = registry.watch(&[&vpn, &client]);
    assert_eq!(
        container_line(&report, &vpn)["outcome"],
        "fresh",
        "{report:#}"
    );
    assert_eq!(
        container_line(&report, &client)["outcome"],
        "updated",
        "{report:#}"
    );
    let updated = inspect(&client);
    assert_eq!(updated["Image"], image_id(&v2).as_str());
    assert_eq!(updated["HostConfig"]["NetworkMode"], on_new_vpn.as_str());
    assert_eq!(updated["State"]["Running"], true);
}

#[test]
fn no_pull_asks_no_registry_and_follows_the_local_image() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (v1, v2, image) = v1_pushed(&registry, &mut cleanup, "np", "apps/nopull");
    let name = unique("wharf-watch-nopull-");
    cleanup.containers.push(name.clone());
    let label = "com.centurylinklabs.watchtower.no-pull=true";
    docker_run(&registry, &["--name", &name, "-l", label, &image]);
    // The registry has v2, but the engine's tag still names v1.
    registry.push(&v2, "apps/nopull:latest");
    run(Command::new("docker").args(["tag", &v1, &image]));
    let manifest = "/v2/apps/nopull/manifests/latest";
    let heads = registry.requests("HEAD", manifest);

    let report = registry.watch(&[&name]);
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "fresh",
        "{report:#}"
    );
    assert_eq!(inspect(&name)["Image"], image_id(&v1).as_str());

    // v2 arrives by hand (built, loaded or pulled): the container follows the local tag.
    run(Command::new("docker").args(["tag", &v2, &image]));
    let report = registry.watch(&[&name]);
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "updated",
        "{report:#}"
    );
    let after = inspect(&name);
    assert_eq!(after["Image"], image_id(&v2).as_str());
    assert_eq!(after["State"]["Running"], true);
    assert_eq!(
        registry.requests("HEAD", manifest),
        heads,
        "a no-pull container's registry was asked"
    );
}

#[test]
fn an_image_rolled_back_once_is_not_tried_again_by_a_running_watcher() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let v1 = serving_image(&mut cleanup, "keep", &[]);
    let crashing = unique("wharf-watch-crashes:");
    build_busybox_image_with(
        &crashing,
        "crashes",
        &[],
        &[r#"CMD ["/bin/sh", "-c", "exit 3"]"#],
    );
    cleanup.images.push(crashing.clone());
    let pulled = format!("{}/apps/again:1", registry.host());
    let local = format!("{}/apps/local:1", registry.host());
    cleanup.images.extend([pulled.clone(), local.clone()]);
    registry.push(&v1, "apps/again:1");
    registry.push(&v1, "apps/local:1");
    let (from_registry, no_pull) = (unique("wharf-watch-again-"), unique("wharf-watch-local-"));
    cleanup
        .containers
        .extend([from_registry.clone(), no_pull.clone()]);
    docker_run(&registry, &["--name", &from_registry, &pulled]);
    let label = "com.centurylinklabs.watchtower.no-pull=true";
    docker_run(&registry, &["--name", &no_pull, "-l", label, &local]);
    // A crashing image: in the registry for one, tagged by hand for the no-pull one.
    registry.push(&crashing, "apps/again:1");
    run(Command::new("docker").args(["tag", &crashing, &local]));

    let api = ApiWatcher::start(&registry, &[&from_registry, &no_pull], |_| {});
    let report = api.update();
    for name in [&from_registry, &no_pull] {
        let line = container_line(&report, name);
        assert_eq!(line["outcome"], "rolled_back", "{report:#}");
        assert_eq!(inspect(name)["Image"], image_id(&v1).as_str());
    }
    // The same image is not deployed (and rolled back, with a gap each time) again.
    let report = api.update();
    for name in [&from_registry, &no_pull] {
        let line = container_line(&report, name);
        assert_eq!(line["outcome"], "skipped", "{report:#}");
        assert!(
            line["detail"]
                .as_str()
                .unwrap()
                .contains("not retried until"),
            "{report:#}"
        );
        let now = inspect(name);
        assert_eq!(now["Image"], image_id(&v1).as_str());
        assert_eq!(now["State"]["Running"], true);
    }
}

#[test]
fn one_head_per_image_and_a_cached_token_through_the_http_api() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let v1 = serving_image(&mut cleanup, "h1", &[]);
    let image = format!("{}/apps/shared:latest", registry.host());
    cleanup.images.push(image.clone());
    registry.push(&v1, "apps/shared:latest");
    let names: Vec<String> = (0..3)
        .map(|i| unique(&format!("wharf-watch-shared{i}-")))
        .collect();
    cleanup.containers.extend(names.iter().cloned());
    for name in &names {
        docker_run(&registry, &["--name", name, &image]);
    }
    let mut args = vec!["--http-api-metrics"];
    args.extend(names.iter().map(String::as_str));
    let api = ApiWatcher::start(&registry, &args, |_| {});
    let url = api.url("/v1/update");
    let http = &api.http;

    let refused = http.post(&url).send().unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = http.post(&url).bearer_auth("nope").send().unwrap();
    assert_eq!(wrong.status(), 401);
    let manifest_path = "/v2/apps/shared/manifests/latest";
    let (heads, tokens) = (
        registry.requests("HEAD", manifest_path),
        registry.token_requests(),
    );

    let report = api.update();
    for name in &names {
        assert_eq!(
            container_line(&report, name)["outcome"],
            "fresh",
            "{report:#}"
        );
    }
    assert_eq!(
        registry.requests("HEAD", manifest_path) - heads,
        1,
        "three containers on one image: one HEAD"
    );
    let first_tokens = registry.token_requests() - tokens;
    assert_eq!(first_tokens, 1, "one token for the check");

    let report = api.update();
    assert_eq!(report["containers"].as_array().unwrap().len(), 3);
    assert_eq!(registry.requests("HEAD", manifest_path) - heads, 2);
    assert_eq!(
        registry.token_requests() - tokens,
        first_tokens,
        "the cached token must serve the second check"
    );

    let metrics = http
        .get(api.url("/v1/metrics"))
        .bearer_auth(ApiWatcher::TOKEN)
        .send()
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().unwrap();
    assert!(text.contains("watchtower_containers_scanned 3"), "{text}");
    assert!(text.contains("watchtower_scans_total 2"), "{text}");
    let unauthorized = http.get(api.url("/v1/metrics")).send().unwrap();
    assert_eq!(unauthorized.status(), 401);
}

#[test]
fn registry_and_engine_errors_are_named_and_other_containers_still_update() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (v1, v2, good) = v1_pushed(&registry, &mut cleanup, "e", "apps/good");
    // An image whose registry is not running: tagged locally, never pulled from anywhere.
    let dead_port = free_port();
    let unreachable = format!("127.0.0.1:{dead_port}/apps/gone:latest");
    run(Command::new("docker").args(["tag", &v1, &unreachable]));
    cleanup.images.push(unreachable.clone());
    // And one the registry has never heard of (404).
    let missing = format!("{}/apps/never-pushed:latest", registry.host());
    run(Command::new("docker").args(["tag", &v1, &missing]));
    cleanup.images.push(missing.clone());
    // And one whose registry takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_host = silent.local_addr().unwrap().to_string();
    let hanging = format!("{silent_host}/apps/slow:latest");
    let hanging_too = format!("{silent_host}/apps/slower:latest");
    for image in [&hanging, &hanging_too] {
        run(Command::new("docker").args(["tag", &v1, image]));
        cleanup.images.push(image.clone());
    }
    let (ok_name, dead_name) = (unique("wharf-watch-good-"), unique("wharf-watch-dead-"));
    let (missing_name, silent_name) = (unique("wharf-watch-missing-"), unique("wharf-watch-slow-"));
    cleanup.containers.extend([
        ok_name.clone(),
        dead_name.clone(),
        missing_name.clone(),
        silent_name.clone(),
    ]);
    docker_run(&registry, &["--name", &ok_name, &good]);
    docker_run(&registry, &["--name", &dead_name, &unreachable]);
    docker_run(&registry, &["--name", &missing_name, &missing]);
    docker_run(&registry, &["--name", &silent_name, &hanging]);
    let silent_too = unique("wharf-watch-slower-");
    cleanup.containers.push(silent_too.clone());
    docker_run(&registry, &["--name", &silent_too, &hanging_too]);
    registry.push(&v2, "apps/good:latest");

    let started = std::time::Instant::now();
    let report = registry.watch_failing(&[
        "--registry-timeout",
        "2s",
        &ok_name,
        &dead_name,
        &missing_name,
        &silent_name,
        &silent_too,
    ]);
    // The first image on the silent registry waits out the timeout; the next is not
    // sent to wait again.
    let (first, second) = {
        let a = container_line(&report, &silent_name);
        let b = container_line(&report, &silent_too);
        if a["detail"].as_str().unwrap_or("").contains("within 2 s") {
            (a, b)
        } else {
            (b, a)
        }
    };
    assert_eq!(first["outcome"], "failed", "{report:#}");
    let detail = first["detail"].as_str().unwrap();
    assert!(
        detail.contains(&silent_host) && detail.contains("within 2 s"),
        "{detail}"
    );
    assert_eq!(second["outcome"], "failed", "{report:#}");
    let detail = second["detail"].as_str().unwrap();
    assert!(detail.contains("not asked again"), "{detail}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a silent registry held up the check: {:?}",
        started.elapsed()
    );
    drop(silent);
    let line = container_line(&report, &missing_name);
    assert_eq!(line["outcome"], "failed", "{report:#}");
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.contains("not found") && detail.contains("never-pushed"),
        "{detail}"
    );
    let dead = container_line(&report, &dead_name);
    assert_eq!(dead["outcome"], "failed", "{report:#}");
    let detail = dead["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("127.0.0.1:{dead_port}")),
        "{detail}"
    );
    assert_eq!(
        container_line(&report, &ok_name)["outcome"],
        "updated",
        "{report:#}"
    );

    // Wrong credentials: said so, with where they came from, and never retried in a loop.
    let config = registry.dir.path().join("wrong-config");
    std::fs::create_dir_all(&config).unwrap();
    let auth = base64_user_pass(USER, "wrong");
    std::fs::write(
        config.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let before = registry.token_requests();
    let out = registry
        .watch_command(&["--run-once", &ok_name])
        .env("DOCKER_CONFIG", &config)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let line = container_line(&report, &ok_name);
    assert_eq!(line["outcome"], "failed");
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.contains("rejected the credentials") && detail.contains("config.json"),
        "{detail}"
    );
    assert!(
        registry.token_requests() - before <= 2,
        "token requests must not loop"
    );

    // No engine: the socket is named.
    let out = registry
        .watch_command(&["--run-once", "-H", "unix:///nonexistent/docker.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/docker.sock") && stderr.contains("DOCKER_HOST"),
        "{stderr}"
    );
}

pub(crate) fn base64_user_pass(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[test]
fn the_wharf_image_watches_from_a_container_with_the_docker_socket() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let wharf_image = unique("wharf-watch-self:");
    crate::image::build_wharf_image(&wharf_image);
    cleanup.images.push(wharf_image.clone());
    let (_, v2, image) = v1_pushed(&registry, &mut cleanup, "c", "apps/boxed");
    let name = unique("wharf-watch-boxed-");
    cleanup.containers.push(name.clone());
    // A scope both containers share, so the watcher sees itself but no other test's.
    let scope = format!("com.centurylinklabs.watchtower.scope={name}");
    docker_run(&registry, &["--name", &name, "-l", &scope, &image]);
    registry.push(&v2, "apps/boxed:latest");

    // As seed 000 runs watchtower: the socket and config.json mounted at /config.json.
    let watcher = unique("wharf-watch-watcher-");
    cleanup.containers.push(watcher.clone());
    let out = Command::new("docker")
        .args(["run", "--name", &watcher, "--network", "host", "-l", &scope])
        .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
        .arg("-v")
        .arg(format!(
            "{}:/config.json:ro",
            registry.docker_config().join("config.json").display()
        ))
        .arg("-v")
        .arg(format!("{}:/certs/ca.pem:ro", registry.cert.display()))
        .args(["-e", "WATCHTOWER_REGISTRY_CA=/certs/ca.pem"])
        .args([
            &wharf_image,
            "watch",
            "--run-once",
            "--rollback-grace",
            "3s",
        ])
        .args(["--scope", &name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(inspect(&name)["Image"].as_str().unwrap(), image_id(&v2));
    let lines = report["containers"].as_array().unwrap();
    assert_eq!(
        lines.len(),
        1,
        "the watcher must leave its own container alone: {report:#}"
    );
}

/// wharf watch's printed report, or a failure that shows what it printed.
pub(crate) fn report_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "wharf watch printed no report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A long-running `wharf watch --http-api-update` on a free port, stopped when dropped.
pub(crate) struct ApiWatcher {
    pub(crate) http: reqwest::blocking::Client,
    addr: String,
    _process: Proc,
}

impl ApiWatcher {
    pub(crate) const TOKEN: &'static str = "api-token-for-test";

    /// `args` are added to the watch command; `configure` may set its environment.
    pub(crate) fn start(
        registry: &Registry,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> ApiWatcher {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let api = ["--http-api-update", "--http-api-addr", &addr];
        let mut command = registry.watch_command(&[&api[..], args].concat());
        command
            .env("WATCHTOWER_HTTP_API_TOKEN", Self::TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        configure(&mut command);
        let mut child = command.spawn().unwrap();
        wait_for_port(port, &mut child, "wharf watch");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        ApiWatcher {
            http,
            addr,
            _process: Proc(child),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /v1/update` with the token: one check, its report.
    pub(crate) fn update(&self) -> Value {
        self.http
            .post(self.url("/v1/update"))
            .bearer_auth(Self::TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
}

/// An HTTP endpoint in the test that takes POSTs and hands their bodies over.
pub(crate) struct WebhookReceiver {
    pub(crate) addr: std::net::SocketAddr,
    bodies: std::sync::mpsc::Receiver<String>,
}

impl WebhookReceiver {
    pub(crate) fn start() -> WebhookReceiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, bodies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(body) = read_request_body(stream) {
                    if tx.send(body).is_err() {
                        return;
                    }
                }
            }
        });
        WebhookReceiver { addr, bodies }
    }

    pub(crate) fn next_body(&self) -> String {
        self.bodies
            .recv_timeout(Duration::from_secs(30))
            .expect("no notification arrived within 30 s")
    }
}

fn read_request_body(mut stream: std::net::TcpStream) -> Option<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    String::from_utf8(body).ok()
}

#[test]
fn an_update_cut_short_is_finished_by_the_next_check() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, _, image) = v1_pushed(&registry, &mut cleanup, "k", "apps/cut");
    let (stopped, started) = (unique("wharf-watch-cut-"), unique("wharf-watch-done-"));
    cleanup
        .containers
        .extend([stopped.clone(), started.clone()]);
    // A watcher died after setting the old container aside, before the new one ran.
    let old_id = docker_run(&registry, &["--name", &stopped, &image]);
    run(Command::new("docker").args(["stop", "-t", "1", &stopped]));
    run(Command::new("docker").args(["rename", &stopped, &format!("{stopped}-wharf-prev")]));
    run(Command::new("docker").args(["create", "--name", &stopped, &image]));
    run(Command::new("docker").args([
        "create",
        "--name",
        &format!("{stopped}-wharf-next"),
        &image,
    ]));
    // And one that died in the grace period, its replacement already running.
    let aside = docker_run(&registry, &["--name", &started, &image]);
    run(Command::new("docker").args(["stop", "-t", "1", &started]));
    run(Command::new("docker").args(["rename", &started, &format!("{started}-wharf-prev")]));
    let replacement = docker_run(&registry, &["--name", &started, &image]);

    let report = registry.watch(&[&stopped, &started]);
    assert_eq!(
        container_line(&report, &stopped)["outcome"],
        "fresh",
        "{report:#}"
    );
    let restored = inspect(&stopped);
    assert_eq!(
        restored["Id"],
        old_id.as_str(),
        "the old container must be back"
    );
    assert_eq!(restored["State"]["Running"], true);
    assert_eq!(inspect(&started)["Id"], replacement.as_str());
    for gone in [
        format!("{stopped}-wharf-next"),
        format!("{stopped}-wharf-prev"),
        aside,
    ] {
        let left = Command::new("docker")
            .args(["inspect", &gone])
            .output()
            .unwrap();
        assert!(!left.status.success(), "{gone} was left behind");
    }
}
