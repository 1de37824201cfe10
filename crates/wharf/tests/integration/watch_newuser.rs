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
