//! `wharf copy` between real registries: the copied image is pulled and run by docker,
//! digests survive unchanged, a repeat copy moves nothing, one registry mounts.

use std::process::{Command, Output};

use crate::harness::{
    build_busybox_image, docker_rmi, push_manifest_list, require, run, unique, Distribution, Wharf,
    WHARF,
};

/// The wharf CLI with an empty docker config (these registries need no credentials).
fn wharf(config: &tempfile::TempDir, args: &[&str]) -> Output {
    Command::new(WHARF)
        .env("DOCKER_CONFIG", config.path())
        .env_remove("REPO_USER")
        .env_remove("REPO_PASS")
        .env_remove("WHARF_INSECURE_REGISTRIES")
        .arg("--insecure")
        .args(args)
        .output()
        .unwrap()
}

/// `wharf copy`, returning (stdout digest, stderr report).
fn copy(config: &tempfile::TempDir, args: &[&str]) -> (String, String) {
    let out = wharf(config, &[&["copy"], args].concat());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "wharf copy {args:?}: {stderr}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr,
    )
}

fn digest(config: &tempfile::TempDir, image: &str) -> String {
    let out = wharf(config, &["digest", image]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Build and docker-push a marker image to `host`, returning its remote name.
fn push_marker_image(host: &str, repo: &str, marker: &str) -> String {
    let local = build_busybox_image(&unique("wharf-copy-src:"), marker);
    let remote = format!("{host}/{repo}:v1");
    run(Command::new("docker").args(["tag", &local, &remote]));
    run(Command::new("docker").args(["push", &remote]));
    docker_rmi(&[&local, &remote]);
    remote
}

/// The interop proof: docker pulls what wharf copied and runs it.
fn docker_runs(image: &str, marker: &str) {
    run(Command::new("docker").args(["pull", image]));
    let out = run(Command::new("docker").args(["run", "--rm", image, "cat", "/marker"]));
    assert_eq!(out.trim(), marker);
    docker_rmi(&[image]);
}

#[test]
fn copied_image_is_pulled_and_run_by_docker_and_a_repeat_moves_nothing() {
    let a = Wharf::start();
    let b = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let marker = unique("copied by wharf ");
    let src = push_marker_image(&a.host(), "team/app", &marker);
    let dst = format!("{}/mirror/app:v1", b.host());

    let (copied, report) = copy(&config, &[&src, &dst]);
    assert_eq!(copied, digest(&config, &src));
    assert_eq!(copied, digest(&config, &dst));
    assert!(report.contains("2 blobs uploaded"), "{report}");
    docker_runs(&dst, &marker);

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
    docker_runs(&other, &marker);
}

#[test]
fn copies_into_distribution() {
    let a = Wharf::start();
    let root = tempfile::tempdir().unwrap();
    let d = Distribution::start_on(root.path());
    let config = tempfile::tempdir().unwrap();
    let marker = unique("copied to distribution ");
    let src = push_marker_image(&a.host(), "team/app", &marker);
    let dst = format!("{}/mirror/app:v1", d.host());
    let (copied, _) = copy(&config, &["--quiet", &src, &dst]);
    assert_eq!(copied, digest(&config, &dst));
    assert_eq!(copied, digest(&config, &src));
    docker_runs(&dst, &marker);

    // Small chunks force PATCH uploads with Content-Range, into both registries.
    let b = Wharf::start();
    for host in [d.host(), b.host()] {
        let dst = format!("{host}/chunked/app:v1");
        let (copied, _) = copy(&config, &["--quiet", "--chunk-size", "4096", &src, &dst]);
        assert_eq!(copied, digest(&config, &dst));
        docker_runs(&dst, &marker);
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
    docker_runs(&dst, &marker);
}

#[test]
fn multi_arch_indexes_copy_whole_or_one_platform() {
    let a = Wharf::start();
    let b = Wharf::start();
    let config = tempfile::tempdir().unwrap();
    let mut parts = vec![];
    for arch in ["amd64", "arm64"] {
        let marker = format!("built for {arch}");
        parts.push(push_marker_image(
            &a.host(),
            &format!("multi/{arch}"),
            &marker,
        ));
    }
    let list = format!("{}/multi/app:latest", a.host());
    push_manifest_list(&list, &parts[0], &parts[1]);

    let whole = format!("{}/mirror/multi:latest", b.host());
    let (copied, _) = copy(&config, &["--quiet", &list, &whole]);
    assert_eq!(copied, digest(&config, &list));
    assert_eq!(copied, digest(&config, &whole));
    // docker picks its own platform from the copied index and runs it.
    docker_runs(&whole, "built for amd64");

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
    let out = wharf(&config, &["pull", &src, dir_arg]);
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
    let out = wharf(&config, &["push", dir_arg, &dst]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(digest(&config, &dst), pulled);
    docker_runs(&dst, &marker);

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
    let out = wharf(&config, &["push", theirs_arg, &dst]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    docker_runs(&dst, &marker);
}
