//! docker, skopeo and podman pushing to and pulling from wharf.

use std::process::Command;

use serde_json::Value;

use crate::harness::{
    build_busybox_image, docker_rmi, push_manifest_list, require, require_docker, run, tar_dir,
    unique, Wharf,
};

fn catalog(w: &Wharf) -> Value {
    reqwest::blocking::get(format!("{}/v2/_catalog", w.url()))
        .unwrap()
        .json()
        .unwrap()
}

fn manifest_digest(w: &Wharf, repo: &str, tag: &str) -> String {
    let r = reqwest::blocking::Client::new()
        .head(format!("{}/v2/{repo}/manifests/{tag}", w.url()))
        .header(
            "accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
             application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "HEAD {repo}:{tag}");
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn docker_pushes_pulls_and_runs_an_image() {
    require_docker();
    let w = Wharf::start();
    let local = build_busybox_image(&unique("wharf-docker-src:"), "pushed by docker");
    let remote = format!("{}/apps/hello:v1", w.host());
    run(Command::new("docker").args(["tag", &local, &remote]));
    let pushed = run(Command::new("docker").args(["push", &remote]));
    docker_rmi(&[&remote, &local]);

    run(Command::new("docker").args(["pull", &remote]));
    let out = run(Command::new("docker").args(["run", "--rm", &remote, "cat", "/marker"]));
    assert_eq!(out.trim(), "pushed by docker");
    // The digest docker printed is the one wharf serves.
    let digest = manifest_digest(&w, "apps/hello", "v1");
    assert!(
        pushed.contains(&digest),
        "docker push said {pushed}, wharf serves {digest}"
    );
    assert_eq!(
        catalog(&w)["repositories"],
        serde_json::json!(["apps/hello"])
    );

    // A second push of the same image uploads nothing new (every layer exists).
    let again = run(Command::new("docker").args(["push", &remote]));
    assert!(again.contains("Layer already exists"), "{again}");
    docker_rmi(&[&remote]);
}

#[test]
fn docker_pushes_and_pulls_a_multi_arch_manifest_list() {
    require_docker();
    let w = Wharf::start();
    let mut parts = vec![];
    for arch in ["amd64", "arm64"] {
        let local = build_busybox_image(
            &unique(&format!("wharf-multi-{arch}:")),
            &format!("built for {arch}"),
        );
        let remote = format!("{}/multi/app:{arch}", w.host());
        run(Command::new("docker").args(["tag", &local, &remote]));
        run(Command::new("docker").args(["push", &remote]));
        docker_rmi(&[&local]);
        parts.push(remote);
    }
    let list = format!("{}/multi/app:latest", w.host());
    push_manifest_list(&list, &parts[0], &parts[1]);

    let inspected: Value = serde_json::from_str(&run(Command::new("docker").args([
        "manifest",
        "inspect",
        "--insecure",
        &list,
    ])))
    .unwrap();
    assert_eq!(
        inspected["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let arches: Vec<_> = inspected["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].clone())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);

    // docker pulls the list and picks its own platform.
    docker_rmi(&[&parts[0], &parts[1]]);
    run(Command::new("docker").args(["pull", &list]));
    assert_eq!(
        run(Command::new("docker").args(["run", "--rm", &list, "cat", "/marker"])).trim(),
        "built for amd64"
    );
    docker_rmi(&[&list]);
}

#[test]
fn skopeo_copies_docker_and_oci_formats_in_both_directions() {
    require("skopeo", "skopeo");
    require_docker();
    let w = Wharf::start();
    let local = build_busybox_image(&unique("wharf-skopeo-src:"), "copied by skopeo");
    let dir = tempfile::tempdir().unwrap();
    let skopeo = |args: &[&str]| run(Command::new("skopeo").args(args));

    // Into wharf, as Docker schema2 and as OCI.
    let docker_ref = format!("docker://{}/sk/app:docker", w.host());
    let oci_ref = format!("docker://{}/sk/app:oci", w.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("docker-daemon:{local}"),
        &docker_ref,
    ]);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        &format!("docker-daemon:{local}"),
        &oci_ref,
    ]);
    let raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &docker_ref,
    ]))
    .unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &oci_ref,
    ]))
    .unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );

    // Out of wharf into an OCI layout, and back in under another name: digests are kept.
    let layout = format!("oci:{}:app", dir.path().join("layout").display());
    skopeo(&["copy", "--src-tls-verify=false", &oci_ref, &layout]);
    let back = format!("docker://{}/sk/roundtrip:v1", w.host());
    skopeo(&["copy", "--dest-tls-verify=false", &layout, &back]);
    assert_eq!(
        manifest_digest(&w, "sk/roundtrip", "v1"),
        manifest_digest(&w, "sk/app", "oci")
    );
    let inspected: Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &back])).unwrap();
    assert_eq!(inspected["Digest"], manifest_digest(&w, "sk/app", "oci"));

    // Into a dir: every byte verified by skopeo against the manifest's digests.
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &docker_ref,
        &format!("dir:{}", dir.path().join("dir").display()),
    ]);

    let tags: Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/sk/app", w.host()),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["docker", "oci"]));
    skopeo(&["delete", "--tls-verify=false", &docker_ref]);
    let tags: Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/sk/app", w.host()),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["oci"]));
    docker_rmi(&[&local]);
}

#[test]
fn podman_pushes_and_pulls() {
    require("podman", "podman");
    let w = Wharf::start();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("marker"), "pushed by podman").unwrap();
    let tar = dir.path().join("rootfs.tar");
    tar_dir(&rootfs, &tar);
    let local = format!("localhost/{}", unique("wharf-podman:"));
    run(Command::new("podman").arg("import").arg(&tar).arg(&local));

    let remote = format!("{}/pd/app:v1", w.host());
    run(Command::new("podman").args(["push", "--tls-verify=false", &local, &remote]));
    run(Command::new("podman").args(["rmi", "-f", &local]));
    run(Command::new("podman").args(["pull", "--tls-verify=false", &remote]));
    let digest =
        run(Command::new("podman").args(["image", "inspect", "--format", "{{.Digest}}", &remote]));
    assert_eq!(digest.trim(), manifest_digest(&w, "pd/app", "v1"));

    // The pulled layer carries the file (read through podman's own export).
    let exported = dir.path().join("out.tar");
    run(Command::new("podman")
        .args(["save", "--format", "docker-archive", "-o"])
        .arg(&exported)
        .arg(&remote));
    assert!(std::fs::metadata(&exported).unwrap().len() > 0);
    run(Command::new("podman").args(["rmi", "-f", &remote]));
}
