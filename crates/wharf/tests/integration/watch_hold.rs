//! Held updates with a real engine, a real wharf registry and a running `wharf watch`:
//! a push outside a container's maintenance window waits, and runs when the window opens
//! (by the test clock, `--test-clock` and `POST /v1/clock`) with the newest image pushed
//! in between; an update labelled `wharf.watch.approve=true` waits for `POST /v1/approve`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;
use crate::watch::*;
use crate::watch_events::wait_until_runs;

const TOKEN: &str = "fleet-hold-token-for-test";

/// A `wharf watch` serving its API (events, fleet endpoints, the test clock).
struct HoldWatcher {
    url: String,
    log: PathBuf,
    _proc: Proc,
}

impl HoldWatcher {
    fn start(registry: &Registry, dir: &Path, args: &[&str]) -> HoldWatcher {
        let port = free_port();
        let log = dir.join("watch.log");
        let child = Command::new(WHARF)
            .env("DOCKER_CONFIG", registry.docker_config())
            .env("WATCHTOWER_HTTP_API_TOKEN", TOKEN)
            .env("WHARF_WATCH_STATE_DIR", dir.join("watch-state"))
            // Saturday 01:30 in Berlin: outside the window below.
            .env("WHARF_WATCH_FAKE_NOW", "2026-12-05T00:30:00Z")
            .env("WHARF_LOG", "info")
            .env_remove("WATCHTOWER_POLL_INTERVAL")
            .args(["watch", "--interval", "24h", "--stop-timeout", "5s"])
            .args([
                "--rollback-grace",
                "2s",
                "--test-clock",
                "--http-api-events",
            ])
            .args(["--http-api-addr", &format!("127.0.0.1:{port}")])
            .args(["--public-url", "http://watch.example.test:8080"])
            .arg("--registry-ca")
            .arg(&registry.cert)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut proc = Proc(child);
        wait_for_port(port, &mut proc.0, "wharf watch");
        HoldWatcher {
            url: format!("http://127.0.0.1:{port}"),
            log,
            _proc: proc,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = http_client()
            .post(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> Value {
        let r = http_client()
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().unwrap()
    }

    /// A registry:2 push notification for `repo:tag` at `digest`, as Distribution sends it.
    fn pushed(&self, host: &str, repo: &str, tag: &str, digest: &str) {
        let envelope = json!({"events": [{
            "id": unique("e"), "timestamp": "2026-12-05T00:00:00Z", "action": "push",
            "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "size": 1, "digest": digest, "length": 1, "repository": repo,
                "url": format!("https://{host}/v2/{repo}/manifests/{digest}"), "tag": tag},
            "request": {"id": "r", "addr": "127.0.0.1:1", "host": host, "method": "PUT", "useragent": "docker"},
            "actor": {}, "source": {"addr": "x", "instanceID": "i"}}]});
        let r = http_client()
            .post(format!("{}/v1/events", self.url))
            .bearer_auth(TOKEN)
            .header(
                "Content-Type",
                "application/vnd.docker.distribution.events.v1+json",
            )
            .body(envelope.to_string())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }

    /// Until `name` waits with `digest`, or panics with the log after `limit`.
    fn wait_held(&self, name: &str, digest: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let pending = self.get("/v1/pending");
            if let Some(h) = pending
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["container"] == name && h["digest"] == digest)
            {
                return h.clone();
            }
            assert!(
                started.elapsed() < limit,
                "{name} is not held with {digest}: {pending:#}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn watch_window_holds_a_push_until_it_opens_and_the_newest_image_wins() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_v1, v2, image) = v1_pushed(&registry, &mut cleanup, "win", "apps/window");
    let v3 = serving_image(&mut cleanup, "win3", &[]);
    let name = unique("wharf-watch-window-");
    cleanup.containers.push(name.clone());
    let label = "wharf.watch.window=Sat 02:00-04:00 Europe/Berlin";
    docker_run(&registry, &["--name", &name, "--label", label, &image]);
    let before = inspect(&name)["Image"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let watcher = HoldWatcher::start(&registry, dir.path(), &[&name]);

    let host = registry.host();
    let digest2 = registry.push(&v2, "apps/window:latest");
    watcher.pushed(&host, "apps/window", "latest", &digest2);
    let held = watcher.wait_held(&name, &digest2, Duration::from_secs(30));
    assert_eq!(held["waiting_for"], "window");
    assert_eq!(held["opens_at"], "2026-12-05T01:00:00+00:00");
    // A newer image arrives while it waits: that is the one that will run.
    let digest3 = registry.push(&v3, "apps/window:latest");
    watcher.pushed(&host, "apps/window", "latest", &digest3);
    watcher.wait_held(&name, &digest3, Duration::from_secs(30));
    assert_eq!(
        inspect(&name)["Image"],
        before.as_str(),
        "updated outside its window"
    );

    // 02:00:30 in Berlin: the window is open.
    let (status, body) = watcher.post("/v1/clock", json!({"now": "2026-12-05T01:00:30Z"}));
    assert_eq!(status, 200, "{body}");
    let waited = std::panic::catch_unwind(|| {
        wait_until_runs(&name, &image_id(&v3), Duration::from_secs(60))
    });
    assert!(
        waited.is_ok(),
        "not updated when the window opened:\n{}",
        watcher.log()
    );
    // Recorded once the new container has stood its grace period.
    let started = Instant::now();
    let history = loop {
        let history = watcher.get(&format!("/v1/history?name={name}"));
        if history["changes"][0].is_object() || started.elapsed() > Duration::from_secs(30) {
            break history;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(history["changes"][0]["kind"], "update", "{history:#}");
    assert_eq!(history["changes"][0]["to"]["digest"], digest3.as_str());
    assert_eq!(
        history["changes"].as_array().unwrap().len(),
        1,
        "{history:#}"
    );
    assert!(watcher.get("/v1/pending").as_array().unwrap().is_empty());

    // `wharf watch rollback` with the token asks the running watcher: with no engine and
    // no state of its own, it could not have done it itself.
    let port = watcher.url.rsplit(':').next().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(WHARF)
        .env("WATCHTOWER_HTTP_API_TOKEN", TOKEN)
        .env("WHARF_WATCH_STATE_DIR", empty.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["watch", "--http-api-addr", &format!("127.0.0.1:{port}")])
        .args(["rollback", &name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rollback through the API: {}",
        output_text(&out)
    );
    assert_eq!(inspect(&name)["Image"], before.as_str());
    let history = watcher.get(&format!("/v1/history?name={name}"));
    assert_eq!(history["changes"][0]["kind"], "rollback", "{history:#}");
    assert_eq!(history["changes"][0]["reason"], "requested through the API");
    let (status, body) = watcher.post("/v1/rollback", json!({"name": "no-such-container-here"}));
    assert_eq!(status, 404, "{body}");
    let (status, body) = watcher.post("/v1/rollback", json!({"nom": name}));
    assert_eq!(status, 400, "{body}");
}

#[test]
fn watch_approval_holds_an_update_until_the_api_approves_it() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_v1, v2, image) = v1_pushed(&registry, &mut cleanup, "appr", "apps/approve");
    let name = unique("wharf-watch-approve-");
    cleanup.containers.push(name.clone());
    docker_run(
        &registry,
        &[
            "--name",
            &name,
            "--label",
            "wharf.watch.approve=true",
            &image,
        ],
    );
    let before = inspect(&name)["Image"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let hook = WebhookReceiver::start();
    let url = format!("generic+http://{}/hook", hook.addr);
    let watcher = HoldWatcher::start(&registry, dir.path(), &["--notification-url", &url, &name]);

    // Nothing waits yet: approving is refused with a reason.
    let (status, body) = watcher.post("/v1/approve", json!({"container": name}));
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("nothing to approve"));

    let digest2 = registry.push(&v2, "apps/approve:latest");
    watcher.pushed(&registry.host(), "apps/approve", "latest", &digest2);
    let held = watcher.wait_held(&name, &digest2, Duration::from_secs(30));
    assert_eq!(held["waiting_for"], "approval");
    // The notification says it waits, with the link to approve it.
    let sent: Value = serde_json::from_str(&hook.next_body()).unwrap();
    let line = container_line(&sent, &name);
    assert_eq!(line["outcome"], "stale", "{sent:#}");
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.contains("waiting for approval")
            && detail.contains("http://watch.example.test:8080/v1/approve"),
        "{detail}"
    );
    let log = watcher.log();
    assert!(
        log.contains("waiting for approval")
            && log.contains("http://watch.example.test:8080/v1/approve"),
        "{log}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        inspect(&name)["Image"],
        before.as_str(),
        "updated without approval"
    );

    let (status, body) = watcher.post("/v1/approve", json!({"container": name}));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["digest"], digest2.as_str());
    let waited = std::panic::catch_unwind(|| {
        wait_until_runs(&name, &image_id(&v2), Duration::from_secs(60))
    });
    assert!(
        waited.is_ok(),
        "not updated once approved:\n{}",
        watcher.log()
    );
    // Without the token, nothing.
    let r = http_client()
        .post(format!("{}/v1/approve", watcher.url))
        .json(&json!({"container": name}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
