//! `wharf watch` driven by registry events instead of polling: Distribution 2.8.2's
//! notifications posted to the watcher's webhook, and a wharf registry's `/v2/_events`
//! stream. The scheduled interval is 24 h in every test, so an update within seconds of
//! a push can only come from the event.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::watch::*;

const TOKEN: &str = "events-token-for-test";
/// What the issue asks: the container runs the new image this soon after the push.
const WITHIN: Duration = Duration::from_secs(5);

/// Distribution 2.8.2 on a loopback port (plain http, which docker allows for
/// 127.0.0.0/8), notifying `webhook` with the watcher's token; its access log (the
/// combined format, with user agents) goes to a file.
struct NotifyingDistribution {
    port: u16,
    log: PathBuf,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl NotifyingDistribution {
    fn start(webhook: &str) -> NotifyingDistribution {
        require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}/data\nhttp:\n  addr: 127.0.0.1:{port}\nnotifications:\n  endpoints:\n    - name: wharf-watch\n      url: {webhook}\n      headers:\n        Authorization: [\"Bearer {TOKEN}\"]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let log = dir.path().join("access.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let mut proc = Proc(child);
        wait_until_up(
            &format!("http://127.0.0.1:{port}"),
            &mut proc.0,
            "docker-registry",
        );
        NotifyingDistribution {
            port,
            log,
            _proc: proc,
            _dir: dir,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Manifest requests (`HEAD` or `GET …/manifests/…`) that `wharf/` made: the watcher's.
    fn watcher_manifest_requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("/manifests/") && l.contains("\"wharf/"))
            .filter(|l| l.contains("\"HEAD ") || l.contains("\"GET "))
            .map(str::to_owned)
            .collect()
    }
}

/// A running `wharf watch` with a 24 h interval; its log goes to a file. Tests name the
/// containers it watches: watchers of other tests share the engine, and one watching
/// everything would take another's half-made replacement for a crash's leftover.
pub(crate) struct EventWatcher {
    pub(crate) addr: String,
    log: PathBuf,
    _proc: Proc,
}

impl EventWatcher {
    /// `args` are added; `docker_config` is the docker config the watcher reads.
    pub(crate) fn start(
        dir: &Path,
        port: u16,
        docker_config: &Path,
        args: &[&str],
    ) -> EventWatcher {
        let addr = format!("127.0.0.1:{port}");
        let log = dir.join("watch.log");
        let child = Command::new(WHARF)
            .env("DOCKER_CONFIG", docker_config)
            .env("WATCHTOWER_HTTP_API_TOKEN", TOKEN)
            .env("WHARF_WATCH_STATE_DIR", dir.join("watch-state"))
            .env_remove("WATCHTOWER_POLL_INTERVAL")
            .args(["watch", "--interval", "24h", "--stop-timeout", "5s"])
            .args(["--rollback-grace", "2s", "--http-api-addr", &addr])
            .args(["--http-api-metrics"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut proc = Proc(child);
        wait_for_port(port, &mut proc.0, "wharf watch");
        EventWatcher {
            addr,
            log,
            _proc: proc,
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `wait_until_runs`, with this watcher's log in the failure.
    pub(crate) fn wait_until_runs(&self, name: &str, image_id: &str, limit: Duration) -> Duration {
        let waited = std::panic::catch_unwind(|| wait_until_runs(name, image_id, limit));
        waited.unwrap_or_else(|_| panic!("the watcher's log:\n{}", self.log()))
    }

    fn post_event(&self, token: Option<&str>, body: &str) -> (u16, String) {
        let request = http_client()
            .post(format!("http://{}/v1/events", self.addr))
            .header(
                "Content-Type",
                "application/vnd.docker.distribution.events.v1+json",
            )
            .body(body.to_owned());
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }
}

/// Polls until `name` runs `image_id`; returns how long that took, or panics after `limit`.
pub(crate) fn wait_until_runs(name: &str, image_id: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let c = Command::new("docker")
            .args(["inspect", "-f", "{{.Image}} {{.State.Running}}", name])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&c.stdout);
        if text.trim() == format!("{image_id} true") {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{name} did not run {image_id} within {limit:?} of the push (it runs {text})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// docker tag + push to a plain-http loopback registry; the docker config is the caller's.
fn push_plain(local: &str, remote: &str) {
    run(Command::new("docker").args(["tag", local, remote]));
    run(Command::new("docker").args(["push", remote]));
}

fn envelope(host: &str, repo: &str, tag: &str) -> String {
    format!(
        r#"{{"events":[{{"id":"e1","timestamp":"2026-01-01T00:00:00Z","action":"push","target":{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:{0}","length":1,"repository":"{repo}","url":"http://{host}/v2/{repo}/manifests/sha256:{0}","tag":"{tag}"}},"request":{{"id":"r","addr":"127.0.0.1:1","host":"{host}","method":"PUT","useragent":"docker"}},"actor":{{}},"source":{{"addr":"x","instanceID":"i"}}}}]}}"#,
        "c".repeat(64)
    )
}

#[test]
fn watch_events_webhook_from_distribution_updates_within_5s_with_one_check() {
    require_docker();
    let mut cleanup = Cleanup::default();
    let v1 = serving_image(&mut cleanup, "hook1", &[]);
    let v2 = serving_image(&mut cleanup, "hook2", &[]);
    let dir = tempfile::tempdir().unwrap();
    let watch_port = free_port();
    let dist = NotifyingDistribution::start(&format!("http://127.0.0.1:{watch_port}/v1/events"));
    let image = format!("{}/apps/hooked:latest", dist.host());
    cleanup.images.push(image.clone());
    let name = unique("wharf-events-hook-");
    cleanup.containers.push(name.clone());
    let args = ["--http-api-events", &name];
    let watcher = EventWatcher::start(dir.path(), watch_port, dir.path(), &args);

    // v1's own push event finds no container using it yet: ignored, no check.
    push_plain(&v1, &image);
    wait_for_log(&watcher, "push event ignored");
    run(Command::new("docker").args(["run", "-d", "--name", &name, &image]));
    assert!(
        dist.watcher_manifest_requests().is_empty(),
        "the watcher asked the registry before any event concerned it: {:?}",
        dist.watcher_manifest_requests()
    );

    push_plain(&v2, &image);
    let took = watcher.wait_until_runs(&name, &image_id(&v2), WITHIN);
    eprintln!("push to running: {took:?}");
    let asked = dist.watcher_manifest_requests();
    assert_eq!(
        asked.len(),
        1,
        "one manifest check follows the event, and no other: {asked:#?}\n{}",
        watcher.log()
    );
    assert!(asked[0].contains("\"HEAD /v2/apps/hooked/manifests/latest "));
    assert_eq!(inspect(&name)["Config"]["Image"], image.as_str());
}

#[test]
fn watch_events_webhook_refuses_bad_input_and_ignores_unknown_images() {
    require_docker();
    let mut cleanup = Cleanup::default();
    let v1 = serving_image(&mut cleanup, "bad1", &[]);
    let v2 = serving_image(&mut cleanup, "bad2", &[]);
    let dir = tempfile::tempdir().unwrap();
    // A registry nothing notifies: every event here is the test's own.
    let dist = NotifyingDistribution::start("http://127.0.0.1:9/unused");
    let image = format!("{}/apps/guarded:latest", dist.host());
    cleanup.images.push(image.clone());
    push_plain(&v1, &image);
    let name = unique("wharf-events-bad-");
    cleanup.containers.push(name.clone());
    let before = run(Command::new("docker").args(["run", "-d", "--name", &name, &image]));
    push_plain(&v2, &image);
    let args = ["--http-api-events", &name];
    let watcher = EventWatcher::start(dir.path(), free_port(), dir.path(), &args);
    let good = envelope(&dist.host(), "apps/guarded", "latest");

    let (status, _) = watcher.post_event(None, &good);
    assert_eq!(status, 401, "an event without the token must be refused");
    let (status, _) = watcher.post_event(Some("wrong-token"), &good);
    assert_eq!(status, 401, "an event with a wrong token must be refused");
    for bad in ["not json", "{}", r#"{"events":[{"action":"push"}]}"#] {
        let (status, body) = watcher.post_event(Some(TOKEN), bad);
        assert_eq!(status, 400, "{bad:?} got {status}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    assert!(watcher.log().contains("malformed registry event refused"));
    assert!(watcher.log().contains("registry event refused"));

    let unknown = envelope(&dist.host(), "apps/nobody-runs-this", "latest");
    let (status, body) = watcher.post_event(Some(TOKEN), &unknown);
    assert_eq!(status, 202, "{body}");
    wait_for_log(&watcher, "push event ignored");
    let pull =
        r#"{"events":[{"action":"pull","target":{"repository":"apps/guarded","tag":"latest"}}]}"#;
    assert_eq!(watcher.post_event(Some(TOKEN), pull).0, 202);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        inspect(&name)["Id"],
        before.trim(),
        "no update may follow refused, unknown or pull events"
    );
    assert!(dist.watcher_manifest_requests().is_empty());

    // The same container is updated by a well-formed, authenticated push event.
    let (status, _) = watcher.post_event(Some(TOKEN), &good);
    assert_eq!(status, 202);
    watcher.wait_until_runs(&name, &image_id(&v2), Duration::from_secs(30));
}

/// A push of any tag of its repository checks a container that follows tags: 1.3.0 moves
/// a container on 1.2.3 with `^1.2` there at once; 2.0.0 is checked and left alone.
#[test]
fn watch_events_webhook_moves_a_tag_following_container_to_the_pushed_tag() {
    require_docker();
    let mut cleanup = Cleanup::default();
    let v123 = serving_image(&mut cleanup, "follow123", &[]);
    let v130 = serving_image(&mut cleanup, "follow130", &[]);
    let v200 = serving_image(&mut cleanup, "follow200", &[]);
    let dir = tempfile::tempdir().unwrap();
    let watch_port = free_port();
    let dist = NotifyingDistribution::start(&format!("http://127.0.0.1:{watch_port}/v1/events"));
    let repo = format!("{}/apps/followed", dist.host());
    let name = unique("wharf-events-follow-");
    cleanup.containers.push(name.clone());
    let args = ["--http-api-events", &name];
    let watcher = EventWatcher::start(dir.path(), watch_port, dir.path(), &args);
    let on = format!("{repo}:1.2.3");
    cleanup
        .images
        .extend([on.clone(), format!("{repo}:1.3.0"), format!("{repo}:2.0.0")]);
    push_plain(&v123, &on);
    wait_for_log(&watcher, "push event ignored");
    run(Command::new("docker").args([
        "run",
        "-d",
        "--name",
        &name,
        "-l",
        "wharf.watch.semver=^1.2",
        &on,
    ]));

    push_plain(&v130, &format!("{repo}:1.3.0"));
    watcher.wait_until_runs(&name, &image_id(&v130), WITHIN);
    assert_eq!(inspect(&name)["Config"]["Image"], format!("{repo}:1.3.0"));

    let sessions = || watcher.log().matches("session done").count();
    let before = sessions();
    push_plain(&v200, &format!("{repo}:2.0.0"));
    let started = Instant::now();
    while sessions() == before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "2.0.0's push set off no check: {}",
            watcher.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        inspect(&name)["Image"].as_str().unwrap(),
        image_id(&v130),
        "^1.2 never takes 2.0.0"
    );
}

/// Against the `/v2/_events` contract of wharf's registry (`GET`, `text/event-stream`,
/// auth as the catalog); green once the registry serves the stream.
#[test]
fn watch_events_sse_from_wharf_updates_within_5s_with_one_check() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, v2, image) = v1_pushed(&registry, &mut cleanup, "sse", "apps/streamed");
    let name = unique("wharf-events-sse-");
    cleanup.containers.push(name.clone());
    docker_run(&registry, &["--name", &name, &image]);
    let port = free_port();
    let watcher = EventWatcher::start(
        registry.dir.path(),
        port,
        &registry.docker_config(),
        &[
            "--events-from",
            &registry.host(),
            "--registry-ca",
            &registry.cert.display().to_string(),
            &name,
        ],
    );
    wait_for_log(&watcher, "subscribed to registry events");
    let heads = || registry.requests("HEAD", "/v2/apps/streamed/manifests/latest");
    assert_eq!(heads(), 0, "no check before the push");

    registry.push(&v2, "apps/streamed:latest");
    let took = watcher.wait_until_runs(&name, &image_id(&v2), WITHIN);
    eprintln!("push to running: {took:?}");
    assert_eq!(
        heads(),
        1,
        "one manifest check follows the event, and no other"
    );
    assert_eq!(
        registry.requests("GET", "/v2/apps/streamed/manifests/latest"),
        0
    );
}

/// The stream dies with its registry: the watcher says it falls back to its schedule,
/// reconnects when the registry is back (with the credentials renewed meanwhile: this
/// registry signs with a key of its process, so the refresh token `docker login` stored
/// dies with it and the user logs in again), resuming after the last event it saw, and a
/// push then still updates the container with no poll.
#[test]
fn watch_events_sse_falls_back_to_the_schedule_and_resumes_after_a_registry_restart() {
    let mut registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, v2, image) = v1_pushed(&registry, &mut cleanup, "ssedown", "apps/restarted");
    let name = unique("wharf-events-down-");
    cleanup.containers.push(name.clone());
    docker_run(&registry, &["--name", &name, &image]);
    let watcher = EventWatcher::start(
        registry.dir.path(),
        free_port(),
        &registry.docker_config(),
        &[
            "--events-from",
            &registry.host(),
            "--registry-ca",
            &registry.cert.display().to_string(),
            &name,
        ],
    );
    wait_for_log(&watcher, "subscribed to registry events");
    // An event the watcher sees (for an image nobody runs), so it has an id to resume from.
    let other = serving_image(&mut cleanup, "ssedown-other", &[]);
    registry.push(&other, "apps/unwatched:latest");
    wait_for_log(&watcher, "push event ignored");

    registry.served.kill();
    wait_for_log(&watcher, "fall back to the schedule");
    registry.served.restart(registry.dir.path());
    let login = output_with_stdin(
        registry
            .docker()
            .args(["login", "-u", USER, "--password-stdin", &registry.host()]),
        PASSWORD,
    );
    assert!(login.status.success(), "docker login: {login:?}");
    registry.push(&v2, "apps/restarted:latest");
    watcher.wait_until_runs(&name, &image_id(&v2), Duration::from_secs(40));
    let log = watcher.log();
    let resumed = log
        .lines()
        .filter(|l| l.contains("subscribed to registry events"))
        .nth(1)
        .unwrap_or_else(|| panic!("the watcher never subscribed again: {log}"));
    assert!(
        !resumed.contains("resumed_after=-") && resumed.contains("resumed_after="),
        "the second subscription must resume after the last event seen: {resumed}"
    );
}

pub(crate) fn wait_for_log(watcher: &EventWatcher, text: &str) {
    let started = Instant::now();
    while !watcher.log().contains(text) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the watcher never logged {text:?}: {}",
            watcher.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
