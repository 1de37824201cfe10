//! One `wharf watch` managing two Docker Engines: the machine's and a second `dockerd`
//! the test starts (harness/dockerd.rs). Pushes reach the watcher over a wharf
//! registry's event stream, with a 24 h interval, so an update within seconds is the
//! event's doing and not a poll's.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::dockerd::SecondEngine;
use crate::harness::*;
use crate::watch::*;
use crate::watch_events::{wait_for_log, EventWatcher};

/// What the issue asks: both hosts run the new image this soon after the push.
const WITHIN: Duration = Duration::from_secs(5);
pub(crate) const MACHINE_ENGINE: &str = "unix:///var/run/docker.sock";

/// Polls until `name` on `engine` runs `image_id`; how long that took.
pub(crate) fn wait_until_runs_on(
    engine: &SecondEngine,
    name: &str,
    image_id: &str,
    limit: Duration,
    log: &dyn Fn() -> String,
) -> Duration {
    let started = Instant::now();
    loop {
        let now = engine.inspect("{{.Image}} {{.State.Running}}", name);
        if now == format!("{image_id} true") {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{name} on the second engine did not run {image_id} within {limit:?} (it runs {now}); the watcher's log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `docker -H <engine> run -d` with the registry's credentials.
pub(crate) fn run_on(registry: &Registry, engine: &SecondEngine, args: &[&str]) -> String {
    let mut cmd = registry.docker();
    cmd.arg("-H")
        .arg(engine.host())
        .args(["run", "-d"])
        .args(args);
    run(&mut cmd).trim().to_owned()
}

#[test]
fn hosts_one_push_updates_both_engines_and_a_label_excludes_one_container() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, v2, image) = v1_pushed(&registry, &mut cleanup, "hosts", "apps/fleet");
    let engine = SecondEngine::start();
    let (on_one, on_two, held) = (
        unique("wharf-hosts-one-"),
        unique("wharf-hosts-two-"),
        unique("wharf-hosts-held-"),
    );
    cleanup.containers.push(on_one.clone());
    docker_run(&registry, &["--name", &on_one, &image]);
    run_on(&registry, &engine, &["--name", &on_two, &image]);
    let off = "com.centurylinklabs.watchtower.enable=false";
    run_on(
        &registry,
        &engine,
        &["--name", &held, "--label", off, &image],
    );
    let held_image = engine.inspect("{{.Image}}", &held);

    let watcher = EventWatcher::start(
        registry.dir.path(),
        free_port(),
        &registry.docker_config(),
        &[
            "--host",
            &format!("one={MACHINE_ENGINE}"),
            "--host",
            &format!("two={}", engine.host()),
            "--events-from",
            &registry.host(),
            "--registry-ca",
            &registry.cert.display().to_string(),
            &on_one,
            &on_two,
            &held,
        ],
    );
    wait_for_log(&watcher, "subscribed to registry events");
    registry.push(&v2, "apps/fleet:latest");
    let pushed = Instant::now();
    let v2_id = image_id(&v2);
    watcher.wait_until_runs(&on_one, &v2_id, WITHIN);
    let left = WITHIN.saturating_sub(pushed.elapsed());
    wait_until_runs_on(&engine, &on_two, &v2_id, left, &|| watcher.log());
    eprintln!("push to running on both hosts: {:?}", pushed.elapsed());
    assert_eq!(
        engine.inspect("{{.Image}}", &held),
        held_image,
        "the container labelled enable=false on the second host is left alone"
    );
    // The session's report, once the grace period is over, names each line's host.
    wait_for_log(&watcher, &format!("container={on_two} on two"));

    // The second engine goes away: reported, and the first host still updates.
    let mut engine = engine;
    engine.stop();
    let v3 = serving_image(&mut cleanup, "hosts3", &[]);
    registry.push(&v3, "apps/fleet:latest");
    watcher.wait_until_runs(&on_one, &image_id(&v3), Duration::from_secs(15));
    wait_for_log(&watcher, "this host's engine did not answer");
    let log = watcher.log();
    let line = log
        .lines()
        .find(|l| l.contains("this host's engine did not answer"))
        .unwrap();
    assert!(
        line.contains("two"),
        "the report names the host that went away: {line}"
    );
}

/// `--hosts-file` names the engines, and a bad line stops the start with its line number.
#[test]
fn hosts_file_lines_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hosts");
    std::fs::write(
        &file,
        "# engines\nlocal unix:///var/run/docker.sock\nweb tcp://127.0.0.1:1 colour=blue\n",
    )
    .unwrap();
    let out = Command::new(WHARF)
        .args(["watch", "--run-once", "--hosts-file"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(":3:") && err.contains("colour=blue"),
        "the error names the file's line and the option: {err}"
    );
}

/// A tcp:// engine with `--tlsverify`, reached as `docker --tlsverify` reaches it (the
/// three files named one by one), beside the machine's socket, in one `--run-once`.
#[test]
fn hosts_tcp_engine_with_tlsverify_beside_a_socket() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, _, image) = v1_pushed(&registry, &mut cleanup, "hoststls", "apps/tls");
    let engine = SecondEngine::start_tls();
    let name = unique("wharf-hosts-tls-");
    cleanup.containers.push(name.clone());
    docker_run(&registry, &["--name", &name, &image]);
    run_on(&registry, &engine, &["--name", &name, &image]);
    let certs = engine.client_certs();
    let file = |f: &str| certs.join(f).display().to_string();
    let report = registry.watch(&[
        "--host",
        &format!("one={MACHINE_ENGINE}"),
        "--host",
        &format!("tls={}", engine.tls_host()),
        "--tlscacert",
        &file("ca.pem"),
        "--tlscert",
        &file("cert.pem"),
        "--tlskey",
        &file("key.pem"),
        &name,
    ]);
    let lines = report["containers"].as_array().unwrap();
    let hosts: Vec<&str> = lines.iter().filter_map(|l| l["host"].as_str()).collect();
    assert!(
        hosts.contains(&"one") && hosts.contains(&"tls"),
        "{report:#}"
    );
    assert!(lines.iter().all(|l| l["outcome"] == "fresh"), "{report:#}");

    // Without the client certificate the engine refuses: named, and the other host goes on.
    let report = registry.watch_failing(&[
        "--host",
        &format!("one={MACHINE_ENGINE}"),
        "--host",
        &format!("tls={}", engine.tls_host()),
        &name,
    ]);
    let failed = lines_of(&report, "tls");
    assert_eq!(failed[0]["name"], "(engine)", "{report:#}");
    assert_eq!(
        lines_of(&report, "one")[0]["outcome"],
        "fresh",
        "{report:#}"
    );
}

fn lines_of<'a>(report: &'a serde_json::Value, host: &str) -> Vec<&'a serde_json::Value> {
    report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["host"] == host)
        .collect()
}
