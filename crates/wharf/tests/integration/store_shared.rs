//! Several processes on one store: two `wharf serve` on one root, and Distribution 2.8.2
//! beside them, continuing each other's uploads and seeing each other's tags and referrers.

use reqwest::blocking::Client;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::json;
use wharf_oci::Digest;

use crate::harness::{add_query, header, http_client as client, Distribution, Wharf};

const SECRET: &str = "shared-upload-secret";

/// A Location made absolute against `base` (the server that is to receive the next step).
fn on(base: &str, location: &str) -> String {
    let path = match location.find("/v2/") {
        Some(i) => &location[i..],
        None => location,
    };
    format!("{base}{path}")
}

fn patch(c: &Client, url: &str, start: usize, chunk: &[u8]) -> String {
    let r = c
        .patch(url)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(
            CONTENT_RANGE,
            format!("{start}-{}", start + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "PATCH {url}: {:?}",
        r.text()
    );
    header(&r, "location")
}

fn get_ok(c: &Client, url: &str) -> Vec<u8> {
    let r = c.get(url).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {url}");
    r.bytes().unwrap().to_vec()
}

/// One upload, its chunks sent to each server in turn (`order` names them by index), and
/// finished on `finisher`; then every server serves the blob.
fn upload_across(servers: &[String], order: &[usize], finisher: usize, data: &[u8]) -> Digest {
    let c = client();
    let digest = Digest::sha256_of(data);
    let repo = "shared/chunks";
    let r = c
        .post(format!("{}/v2/{repo}/blobs/uploads/", servers[order[0]]))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut loc = header(&r, "location");
    let chunk = data.len().div_ceil(order.len());
    for (i, &server) in order.iter().enumerate() {
        let start = i * chunk;
        let end = (start + chunk).min(data.len());
        loc = patch(&c, &on(&servers[server], &loc), start, &data[start..end]);
    }
    let r = c
        .put(add_query(&on(&servers[finisher], &loc), "digest", &digest))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "finish: {:?}", r.text());
    for s in servers {
        assert_eq!(get_ok(&c, &format!("{s}/v2/{repo}/blobs/{digest}")), data);
    }
    digest
}

fn put_manifest(c: &Client, base: &str, repo: &str, reference: &str, body: &[u8]) -> Digest {
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header(CONTENT_TYPE, "application/vnd.oci.image.manifest.v1+json")
        .body(body.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text());
    header(&r, "docker-content-digest").parse().unwrap()
}

fn manifest_of(config: &Digest, size: usize, subject: Option<&Digest>) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": size},
        "layers": [],
    });
    if let Some(s) = subject {
        m["artifactType"] = json!("application/x-test-signature");
        m["subject"] = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": s, "size": 1});
    }
    serde_json::to_vec(&m).unwrap()
}

#[test]
fn two_wharfs_and_a_distribution_continue_each_others_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("REGISTRY_HTTP_SECRET", SECRET)];
    let a = Wharf::start_on_with_env(dir.path(), &env);
    let b = Wharf::start_on_with_env(dir.path(), &env);
    let d = Distribution::start_with(dir.path(), &format!("  secret: {SECRET}\n"));
    let servers = [a.url(), b.url(), d.url()];
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();

    // Started on wharf A, PATCHes alternating between the two wharfs, finished on B.
    upload_across(&servers, &[0, 1, 0, 1], 1, &data[..1_000_000]);
    // Started on wharf, continued by Distribution (it reads wharf's hash state and
    // `_state`), then by the other wharf, finished by Distribution.
    upload_across(&servers, &[0, 2, 1], 2, &data[..2_000_000]);
    // Started on Distribution, continued by both wharfs (they read its hash state),
    // finished by wharf.
    upload_across(&servers, &[2, 0, 1, 2], 0, &data);
}

#[test]
fn tags_and_referrers_written_by_one_process_are_seen_by_the_others_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = Wharf::start_on(dir.path());
    let b = Wharf::start_on(dir.path());
    let d = Distribution::start_on(dir.path());
    let c = client();
    let repo = "shared/tags";
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = Digest::sha256_of(config);
    let r = c
        .post(format!(
            "{}/v2/{repo}/blobs/uploads/?digest={config_digest}",
            a.url()
        ))
        .body(config.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // The tag moves three times, on three servers; each read, anywhere, sees the last move.
    let resolve = |base: &str| -> String {
        let r = c
            .head(format!("{base}/v2/{repo}/manifests/latest"))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "HEAD on {base}");
        header(&r, "docker-content-digest")
    };
    let mut subject = None;
    for (round, writer) in [&a.url(), &b.url(), &d.url(), &a.url()]
        .into_iter()
        .enumerate()
    {
        let mut body = manifest_of(&config_digest, config.len(), None);
        body.extend(std::iter::repeat_n(b' ', round)); // a different digest each round
        let digest = put_manifest(&c, writer, repo, "latest", &body);
        for reader in [a.url(), b.url(), d.url()] {
            assert_eq!(
                resolve(&reader),
                digest.to_string(),
                "round {round}: {reader}"
            );
        }
        subject = Some(digest);
    }
    let subject = subject.unwrap();

    // B answers referrers (building its index); A adds a referrer; B lists it at once.
    let referrers = |base: &str| -> usize {
        let r = c
            .get(format!("{base}/v2/{repo}/referrers/{subject}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<serde_json::Value>().unwrap()["manifests"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(referrers(&b.url()), 0);
    let sig = manifest_of(&config_digest, config.len(), Some(&subject));
    let sig_digest = Digest::sha256_of(&sig);
    put_manifest(&c, &a.url(), repo, &sig_digest.to_string(), &sig);
    assert_eq!(
        referrers(&b.url()),
        1,
        "B still serves its old referrers index"
    );
    // And a deletion on A is seen by B too.
    let r = c
        .delete(format!("{}/v2/{repo}/manifests/{sig_digest}", a.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(referrers(&b.url()), 0);
}

/// docker pushes and pulls through nginx, which sends each request to the next of two
/// wharfs and a Distribution on one root (no sticky sessions): an upload begun by one is
/// continued and finished by the others.
#[test]
fn docker_through_round_robin_over_two_wharfs_and_a_distribution() {
    use crate::harness::{
        build_busybox_image, docker_rmi, docker_runs, require, require_docker, run, unique,
    };
    require("nginx", "nginx");
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let env = [("REGISTRY_HTTP_SECRET", SECRET)];
    let a = Wharf::start_on_with_env(&root, &env);
    let b = Wharf::start_on_with_env(&root, &env);
    let d = Distribution::start_with(&root, &format!("  secret: {SECRET}\n"));
    let (_nginx, port) = crate::harness::nginx::nginx(
        dir.path(),
        &format!(
            r#"    access_log {dir}/access.log;
    upstream registries {{ server 127.0.0.1:{a}; server 127.0.0.1:{b}; server 127.0.0.1:{d}; }}
    log_format upstream '$request_method $upstream_addr $status';
    server {{
        listen 127.0.0.1:@PORT@;
        client_max_body_size 0;
        proxy_request_buffering off;
        location /v2/ {{
            proxy_pass http://registries;
            proxy_set_header Host $http_host;
            access_log {dir}/upstreams.log upstream;
        }}
    }}"#,
            dir = dir.path().display(),
            a = a.port,
            b = b.port,
            d = d.port,
        ),
    );

    let host = format!("127.0.0.1:{port}");
    let local = build_busybox_image(&unique("wharf-rr-src:"), "round robin");
    let remote = format!("{host}/shared/rr:v1");
    run(std::process::Command::new("docker").args(["tag", &local, &remote]));
    run(std::process::Command::new("docker").args(["push", &remote]));
    docker_rmi(&[&remote, &local]);
    run(std::process::Command::new("docker").args(["pull", &remote]));
    docker_runs(&remote, "round robin");
    docker_rmi(&[&remote]);

    // The upload's requests really went to different servers.
    let log = std::fs::read_to_string(dir.path().join("upstreams.log")).unwrap();
    let upload_servers: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.starts_with("PATCH") || l.starts_with("PUT") || l.starts_with("POST"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(
        upload_servers.len() >= 2,
        "every upload request went to one server: {log}"
    );
}
