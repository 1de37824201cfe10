//! The pull-through cache (`proxy:`): real upstreams (a wharf with htpasswd, Distribution
//! 2.8.2), real clients (docker, skopeo, podman) pulling through a wharf mirror.
//!
//! docker's daemon-wide `registry-mirrors` is not exercised: the Docker Engine here is
//! shared by every test, and reconfiguring it means restarting it under them. docker
//! pulls `127.0.0.1:MIRROR/<path>` instead, which sends the same requests (a daemon mirror
//! asks for `library/<name>` as a `remoteurl` mirror serves it).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::proxy_faults::{nginx_front, random_hex};

pub(crate) const USER: &str = "mirror";
pub(crate) const PASSWORD: &str = "mirror-secret";

/// A wharf upstream with htpasswd users and an info-level access log.
pub(crate) fn wharf_upstream(dir: &Path) -> Served {
    std::fs::create_dir_all(dir).unwrap();
    htpasswd(&dir.join("htpasswd"), USER, PASSWORD);
    let yaml = "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  htpasswd:\n    realm: upstream\n    path: @DIR@/htpasswd\n";
    Served::start(dir, yaml, &[("WHARF_LOG", "info")])
}

/// A mirror whose `up/` repositories come from `remote`; `ttl` for its tags.
pub(crate) fn mirror(dir: &Path, remote: &str, ttl: &str) -> Served {
    mirror_with_debug(dir, remote, ttl, free_port())
}

/// A mirror whose metrics are at `127.0.0.1:debug_port/metrics`.
pub(crate) fn mirror_with_debug(dir: &Path, remote: &str, ttl: &str, debug_port: u16) -> Served {
    std::fs::create_dir_all(dir).unwrap();
    let yaml = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  debug:\n    addr: 127.0.0.1:{debug_port}\n    prometheus:\n      enabled: true\nproxy:\n  upstreams:\n    - prefix: up/\n      remoteurl: {remote}\n      username: {USER}\n      password: {PASSWORD}\n      ttl: {ttl}\n"
    );
    Served::start(dir, &yaml, &[("WHARF_LOG", "info")])
}

pub(crate) fn docker_cfg(config: &Path, args: &[&str]) -> String {
    let out = Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(args)
        .output()
        .unwrap();
    ok(out, &format!("docker {args:?}"))
}

/// Build an image marked `marker` and push it to `host/repo:v1` as the upstream's user.
pub(crate) fn push_upstream(config: &Path, host: &str, repo: &str, marker: &str) {
    let out = output_with_stdin(
        Command::new("docker").env("DOCKER_CONFIG", config).args([
            "login",
            host,
            "-u",
            USER,
            "--password-stdin",
        ]),
        PASSWORD,
    );
    ok(out, "docker login to the upstream");
    let local = build_busybox_image(&unique("wharf-proxy-src:"), marker);
    let remote = format!("{host}/{repo}:v1");
    docker_cfg(config, &["tag", &local, &remote]);
    docker_cfg(config, &["push", &remote]);
    docker_rmi(&[&local, &remote]);
}

/// GETs of blobs in the upstream's access log, by path.
pub(crate) fn blob_gets(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.contains("method=GET") && l.contains("/blobs/sha256:") && l.contains("status=200")
        })
        .filter_map(|l| l.split("path=").nth(1))
        .map(|p| p.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

pub(crate) fn skopeo_copy(src: &str, dir: &Path) -> std::process::Output {
    Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--retry-times", "0"])
        .arg(format!("docker://{src}"))
        .arg(format!("dir:{}", dir.display()))
        .output()
        .unwrap()
}

#[test]
fn docker_skopeo_and_podman_pull_through_a_mirror_of_an_authenticated_wharf() {
    require_docker();
    require("skopeo", "skopeo");
    require("podman", "podman");
    let dir = tempfile::tempdir().unwrap();
    let upstream = wharf_upstream(&dir.path().join("up"));
    let cfg = dir.path().join("docker-config");
    let repo = unique("team/app");
    push_upstream(&cfg, &upstream.host(), &repo, "from upstream");
    let m = mirror(
        &dir.path().join("mirror"),
        &format!("http://{}", upstream.host()),
        "1h",
    );

    // docker, anonymous, through the mirror that holds the upstream's credentials.
    let through = format!("{}/up/{repo}:v1", m.host());
    docker_cfg(&cfg, &["pull", &through]);
    docker_runs(&through, "from upstream");
    docker_rmi(&[&through]);

    // skopeo, after docker: everything is cached, nothing more is fetched.
    let gets_before = blob_gets(&upstream.log()).len();
    let out = skopeo_copy(&through, &dir.path().join("skopeo"));
    ok(out, "skopeo copy through the mirror");
    assert_eq!(
        blob_gets(&upstream.log()).len(),
        gets_before,
        "a cached blob was fetched again"
    );

    // podman with a registries.conf mirror for the upstream: it asks the mirror first.
    let conf = dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{up}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{mirror}/up\"\ninsecure = true\n",
            up = upstream.host(),
            mirror = m.host()
        ),
    )
    .unwrap();
    let image = format!("{}/{repo}:v1", upstream.host());
    let pulled = Command::new("podman")
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .args(["pull", "--tls-verify=false", &image])
        .output()
        .unwrap();
    ok(pulled, "podman pull through its registries.conf mirror");
    let _ = Command::new("podman").args(["rmi", "-f", &image]).output();
    assert!(
        m.log()
            .contains(&format!("path=/v2/up/{repo}/manifests/v1")),
        "podman did not go through the mirror:\n{}",
        m.log()
    );

    // The same instance takes pushes to its own repositories, and refuses them under up/.
    let own = docker_pushed(&m.host(), "own/app", "pushed to the mirror");
    docker_cfg(&cfg, &["pull", &own]);
    docker_runs(&own, "pushed to the mirror");
    // A digest of the mirror's own content does not open it under a proxied name.
    let own_manifest = docker_manifest(&format!("http://{}/v2/own/app/manifests/v1", m.host()));
    let own_layer = own_manifest["layers"][0]["digest"].as_str().unwrap();
    let leaked = http_client()
        .get(format!(
            "http://{}/v2/up/{repo}/blobs/{own_layer}",
            m.host()
        ))
        .send()
        .unwrap();
    assert_eq!(
        leaked.status(),
        404,
        "the mirror's own blob served under up/"
    );
    let local = build_busybox_image(&unique("wharf-proxy-refused:"), "refused");
    let refused = format!("{}/up/{repo}:v2", m.host());
    run(Command::new("docker").args(["tag", &local, &refused]));
    let out = Command::new("docker")
        .args(["push", &refused])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a push into a proxied repository succeeded"
    );
    docker_rmi(&[&local, &refused, &own]);
}

#[test]
fn a_registry2_style_mirror_of_distribution_serves_library_names_and_refuses_pushes() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dist");
    let dist = Distribution::start_on(&data);
    let pushed = docker_pushed(&dist.host(), "library/busy", "via distribution");
    let mdir = dir.path().join("mirror");
    std::fs::create_dir_all(&mdir).unwrap();
    // Configured as registry:2 users do it in compose files: REGISTRY_PROXY_REMOTEURL.
    let yaml = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n";
    let m = Served::start(&mdir, yaml, &[("REGISTRY_PROXY_REMOTEURL", &dist.url())]);
    // What a daemon's registry-mirrors entry asks for `busy`: `library/busy`.
    let through = format!("{}/library/busy:v1", m.host());
    run(Command::new("docker").args(["pull", &through]));
    docker_runs(&through, "via distribution");
    let out = Command::new("docker")
        .args(["push", &through])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "registry:2 semantics: a mirror of everything refuses pushes"
    );
    docker_rmi(&[&through, &pushed]);
}

#[test]
fn eight_concurrent_cold_pulls_fetch_each_blob_from_upstream_once() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let upstream = wharf_upstream(&dir.path().join("up"));
    let cfg = dir.path().join("docker-config");
    let repo = unique("single/flight");
    let big = random_hex(16 << 20);
    let local = build_busybox_image_with(
        &unique("wharf-proxy-big:"),
        "big",
        &[("big", &big)],
        &["CMD [\"/bin/sh\"]"],
    );
    let out = output_with_stdin(
        Command::new("docker").env("DOCKER_CONFIG", &cfg).args([
            "login",
            &upstream.host(),
            "-u",
            USER,
            "--password-stdin",
        ]),
        PASSWORD,
    );
    ok(out, "docker login to the upstream");
    let remote = format!("{}/{repo}:v1", upstream.host());
    docker_cfg(&cfg, &["tag", &local, &remote]);
    docker_cfg(&cfg, &["push", &remote]);
    docker_rmi(&[&local, &remote]);
    // A slow link to the upstream (2 MiB/s), so that all eight pulls overlap the fill.
    let ndir = dir.path().join("nginx");
    std::fs::create_dir_all(&ndir).unwrap();
    let (_nginx, nport) = nginx_front(&ndir, upstream.port, &ndir.join("never"), "2m");
    let debug_port = free_port();
    let m = mirror_with_debug(
        &dir.path().join("mirror"),
        &format!("http://127.0.0.1:{nport}"),
        "1h",
        debug_port,
    );
    let log_before = upstream.log().len();
    let gets_before = blob_gets(&upstream.log()).len();

    let through = format!("{}/up/{repo}:v1", m.host());
    let pulls: Vec<_> = (0..8)
        .map(|i| {
            let (through, target) = (through.clone(), dir.path().join(format!("pull{i}")));
            std::thread::spawn(move || skopeo_copy(&through, &target))
        })
        .collect();
    for p in pulls {
        ok(
            p.join().unwrap(),
            "a concurrent skopeo copy through the mirror",
        );
    }
    let gets = blob_gets(&upstream.log());
    let fetched = &gets[gets_before..];
    let mut unique_paths = fetched.to_vec();
    unique_paths.sort();
    unique_paths.dedup();
    assert_eq!(unique_paths.len(), 2, "config and one layer: {fetched:?}");
    assert_eq!(
        fetched.len(),
        unique_paths.len(),
        "a blob was fetched more than once: {fetched:?}"
    );
    let manifest_gets = upstream.log()[log_before..]
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains(&format!("/v2/{repo}/manifests/")))
        .count();
    assert_eq!(manifest_gets, 1, "the manifest was fetched more than once");
    // Every pull was served each blob, by following the one fill.
    let log = m.log();
    for path in &unique_paths {
        let mirror_path = format!("path=/v2/up{}", path.trim_start_matches("/v2"));
        let served = log
            .lines()
            .filter(|l| l.contains("method=GET") && l.contains("status=200"))
            .filter(|l| l.contains(&mirror_path))
            .count();
        assert_eq!(served, 8, "{path} served {served} times:\n{log}");
    }
    // The metrics say the same: the layer (about 8 MiB gzipped) came over the link once.
    let metrics = http_client()
        .get(format!("http://127.0.0.1:{debug_port}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap();
    let figure = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name));
        let value = line.and_then(|l| l.split_whitespace().nth(1));
        value
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{metrics}"))
    };
    let upstream_bytes = figure("registry_proxy_upstream_bytes_total");
    assert!(
        (1 << 20..20 << 20).contains(&upstream_bytes),
        "upstream bytes {upstream_bytes}:\n{metrics}"
    );
    assert!(figure("registry_proxy_misses_total") >= 3, "{metrics}");
    assert_eq!(
        figure("registry_proxy_upstream_errors_total"),
        0,
        "{metrics}"
    );
}

#[test]
fn evicted_content_is_swept_by_garbage_collect_and_fetched_again() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let upstream = wharf_upstream(&dir.path().join("up"));
    let cfg = dir.path().join("docker-config");
    let repo = unique("evict/app");
    push_upstream(&cfg, &upstream.host(), &repo, "evict me");
    let mdir = dir.path().join("mirror");
    std::fs::create_dir_all(&mdir).unwrap();
    // A cap of one byte: everything cached is over it at the next collection.
    let yaml = format!("version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nproxy:\n  maxsize: 1\n  upstreams:\n    - prefix: up/\n      remoteurl: http://{}\n      username: {USER}\n      password: {PASSWORD}\n", upstream.host());
    let m = Served::start(&mdir, &yaml, &[("WHARF_LOG", "info")]);
    let through = format!("{}/up/{repo}:v1", m.host());
    ok(
        skopeo_copy(&through, &dir.path().join("first")),
        "first pull",
    );
    let fetched = blob_gets(&upstream.log()).len();
    let gc = Command::new(WHARF)
        .args(["garbage-collect", "--grace", "0s"])
        .arg(mdir.join("config.yml"))
        .output()
        .unwrap();
    let report = ok(gc, "wharf garbage-collect on the mirror");
    assert!(report.contains("evicted 1 cached manifest ("), "{report}");
    let blobs = mdir.join("data/docker/registry/v2/blobs/sha256");
    let left = run(Command::new("find").arg(&blobs).args(["-name", "data"]));
    assert_eq!(left.trim(), "", "blobs left after eviction:\n{report}");
    // The next pull fetches it all again, and works.
    ok(
        skopeo_copy(&through, &dir.path().join("again")),
        "pull after eviction",
    );
    assert_eq!(blob_gets(&upstream.log()).len(), fetched * 2);
}

#[test]
fn one_platform_of_an_index_is_all_a_pull_of_it_fetches_and_tags_list_upstream() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let dist = Distribution::start_on(&dir.path().join("dist"));
    let repo = unique("lazy/app");
    let mut parts = vec![];
    for arch in ["amd64", "arm64"] {
        let local = build_busybox_image(&unique("wharf-lazy:"), &format!("lazy {arch}"));
        let remote = format!("{}/{repo}:{arch}", dist.host());
        run(Command::new("docker").args(["tag", &local, &remote]));
        run(Command::new("docker").args(["push", &remote]));
        docker_rmi(&[&local]);
        parts.push(remote);
    }
    let list = format!("{}/{repo}:latest", dist.host());
    push_manifest_list(&list, &parts[0], &parts[1]);
    let index: serde_json::Value = http_client()
        .get(format!("{}/v2/{repo}/manifests/latest", dist.url()))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let child = |arch: &str| {
        let entries = index["manifests"].as_array().unwrap();
        let entry = entries
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap();
        entry["digest"].as_str().unwrap().to_owned()
    };
    let mdir = dir.path().join("mirror");
    std::fs::create_dir_all(&mdir).unwrap();
    let yaml = format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nproxy:\n  upstreams:\n    - prefix: up/\n      remoteurl: {}\n", dist.url());
    let m = Served::start(&mdir, &yaml, &[("WHARF_LOG", "info")]);
    let through = format!("{}/up/{repo}:latest", m.host());
    let out = Command::new("skopeo")
        .args(["--override-arch", "arm64", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://{through}"))
        .arg(format!("dir:{}", dir.path().join("arm64").display()))
        .output()
        .unwrap();
    ok(
        out,
        &format!(
            "skopeo copy of arm64 through the mirror; its log:\n{}",
            m.log()
        ),
    );
    let stored = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        mdir.join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
        .exists()
    };
    assert!(stored(&child("arm64")), "the arm64 manifest was not cached");
    assert!(
        !stored(&child("amd64")),
        "the amd64 manifest was fetched too"
    );
    // A fill logs once its blob is durable, which comes after the client's last byte.
    let cached = || m.log().matches("cached a blob from upstream").count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cached() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        cached(),
        2,
        "config and layer of one platform:\n{}",
        m.log()
    );

    // Tags come from the upstream, as registry:2's proxy lists them.
    let tags: serde_json::Value = http_client()
        .get(format!("http://{}/v2/up/{repo}/tags/list", m.host()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        tags["tags"],
        serde_json::json!(["amd64", "arm64", "latest"])
    );
    docker_rmi(&[&parts[0], &parts[1]]);
}

#[test]
fn a_token_auth_upstream_is_asked_for_a_token_once_not_on_every_pull() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let updir = dir.path().join("up");
    std::fs::create_dir_all(&updir).unwrap();
    htpasswd(&updir.join("htpasswd"), USER, PASSWORD);
    let yaml = "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  htpasswd:\n    realm: upstream\n    path: @DIR@/htpasswd\n    token:\n      service: upstream\n      expiration: 300s\n";
    let upstream = Served::start(&updir, yaml, &[("WHARF_LOG", "info")]);
    let cfg = dir.path().join("docker-config");
    let repo = unique("tokens/app");
    push_upstream(&cfg, &upstream.host(), &repo, "behind tokens");
    // A ttl of 1 s: the second pull re-checks the tag upstream with a HEAD.
    let m = mirror(
        &dir.path().join("mirror"),
        &format!("http://{}", upstream.host()),
        "1s",
    );
    // The mirror's start checks its credentials, with a token of its own: counted from
    // after that check.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !m.log().contains("accepts the configured credentials") {
        assert!(std::time::Instant::now() < deadline, "{}", m.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let tokens_before = upstream.log().matches("path=/auth/token").count();
    let through = format!("{}/up/{repo}:v1", m.host());
    ok(
        skopeo_copy(&through, &dir.path().join("first")),
        "first pull",
    );
    std::thread::sleep(Duration::from_millis(1200));
    ok(
        skopeo_copy(&through, &dir.path().join("second")),
        "second pull",
    );
    let log = upstream.log();
    let heads = log
        .lines()
        .filter(|l| l.contains("method=HEAD") && l.contains(&format!("/v2/{repo}/manifests/v1")))
        .count();
    assert!(heads >= 2, "the tag was not re-checked:\n{log}");
    let tokens = log.matches("path=/auth/token").count() - tokens_before;
    assert_eq!(tokens, 1, "tokens asked for: {tokens}\n{log}");
}

#[test]
fn a_tag_that_moves_back_to_a_cached_manifest_fetches_nothing_but_a_head() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let upstream = wharf_upstream(&dir.path().join("up"));
    let cfg = dir.path().join("docker-config");
    let repo = unique("moving/app");
    let manifest_url = format!("http://{}/v2/{repo}/manifests/v1", upstream.host());
    let accept = "application/vnd.docker.distribution.manifest.v2+json";
    push_upstream(&cfg, &upstream.host(), &repo, "first");
    let first = http_client()
        .get(&manifest_url)
        .basic_auth(USER, Some(PASSWORD))
        .header("Accept", accept)
        .send()
        .unwrap();
    let first_digest = header(&first, "docker-content-digest");
    let first_bytes = first.bytes().unwrap();
    let m = mirror(
        &dir.path().join("mirror"),
        &format!("http://{}", upstream.host()),
        "1s",
    );
    let through = format!("{}/up/{repo}:v1", m.host());
    ok(
        skopeo_copy(&through, &dir.path().join("a")),
        "pull of the first v1",
    );
    // v1 moves to another image, then back to the first.
    push_upstream(&cfg, &upstream.host(), &repo, "second");
    std::thread::sleep(Duration::from_millis(1100));
    ok(
        skopeo_copy(&through, &dir.path().join("b")),
        "pull of the second v1",
    );
    let put = http_client()
        .put(&manifest_url)
        .basic_auth(USER, Some(PASSWORD))
        .header("Content-Type", accept)
        .body(first_bytes)
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    std::thread::sleep(Duration::from_millis(1100));
    ok(
        skopeo_copy(&through, &dir.path().join("c")),
        "pull of v1 moved back",
    );
    let got = http_client()
        .head(format!("http://{}/v2/up/{repo}/manifests/v1", m.host()))
        .header("Accept", accept)
        .send()
        .unwrap();
    assert_eq!(header(&got, "docker-content-digest"), first_digest);
    let fetched = upstream
        .log()
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains(&format!("manifests/{first_digest}")))
        .count();
    assert_eq!(
        fetched,
        1,
        "the first manifest was fetched again:\n{}",
        upstream.log()
    );
}
