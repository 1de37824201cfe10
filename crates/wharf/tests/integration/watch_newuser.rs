//! What a new user hit with `wharf watch` (issue 25): a broken image retried at every
//! check, events that missed a container because of how its registry host was spelled,
//! watchtower flags a compose file uses, and cleanup and stop messages. Against the
//! machine's Docker Engine, a TLS + token-auth wharf registry, and docker-compose.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::*;
use crate::watch::*;
use crate::watch_events::{wait_for_log, EventWatcher};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The engine's `event` events for container `id` between `since` and now.
fn container_events(id: &str, event: &str, since: u64) -> usize {
    let out = run(Command::new("docker").args([
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &(now_secs() + 1).to_string(),
        "--filter",
        &format!("container={id}"),
        "--filter",
        &format!("event={event}"),
        "--format",
        "{{.Action}}",
    ]));
    out.lines().filter(|l| l.trim() == event).count()
}

/// `wharf watch` checking every 2 s, its log in `log`.
fn polling_watcher(registry: &Registry, name: &str, log: &Path) -> Proc {
    let child: Child = registry
        .watch_command(&["--interval", "2s", "--rollback-grace", "2s", name])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Proc(child)
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn wait_for_text(log: &Path, text: &str, limit: Duration) {
    let started = Instant::now();
    while !read(log).contains(text) {
        assert!(
            started.elapsed() < limit,
            "the watcher never logged {text:?}:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Item 10: an image whose container cannot start is tried once. Over 30 s of checks
/// every 2 s, and across a restart of the watcher, the healthy container is stopped
/// exactly once; the report says "rolled back" and which image runs again; a push that
/// moves the tag is tried at once.
#[test]
fn watch_newuser_a_broken_image_is_tried_once_across_checks_and_restarts() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, v2, image) = v1_pushed(&registry, &mut cleanup, "once", "nc/once");
    let broken = unique("wharf-watch-broken:");
    build_busybox_image_with(&broken, "broken", &[], &[r#"CMD ["/no/such/program"]"#]);
    cleanup.images.push(broken.clone());
    let name = unique("wharf-once-");
    cleanup.containers.push(name.clone());
    let id = docker_run(&registry, &["--name", &name, &image]);
    let v1_digest = inspect(&image)["RepoDigests"][0]
        .as_str()
        .unwrap()
        .split('@')
        .nth(1)
        .unwrap()
        .to_owned();
    let broken_digest = registry.push(&broken, "nc/once:latest");
    let since = now_secs();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (first_log, second_log) = (dir.path().join("first.log"), dir.path().join("second.log"));

    let first = polling_watcher(&registry, &name, &first_log);
    wait_for_text(&first_log, "outcome=RolledBack", Duration::from_secs(30));
    let log = read(&first_log);
    assert!(
        log.contains(&format!("rolled back: {v1_digest} runs again")),
        "the report must say which image runs again:\n{log}"
    );
    wait_for_text(&first_log, "not retried until", Duration::from_secs(10));
    let log = read(&first_log);
    assert!(
        log.contains("failed=0 rolled_back=1"),
        "the session is counted as rolled back, not failed:\n{log}"
    );
    drop(first);
    let state = registry.dir.path().join("watch-state/rolled-back.json");
    let saved = std::fs::read_to_string(&state).expect("the rollback is kept on disk");
    assert!(saved.contains(&broken_digest), "{saved}");

    // A restarted watcher remembers: still no second attempt.
    let second = polling_watcher(&registry, &name, &second_log);
    wait_for_text(
        &second_log,
        "remembered from before",
        Duration::from_secs(10),
    );
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = read(&second_log);
    assert!(log.contains("not retried until"), "{log}");
    assert!(!log.contains("outcome=RolledBack"), "tried again:\n{log}");
    assert_eq!(
        container_events(&id, "stop", since),
        1,
        "the healthy container was stopped more than once in 30 s of checks:\n{}\n{log}",
        read(&first_log)
    );
    let now = inspect(&name);
    assert_eq!(now["Id"], id.as_str());
    assert_eq!(now["State"]["Running"], true);

    // The tag moves on: the new image is tried, and taken.
    registry.push(&v2, "nc/once:latest");
    crate::watch_events::wait_until_runs(&name, &image_id(&v2), Duration::from_secs(30));
    drop(second);
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(!saved.contains(&broken_digest), "{saved}");
}

/// Item 11: a container created from `localhost:PORT/nc/app` is updated by a push that
/// the registry's stream announces, subscribed to as `127.0.0.1:PORT`; a subscription
/// no watched container's registry matches is warned about at start.
#[test]
fn watch_newuser_events_match_the_registry_not_its_spelling() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let v1 = serving_image(&mut cleanup, "alias1", &[]);
    let v2 = serving_image(&mut cleanup, "alias2", &[]);
    let numeric = registry.host();
    assert!(numeric.starts_with("127.0.0.1:"), "{numeric}");
    let named = numeric.replace("127.0.0.1", "localhost");
    let login = output_with_stdin(
        registry
            .docker()
            .args(["login", "-u", USER, "--password-stdin", &named]),
        PASSWORD,
    );
    assert!(login.status.success(), "docker login {named}: {login:?}");
    registry.push(&v1, "nc/app:latest");
    let image = format!("{named}/nc/app:latest");
    cleanup.images.push(image.clone());
    let name = unique("wharf-alias-");
    cleanup.containers.push(name.clone());
    docker_run(&registry, &["--name", &name, &image]);
    let cert = registry.cert.display().to_string();

    let dir = tempfile::tempdir().unwrap();
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let unused = EventWatcher::start(
        dir.path(),
        free_port(),
        &registry.docker_config(),
        &["--events-from", &elsewhere, "--registry-ca", &cert, &name],
    );
    wait_for_log(
        &unused,
        "no watched container uses an image from this registry",
    );
    drop(unused);

    let watcher = EventWatcher::start(
        registry.dir.path(),
        free_port(),
        &registry.docker_config(),
        &["--events-from", &numeric, "--registry-ca", &cert, &name],
    );
    wait_for_log(&watcher, "subscribed to registry events");
    assert!(
        !watcher.log().contains("no watched container uses"),
        "{}",
        watcher.log()
    );
    registry.push(&v2, "nc/app:latest");
    watcher.wait_until_runs(&name, &image_id(&v2), Duration::from_secs(10));
    assert_eq!(inspect(&name)["Config"]["Image"], image.as_str());
}

/// A busybox image that serves until stopped and declares `VOLUME /data`.
fn volume_image(cleanup: &mut Cleanup, marker: &str) -> String {
    let name = unique(&format!("wharf-watch-{marker}:"));
    let env = format!("ENV VERSION={marker}");
    build_busybox_image_with(&name, marker, &[], &[SERVE_CMD, &env, "VOLUME /data"]);
    cleanup.images.push(name.clone());
    name
}

/// docker-compose (Debian's 1.29) on a project of its own, taken down when dropped.
struct ComposeProject {
    project: String,
    file: std::path::PathBuf,
}

impl ComposeProject {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        c.args(["-p", &self.project, "-f"])
            .arg(&self.file)
            .args(args);
        c
    }

    fn container(&self, service: &str) -> String {
        run(&mut self.cmd(&["ps", "-q", service])).trim().to_owned()
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.cmd(&["down", "-v"]).output();
    }
}

/// The volume mounted at /data in `container`.
fn data_volume(container: &str) -> String {
    let mounts = inspect(container)["Mounts"].clone();
    mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/data")
        .and_then(|m| m["Name"].as_str())
        .unwrap_or_else(|| panic!("no volume at /data in {container}: {mounts:#}"))
        .to_owned()
}

/// Item 7: a watchtower-style compose file using --remove-volumes, --revive-stopped,
/// --label-take-precedence, --porcelain v1, --no-color, --notification-template,
/// --notifications-level and --notification-report (flags and WATCHTOWER_* variables),
/// run with docker-compose: the watchers start and each flag does what watchtower's does.
#[test]
fn watch_newuser_watchtower_flags_in_a_compose_file_take_effect() {
    require("docker-compose", "docker-compose");
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let wharf_image = unique("wharf-watch-compose:");
    crate::image::build_wharf_image(&wharf_image);
    cleanup.images.push(wharf_image.clone());
    let (v1, v2) = (
        volume_image(&mut cleanup, "cv1"),
        volume_image(&mut cleanup, "cv2"),
    );
    let image = format!("{}/nc/composed:latest", registry.host());
    cleanup.images.push(image.clone());
    registry.push(&v1, "nc/composed:latest");
    let (scope, porcelain_scope) = (unique("wharf-compose-"), unique("wharf-porcelain-"));
    let label = |s: &str| format!("com.centurylinklabs.watchtower.scope={s}");
    let follow = "com.centurylinklabs.watchtower.monitor-only=false";
    let [revived, volumed, held, observed] =
        ["revived", "volumed", "held", "observed"].map(|n| format!("{scope}-{n}"));
    cleanup
        .containers
        .extend([&revived, &volumed, &held, &observed].map(|n| n.to_string()));
    let scope_label = label(&scope);
    for (name, extra) in [
        (&revived, Some(follow)),
        (&volumed, Some(follow)),
        (&held, None),
    ] {
        let mut args = vec!["--name", name.as_str(), "-l", &scope_label];
        if let Some(extra) = extra {
            args.extend(["-l", extra]);
        }
        args.push(&image);
        docker_run(&registry, &args);
    }
    let porcelain_label = label(&porcelain_scope);
    docker_run(
        &registry,
        &["--name", &observed, "-l", &porcelain_label, &image],
    );
    run(Command::new("docker").args(["stop", "-t", "1", &revived]));
    let old_volume = data_volume(&volumed);
    registry.push(&v2, "nc/composed:latest");

    let template = "{{range .Report.Updated}}UPDATED {{.Name}}{{println}}{{end}}{{range .Entries}}ENTRY {{.Message}}{{println}}{{end}}";
    let mounts = format!(
        "      - /var/run/docker.sock:/var/run/docker.sock\n      - {}:/config.json:ro\n      - {}:/certs/ca.pem:ro\n",
        registry.docker_config().join("config.json").display(),
        registry.cert.display()
    );
    let yaml = format!(
        r#"version: "3"
services:
  watchtower:
    image: {wharf_image}
    network_mode: host
    tty: true
    volumes:
{mounts}    environment:
      WATCHTOWER_REGISTRY_CA: /certs/ca.pem
      WATCHTOWER_NOTIFICATION_URL: "logger://"
      WATCHTOWER_NOTIFICATIONS_LEVEL: warn
      WATCHTOWER_REMOVE_VOLUMES: "true"
    command:
      - watch
      - --scope={scope}
      - --interval=2
      - --stop-timeout=5s
      - --rollback-grace=2s
      - --include-stopped
      - --revive-stopped
      - --label-take-precedence
      - --monitor-only
      - --no-color
      - --notification-report
      - "--notification-template={template}"
  porcelain:
    image: {wharf_image}
    network_mode: host
    restart: "no"
    volumes:
{mounts}    environment:
      WATCHTOWER_REGISTRY_CA: /certs/ca.pem
    command: [watch, --run-once, --monitor-only, --porcelain, v1, --scope={porcelain_scope}]
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(&file, yaml).unwrap();
    let compose = ComposeProject {
        project: unique("wharfwatch").replace('-', ""),
        file,
    };
    let up = compose.cmd(&["up", "-d"]).output().unwrap();
    assert!(
        up.status.success(),
        "docker-compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let watcher = compose.container("watchtower");
    let logs = || {
        let out = Command::new("docker")
            .args(["logs", &watcher])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let v2_id = image_id(&v2);
    for name in [&revived, &volumed] {
        let waited = std::panic::catch_unwind(|| {
            crate::watch_events::wait_until_runs(name, &v2_id, Duration::from_secs(60))
        });
        waited.unwrap_or_else(|_| panic!("the watcher's log:\n{}", logs()));
    }

    // --label-take-precedence: the label beat --monitor-only for those two, not for held.
    let kept = inspect(&held);
    assert_eq!(kept["Image"], image_id(&v1).as_str());
    assert_eq!(kept["State"]["Running"], true);
    // --revive-stopped (with --include-stopped): the stopped one runs its new image.
    assert_eq!(inspect(&revived)["State"]["Running"], true);
    // --remove-volumes: a fresh /data, and the old one is gone.
    let new_volume = data_volume(&volumed);
    cleanup.volumes.push(new_volume.clone());
    assert_ne!(new_volume, old_volume);
    // It goes with the old container, once the update stands (after --rollback-grace).
    let started = Instant::now();
    let exists = |v: &str| {
        Command::new("docker")
            .args(["volume", "inspect", v])
            .output()
            .unwrap()
            .status
            .success()
    };
    while exists(&old_volume) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the old anonymous volume {old_volume} is still there:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The template, with the report, through logger://; at level warn no info entry.
    let started = Instant::now();
    while !(logs().contains(&format!("UPDATED {revived}"))
        && logs().contains(&format!("UPDATED {volumed}")))
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no templated message:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = logs();
    assert!(
        !log.contains("ENTRY "),
        "entries below --notifications-level warn:\n{log}"
    );
    // --no-color on a terminal (tty: true): no ANSI escapes.
    assert!(log.contains("INFO") && !log.contains('\u{1b}'), "{log}");

    // --porcelain v1: one line per container on stdout, and nothing else there.
    let porcelain = compose.container("porcelain");
    let started = Instant::now();
    while inspect(&porcelain)["State"]["Running"] == true {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the porcelain watcher did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = Command::new("docker")
        .args(["logs", &porcelain])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        format!("{observed} ({image}): Stale\n"),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(inspect(&porcelain)["State"]["ExitCode"], 0);
}

/// Item 12: `--cleanup` removes the old image by id, forced since two repositories name
/// it (the local build's tag and the registry's digest), with no warning.
#[test]
fn watch_newuser_cleanup_removes_an_old_image_with_several_names_quietly() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (v1, v2, image) = v1_pushed(&registry, &mut cleanup, "clean", "nc/cleaned");
    let v1_id = image_id(&v1);
    let name = unique("wharf-cleanup-");
    cleanup.containers.push(name.clone());
    docker_run(&registry, &["--name", &name, &image]);
    registry.push(&v2, "nc/cleaned:latest");

    let out = registry.watch_output(&["--cleanup", &name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report = report_of(&out);
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "updated",
        "{report:#}"
    );
    let kept = Command::new("docker")
        .args(["image", "inspect", &v1_id])
        .output()
        .unwrap();
    assert!(
        !kept.status.success(),
        "--cleanup kept the old image:\n{stderr}"
    );
    assert!(stderr.contains("removed the old image"), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
}

/// Item 12: a semver move to a tag that names the same image moves the container to the
/// tag and says so, and the next check finds nothing to do.
#[test]
fn watch_newuser_a_semver_move_to_the_same_image_updates_the_reference() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let v1 = serving_image(&mut cleanup, "samedigest", &[]);
    let (on, to) = (
        format!("{}/nc/same:1.2.3", registry.host()),
        format!("{}/nc/same:1.3.0", registry.host()),
    );
    cleanup.images.extend([on.clone(), to.clone()]);
    let d1 = registry.push(&v1, "nc/same:1.2.3");
    let d2 = registry.push(&v1, "nc/same:1.3.0");
    assert_eq!(d1, d2);
    let name = unique("wharf-samedigest-");
    cleanup.containers.push(name.clone());
    docker_run(
        &registry,
        &["--name", &name, "-l", "wharf.watch.semver=^1.2", &on],
    );

    let report = registry.watch(&[&name]);
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "updated", "{report:#}");
    let detail = line["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("same image, reference updated"),
        "{report:#}"
    );
    let now = inspect(&name);
    assert_eq!(now["Config"]["Image"], to.as_str());
    assert_eq!(now["Image"], image_id(&v1).as_str());
    assert_eq!(now["State"]["Running"], true);

    let report = registry.watch(&[&name]);
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "fresh", "{report:#}");
    assert!(line["detail"].is_null(), "{report:#}");
}

/// Item 12: a container that ignores its stop signal is killed after the stop timeout,
/// and the log says killed, not stopped.
#[test]
fn watch_newuser_a_container_killed_after_the_stop_timeout_is_logged_as_killed() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let stubborn = r#"CMD ["/bin/sh", "-c", "trap '' TERM; while true; do sleep 1; done"]"#;
    let [v1, v2] = ["stubborn1", "stubborn2"].map(|m| {
        let name = unique(&format!("wharf-watch-{m}:"));
        build_busybox_image_with(&name, m, &[], &[stubborn, &format!("ENV VERSION={m}")]);
        cleanup.images.push(name.clone());
        name
    });
    let image = format!("{}/nc/stubborn:latest", registry.host());
    cleanup.images.push(image.clone());
    registry.push(&v1, "nc/stubborn:latest");
    let name = unique("wharf-stubborn-");
    cleanup.containers.push(name.clone());
    docker_run(&registry, &["--name", &name, "--stop-timeout", "1", &image]);
    registry.push(&v2, "nc/stubborn:latest");

    let out = registry.watch_output(&[&name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        container_line(&report_of(&out), &name)["outcome"],
        "updated"
    );
    assert!(
        stderr.contains("old container killed: it did not stop within 1 s"),
        "{stderr}"
    );
    assert!(!stderr.contains("old container stopped"), "{stderr}");
}
