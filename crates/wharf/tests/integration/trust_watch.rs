//! `wharf watch` with `wharf.watch.verify`: over a wharf registry's event stream, an
//! unsigned push leaves the container on its image and says why in a notification; a
//! signed push updates it within 5 s. Signatures are read with the watcher's own
//! credentials (the registry asks for a token).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::trust::key_pair;
use crate::watch::*;
use crate::watch_events::{wait_for_log, EventWatcher};

const WITHIN: Duration = Duration::from_secs(5);

#[test]
fn trust_watch_keeps_an_unverified_push_off_and_updates_on_a_signed_one() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, v2, image) = v1_pushed(&registry, &mut cleanup, "verify", "apps/verified");
    let v3 = serving_image(&mut cleanup, "verify3", &[]);
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = key_pair(keys.path(), "cosign");
    let name = unique("wharf-trust-watch-");
    cleanup.containers.push(name.clone());
    let label = format!("wharf.watch.verify={public}");
    docker_run(&registry, &["--name", &name, "-l", &label, &image]);
    let running = image_id(&image);
    let hook = WebhookReceiver::start();
    let url = format!("generic+http://{}/hook", hook.addr);
    let ca = registry.cert.display().to_string();
    let watcher = EventWatcher::start(
        registry.dir.path(),
        free_port(),
        &registry.docker_config(),
        &[
            "--events-from",
            &registry.host(),
            "--registry-ca",
            &ca,
            "--notification-url",
            &url,
            &name,
        ],
    );
    wait_for_log(&watcher, "subscribed to registry events");

    registry.push(&v2, "apps/verified:latest");
    // The first notifications may be the startup message.
    let sent = (0..5)
        .map(|_| hook.next_body())
        .find(|b| b.contains("does not verify"))
        .unwrap_or_else(|| panic!("no notification said why; log:\n{}", watcher.log()));
    assert!(sent.contains("no signature"), "{sent}");
    let now = Command::new("docker")
        .args(["inspect", "-f", "{{.Image}}", &name])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&now.stdout).trim(),
        running,
        "{}",
        watcher.log()
    );

    // Signed before the tag moves: pushed under another tag (no container uses it),
    // signed by digest, then tagged `latest`.
    let staged = registry.push(&v3, "apps/verified:staged");
    let signed = format!("{}/apps/verified@{staged}", registry.host());
    let out = Command::new(WHARF)
        .env("DOCKER_CONFIG", registry.docker_config())
        .env("COSIGN_PASSWORD", "trust-test-password")
        .args(["--registry-ca", &ca, "sign", "--key", &private, &signed])
        .output()
        .unwrap();
    ok(out, "wharf sign");
    let started = Instant::now();
    registry.push(&v3, "apps/verified:latest");
    watcher.wait_until_runs(&name, &image_id(&v3), WITHIN);
    eprintln!("signed push to running: {:?}", started.elapsed());
}
