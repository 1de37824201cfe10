//! Governance (issue 15) proven with docker and skopeo: immutable tags refuse overwrites
//! and deletes, quotas refuse a push that does not fit (and keep nothing of it) while the
//! next one that fits succeeds, and retention (dry run, then real) followed by
//! `wharf garbage-collect` frees the bytes.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::*;

const STORE: &str = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:@PORT@\n";

fn output(cmd: &mut Command) -> (bool, String) {
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `docker push`: (succeeded, everything it printed).
fn docker_push(local: &str, remote: &str) -> (bool, String) {
    run(Command::new("docker").args(["tag", local, remote]));
    let pushed = output(Command::new("docker").args(["push", remote]));
    docker_rmi(&[remote]);
    pushed
}

fn skopeo_copy(local: &str, remote: &str) -> (bool, String) {
    output(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("docker-daemon:{local}"),
        &format!("docker://{remote}"),
    ]))
}

fn tags(host: &str, repo: &str) -> Vec<String> {
    let body: Value = http_client()
        .get(format!("http://{host}/v2/{repo}/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut tags: Vec<String> = body["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

/// Bytes under `dir`, as `du -sb` counts them.
fn du(dir: &Path) -> u64 {
    let out = run(Command::new("du").arg("-sb").arg(dir));
    out.split_whitespace().next().unwrap().parse().unwrap()
}

/// Text that gzip cannot shrink much: a layer of about `n` bytes once pushed.
fn noise(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

#[test]
fn immutable_tags_refuse_docker_overwrites_and_deletes() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        format!("{STORE}immutable:\n  - repositories: [\"prod/*\"]\n    tags: \"^v[0-9]+\"\n");
    let w = Served::start(dir.path(), &yaml, &[]);
    let one = build_busybox_image(&unique("wharf-imm-one:"), "one");
    let two = build_busybox_image(&unique("wharf-imm-two:"), "two");
    let v1 = format!("{}/prod/app:v1.2", w.host());

    let (ok, out) = docker_push(&one, &v1);
    assert!(ok, "the first push of an immutable tag is allowed: {out}");
    let (ok, out) = docker_push(&one, &v1);
    assert!(
        ok,
        "pushing the same image again changes nothing, so it is allowed: {out}"
    );
    let (ok, out) = docker_push(&two, &v1);
    assert!(!ok, "docker overwrote an immutable tag: {out}");
    assert!(
        out.contains("tag v1.2 of prod/app is immutable (immutable rule 1: prod/*, ^v[0-9]+)"),
        "docker shows the DENIED message naming the rule: {out}"
    );
    // A tag outside the pattern moves freely.
    let latest = format!("{}/prod/app:latest", w.host());
    assert!(docker_push(&one, &latest).0);
    assert!(docker_push(&two, &latest).0, "latest is not immutable");

    // Deleting the tag, or its manifest by digest (skopeo delete resolves the tag), is refused.
    let client = http_client();
    let r = client
        .delete(format!("http://{}/v2/prod/app/manifests/v1.2", w.host()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    let (ok, out) = output(Command::new("skopeo").args([
        "delete",
        "--tls-verify=false",
        &format!("docker://{v1}"),
    ]));
    assert!(!ok && out.contains("is immutable"), "skopeo delete: {out}");
    assert_eq!(tags(&w.host(), "prod/app"), ["latest", "v1.2"]);
    docker_rmi(&[&one, &two]);
}

#[test]
fn a_quota_refuses_a_push_that_does_not_fit_and_takes_the_next_that_does() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("{STORE}quotas:\n  - repositories: [\"team/*\"]\n    bytes: 3MiB\n");
    let w = Served::start(dir.path(), &yaml, &[]);
    let small = build_busybox_image(&unique("wharf-quota-small:"), "small");
    let big = build_busybox_image_with(
        &unique("wharf-quota-big:"),
        "big",
        &[("noise", &noise(4 << 20))],
        &["CMD [\"/bin/sh\"]"],
    );
    let other = build_busybox_image(&unique("wharf-quota-other:"), "other");
    let blobs = dir.path().join("data/docker/registry/v2/blobs");

    let (ok, out) = docker_push(&small, &format!("{}/team/a:v1", w.host()));
    assert!(ok, "{out}");
    let before = du(&blobs);
    // The big layer would take the namespace over 3 MiB: docker shows the DENIED message.
    let (ok, out) = docker_push(&big, &format!("{}/team/b:v1", w.host()));
    assert!(!ok, "a push over quota succeeded: {out}");
    assert!(
        out.contains("quota 3.0 MiB for team/*, used"),
        "docker shows the quota message: {out}"
    );
    let (ok, out) = skopeo_copy(&big, &format!("{}/team/c:v1", w.host()));
    assert!(!ok && out.contains("quota 3.0 MiB"), "skopeo: {out}");
    // Nothing of the refused layer stays (only a config blob of a few hundred bytes may).
    let grown = du(&blobs) - before;
    assert!(
        grown < 64 * 1024,
        "refused content stayed: blobs grew by {grown} bytes"
    );
    // Another repository outside the glob is not limited.
    assert!(docker_push(&big, &format!("{}/free/b:v1", w.host())).0);
    // A push that fits still succeeds, through skopeo and docker; the shared layer of
    // team/a pushed again into team/d costs nothing.
    let (ok, out) = skopeo_copy(&other, &format!("{}/team/c:v1", w.host()));
    assert!(ok, "a push under quota was refused: {out}");
    let (ok, out) = docker_push(&small, &format!("{}/team/d:v1", w.host()));
    assert!(ok, "a layer already in the quota's set counts once: {out}");
    assert_eq!(tags(&w.host(), "team/c"), ["v1"]);
    assert!(tags(&w.host(), "team/b").is_empty());
    docker_rmi(&[&small, &big, &other]);
}

#[test]
fn retention_dry_run_then_real_run_then_gc_frees_the_bytes() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{STORE}retention:\n  rules:\n    - repositories: [\"team/*\"]\n      keeplast: 2\n      keepmatching: \"^stable$\"\n      untaggedolderthan: 0s\nimmutable:\n  - repositories: [\"team/*\"]\n    tags: \"^release-\"\n"
    );
    let w = Served::start(dir.path(), &yaml, &[]);
    let config = dir.path().join("config.yml");
    let repo = format!("{}/team/app", w.host());
    // Pushed in this order: t4 and t5 are the last two.
    let order = ["release-1", "stable", "t1", "t2", "t3", "t4", "t5"];
    let mut locals = Vec::new();
    for tag in order {
        let local = build_busybox_image(&unique("wharf-ret:"), tag);
        let (ok, out) = docker_push(&local, &format!("{repo}:{tag}"));
        assert!(ok, "{out}");
        locals.push(local);
    }
    // A repository no rule matches is left alone.
    assert!(docker_push(&locals[2], &format!("{}/other/app:old", w.host())).0);
    let all: Vec<String> = {
        let mut v: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };

    let dry = run(Command::new(WHARF)
        .args(["retention", "--dry-run"])
        .arg(&config));
    for t in ["t1", "t2", "t3"] {
        assert!(
            dry.contains(&format!("team/app: would delete tag {t} ")),
            "{dry}"
        );
    }
    assert!(
        dry.contains("would delete 3 tags and 3 untagged manifests"),
        "{dry}"
    );
    for kept in ["t4", "t5", "stable", "release-1"] {
        assert!(!dry.contains(&format!("tag {kept} ")), "{dry}");
    }
    assert_eq!(
        tags(&w.host(), "team/app"),
        all,
        "a dry run deletes nothing"
    );

    let blobs = dir.path().join("data/docker/registry/v2/blobs");
    let before = du(&blobs);
    let real = run(Command::new(WHARF).arg("retention").arg(&config));
    assert!(real.contains("team/app: deleted tag t1 "), "{real}");
    assert!(
        real.contains("deleted 3 tags and 3 untagged manifests"),
        "{real}"
    );
    assert_eq!(
        tags(&w.host(), "team/app"),
        ["release-1", "stable", "t4", "t5"]
    );
    assert_eq!(tags(&w.host(), "other/app"), ["old"]);
    let gc = run(Command::new(WHARF)
        .args(["garbage-collect", "--grace", "0s"])
        .arg(&config));
    let after = du(&blobs);
    // t2's and t3's layers (about 1 MB each) are gone; t1's is still used by other/app.
    assert!(
        after + 1_000_000 < before,
        "blobs went from {before} to {after} bytes only:\n{gc}"
    );
    // What is left still pulls.
    run(Command::new("docker").args(["pull", &format!("{repo}:t4")]));
    docker_rmi(&[&format!("{repo}:t4")]);
    docker_rmi(&locals.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn a_quota_is_checked_at_the_post_when_the_size_is_known_else_at_commit() {
    use reqwest::blocking::Body;
    use reqwest::StatusCode;
    use wharf_oci::Digest;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("{STORE}quotas:\n  - repositories: [\"q/*\"]\n    bytes: 1000\n");
    let w = Served::start(dir.path(), &yaml, &[]);
    let base = format!("http://{}", w.host());
    let c = http_client();
    let blob_path = |d: &Digest| {
        dir.path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex())
    };
    let denied = |r: reqwest::blocking::Response, what: &str| {
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["errors"][0]["code"], "DENIED", "{what}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with("quota 1000 B for q/*, used "),
            "{message}"
        );
    };
    let big = vec![7u8; 2000];
    let d_big = Digest::sha256_of(&big);
    // Monolithic with Content-Length: refused before the body is read.
    let r = c
        .post(format!("{base}/v2/q/x/blobs/uploads/?digest={d_big}"))
        .body(big.clone())
        .send()
        .unwrap();
    denied(r, "monolithic POST with a length");
    // Monolithic of unknown length (chunked): measured, then refused before its commit.
    let r = c
        .post(format!("{base}/v2/q/x/blobs/uploads/?digest={d_big}"))
        .body(Body::new(std::io::Cursor::new(big.clone())))
        .send()
        .unwrap();
    denied(r, "chunked monolithic POST");
    assert!(!blob_path(&d_big).exists(), "a refused blob was stored");
    let uploads = dir
        .path()
        .join("data/docker/registry/v2/repositories/q/x/_uploads");
    let left = std::fs::read_dir(&uploads).map_or(0, |d| d.count());
    assert_eq!(left, 0, "a refused upload was left behind");

    // 500 bytes fit, chunked.
    let small = vec![1u8; 500];
    let d_small = Digest::sha256_of(&small);
    let r = c
        .post(format!("{base}/v2/q/x/blobs/uploads/?digest={d_small}"))
        .body(Body::new(std::io::Cursor::new(small.clone())))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // A session of 600 more does not: refused at the PUT that commits it.
    let more = vec![2u8; 600];
    let d_more = Digest::sha256_of(&more);
    let r = c
        .post(format!("{base}/v2/q/y/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location");
    let r = c
        .put(add_query(&format!("{base}{location}"), "digest", &d_more))
        .body(more)
        .send()
        .unwrap();
    denied(r, "PUT finishing a session");
    assert!(!blob_path(&d_more).exists());
    // Mounting the big blob from a repository no quota covers is refused too.
    let r = c
        .post(format!("{base}/v2/free/x/blobs/uploads/?digest={d_big}"))
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .post(format!(
            "{base}/v2/q/z/blobs/uploads/?mount={d_big}&from=free/x"
        ))
        .send()
        .unwrap();
    denied(r, "cross-repository mount");
    let r = c
        .head(format!("{base}/v2/q/z/blobs/{d_big}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The 500 bytes again, into another repository of the glob, count once.
    let r = c
        .post(format!("{base}/v2/q/y/blobs/uploads/?digest={d_small}"))
        .body(small)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[test]
fn scheduled_retention_runs_inside_wharf_serve() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{STORE}retention:\n  schedule: 1s\n  rules:\n    - repositories: [\"sched/*\"]\n      keeplast: 1\n"
    );
    let w = Served::start(dir.path(), &yaml, &[]);
    let local = build_busybox_image(&unique("wharf-sched:"), "sched");
    for tag in ["a", "b", "c"] {
        let (ok, out) = docker_push(&local, &format!("{}/sched/app:{tag}", w.host()));
        assert!(ok, "{out}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while tags(&w.host(), "sched/app") != ["c"] {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run within 20 s: tags {:?}\n{}",
            tags(&w.host(), "sched/app"),
            w.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Its deletions went through the service layer: subscribers saw them as events.
    let events = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{}/v2/_events?since=0", w.host()))
        .send()
        .unwrap();
    let mut deleted = std::collections::BTreeSet::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(events)) {
        let line = line.expect("the event stream holds both deletions");
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let v: Value = serde_json::from_str(data).unwrap();
        for e in v["events"].as_array().unwrap() {
            if e["action"] == "delete" && e["target"]["repository"] == "sched/app" {
                deleted.insert(e["target"]["tag"].as_str().unwrap().to_owned());
            }
        }
        if deleted.len() == 2 {
            break;
        }
    }
    assert_eq!(deleted.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    docker_rmi(&[&local]);
}
