//! Garbage collection from the review queues (`database:`): a real PostgreSQL and wharf
//! serve, driven through the registry API; `wharf garbage-collect` drains what is due.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;

use crate::database::{serve, CONFIG};
use crate::harness::postgres::Postgres;
use crate::harness::{http_client, Served};
use crate::pushes::*;

/// The review delay the triggers read, as `wharf serve` sets it from gc.reviewafter.
fn review_after(pg: &Postgres, delay: &str) {
    pg.psql(&format!(
        "INSERT INTO gc_review_after_defaults VALUES ('default', '{delay}')
         ON CONFLICT (event) DO UPDATE SET value = EXCLUDED.value"
    ));
}

pub(crate) fn wharf_json(dir: &Path, pg: &Postgres, args: &[&str]) -> Value {
    let config = dir.join("config.yml").display().to_string();
    let out = Command::new(crate::harness::WHARF)
        .args(args)
        .args(["--json", &config])
        .envs(pg.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn deleted(report: &Value) -> Vec<String> {
    let mut d: Vec<String> = report["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_owned())
        .collect();
    d.sort();
    d
}

fn digests(p: &Pushed) -> Vec<String> {
    let mut d: Vec<String> = p.blobs.iter().map(|(d, _)| d.to_string()).collect();
    d.sort();
    d
}

fn blob_file(dir: &Path, d: &str) -> std::path::PathBuf {
    let (alg, hex) = d.split_once(':').unwrap();
    dir.join(format!(
        "root/docker/registry/v2/blobs/{alg}/{}/{hex}/data",
        &hex[..2]
    ))
}

fn delete_manifest(c: &Client, base: &str, repo: &str, reference: &str) {
    let r = c
        .delete(format!("{base}/v2/{repo}/manifests/{reference}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{repo}:{reference}");
}

fn queued(pg: &Postgres) -> usize {
    pg.psql("SELECT count(*) FROM gc_blob_review_queue")
        .parse()
        .unwrap()
}

/// A deleted image's blobs are queued by the delete and deleted by the drain; blobs
/// another repository's manifest still references are dropped from the queue and kept;
/// a dry run deletes nothing; scrub is clean afterwards.
#[test]
fn the_drain_deletes_what_no_manifest_references_and_keeps_what_one_does() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &pg, "");
    let (c, base) = (http_client(), format!("http://{}", served.host()));
    let shared = push_image(&c, &base, "q/a", "v1", 11, 2).unwrap();
    let twin = push_image(&c, &base, "q/c", "v1", 11, 2).unwrap();
    assert_eq!(digests(&shared), digests(&twin), "the same image twice");
    let alone = push_image(&c, &base, "q/b", "v1", 12, 3).unwrap();
    review_after(&pg, "0");

    delete_manifest(&c, &base, "q/a", &shared.manifest.to_string());
    delete_manifest(&c, &base, "q/b", &alone.manifest.to_string());
    assert_eq!(queued(&pg), digests(&shared).len() + digests(&alone).len());

    let dry = wharf_json(dir.path(), &pg, &["garbage-collect", "--dry-run"]);
    assert_eq!(deleted(&dry), digests(&alone), "{dry}");
    assert!(blob_file(dir.path(), &digests(&alone)[0]).exists());
    assert_eq!(queued(&pg), digests(&shared).len() + digests(&alone).len());

    let report = wharf_json(dir.path(), &pg, &["garbage-collect"]);
    assert_eq!(deleted(&report), digests(&alone), "{report}");
    assert_eq!(
        report["blobs_rescued"].as_u64().unwrap() as usize,
        digests(&shared).len(),
        "q/c's manifest keeps the shared image: {report}"
    );
    let freed: u64 = alone.blobs.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(report["bytes_freed"].as_u64().unwrap(), freed);
    for d in digests(&alone) {
        assert!(!blob_file(dir.path(), &d).exists(), "{d} is still stored");
    }
    assert_eq!(queued(&pg), 0, "every reviewed row left the queue");
    let links = format!(
        "SELECT count(*) FROM blob_links WHERE digest IN ('{}')",
        digests(&alone).join("','")
    );
    assert_eq!(pg.psql(&links), "0", "the links went with the blobs");
    verify_pulls(&c, &base, &twin);
    wharf_json(dir.path(), &pg, &["scrub"]); // exits 1 on a problem
}

/// --delete-untagged: a tag moved away queues its old manifest; its review deletes the
/// manifest, which queues its blobs, which the same drain then deletes. Without -m the
/// manifest stays.
#[test]
fn an_untagged_manifest_goes_with_delete_untagged_and_its_blobs_follow() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &pg, "");
    let (c, base) = (http_client(), format!("http://{}", served.host()));
    let old = push_image(&c, &base, "u/app", "latest", 21, 2).unwrap();
    review_after(&pg, "0");
    let new = push_image(&c, &base, "u/app", "latest", 22, 2).unwrap();

    let report = wharf_json(dir.path(), &pg, &["garbage-collect"]);
    assert!(deleted(&report).is_empty(), "{report}");
    assert_eq!(report["manifests"].as_array().unwrap().len(), 0);

    let report = wharf_json(dir.path(), &pg, &["garbage-collect", "-m"]);
    assert_eq!(
        report["manifests"][0]["digest"].as_str(),
        Some(old.manifest.to_string().as_str()),
        "{report}"
    );
    assert_eq!(deleted(&report), digests(&old), "{report}");
    verify_pulls(&c, &base, &new);
    let r = c
        .get(format!("{base}/v2/u/app/manifests/{}", old.manifest))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// The work of a drain is what was queued: in a store of 40 repositories, deleting one
/// image reviews that image's rows and nothing else (counted, not timed: bench/ times it).
#[test]
fn a_drain_reviews_only_what_the_delete_queued() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &pg, "");
    let (c, base) = (http_client(), format!("http://{}", served.host()));
    let images: Vec<Pushed> = (0..40)
        .map(|i| push_image(&c, &base, &format!("s/r{i}"), "v1", 100 + i, 1).unwrap())
        .collect();
    review_after(&pg, "0");
    delete_manifest(&c, &base, "s/r7", &images[7].manifest.to_string());
    let report = wharf_json(dir.path(), &pg, &["garbage-collect"]);
    assert_eq!(
        report["reviewed"].as_u64().unwrap() as usize,
        images[7].blobs.len(),
        "{report}"
    );
    assert_eq!(deleted(&report), digests(&images[7]));
    verify_pulls(&c, &base, &images[8]);
}

/// Workers in `wharf serve` (gc: with a database) do the same while serving, and the
/// metrics say what they did.
#[test]
fn serve_workers_collect_a_deleted_image_and_count_it() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let gc = "gc:\n  workers: 2\n  reviewafter: 0s\n  reviewinterval: 200ms\n";
    let debug = crate::harness::free_port().to_string();
    let mut env = pg.env();
    env.push((
        "REGISTRY_HTTP_DEBUG_ADDR".into(),
        format!("127.0.0.1:{debug}"),
    ));
    env.push((
        "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED".into(),
        "true".into(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let served = Served::start(dir.path(), &format!("{CONFIG}{gc}"), &env);
    let (c, base) = (http_client(), format!("http://{}", served.host()));
    let kept = push_image(&c, &base, "w/app", "v1", 31, 2).unwrap();
    let gone = push_image(&c, &base, "w/app", "v2", 32, 2).unwrap();
    delete_manifest(&c, &base, "w/app", &gone.manifest.to_string());
    let deadline = Instant::now() + Duration::from_secs(30);
    while digests(&gone)
        .iter()
        .any(|d| blob_file(dir.path(), d).exists())
    {
        assert!(Instant::now() < deadline, "not collected: {}", served.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    verify_pulls(&c, &base, &kept);
    let metrics = c
        .get(format!("http://127.0.0.1:{debug}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let freed: u64 = gone.blobs.iter().map(|(_, b)| b.len() as u64).sum();
    assert!(
        metrics.contains(&format!("registry_gc_storage_deleted_bytes_total {freed}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "registry_gc_deletes_total{{backend=\"storage\",artifact=\"blob\"}} {}",
            gone.blobs.len()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("registry_gc_queue_size{queue=\"blobs\"}"),
        "{metrics}"
    );
}
