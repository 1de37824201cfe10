//! The debug address: Prometheus metrics read by the Python `prometheus_client` parser
//! (Debian's python3-prometheus-client), and `/debug/health` turning unhealthy when the
//! storage root becomes read-only (a read-only bind mount, which stops root too).

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// Debian's interpreter, which has Debian's python3-* modules.
const PYTHON: &str = "/usr/bin/python3";

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// One scrape, parsed by prometheus_client: (sample name, sorted labels) → value.
fn scrape(url: &str) -> HashMap<String, f64> {
    let importable = Command::new(PYTHON)
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(importable, "{PYTHON} cannot import prometheus_client: install it with `apt-get install python3-prometheus-client` (or run .ci/run)");
    let text = reqwest::blocking::get(url).unwrap().text().unwrap();
    let out = output_with_stdin(Command::new(PYTHON).args(["-c", PARSE]), &text);
    let json = ok(out, "parsing the metrics with prometheus_client");
    let samples: Vec<Value> = serde_json::from_str(&json).unwrap();
    samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect();
            labels.sort();
            let key = format!("{}{{{}}}", s["name"].as_str().unwrap(), labels.join(","));
            (key, s["value"].as_f64().unwrap())
        })
        .collect()
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        let mut keys: Vec<_> = m
            .keys()
            .filter(|k| k.starts_with("registry_http"))
            .collect();
        keys.sort();
        panic!("no sample {key}; have {keys:#?}")
    })
}

#[test]
fn metrics_count_the_requests_made() {
    let debug = free_port();
    let root = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{debug}");
    let w = Wharf::start_on_with_env(
        root.path(),
        &[
            ("REGISTRY_HTTP_DEBUG_ADDR", &addr),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true"),
        ],
    );
    let c = http_client();
    // wait_until_up made GET /v2/ requests already: count from the first scrape.
    let url = format!("http://{addr}/metrics");
    let before = scrape(&url);
    let base_before = before
        .get("registry_http_requests_total{code=200,handler=base,method=GET}")
        .copied()
        .unwrap_or(0.0);
    for _ in 0..3 {
        assert_eq!(
            c.get(format!("{}/v2/", w.url())).send().unwrap().status(),
            200
        );
    }
    for _ in 0..2 {
        let r = c
            .get(format!("{}/v2/m/app/manifests/nope", w.url()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let blob = vec![7u8; 100_000];
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&blob))
    );
    let r = c
        .post(format!(
            "{}/v2/m/app/blobs/uploads/?digest={digest}",
            w.url()
        ))
        .body(blob.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = c
        .get(format!("{}/v2/m/app/blobs/{digest}", w.url()))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(got.len(), blob.len());
    let m = scrape(&url);
    assert_eq!(
        value(
            &m,
            "registry_http_requests_total{code=200,handler=base,method=GET}"
        ) - base_before,
        3.0
    );
    assert_eq!(
        value(
            &m,
            "registry_http_requests_total{code=404,handler=manifest,method=GET}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "registry_http_requests_total{code=201,handler=blob_upload,method=POST}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "registry_http_requests_total{code=200,handler=blob,method=GET}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, "registry_http_in_bytes_total{handler=blob_upload}"),
        100_000.0
    );
    assert_eq!(
        value(&m, "registry_http_out_bytes_total{handler=blob}"),
        100_000.0
    );
    assert_eq!(
        value(
            &m,
            "registry_http_request_duration_seconds_count{handler=manifest,method=GET}"
        ),
        2.0
    );
    assert_eq!(value(&m, "registry_http_uploads_in_flight{}"), 0.0);
    assert_eq!(
        value(&m, "registry_notifications_events_total{action=push}"),
        1.0
    );
    // A 404 for an unknown path on the debug address, as registry:2's.
    let r = c.get(format!("http://{addr}/nope")).send().unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn auth_failures_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    htpasswd(&dir.path().join("htpasswd"), "alice", "pw");
    let debug = free_port();
    let addr = format!("127.0.0.1:{debug}");
    let served = Served::start(
        dir.path(),
        &format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  debug:\n    addr: {addr}\n    prometheus:\n      enabled: true\n      path: /m\nauth:\n  htpasswd:\n    realm: r\n    path: @DIR@/htpasswd\n"),
        &[],
    );
    let c = http_client();
    for _ in 0..4 {
        let r = c
            .get(format!("http://{}/v2/_catalog", served.host()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = c
        .get(format!("http://{}/v2/_catalog", served.host()))
        .basic_auth("alice", Some("pw"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = scrape(&format!("http://{addr}/m"));
    assert_eq!(
        value(&m, "registry_auth_failures_total{handler=catalog}"),
        4.0
    );
    assert_eq!(
        value(
            &m,
            "registry_http_requests_total{code=401,handler=catalog,method=GET}"
        ),
        4.0
    );
}

fn health(addr: &str) -> (u16, Value) {
    let r = reqwest::blocking::get(format!("http://{addr}/debug/health")).unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

fn wait_health(addr: &str, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = health(addr);
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "health stayed {status} {body}, wanted {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Unmounts when dropped, even if the test fails.
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    fn over(dir: &std::path::Path) -> ReadOnlyMount {
        require("mount", "mount");
        run(Command::new("mount").arg("--bind").arg(dir).arg(dir));
        let m = ReadOnlyMount(dir.to_owned());
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(dir));
        m
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn health_turns_unhealthy_when_the_storage_root_turns_read_only_and_back() {
    let debug = free_port();
    let root = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{debug}");
    let w = Wharf::start_on_with_env(
        root.path(),
        &[
            ("REGISTRY_HTTP_DEBUG_ADDR", &addr),
            ("REGISTRY_HEALTH_STORAGEDRIVER_ENABLED", "true"),
            ("REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL", "200ms"),
            ("REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD", "2"),
        ],
    );
    assert_eq!(wait_health(&addr, 200), serde_json::json!({}));
    let mount = ReadOnlyMount::over(root.path());
    let body = wait_health(&addr, 503);
    let why = body["storagedriver_filesystem"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("Read-only"), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    // Meanwhile the API refuses everything, as registry:2's health handler does.
    let r = reqwest::blocking::get(format!("{}/v2/", w.url())).unwrap();
    assert_eq!(r.status(), 503);
    let err: Value = r.json().unwrap();
    assert_eq!(err["errors"][0]["code"], "UNAVAILABLE", "{err}");
    drop(mount);
    assert_eq!(wait_health(&addr, 200), serde_json::json!({}));
    let r = reqwest::blocking::get(format!("{}/v2/", w.url())).unwrap();
    assert_eq!(r.status(), 200);
}

/// GC and scrub run as commands, in processes of their own: the server's metrics show
/// their figures, which they leave in the store.
#[test]
fn gc_and_scrub_figures_from_other_processes_show_in_the_metrics() {
    let debug = free_port();
    let root = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{debug}");
    let w = Wharf::start_on_with_env(
        root.path(),
        &[
            ("REGISTRY_HTTP_DEBUG_ADDR", &addr),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true"),
        ],
    );
    let url = format!("http://{addr}/metrics");
    let m = scrape(&url);
    assert_eq!(value(&m, "registry_gc_runs_total{}"), 0.0);
    // Two blobs no manifest names: garbage once the grace is 0.
    let c = http_client();
    let mut total = 0;
    for size in [1000usize, 2345] {
        let blob = vec![size as u8; size];
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&blob))
        );
        let r = c
            .post(format!(
                "{}/v2/gc/app/blobs/uploads/?digest={digest}",
                w.url()
            ))
            .body(blob)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        total += size;
    }
    let out = Command::new(WHARF)
        .args(["scrub", "--json", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    ok(out, "wharf scrub");
    let out = Command::new(WHARF)
        .args(["garbage-collect", "--grace", "0s", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    ok(out, "wharf garbage-collect");
    let m = scrape(&url);
    assert_eq!(value(&m, "registry_scrub_runs_total{}"), 1.0);
    assert_eq!(value(&m, "registry_scrub_blobs_checked_total{}"), 2.0);
    assert_eq!(value(&m, "registry_scrub_problems_total{}"), 0.0);
    assert_eq!(value(&m, "registry_gc_runs_total{}"), 1.0);
    assert_eq!(value(&m, "registry_gc_blobs_deleted_total{}"), 2.0);
    assert_eq!(value(&m, "registry_gc_bytes_freed_total{}"), total as f64);
    assert!(value(&m, "registry_gc_last_run_timestamp_seconds{}") > 1.0e9);
}
