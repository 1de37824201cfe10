//! Tag-following policies against a real wharf registry and the machine's Docker Engine:
//! a container on `1.2.3` labelled `wharf.watch.semver=^1.2` moves to the highest `1.x`
//! tag pushed and not to `2.0.0`; `wharf.watch.min-age` holds a fresh push back.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::watch::*;

/// Builds `<marker>` images and pushes each as `repo:<tag>`; returns the local names.
fn pushed_versions(
    registry: &Registry,
    cleanup: &mut Cleanup,
    repo: &str,
    tags: &[&str],
) -> Vec<String> {
    tags.iter()
        .map(|tag| {
            let local = serving_image(cleanup, &format!("{}-{tag}", repo.replace('/', "-")), &[]);
            registry.push(&local, &format!("{repo}:{tag}"));
            cleanup
                .images
                .push(format!("{}/{repo}:{tag}", registry.host()));
            local
        })
        .collect()
}

#[test]
fn watch_policy_semver_moves_to_the_highest_matching_tag_and_not_further() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let repo = "apps/semver";
    let locals = pushed_versions(
        &registry,
        &mut cleanup,
        repo,
        &["1.2.3", "1.2.4", "1.3.0", "2.0.0"],
    );
    let (v130, v200) = (image_id(&locals[2]), image_id(&locals[3]));
    let name = unique("wharf-policy-semver-");
    cleanup.containers.push(name.clone());
    let on = format!("{}/{repo}:1.2.3", registry.host());
    docker_run(
        &registry,
        &["--name", &name, "-l", "wharf.watch.semver=^1.2", &on],
    );

    let report = registry.watch(&[&name]);
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "updated", "{report:#}");
    let moved_to = format!("{}/{repo}:1.3.0", registry.host());
    assert_eq!(line["image"], moved_to.as_str(), "{report:#}");
    assert!(
        line["detail"]
            .as_str()
            .unwrap_or("")
            .contains("1.2.3 -> 1.3.0"),
        "{report:#}"
    );
    let after = inspect(&name);
    assert_eq!(after["Image"].as_str().unwrap(), v130);
    assert_eq!(
        after["Config"]["Image"],
        moved_to.as_str(),
        "the new reference is the container's image"
    );
    assert_eq!(after["Config"]["Labels"]["wharf.watch.semver"], "^1.2");

    // 2.0.0 is outside ^1.2: the next check leaves it on 1.3.0.
    let report = registry.watch(&[&name]);
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "fresh",
        "{report:#}"
    );
    let after = inspect(&name);
    assert_eq!(after["Image"].as_str().unwrap(), v130);
    assert_ne!(after["Image"].as_str().unwrap(), v200);

    // The space-separated form, as a flag: a container without the label follows it,
    // and the label still wins over it.
    let plain = unique("wharf-policy-flag-");
    cleanup.containers.push(plain.clone());
    docker_run(&registry, &["--name", &plain, &on]);
    let report = registry.watch(&["--tag-semver", ">=1.0 <2", &plain, &name]);
    assert_eq!(
        container_line(&report, &plain)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(inspect(&plain)["Config"]["Image"], moved_to.as_str());
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "fresh",
        "{report:#}"
    );
}

#[test]
fn watch_policy_min_age_holds_a_fresh_push_back_until_it_expires() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let repo = "apps/cooldown";
    let built = Instant::now();
    let locals = pushed_versions(&registry, &mut cleanup, repo, &["1.2.3", "1.3.0"]);
    let v130 = image_id(&locals[1]);
    let name = unique("wharf-policy-cool-");
    cleanup.containers.push(name.clone());
    let on = format!("{}/{repo}:1.2.3", registry.host());
    let min_age = Duration::from_secs(25);
    docker_run(
        &registry,
        &[
            "--name",
            &name,
            "-l",
            "wharf.watch.semver=~1",
            "-l",
            &format!("wharf.watch.min-age={}s", min_age.as_secs()),
            &on,
        ],
    );
    let before = inspect(&name);

    let report = registry.watch(&[&name]);
    assert!(
        built.elapsed() < min_age,
        "the machine was too slow for this test's cooldown"
    );
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "fresh", "{report:#}");
    assert!(
        line["detail"]
            .as_str()
            .unwrap_or("")
            .contains("1.3.0 is held back until"),
        "{report:#}"
    );
    assert_eq!(inspect(&name)["Id"], before["Id"]);

    // Once the image is old enough, the same check moves the container.
    std::thread::sleep((min_age + Duration::from_secs(2)).saturating_sub(built.elapsed()));
    let report = registry.watch(&[&name]);
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(inspect(&name)["Image"].as_str().unwrap(), v130);
}

#[test]
fn watch_policy_a_bad_range_is_refused_by_name() {
    let out = Command::new(WHARF)
        .args(["watch", "--run-once", "--tag-semver", "1.x || 2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not supported"), "{stderr}");
}
