//! `wharf serve` on S3 (a real Garage), configured with registry:2's variables: docker,
//! skopeo and Distribution 2.8.2 on the same bucket, GC and scrub, a pull-through cache,
//! and the store down or throttling. The store itself is tested in `s3_store.rs`.

use std::process::Command;

use wharf_oci::Digest;

use crate::compat::{catalog, manifest_digest, skopeo_pull, tags};
use crate::harness::garage::{distribution_on, distribution_s3_gc, Garage};
use crate::harness::{
    build_busybox_image, docker_manifest, docker_pushed, docker_rmi, docker_runs, header,
    http_client, require, run, unique, Served,
};
use crate::pushes::{named_blobs, wharf_ok_with};

fn s3_env(g: &Garage, root: &str) -> Vec<(String, String)> {
    let mut env = g.storage_env(root);
    env.push(("REGISTRY_STORAGE_DELETE_ENABLED".into(), "true".into()));
    env
}

fn serve(dir: &std::path::Path, env: &[(String, String)]) -> Served {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Served::start(dir, "version: 0.1\nhttp:\n  addr: 127.0.0.1:@PORT@\n", &env)
}

/// A registry:2 user's switch: the same REGISTRY_STORAGE_S3_* variables, then docker. Pulls
/// redirect to presigned Garage URLs, as registry:2's do unless `storage.redirect.disable`.
#[test]
fn docker_pushes_and_pulls_through_wharf_on_s3() {
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<_> = s3_env(&g, "/")
        .into_iter()
        .filter(|(k, _)| k != "REGISTRY_STORAGE_REDIRECT_DISABLE")
        .collect();
    let w = serve(dir.path(), &env);
    let marker = unique("s3-marker");
    let image = docker_pushed(&w.host(), "s3/app", &marker);
    docker_runs(&image, &marker);
    docker_rmi(&[&image]);
    assert!(g.object_count() > 0, "the bucket holds the image");
    assert!(w.log().contains("http.secret is not set"), "{}", w.log());
    assert!(
        !dir.path().join("docker/registry/v2/blobs").exists(),
        "nothing went to the local root"
    );
    let manifest = docker_manifest(&format!("http://{}/v2/s3/app/manifests/v1", w.host()));
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let no_follow = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow
        .get(format!("http://{}/v2/s3/app/blobs/{layer}", w.host()))
        .send()
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
    let location = header(&r, "location");
    assert!(location.starts_with(&g.endpoint), "{location}");
    let bytes = http_client()
        .get(&location)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(
        Digest::sha256_of(&bytes).to_string(),
        layer,
        "presigned URL serves the blob"
    );
}

/// Distribution 2.8.2 on the same bucket serves what wharf pushed, and wharf serves what
/// Distribution pushed: catalog, tags, and digests skopeo verifies.
#[test]
fn distribution_and_wharf_serve_each_others_bucket() {
    require("skopeo", "skopeo");
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let w = serve(dir.path(), &s3_env(&g, "/shared"));
    let d = distribution_on(&g, "/shared");
    let wurl = format!("http://{}", w.host());

    let marker = unique("by-wharf");
    let image = docker_pushed(&w.host(), "from/wharf", &marker);
    docker_rmi(&[&image]);
    let local = build_busybox_image(&unique("by-distribution:"), &unique("by-distribution"));
    let remote = format!("{}/from/distribution:v1", d.host());
    run(Command::new("docker").args(["tag", &local, &remote]));
    run(Command::new("docker").args(["push", &remote]));
    docker_rmi(&[&local, &remote]);

    for base in [&wurl, &d.url()] {
        assert_eq!(
            catalog(base),
            serde_json::json!(["from/distribution", "from/wharf"]),
            "{base}"
        );
        for repo in ["from/wharf", "from/distribution"] {
            assert_eq!(tags(base, repo), serde_json::json!(["v1"]), "{base} {repo}");
        }
    }
    for repo in ["from/wharf", "from/distribution"] {
        let (wd, dd) = (
            manifest_digest(&wurl, repo, "v1"),
            manifest_digest(&d.url(), repo, "v1"),
        );
        assert_eq!(wd, dd, "{repo}");
        for host in [w.host(), d.host()] {
            let into = tempfile::tempdir().unwrap();
            let got = skopeo_pull(&format!("docker://{host}/{repo}:v1"), into.path(), false);
            assert_eq!(got, wd, "{host} {repo}");
        }
    }
}

/// The object store down: requests that need it get a 503 with the spec's error body
/// (after the SDK's retries), not a 500; once it is back, pushes and pulls work again.
#[test]
fn s3_down_is_a_503_and_service_resumes_when_it_is_back() {
    let mut g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let w = serve(dir.path(), &s3_env(&g, "/"));
    let base = format!("http://{}", w.host());
    let c = http_client();
    let blob = b"before the outage".to_vec();
    let d = Digest::sha256_of(&blob);
    let post = |data: Vec<u8>, d: &Digest| {
        c.post(format!("{base}/v2/faults/blobs/uploads/?digest={d}"))
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .unwrap()
    };
    assert_eq!(post(blob.clone(), &d).status(), 201);

    g.kill_node(0);
    let r = c.get(format!("{base}/v2/faults/blobs/{d}")).send().unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    let other = b"during the outage".to_vec();
    let od = Digest::sha256_of(&other);
    assert_eq!(post(other.clone(), &od).status(), 503);

    g.restart_node(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = post(other.clone(), &od);
        if r.status() == 201 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery: {}",
            r.status()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    for (data, d) in [(blob, d), (other, od)] {
        let got = c.get(format!("{base}/v2/faults/blobs/{d}")).send().unwrap();
        assert_eq!(got.bytes().unwrap().to_vec(), data);
    }
}

/// Garbage collection and scrub on a bucket: wharf and Distribution's own collector agree
/// on what is garbage; what stays still pulls with verified digests; scrub is clean.
#[test]
fn gc_and_scrub_on_s3_agree_with_distribution() {
    require("skopeo", "skopeo");
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let env = s3_env(&g, "/gc");
    let mut w = serve(dir.path(), &env);
    let keep = docker_pushed(&w.host(), "gc/keep", &unique("keep"));
    let drop = docker_pushed(&w.host(), "gc/drop", &unique("drop"));
    docker_rmi(&[&keep, &drop]);
    let base = format!("http://{}", w.host());
    let dropped = manifest_digest(&base, "gc/drop", "v1");
    let r = http_client()
        .delete(format!("{base}/v2/gc/drop/manifests/{dropped}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    // S3 without a database is one process: the collector runs with the server stopped.
    w.kill();
    // S3 dates objects in whole seconds, and a blob retained in the second the collection
    // starts counts as retained after it (the safe side): step past that second.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let config = dir.path().join("config.yml");
    let wharf = |args: &[&str]| wharf_ok_with(args, &config, &env);
    let theirs = named_blobs(&distribution_s3_gc(&g, "/gc"), "blob eligible for deletion");
    let ours = named_blobs(
        &wharf(&["garbage-collect", "--dry-run", "--grace", "0s"]),
        "blob eligible for deletion",
    );
    assert_eq!(
        ours, theirs,
        "wharf and Distribution disagree on what is garbage"
    );
    assert!(ours.contains(&dropped), "{ours:?}");
    let deleted = named_blobs(
        &wharf(&["garbage-collect", "--grace", "0s"]),
        "blob deleted",
    );
    assert_eq!(deleted, ours);
    let scrub = wharf(&["scrub"]);
    assert!(
        scrub.contains("clean") || !scrub.contains("damage"),
        "{scrub}"
    );

    w.restart(dir.path());
    let into = tempfile::tempdir().unwrap();
    let got = skopeo_pull(
        &format!("docker://{}/gc/keep:v1", w.host()),
        into.path(),
        false,
    );
    assert_eq!(got, manifest_digest(&base, "gc/keep", "v1"));
    let gone = http_client()
        .head(format!("{base}/v2/gc/drop/blobs/{dropped}"))
        .send()
        .unwrap();
    assert_eq!(gone.status(), 404);
}

/// A pull-through cache on S3: concurrent cold pulls all get the upstream's image, though
/// S3 cannot serve an upload's parts before it completes (followers then wait for the blob).
#[test]
fn a_pull_through_cache_on_s3_serves_concurrent_cold_pulls() {
    use crate::proxy::{push_upstream, skopeo_copy, wharf_upstream, PASSWORD, USER};
    require("skopeo", "skopeo");
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let up = wharf_upstream(&dir.path().join("up"));
    push_upstream(
        &dir.path().join("docker-config"),
        &up.host(),
        "lib/app",
        "via-s3",
    );
    let yaml = format!(
        "version: 0.1\nhttp:\n  addr: 127.0.0.1:@PORT@\nproxy:\n  upstreams:\n    - prefix: up/\n      remoteurl: http://{}\n      username: {USER}\n      password: {PASSWORD}\n",
        up.host()
    );
    let mdir = dir.path().join("mirror");
    std::fs::create_dir_all(&mdir).unwrap();
    let env = s3_env(&g, "/mirror");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let m = Served::start(&mdir, &yaml, &env);
    let src = format!("{}/up/lib/app:v1", m.host());
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let src = src.clone();
            std::thread::spawn(move || {
                let into = tempfile::tempdir().unwrap();
                let out = skopeo_copy(&src, into.path());
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Digest::sha256_of(&std::fs::read(into.path().join("manifest.json")).unwrap())
            })
        })
        .collect();
    // What the upstream serves (it wants credentials, which skopeo takes as given).
    let into = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", into.path().display());
    let creds = format!("{USER}:{PASSWORD}");
    let upstream = format!("docker://{}/lib/app:v1", up.host());
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &upstream,
        &dest,
    ]));
    let expected =
        Digest::sha256_of(&std::fs::read(into.path().join("manifest.json")).unwrap()).to_string();
    for p in pulls {
        assert_eq!(p.join().unwrap().to_string(), expected);
    }
}

/// A bucket that cannot be reached at start stops `wharf serve` with a message naming it.
#[test]
fn an_unreachable_bucket_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", crate::harness::free_port());
    std::fs::write(
        dir.path().join("config.yml"),
        format!(
            "version: 0.1\nhttp:\n  addr: 127.0.0.1:{}\nstorage:\n  s3:\n    accesskey: GKx\n    secretkey: x\n    region: garage\n    regionendpoint: {endpoint}\n    bucket: nowhere\n",
            crate::harness::free_port()
        ),
    )
    .unwrap();
    let out = Command::new(crate::harness::WHARF)
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3://nowhere/") && err.contains(&endpoint),
        "{err}"
    );
}

/// S3 throttling (503 SlowDown, from nginx in front of Garage): a short bout is retried
/// away with backoff; a long one ends in a 503 UNAVAILABLE naming the store, never a 500.
#[test]
fn s3_throttling_is_retried_then_answered_with_a_clear_503() {
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("slow-down");
    let backend = g.endpoint.trim_start_matches("http://").to_owned();
    let (_nginx, port) = crate::harness::nginx::nginx(
        dir.path(),
        &format!(
            r#"    access_log @DIR@/s3-access.log;
    server {{
        listen 127.0.0.1:@PORT@;
        client_max_body_size 0;
        location / {{
            default_type application/xml;
            if (-f {flag}) {{ return 503 '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>'; }}
            proxy_pass http://{backend};
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
        }}
    }}"#,
            flag = flag.display(),
        ),
    );
    let env: Vec<(String, String)> = s3_env(&g, "/")
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "REGISTRY_STORAGE_S3_REGIONENDPOINT" => (k, format!("http://127.0.0.1:{port}")),
            _ => (k, v),
        })
        .collect();
    let w = serve(dir.path(), &env);
    let base = format!("http://{}", w.host());
    let post = |data: &'static [u8]| {
        http_client()
            .post(format!(
                "{base}/v2/slow/blobs/uploads/?digest={}",
                Digest::sha256_of(data)
            ))
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .unwrap()
    };

    std::fs::write(&flag, "").unwrap();
    let remover = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            std::fs::remove_file(flag).unwrap();
        })
    };
    assert_eq!(
        post(b"a short bout").status(),
        201,
        "retried past the throttling"
    );
    remover.join().unwrap();
    let log = std::fs::read_to_string(dir.path().join("s3-access.log")).unwrap();
    assert!(log.contains("\" 503 "), "the store did throttle: {log}");

    std::fs::write(&flag, "").unwrap();
    let r = post(b"a long bout");
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("SlowDown"), "{message}");
}

/// `health.storagedriver` on S3 probes the bucket: `/debug/health` answers 503 with
/// registry:2's `storagedriver_s3` check while Garage is down, and `{}` once it is back.
#[test]
fn health_follows_the_bucket() {
    let mut g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let debug = format!("127.0.0.1:{}", crate::harness::free_port());
    let mut env = s3_env(&g, "/");
    for (k, v) in [
        ("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str()),
        ("REGISTRY_HEALTH_STORAGEDRIVER_ENABLED", "true"),
        ("REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL", "200ms"),
        ("REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD", "1"),
    ] {
        env.push((k.into(), v.into()));
    }
    let _w = serve(dir.path(), &env);
    let health = |want: u16| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let r = http_client()
                .get(format!("http://{debug}/debug/health"))
                .send()
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().unwrap();
            if status == want {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "health stayed {status} {body}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    assert_eq!(health(200), serde_json::json!({}));
    g.kill_node(0);
    let body = health(503);
    assert!(body["storagedriver_s3"].is_string(), "{body}");
    g.restart_node(0);
    assert_eq!(health(200), serde_json::json!({}));
}
