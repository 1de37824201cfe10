//! Rollback history on the machine's real Docker Engine with a real wharf registry:
//! `wharf watch rollback` after two updates (kept images safe from `--cleanup`), `--to`
//! forward again, and an unhealthy image rolled back by itself with the reason in
//! `wharf watch history`.

use std::process::Command;

use serde_json::Value;

use crate::harness::*;
use crate::watch::*;

/// `wharf watch [flags] history NAME --json`, acting on the state directory directly.
fn history(registry: &Registry, name: &str) -> Value {
    let out = registry
        .watch_command(&["history", name, "--json"])
        .env_remove("WATCHTOWER_HTTP_API_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "history: {}", output_text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kinds(history: &Value) -> Vec<String> {
    history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn running_image(name: &str) -> String {
    inspect(name)["Image"].as_str().unwrap().to_owned()
}

#[test]
fn watch_rollback_returns_to_the_previous_image_then_forward_with_to() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (v1, v2, image) = v1_pushed(&registry, &mut cleanup, "rb", "apps/rollback");
    let v3 = serving_image(&mut cleanup, "rb3", &[]);
    let (id1, id2, id3) = (image_id(&v1), image_id(&v2), image_id(&v3));
    let name = unique("wharf-watch-rollback-");
    cleanup.containers.push(name.clone());
    docker_run(&registry, &["--name", &name, &image]);
    let keep = ["--keep-previous", "3", "--cleanup"];

    registry.push(&v2, "apps/rollback:latest");
    let report = registry.watch(&[&keep[..], &[&name]].concat());
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "updated",
        "{report:#}"
    );
    let digest3 = registry.push(&v3, "apps/rollback:latest");
    let report = registry.watch(&[&keep[..], &[&name]].concat());
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(running_image(&name), id3);
    // --cleanup left the earlier images: they are kept for rollbacks.
    for id in [&id1, &id2] {
        let kept = Command::new("docker")
            .args(["image", "inspect", id])
            .output()
            .unwrap();
        assert!(
            kept.status.success(),
            "{id} was removed despite --keep-previous 3"
        );
    }

    // No watcher API here: the command acts on the engine directly.
    let out = registry
        .watch_command(&["--keep-previous", "3", "rollback", &name])
        .env_remove("WATCHTOWER_HTTP_API_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "rollback: {}", output_text(&out));
    assert_eq!(
        running_image(&name),
        id2,
        "rollback did not return to the first update's image"
    );
    // The next check leaves it there: the image rolled away from is not retried.
    let report = registry.watch(&[&keep[..], &[&name]].concat());
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "skipped",
        "{report:#}"
    );
    assert_eq!(running_image(&name), id2);

    let out = registry
        .watch_command(&["rollback", &name, "--to", &digest3])
        .env_remove("WATCHTOWER_HTTP_API_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "rollback --to: {}", output_text(&out));
    assert_eq!(
        running_image(&name),
        id3,
        "rollback --to did not go to the second update's image"
    );

    let h = history(&registry, &name);
    assert_eq!(
        kinds(&h),
        ["rollback", "rollback", "update", "update"],
        "{h:#}"
    );
    assert_eq!(h["changes"][0]["to"]["digest"], digest3.as_str());
    assert_eq!(h["changes"][1]["to"]["id"], id2.as_str());
    assert_eq!(h["changes"][3]["from"]["id"], id1.as_str());
    // The container keeps its configuration through it all (the same transactional path).
    assert_eq!(inspect(&name)["Config"]["Image"], image.as_str());

    // An unknown target is refused with a reason, and nothing changes.
    let out = registry
        .watch_command(&["rollback", &name, "--to", "not-an-image"])
        .env_remove("WATCHTOWER_HTTP_API_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("not an image"),
        "{}",
        output_text(&out)
    );
    assert_eq!(running_image(&name), id3);
}

#[test]
fn watch_unhealthy_update_rolls_back_by_itself_and_history_says_why() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let v1 = serving_image(&mut cleanup, "hok", &[("healthy", "yes")]);
    let sick = serving_image(&mut cleanup, "hsick", &[]);
    let image = format!("{}/apps/health:1", registry.host());
    cleanup.images.push(image.clone());
    registry.push(&v1, "apps/health:1");
    let name = unique("wharf-watch-health-");
    cleanup.containers.push(name.clone());
    docker_run(
        &registry,
        &[
            "--name",
            &name,
            "--health-cmd",
            "cat /healthy",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--health-timeout",
            "1s",
            &image,
        ],
    );
    let before = running_image(&name);
    let bad = registry.push(&sick, "apps/health:1");

    let report = registry.watch_failing(&["--rollback-grace", "30s", &name]);
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "rolled_back",
        "{report:#}"
    );
    assert_eq!(running_image(&name), before);

    let h = history(&registry, &name);
    assert_eq!(kinds(&h), ["auto_rollback"], "{h:#}");
    let change = &h["changes"][0];
    assert_eq!(change["to"]["digest"], bad.as_str());
    assert_eq!(change["from"]["id"], before.as_str());
    let why = change["reason"].as_str().unwrap();
    assert!(
        why.contains("unhealthy"),
        "the history does not say why: {why}"
    );
    // The human listing says it too.
    let out = registry
        .watch_command(&["history", &name])
        .env_remove("WATCHTOWER_HTTP_API_TOKEN")
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        text.contains("auto_rollback") && text.contains("unhealthy"),
        "{text}"
    );
}
