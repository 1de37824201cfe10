//! `wharf push FILE.tar REF` and `wharf pull REF FILE.tar` with `docker save` archives,
//! proved by the real clients: docker pulls and runs what wharf pushed from `docker save`,
//! `docker load` takes what wharf pulled, skopeo reads it as `oci-archive:` and
//! `docker-archive:`, and `--json` names the digest the registry serves.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::{
    build_busybox_image, docker_pushed, docker_rmi, docker_runs, push_manifest_list, require,
    require_docker, run, unique, wharf_insecure_ok, Wharf,
};

/// `wharf ... --json`: the one JSON object it prints, parsed.
fn wharf_json(config: &Path, args: &[&str]) -> Value {
    let (stdout, _) = wharf_insecure_ok(config, &[args, &["--json"]].concat());
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("wharf {args:?} --json printed {stdout:?}: {e}"))
}

fn digest(config: &Path, image: &str) -> String {
    wharf_insecure_ok(config, &["digest", image])
        .0
        .trim()
        .to_owned()
}

#[test]
fn docker_save_tar_is_pushed_and_docker_pulls_and_runs_it() {
    require_docker();
    let w = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = unique("saved by docker ");
    let local = build_busybox_image(&unique("wharf-tar-save:"), &marker);
    let saved = dir.path().join("saved.tar");
    run(Command::new("docker")
        .args(["save", "-o"])
        .arg(&saved)
        .arg(&local));
    docker_rmi(&[&local]);
    let saved = saved.to_str().unwrap();

    let dst = format!("{}/saved/app:v1", w.host());
    let pushed = wharf_json(config.path(), &["push", saved, &dst]);
    assert_eq!(pushed["digest"], digest(config.path(), &dst));
    assert_eq!(pushed["reference"], dst);
    assert_eq!(pushed["blobs"]["copied"], 2, "{pushed}");
    assert!(pushed["bytes"].as_u64().unwrap() > 0, "{pushed}");
    run(Command::new("docker").args(["pull", &dst]));
    docker_runs(&dst, &marker);
    docker_rmi(&[&dst]);

    // Without a terminal, progress is one plain line a blob (no bars), then a summary.
    let again = format!("{}/saved/app:v2", w.host());
    let (stdout, stderr) = wharf_insecure_ok(config.path(), &["push", saved, &again]);
    assert_eq!(stdout.trim(), pushed["digest"]);
    assert!(
        stderr.contains("0 blobs uploaded, 0 mounted, 2 already present"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr:?}"
    );
    let (_, stderr) = wharf_insecure_ok(config.path(), &["push", "--quiet", saved, &again]);
    assert!(stderr.is_empty(), "--quiet printed {stderr}");
}

#[test]
fn pulled_tar_is_loaded_and_run_by_docker_and_pushes_back_unchanged() {
    require_docker();
    let a = Wharf::start();
    let b = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = unique("pulled into a tar ");
    let src = docker_pushed(&a.host(), "team/app", &marker);
    let tar = dir.path().join("app.tar");
    let tar = tar.to_str().unwrap();

    let pulled = wharf_json(config.path(), &["pull", &src, tar]);
    let src_digest = digest(config.path(), &src);
    assert_eq!(pulled["digest"], src_digest);
    assert_eq!(pulled["blobs"]["copied"], 2, "{pulled}");
    run(Command::new("docker").args(["load", "-i", tar]));
    docker_runs(&src, &marker);
    docker_rmi(&[&src]);

    // The archive's OCI layout carries the registry's manifest, so its digest survives.
    let dst = format!("{}/from/tar:v1", b.host());
    let (stdout, _) = wharf_insecure_ok(config.path(), &["push", "-q", tar, &dst]);
    assert_eq!(stdout.trim(), src_digest);
    assert_eq!(digest(config.path(), &dst), src_digest);

    // `copy --json` reports the same way: blobs streamed to another registry, mounted
    // within one (which moves no bytes).
    let copied = wharf_json(
        config.path(),
        &["copy", &src, &format!("{}/b/copy:v1", b.host())],
    );
    assert_eq!(copied["digest"], src_digest);
    assert_eq!(copied["blobs"]["skipped"], 0, "{copied}");
    assert_eq!(copied["blobs"]["copied"], 2, "{copied}");
    let sibling = format!("{}/team/sibling:v1", a.host());
    let mounted = wharf_json(config.path(), &["copy", "-q", &src, &sibling]);
    assert_eq!(mounted["blobs"]["mounted"], 2, "{mounted}");
    assert_eq!(mounted["bytes"], 0, "{mounted}");
}

#[test]
fn skopeo_reads_the_tar_wharf_wrote_and_wharf_pushes_skopeos_archives() {
    require_docker();
    require("skopeo", "skopeo");
    let w = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = unique("read by skopeo ");
    let src = docker_pushed(&w.host(), "skopeo/app", &marker);
    let tar = dir.path().join("wharf.tar");
    let tar = tar.to_str().unwrap();

    let pulled = wharf_json(config.path(), &["pull", "--quiet", &src, tar]);
    assert_eq!(pulled["digest"], digest(config.path(), &src));
    assert_eq!(pulled["reference"], src);
    let oci = run(Command::new("skopeo").args([
        "inspect",
        "--format",
        "{{.Digest}}",
        &format!("oci-archive:{tar}"),
    ]));
    assert_eq!(oci.trim(), pulled["digest"]);
    let docker: Value = serde_json::from_str(&run(
        Command::new("skopeo").args(["inspect", &format!("docker-archive:{tar}")])
    ))
    .unwrap();
    assert_eq!(docker["Layers"].as_array().unwrap().len(), 1, "{docker}");

    // And archives skopeo writes, in both formats, go up and run.
    for format in ["oci-archive", "docker-archive"] {
        let theirs = dir.path().join(format!("{format}.tar"));
        let theirs = theirs.to_str().unwrap();
        run(Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{src}"),
            &format!("{format}:{theirs}"),
        ]));
        let dst = format!("{}/from/{format}:v1", w.host());
        wharf_insecure_ok(config.path(), &["push", "-q", theirs, &dst]);
        run(Command::new("docker").args(["pull", &dst]));
        docker_runs(&dst, &marker);
        docker_rmi(&[&dst]);
    }
}

#[test]
fn a_multi_arch_index_pulls_into_one_tar_that_docker_loads_for_its_platform() {
    require_docker();
    let w = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parts: Vec<String> = ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            docker_pushed(
                &w.host(),
                &format!("multi/{arch}"),
                &format!("built for {arch}"),
            )
        })
        .collect();
    let list = format!("{}/multi/app:latest", w.host());
    push_manifest_list(&list, &parts[0], &parts[1]);
    let tar = dir.path().join("multi.tar");
    let tar = tar.to_str().unwrap();

    let pulled = wharf_json(config.path(), &["pull", &list, tar]);
    assert_eq!(pulled["digest"], digest(config.path(), &list));
    assert_eq!(pulled["blobs"]["copied"], 4, "{pulled}");
    run(Command::new("docker").args(["load", "-i", tar]));
    docker_runs(&list, "built for amd64");
    docker_rmi(&[&list]);

    // The whole index goes back up from the archive, digest and all.
    let dst = format!("{}/back/multi:latest", w.host());
    let (stdout, _) = wharf_insecure_ok(config.path(), &["push", "-q", tar, &dst]);
    assert_eq!(stdout.trim(), pulled["digest"]);
    assert_eq!(digest(config.path(), &dst), stdout.trim());

    // As Docker 25+ saves an index it pulled one platform of: index.json names the
    // whole index, the arm64 image's blobs are missing. The saved platform goes up
    // under its registry digest.
    let partial = dir.path().join("partial.tar");
    let arm64 = digest(config.path(), &parts[1]);
    drop_image_from_tar(Path::new(tar), &partial, &arm64);
    let dst = format!("{}/back/partial:latest", w.host());
    let (stdout, _) = wharf_insecure_ok(
        config.path(),
        &["push", "-q", partial.to_str().unwrap(), &dst],
    );
    assert_eq!(stdout.trim(), digest(config.path(), &parts[0]));
    docker_pulls_and_runs_marker(&dst, "built for amd64");
}

/// Copy the archive `from` to `to` without the image manifest `digest` and its blobs.
fn drop_image_from_tar(from: &Path, to: &Path, digest: &str) {
    let script = r#"
import json, sys, tarfile
src, dst, digest = sys.argv[1:]
name = lambda d: "blobs/sha256/" + d.split(":", 1)[1]
with tarfile.open(src) as t:
    manifest = json.load(t.extractfile(name(digest)))
    drop = {name(digest)} | {name(d["digest"]) for d in [manifest["config"], *manifest["layers"]]}
    with tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as out:
        for m in t.getmembers():
            if m.name not in drop:
                out.addfile(m, t.extractfile(m) if m.isfile() else None)
"#;
    run(Command::new("python3")
        .args(["-c", script])
        .arg(from)
        .arg(to)
        .arg(digest));
}

fn docker_pulls_and_runs_marker(image: &str, marker: &str) {
    run(Command::new("docker").args(["pull", image]));
    docker_runs(image, marker);
    docker_rmi(&[image]);
}
