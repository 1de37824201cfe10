//! The store's upkeep: `wharf garbage-collect` and `wharf scrub`, checked against docker,
//! Distribution 2.8.2 (its server and its own `garbage-collect`), damage and bad roots.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_oci::Digest;

use crate::harness::{
    docker_pushed, docker_rmi, docker_runs, http_client as client, require, run, Distribution,
    Wharf,
};
use crate::pushes::*;

#[test]
fn garbage_collect_frees_what_nothing_reaches_and_docker_and_distribution_still_pull_the_rest() {
    let w = Wharf::start();
    let c = client();
    let base = w.url();
    // Two docker images that stay tagged, and HTTP images of which one loses its tag.
    let kept_docker = [
        docker_pushed(&w.host(), "gc/app", "gc-marker-1"),
        docker_pushed(&w.host(), "gc/tool", "gc-marker-2"),
    ];
    let kept = push_image(&c, &base, "gc/http", "v1", 1, 3).unwrap();
    let dropped = push_image(&c, &base, "gc/http", "old", 2, 3).unwrap();
    let r = c
        .delete(format!("{base}/v2/gc/http/manifests/{}", dropped.manifest))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A blob pushed and never used.
    let orphan = push_blob(&c, &base, "gc/orphans", &noise(99, 3000)).unwrap();
    age_store(&w.root);

    // On a copy never collected, wharf's dry run and Distribution's name the same blobs.
    let copy = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(w.root.join("docker"))
        .arg(copy.path()));
    let theirs = named_blobs(
        &distribution_gc(copy.path(), true),
        "blob eligible for deletion",
    );
    let out = wharf_cmd(&[
        "garbage-collect",
        "--dry-run",
        "--root",
        &copy.path().display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let ours = named_blobs(&text(&out), "blob eligible for deletion");
    assert_eq!(
        ours, theirs,
        "wharf and Distribution disagree on what is garbage"
    );
    assert!(ours.contains(&orphan.to_string()));
    assert!(ours.contains(&dropped.manifest.to_string()));

    // The real run, while the server serves.
    let out = wharf_cmd(&["garbage-collect", "--root", &w.root.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let deleted = named_blobs(&text(&out), "blob deleted");
    assert_eq!(deleted, ours, "{}", text(&out));
    assert!(text(&out).contains(" freed;"), "{}", text(&out));
    for (d, _) in &dropped.blobs {
        assert!(!w
            .root
            .join(format!(
                "docker/registry/v2/blobs/sha256/{}/{}",
                &d.hex()[..2],
                d.hex()
            ))
            .exists());
    }

    // Everything tagged still pulls: with docker, and from Distribution on the same root.
    verify_pulls(&c, &base, &kept);
    for image in &kept_docker {
        docker_runs(
            image,
            if image.contains("app") {
                "gc-marker-1"
            } else {
                "gc-marker-2"
            },
        );
        docker_rmi(&[image]);
    }
    let d = Distribution::start_on(&w.root);
    verify_pulls(&c, &d.url(), &kept);
    drop(d);
    // Distribution's own collector finds nothing more; scrub finds nothing wrong.
    let theirs_after = named_blobs(
        &distribution_gc(&w.root, true),
        "blob eligible for deletion",
    );
    assert!(
        theirs_after.is_empty(),
        "Distribution would still delete {theirs_after:?}"
    );
    let out = wharf_cmd(&["scrub", "--root", &w.root.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_fresh_push_is_held_by_the_grace_period_and_untagged_manifests_go_only_when_asked() {
    let w = Wharf::start();
    let c = client();
    let base = w.url();
    let kept = push_image(&c, &base, "grace/app", "v1", 3, 2).unwrap();
    let untagged = push_image(&c, &base, "grace/app", "v2", 4, 2).unwrap();
    let r = c
        .delete(format!("{base}/v2/grace/app/manifests/v2"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "a tag delete");
    let root = w.root.display().to_string();

    // Young: nothing goes, and the report says what it held.
    let out = wharf_cmd(&[
        "garbage-collect",
        "--delete-untagged",
        "--json",
        "--root",
        &root,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["blobs"], json!([]), "{report}");
    assert_eq!(report["manifests"], json!([]), "{report}");

    // Old, without --delete-untagged: the untagged manifest and its blobs stay, as in registry:2.
    age_store(&w.root);
    let out = wharf_cmd(&["garbage-collect", "--json", "--root", &root]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["blobs"], json!([]), "{report}");
    verify_pulls(&c, &base, &kept);

    // With it: the untagged manifest goes, its blobs with it; the tagged one stays.
    let out = wharf_cmd(&["garbage-collect", "-m", "--json", "--root", &root]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["manifests"][0]["digest"],
        json!(untagged.manifest.to_string()),
        "{report}"
    );
    assert_eq!(
        report["blobs"].as_array().unwrap().len(),
        untagged.blobs.len(),
        "{report}"
    );
    let r = c
        .get(format!(
            "{base}/v2/grace/app/manifests/{}",
            untagged.manifest
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    verify_pulls(&c, &base, &kept);
}

#[test]
fn scrub_names_each_kind_of_damage_and_repair_leaves_a_clean_store() {
    let w = Wharf::start();
    let c = client();
    let base = w.url();
    let images: Vec<Pushed> = (0..4)
        .map(|i| push_image(&c, &base, &format!("scrub/r{i}"), "v1", 10 + i, 2).unwrap())
        .collect();
    let blob_path = |d: &Digest| {
        w.root.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{}/data",
            &d.hex()[..2],
            d.hex()
        ))
    };
    // A corrupt layer, a deleted layer, a dangling tag, a truncated manifest.
    let corrupt = &images[0].blobs[0].0;
    std::fs::write(blob_path(corrupt), b"not what was pushed").unwrap();
    let deleted = &images[1].blobs[0].0;
    std::fs::remove_file(blob_path(deleted)).unwrap();
    let nowhere = Digest::sha256_of(b"no such manifest");
    let tag_dir = w
        .root
        .join("docker/registry/v2/repositories/scrub/r2/_manifests/tags/dangling/current");
    std::fs::create_dir_all(&tag_dir).unwrap();
    std::fs::write(tag_dir.join("link"), nowhere.to_string()).unwrap();
    let truncated = &images[3].manifest;
    let bytes = std::fs::read(blob_path(truncated)).unwrap();
    std::fs::write(blob_path(truncated), &bytes[..bytes.len() / 2]).unwrap();
    let root = w.root.display().to_string();

    let out = wharf_cmd(&["scrub", "--root", &root]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "problems make scrub fail: {}",
        text(&out)
    );
    let found = text(&out);
    for expected in [
        format!("(blobs): problem: corrupt blob {corrupt}"),
        format!(
            "scrub/r0: problem: manifest incomplete {}: needs blob {corrupt}",
            images[0].manifest
        ),
        format!(
            "scrub/r1: problem: manifest incomplete {}: needs blob {deleted}",
            images[1].manifest
        ),
        format!("scrub/r1: problem: link to missing blob {deleted}"),
        format!("scrub/r2: problem: dangling tag dangling: points at {nowhere}"),
        format!("(blobs): problem: corrupt blob {truncated}"),
    ] {
        assert!(
            found.contains(&expected),
            "missing {expected:?} in:\n{found}"
        );
    }

    let out = wharf_cmd(&["scrub", "--repair", "--json", "--root", &root]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let moved = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["repaired"]
                .as_str()
                .is_some_and(|r| r.starts_with("moved aside"))
        })
        .count();
    assert_eq!(
        moved, 2,
        "the corrupt layer and the truncated manifest are kept aside: {report}"
    );
    let quarantine = w.root.join("docker/registry/v2/_wharf/quarantine");
    assert_eq!(
        std::fs::read(quarantine.join(format!("sha256-{}", corrupt.hex()))).unwrap(),
        b"not what was pushed"
    );

    let out = wharf_cmd(&["scrub", "--json", "--root", &root]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            !matches!(
                f["kind"].as_str(),
                Some("orphan_blob" | "stale_upload" | "stale_link")
            )
        })
        .collect();
    assert!(
        problems.is_empty(),
        "a second scrub still finds {problems:?}"
    );
    // The undamaged image is untouched.
    verify_pulls(&c, &base, &images[2]);
}

#[test]
fn garbage_collect_and_scrub_refuse_what_is_not_a_registry_and_name_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a registry").unwrap();
    let root = dir.path().display().to_string();
    for cmd in [
        &["garbage-collect", "--root", &root][..],
        &["scrub", "--root", &root],
    ] {
        let out = wharf_cmd(cmd);
        assert!(!out.status.success());
        assert!(
            text(&out).contains("is not a registry root: it has no docker/registry/v2 directory"),
            "{}",
            text(&out)
        );
    }
    let out = wharf_cmd(&["garbage-collect", "--root", "/nonexistent/wharf-root"]);
    assert!(
        text(&out).contains("/nonexistent/wharf-root does not exist"),
        "{}",
        text(&out)
    );
    assert!(dir.path().join("notes.txt").exists());

    // A manifest whose bytes cannot be read stops the collection before anything goes.
    let w = Wharf::start();
    let c = client();
    let kept = push_image(&c, &w.url(), "bad/app", "v1", 20, 2).unwrap();
    let orphan = push_blob(&c, &w.url(), "bad/app", &noise(21, 100)).unwrap();
    age_store(&w.root);
    let data = w.root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{}/data",
        &kept.manifest.hex()[..2],
        kept.manifest.hex()
    ));
    std::fs::remove_file(&data).unwrap();
    std::fs::create_dir(&data).unwrap(); // reads fail: "Is a directory"
    let out = wharf_cmd(&["garbage-collect", "--root", &w.root.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("nothing more deleted"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(&kept.manifest.hex()[..12]) || text(&out).contains("Is a directory"),
        "{}",
        text(&out)
    );
    let orphan_data = w.root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{}/data",
        &orphan.hex()[..2],
        orphan.hex()
    ));
    assert!(
        orphan_data.exists(),
        "nothing is deleted when the mark cannot finish"
    );
}

/// A read-only bind mount of a directory, unmounted when dropped.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn mount(source: &Path, at: &Path) -> ReadOnly {
        require("mount", "mount");
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount").arg("--bind").arg(source).arg(at));
        let ro = ReadOnly(at.to_owned());
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(at));
        ro
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn on_a_read_only_root_gc_refuses_clearly_and_dry_run_and_scrub_still_report() {
    let w = Wharf::start();
    let c = client();
    let kept = push_image(&c, &w.url(), "ro/app", "v1", 30, 2).unwrap();
    let orphan = push_blob(&c, &w.url(), "ro/app", &noise(31, 100)).unwrap();
    age_store(&w.root);
    let mnt = tempfile::tempdir().unwrap();
    let ro = ReadOnly::mount(&w.root, &mnt.path().join("ro"));
    let root = ro.0.display().to_string();

    let out = wharf_cmd(&["garbage-collect", "--root", &root]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("garbage collection stopped, nothing more deleted")
            && said.contains("Read-only file system")
            && said.contains("writable storage root"),
        "{said}"
    );
    let out = wharf_cmd(&["garbage-collect", "--dry-run", "--root", &root]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(named_blobs(&text(&out), "eligible").contains(&orphan.to_string()));
    let out = wharf_cmd(&["scrub", "--root", &root]);
    assert!(out.status.success(), "{}", text(&out));
    drop(ro);
    verify_pulls(&c, &w.url(), &kept);
    assert!(c
        .head(format!("{}/v2/ro/app/blobs/{orphan}", w.url()))
        .send()
        .unwrap()
        .status()
        .is_success());
}

#[test]
fn scrub_draws_a_progress_bar_on_a_terminal_and_none_in_a_pipe() {
    require("script", "bsdutils");
    let w = Wharf::start();
    let c = client();
    // Enough bytes that hashing takes a moment, so the bar is drawn.
    for i in 0..4 {
        push_blob(&c, &w.url(), "bar/big", &noise(40 + i, 32 << 20)).unwrap();
    }
    let command = format!(
        "{} scrub --root {}",
        crate::harness::WHARF,
        w.root.display()
    );
    let out = run(Command::new("script").args(["-qec", &command, "/dev/null"]));
    assert!(out.contains("scrubbing"), "no bar drawn: {out:?}");
    assert!(out.contains('\u{1b}'), "no terminal control: {out:?}");
    assert!(out.contains("4 blobs (128.0 MiB) re-hashed"), "{out:?}");
    let piped = wharf_cmd(&["scrub", "--root", &w.root.display().to_string()]);
    assert!(!text(&piped).contains('\u{1b}'), "{}", text(&piped));
}
