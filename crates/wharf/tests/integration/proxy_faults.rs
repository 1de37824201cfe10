//! The pull-through cache when things go wrong: an upstream that rate-limits, goes away,
//! serves a corrupt blob, or a client that hangs up mid-blob. Helpers in `proxy.rs`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::proxy::{docker_cfg, mirror, push_upstream, skopeo_copy, wharf_upstream};

/// nginx in front of the upstream, answering 429 while `flag` exists, and sending at most
/// `rate` bytes a second to each client.
pub(crate) fn nginx_front(dir: &Path, backend: u16, flag: &Path, rate: &str) -> (Proc, u16) {
    crate::harness::nginx::nginx(
        dir,
        &format!(
            r#"    access_log off;
    server {{
        listen 127.0.0.1:@PORT@;
        location / {{
            if (-f {flag}) {{ return 429; }}
            proxy_pass http://127.0.0.1:{backend};
            proxy_set_header Host $http_host;
            limit_rate {rate};
        }}
    }}"#,
            flag = flag.display(),
        ),
    )
}

#[test]
fn cached_tags_survive_a_rate_limit_and_an_outage_and_uncached_ones_fail_clearly() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let updir = dir.path().join("up");
    let mut upstream = Some(wharf_upstream(&updir));
    let up_host = upstream.as_ref().unwrap().host();
    let up_port = upstream.as_ref().unwrap().port;
    let cfg = dir.path().join("docker-config");
    let cached = unique("outage/cached");
    let uncached = unique("outage/uncached");
    push_upstream(&cfg, &up_host, &cached, "cached");
    push_upstream(&cfg, &up_host, &uncached, "uncached");
    let flag = dir.path().join("limited");
    let ndir = dir.path().join("nginx");
    std::fs::create_dir_all(&ndir).unwrap();
    let (_nginx, nport) = nginx_front(&ndir, up_port, &flag, "0");
    let m = mirror(
        &dir.path().join("mirror"),
        &format!("http://127.0.0.1:{nport}"),
        "1s",
    );
    let cached_ref = format!("{}/up/{cached}:v1", m.host());
    let uncached_ref = format!("{}/up/{uncached}:v1", m.host());
    ok(
        skopeo_copy(&cached_ref, &dir.path().join("first")),
        "first pull",
    );

    // Rate limited, and the tag's ttl has passed: served stale, with a Warning.
    std::fs::write(&flag, "").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let resp = http_client()
        .get(format!("http://{}/v2/up/{cached}/manifests/v1", m.host()))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        header(&resp, "warning").starts_with("110 "),
        "no Warning: {:?}",
        resp.headers()
    );
    ok(
        skopeo_copy(&cached_ref, &dir.path().join("while-limited")),
        "a cached pull while rate limited",
    );
    let resp = http_client()
        .get(format!("http://{}/v2/up/{uncached}/manifests/v1", m.host()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 429, "an uncached tag while rate limited");
    assert!(resp.text().unwrap().contains("TOOMANYREQUESTS"));
    assert!(
        m.log().contains("serving a cached tag stale"),
        "no log line: {}",
        m.log()
    );

    // The upstream gone: cached still pulls (docker too); uncached fails, saying why.
    std::fs::remove_file(&flag).unwrap();
    upstream.take();
    std::thread::sleep(Duration::from_millis(1100));
    docker_cfg(&cfg, &["pull", &cached_ref]);
    docker_runs(&cached_ref, "cached");
    docker_rmi(&[&cached_ref]);
    let out = Command::new("docker")
        .args(["pull", &uncached_ref])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an uncached image pulled with the upstream down"
    );
    let resp = http_client()
        .get(format!("http://{}/v2/up/{uncached}/manifests/v1", m.host()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.text().unwrap();
    assert!(body.contains("not cached, and the upstream"), "{body}");
}

#[test]
fn a_corrupt_upstream_blob_fails_the_pull_and_is_not_cached() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dist");
    let dist = Distribution::start_on(&data);
    let repo = unique("corrupt/app");
    let pushed = docker_pushed(&dist.host(), &repo, "intact");
    // Flip the bytes of every layer the upstream stores (same length, other content).
    let manifest = docker_manifest(&format!("{}/v2/{repo}/manifests/v1", dist.url()));
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let hex = layer.trim_start_matches("sha256:");
    let blob = data.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&blob).unwrap();
    for b in bytes.iter_mut().take(64) {
        *b ^= 0xff;
    }
    std::fs::write(&blob, bytes).unwrap();

    let mdir = dir.path().join("mirror");
    std::fs::create_dir_all(&mdir).unwrap();
    let yaml = format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nproxy:\n  upstreams:\n    - prefix: up/\n      remoteurl: {}\n", dist.url());
    let m = Served::start(&mdir, &yaml, &[("WHARF_LOG", "info")]);
    let through = format!("{}/up/{repo}:v1", m.host());
    for attempt in ["first", "second"] {
        let out = skopeo_copy(&through, &dir.path().join(attempt));
        assert!(
            !out.status.success(),
            "{attempt} pull of a corrupt blob succeeded"
        );
    }
    let cached = mdir.join(format!(
        "data/docker/registry/v2/blobs/sha256/{}/{hex}",
        &hex[..2]
    ));
    assert!(!cached.exists(), "the corrupt blob was cached");
    assert!(m.log().contains("not cached"), "{}", m.log());
    docker_rmi(&[&pushed]);
}

/// `len` characters of pseudo-random hex: a layer that gzip only halves.
pub(crate) fn random_hex(len: usize) -> String {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ len as u64 ^ u64::from(std::process::id());
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"0123456789abcdef"[(x & 15) as usize])
        })
        .collect()
}

#[test]
fn a_client_that_disconnects_does_not_stop_the_fill() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let dist = Distribution::start_on(&dir.path().join("dist"));
    let big = random_hex(12 << 20);
    let local = build_busybox_image_with(
        &unique("wharf-proxy-drop:"),
        "dropped",
        &[("big", &big)],
        &["CMD [\"/bin/sh\"]"],
    );
    let repo = unique("drop/app");
    let remote = format!("{}/{repo}:v1", dist.host());
    run(Command::new("docker").args(["tag", &local, &remote]));
    run(Command::new("docker").args(["push", &remote]));
    docker_rmi(&[&local, &remote]);
    let ndir = dir.path().join("nginx");
    std::fs::create_dir_all(&ndir).unwrap();
    let (_nginx, nport) = nginx_front(&ndir, dist.port, &ndir.join("never"), "2m");
    let mdir = dir.path().join("mirror");
    std::fs::create_dir_all(&mdir).unwrap();
    let yaml = format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nproxy:\n  upstreams:\n    - prefix: up/\n      remoteurl: http://127.0.0.1:{nport}\n");
    let m = Served::start(&mdir, &yaml, &[("WHARF_LOG", "info")]);
    let manifest = docker_manifest(&format!("http://{}/v2/up/{repo}/manifests/v1", m.host()));
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let size = manifest["layers"][0]["size"].as_u64().unwrap();
    // Read the first bytes as they arrive, then hang up.
    let mut resp = http_client()
        .get(format!("http://{}/v2/up/{repo}/blobs/{layer}", m.host()))
        .send()
        .unwrap();
    let mut first = [0u8; 4096];
    std::io::Read::read_exact(&mut resp, &mut first).unwrap();
    drop(resp);
    assert!(
        !m.log().contains("cached a blob from upstream"),
        "the fill ended before the hang-up: make the layer bigger"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !m.log().contains(&format!("digest={layer}")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the fill stopped with its client:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        m.log().contains("cached a blob from upstream"),
        "{}",
        m.log()
    );
    // Now it is served from the store, whole.
    let bytes = http_client()
        .get(format!("http://{}/v2/up/{repo}/blobs/{layer}", m.host()))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(bytes.len() as u64, size);
}
