//! `wharf copy` between real registries: the copied image is pulled and run by docker,
//! digests survive unchanged, a repeat copy moves nothing, one registry mounts.

use std::process::Command;

use crate::harness::{
    build_busybox_image, docker_pushed, docker_rmi, docker_runs, push_manifest_list, require, run,
    unique, wharf_insecure, wharf_insecure_ok, Distribution, Wharf, WHARF,
};

/// `wharf copy`, returning (stdout digest, stderr report).
fn copy(config: &tempfile::TempDir, args: &[&str]) -> (String, String) {
    let out = wharf_insecure(config.path(), &[&["copy"], args].concat());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "wharf copy {args:?}: {stderr}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr,
    )
}

fn digest(config: &tempfile::TempDir, image: &str) -> String {
    let out = wharf_insecure(config.path(), &["digest", image]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The interop proof: docker pulls what wharf copied and runs it.
fn docker_pulls_and_runs(image: &str, marker: &str) {
    run(Command::new("docker").args(["pull", image]));
    docker_runs(image, marker);
    docker_rmi(&[image]);
}

#[test]
fn copied_image_is_pulled_and_run_by_docker_and_a_repeat_moves_nothing() {
    let a = Wharf::start();
    let b = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let marker = unique("copied by wharf ");
    let src = docker_pushed(&a.host(), "team/app", &marker);
    let dst = format!("{}/mirror/app:v1", b.host());

    let (copied, report) = copy(&config, &[&src, &dst]);
    assert_eq!(copied, digest(&config, &src));
    assert_eq!(copied, digest(&config, &dst));
    assert!(report.contains("2 blobs uploaded"), "{report}");
    docker_pulls_and_runs(&dst, &marker);

    let (again, report) = copy(&config, &[&src, &dst]);
    assert_eq!(again, copied);
    assert!(
        report.contains("0 blobs uploaded, 0 mounted, 2 already present"),
        "{report}"
    );

    // Within one registry the blobs are mounted, not moved.
    let sibling = format!("{}/other/app:v1", a.host());
    let (mounted, report) = copy(&config, &["--quiet", &src, &sibling]);
    assert_eq!(mounted, copied);
    assert!(report.is_empty(), "--quiet printed {report}");
    let other = format!("{}/third/app:v1", a.host());
    let (_, report) = copy(&config, &[&src, &other]);
    assert!(report.contains("0 blobs uploaded, 2 mounted"), "{report}");
    docker_pulls_and_runs(&other, &marker);
}

#[test]
fn copies_into_distribution() {
    let a = Wharf::start();
    let root = tempfile::tempdir().unwrap();
    let d = Distribution::start_on(root.path());
    let config = tempfile::tempdir().unwrap();
    let marker = unique("copied to distribution ");
    let src = docker_pushed(&a.host(), "team/app", &marker);
    let dst = format!("{}/mirror/app:v1", d.host());
    let (copied, _) = copy(&config, &["--quiet", &src, &dst]);
    assert_eq!(copied, digest(&config, &dst));
    assert_eq!(copied, digest(&config, &src));
    docker_pulls_and_runs(&dst, &marker);

    // Small chunks force PATCH uploads with Content-Range, into both registries.
    let b = Wharf::start();
    for host in [d.host(), b.host()] {
        let dst = format!("{host}/chunked/app:v1");
        let (copied, _) = copy(&config, &["--quiet", "--chunk-size", "4096", &src, &dst]);
        assert_eq!(copied, digest(&config, &dst));
        docker_pulls_and_runs(&dst, &marker);
    }
}

#[test]
fn images_pushed_by_skopeo_keep_their_digests_through_wharf() {
    require("skopeo", "skopeo");
    let a = Wharf::start();
    let b = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let marker = unique("pushed by skopeo ");
    let local = build_busybox_image(&unique("wharf-copy-skopeo:"), &marker);
    let src = format!("{}/skopeo/app:v1", a.host());
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        &format!("docker-daemon:{local}"),
        &format!("docker://{src}"),
    ]));
    docker_rmi(&[&local]);
    let inspected = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{src}"),
    ]));
    assert_eq!(digest(&config, &src), inspected.trim());
    let dst = format!("{}/mirror/app:v1", b.host());
    let (copied, _) = copy(&config, &["--quiet", &src, &dst]);
    assert_eq!(copied, inspected.trim());
    assert_eq!(digest(&config, &dst), copied);
    docker_pulls_and_runs(&dst, &marker);
}

#[test]
fn multi_arch_indexes_copy_whole_or_one_platform() {
    let a = Wharf::start();
    let b = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let mut parts = vec![];
    for arch in ["amd64", "arm64"] {
        let marker = format!("built for {arch}");
        parts.push(docker_pushed(&a.host(), &format!("multi/{arch}"), &marker));
    }
    let list = format!("{}/multi/app:latest", a.host());
    push_manifest_list(&list, &parts[0], &parts[1]);

    let whole = format!("{}/mirror/multi:latest", b.host());
    let (copied, _) = copy(&config, &["--quiet", &list, &whole]);
    assert_eq!(copied, digest(&config, &list));
    assert_eq!(copied, digest(&config, &whole));
    // docker picks its own platform from the copied index and runs it.
    docker_pulls_and_runs(&whole, "built for amd64");

    let arm = format!("{}/mirror/arm:latest", b.host());
    let (child, _) = copy(
        &config,
        &["--quiet", "--platform", "linux/arm64", &list, &arm],
    );
    assert_eq!(child, digest(&config, &parts[1]));
    assert_eq!(child, digest(&config, &arm));
}

#[test]
fn pull_to_an_oci_layout_and_push_back_keep_the_digest() {
    require("skopeo", "skopeo");
    let a = Wharf::start();
    let b = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let marker = unique("through a layout ");
    // skopeo reads only OCI media types from a layout, so the source is OCI-format.
    let local = build_busybox_image(&unique("wharf-layout-src:"), &marker);
    let src = format!("{}/team/app:v1", a.host());
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        &format!("docker-daemon:{local}"),
        &format!("docker://{src}"),
    ]));
    docker_rmi(&[&local]);
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("app");
    let dir_arg = dir.to_str().unwrap();
    let out = wharf_insecure(config.path(), &["pull", &src, dir_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pulled = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(pulled, digest(&config, &src));
    // skopeo reads the layout wharf wrote.
    let inspected = run(Command::new("skopeo").args([
        "inspect",
        "--format",
        "{{.Digest}}",
        &format!("oci:{dir_arg}:v1"),
    ]));
    assert_eq!(inspected.trim(), pulled);

    let dst = format!("{}/from/layout:v1", b.host());
    let out = wharf_insecure(config.path(), &["push", dir_arg, &dst]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(digest(&config, &dst), pulled);
    docker_pulls_and_runs(&dst, &marker);

    // And a layout skopeo wrote is pushed by wharf.
    let theirs = layout.path().join("skopeo");
    let theirs_arg = theirs.to_str().unwrap();
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{src}"),
        &format!("oci:{theirs_arg}:v1"),
    ]));
    let dst = format!("{}/from/skopeo:v1", b.host());
    let out = wharf_insecure(config.path(), &["push", theirs_arg, &dst]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    docker_pulls_and_runs(&dst, &marker);
}

/// Every file in `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_corrupt_layout_is_refused_by_wharf_before_anything_is_tagged() {
    let a = Wharf::start();
    let b = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let src = docker_pushed(&a.host(), "team/app", &unique("corrupt me "));
    let layout = tempfile::tempdir().unwrap();
    let pull = |name: &str| {
        let dir = layout.path().join(name);
        wharf_insecure_ok(config.path(), &["pull", &src, dir.to_str().unwrap()]);
        dir
    };
    let blob = |dir: &std::path::Path, digest: &str| {
        dir.join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    };
    let manifest_digest = digest(&config, &src);

    // A pull leaves only finished files: no temporary names.
    let layer_dir = pull("layer");
    let leftovers: Vec<_> = files_under(&layer_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A layer with its bytes changed (same size): wharf's own check stops the upload.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&layer_dir, &manifest_digest)).unwrap())
            .unwrap();
    let layer = blob(
        &layer_dir,
        manifest["layers"][0]["digest"].as_str().unwrap(),
    );
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let dst = format!("{}/from/layer:v1", b.host());
    let out = wharf_insecure(config.path(), &["push", layer_dir.to_str().unwrap(), &dst]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("the file is corrupt"), "{stderr}");

    // A manifest with its bytes changed is never pushed under the tag.
    let manifest_dir = pull("manifest");
    let top = blob(&manifest_dir, &manifest_digest);
    let mut text = std::fs::read_to_string(&top).unwrap();
    text.push(' ');
    std::fs::write(&top, text).unwrap();
    let dst = format!("{}/from/manifest:v1", b.host());
    let out = wharf_insecure(
        config.path(),
        &["push", manifest_dir.to_str().unwrap(), &dst],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is corrupt"), "{stderr}");

    for repo in ["from/layer", "from/manifest"] {
        let out = wharf_insecure(config.path(), &["tags", &format!("{}/{repo}", b.host())]);
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "{repo} got a tag"
        );
    }
}

#[test]
fn a_terminal_gets_progress_bars_and_a_log_gets_lines() {
    require("script", "bsdutils");
    let a = Wharf::start();
    let b = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let src = docker_pushed(&a.host(), "team/app", &unique("shown on a terminal "));

    // `script` gives wharf a pseudo-terminal for stderr, as a person's shell would.
    let dst = format!("{}/tty/app:v1", b.host());
    let command = format!("{WHARF} --insecure copy {src} {dst}");
    let out = run(Command::new("script")
        .env("DOCKER_CONFIG", config.path())
        .args(["-qec", &command, "/dev/null"]));
    assert!(out.contains("] "), "no bar drawn: {out:?}");
    assert!(out.contains("uploaded"), "{out:?}");
    assert!(out.contains('\u{1b}'), "no terminal control: {out:?}");

    // Without a terminal: one plain line a blob, no control characters.
    let dst = format!("{}/log/app:v1", b.host());
    let (_, report) = copy(&config, &[&src, &dst]);
    assert!(!report.contains('\u{1b}'), "{report:?}");
    let uploaded = report.lines().filter(|l| l.ends_with(": uploaded")).count();
    assert_eq!(uploaded, 2, "{report}");
}

#[test]
fn a_source_serving_corrupt_bytes_is_named_and_nothing_is_tagged() {
    let a = Wharf::start();
    let b = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let src = docker_pushed(&a.host(), "team/app", &unique("rotting on disk "));
    let stored = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        a.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stored(&digest(&config, &src))).unwrap()).unwrap();
    let layer = stored(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();

    // One PUT, and PATCH chunks: either way the destination's check refuses the bytes.
    for (repo, chunks) in [("whole", "67108864"), ("chunked", "65536")] {
        let dst = format!("{}/{repo}/app:v1", b.host());
        let out = wharf_insecure(config.path(), &["copy", "--chunk-size", chunks, &src, &dst]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{repo}: {stderr}");
        assert!(
            stderr.contains(&format!("{} served for team/app@", a.host()))
                && stderr.contains("storage may be corrupt"),
            "{repo}: {stderr}"
        );
        let tags = wharf_insecure(
            config.path(),
            &["tags", &format!("{}/{repo}/app", b.host())],
        );
        assert!(
            String::from_utf8_lossy(&tags.stdout).trim().is_empty(),
            "{repo} got a tag"
        );
    }
}
