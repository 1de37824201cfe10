//! Registry events: webhook notifications compared with Distribution 2.8.2's for the same
//! `docker push`, delivered durably across a receiver outage, a crash and a second
//! process on the store; and the `/v2/_events` stream across processes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// A webhook receiver in Python (a separate process, as a real one would be): appends
/// `{"path", "content_type", "body"}` per POST to a file and answers 200.
pub struct Receiver {
    pub port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
    _proc: Proc,
}

const RECEIVER: &str = r#"
import http.server, json, sys
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        rec = {"path": self.path, "content_type": self.headers.get('Content-Type'),
               "authorization": self.headers.get('Authorization'), "body": json.loads(body)}
        with open(out, 'a') as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(('127.0.0.1', port), H).serve_forever()
"#;

impl Receiver {
    pub fn start(port: u16) -> Receiver {
        require("python3", "python3");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("events.jsonl");
        let mut child = Command::new("python3")
            .args(["-c", RECEIVER, &port.to_string()])
            .arg(&out)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the python3 receiver");
        wait_for_port(port, &mut child, "the event receiver");
        Receiver {
            port,
            out,
            _dir: dir,
            _proc: Proc(child),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every POST so far.
    pub fn posts(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The events POSTed to `path`, in arrival order.
    pub fn events(&self, path: &str) -> Vec<Value> {
        self.posts()
            .into_iter()
            .filter(|p| p["path"] == path)
            .flat_map(|p| p["body"]["events"].as_array().unwrap().clone())
            .collect()
    }

    /// Wait until `path` has at least `n` events, then a moment more for stragglers.
    pub fn wait_for(&self, path: &str, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        while self.events(path).len() < n {
            assert!(
                Instant::now() < deadline,
                "{path}: {} of {n} events arrived within {limit:?}: {:#?}",
                self.events(path).len(),
                self.events(path)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1500));
        self.events(path)
    }
}

/// What must match between two registries: ids, times, ports and the instance id aside.
fn normalized(mut e: Value, registry_host: &str) -> Value {
    let o = e.as_object_mut().unwrap();
    assert!(o.remove("id").is_some_and(|v| v != ""), "no event id");
    assert!(o.remove("timestamp").is_some());
    let req = o["request"].as_object_mut().unwrap();
    assert!(req.remove("id").is_some_and(|v| v != ""), "no request id");
    // The client's port differs between the two connections: keep its address.
    let addr = req["addr"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .0
        .to_owned();
    req.insert("addr".into(), addr.into());
    let source = o["source"].as_object_mut().unwrap();
    assert!(source.remove("instanceID").is_some_and(|v| v != ""));
    let text = serde_json::to_string(&e).unwrap();
    let port = registry_host.rsplit(':').next().unwrap();
    let text = text
        .replace(registry_host, "REGISTRY")
        .replace(&format!(":{port}\""), ":PORT\"");
    serde_json::from_str(&text).unwrap()
}

fn sorted(mut events: Vec<Value>) -> Vec<Value> {
    events.sort_by_key(|e| {
        format!(
            "{} {} {}",
            e["action"], e["target"]["mediaType"], e["target"]["digest"]
        )
    });
    events
}

#[test]
fn a_docker_push_notifies_exactly_as_distribution_does() {
    require_docker();
    let rx = Receiver::start(free_port());
    let dist_root = tempfile::tempdir().unwrap();
    let dist = Distribution::start_with(
        dist_root.path(),
        &format!(
            "notifications:\n  endpoints:\n    - name: hook\n      url: {}/distribution\n      timeout: 5s\n",
            rx.url()
        ),
    );
    let root = tempfile::tempdir().unwrap();
    let endpoints = format!("- name: hook\n  url: {}/wharf\n  timeout: 5s\n", rx.url());
    let wharf = Wharf::start_on_with_env(
        root.path(),
        &[("REGISTRY_NOTIFICATIONS_ENDPOINTS", &endpoints)],
    );
    let local = build_busybox_image(&unique("wharf-events:"), "events");
    for host in [wharf.host(), dist.host()] {
        let remote = format!("{host}/events/app:v1");
        run(Command::new("docker").args(["tag", &local, &remote]));
        run(Command::new("docker").args(["push", &remote]));
        docker_rmi(&[&remote]);
    }
    docker_rmi(&[&local]);
    // Two blobs (layer, config) pushed, each HEADed after (a pull), and the manifest.
    let theirs = rx.wait_for("/distribution", 5, Duration::from_secs(30));
    let ours = rx.wait_for("/wharf", 5, Duration::from_secs(30));
    for p in rx.posts() {
        assert_eq!(
            p["content_type"],
            "application/vnd.docker.distribution.events.v1+json"
        );
        assert_eq!(
            p["body"]["events"].as_array().unwrap().len(),
            1,
            "one event per envelope, as Distribution sends"
        );
    }
    let theirs: Vec<Value> = theirs
        .into_iter()
        .map(|e| normalized(e, &dist.host()))
        .collect();
    let ours: Vec<Value> = ours
        .into_iter()
        .map(|e| normalized(e, &wharf.host()))
        .collect();
    assert_eq!(
        sorted(ours),
        sorted(theirs),
        "wharf's events (left) differ from Distribution's (right)"
    );
}

/// A manifest with no layers and its own config blob, pushed over HTTP as `repo:tag`.
pub(crate) fn push_small(client: &reqwest::blocking::Client, base: &str, repo: &str, tag: &str) {
    push_small_as(client, base, repo, tag, "");
}

/// As `push_small`, with an Authorization header (none when empty).
fn push_small_as(
    client: &reqwest::blocking::Client,
    base: &str,
    repo: &str,
    tag: &str,
    auth: &str,
) {
    let client = &Authed(client, auth);
    let config = format!("{{\"tag\":\"{tag}\"}}");
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&config))
    );
    let r = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .body(config.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "blob push");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
        "layers": [],
    });
    let r = client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "manifest push");
}

/// A client that adds one Authorization header to what it sends.
struct Authed<'a>(&'a reqwest::blocking::Client, &'a str);

impl Authed<'_> {
    fn with(&self, r: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        if self.1.is_empty() {
            r
        } else {
            r.header("authorization", self.1)
        }
    }

    fn post(&self, url: String) -> reqwest::blocking::RequestBuilder {
        self.with(self.0.post(url))
    }

    fn put(&self, url: String) -> reqwest::blocking::RequestBuilder {
        self.with(self.0.put(url))
    }
}

fn start_hooked(root: &Path, url: &str) -> Wharf {
    // Blob events ignored, so the receiver counts manifests; short retries.
    let endpoints = format!(
        "- name: hook\n  url: {url}\n  timeout: 1s\n  threshold: 3\n  backoff: 200ms\n  ignore:\n    mediatypes: [application/octet-stream]\n"
    );
    Wharf::start_on_with_env(root, &[("REGISTRY_NOTIFICATIONS_ENDPOINTS", &endpoints)])
}

#[test]
fn events_wait_out_a_receiver_outage_a_crash_and_a_second_process_and_arrive_once_in_order() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let root = tempfile::tempdir().unwrap();
    let client = http_client();
    let mut a = start_hooked(root.path(), &url);
    for i in 0..20 {
        push_small(&client, &a.url(), "outage/app", &format!("t{i:02}"));
    }
    // kill -9: whatever was queued must be on disk already.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let a = start_hooked(root.path(), &url);
    let b = start_hooked(root.path(), &url);
    for i in 20..50 {
        let via = if i % 2 == 0 { &a } else { &b };
        push_small(&client, &via.url(), "outage/app", &format!("t{i:02}"));
    }
    let rx = Receiver::start(port);
    let events = rx.wait_for("/hook", 50, Duration::from_secs(60));
    let tags: Vec<&str> = events
        .iter()
        .map(|e| e["target"]["tag"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..50).map(|i| format!("t{i:02}")).collect();
    assert_eq!(tags, expected, "every push once, in order");
    assert!(events.iter().all(|e| e["action"] == "push"
        && e["target"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"));
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50, "no event delivered twice");
}

/// Read SSE messages (id, event, data) from a streaming response until `n` have come.
pub(crate) fn read_messages(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    n: usize,
) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    let (mut id, mut event, mut data) = (None, None, None);
    for line in lines {
        let line = line.expect("the stream stays open");
        if line.is_empty() {
            if let (Some(i), Some(e), Some(d)) = (id.take(), event.take(), data.take()) {
                out.push((i, e, d));
                if out.len() == n {
                    return out;
                }
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse().unwrap());
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(v).unwrap());
        }
    }
    panic!("the stream ended after {} messages", out.len());
}

#[test]
fn the_event_stream_carries_pushes_made_through_another_process_and_resumes() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Wharf::start_on(root.path());
    let b = Wharf::start_on(root.path());
    let client = reqwest::blocking::Client::new();
    let resp = client
        .get(format!("{}/v2/_events", a.url()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    let mut lines = BufReader::new(resp).lines();
    push_small(&client, &b.url(), "stream/app", "v1");
    // The config blob, then the manifest.
    let got = read_messages(&mut lines, 2);
    let (seq, action, data) = &got[1];
    assert_eq!(action, "push");
    let event = &data["events"][0];
    assert_eq!(event["target"]["tag"], "v1");
    assert_eq!(event["target"]["repository"], "stream/app");
    assert_eq!(got[0].0 + 1, *seq, "sequence numbers count up");
    // Resuming after the blob's number replays the manifest's event.
    let resp = client
        .get(format!("{}/v2/_events", b.url()))
        .header("Last-Event-ID", got[0].0.to_string())
        .send()
        .unwrap();
    let replay = read_messages(&mut BufReader::new(resp).lines(), 1);
    assert_eq!(replay[0].0, *seq);
    assert_eq!(replay[0].2, *data);
    let resp = client
        .get(format!("{}/v2/_events?since=0", a.url()))
        .send()
        .unwrap();
    let all = read_messages(&mut BufReader::new(resp).lines(), 2);
    assert_eq!(all[1].0, *seq, "since=0 replays the retained log");
    let bad = client
        .get(format!("{}/v2/_events?since=x", a.url()))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    // Open streams end at shutdown instead of holding the drain open (60 s).
    let t0 = Instant::now();
    assert!(a.stop().success());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(lines.next().is_none_or(|l| l.is_err()), "the stream ended");
}

/// One SSE message's data from `path` on `host`, with `auth` as the Authorization header.
fn stream_status(host: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = reqwest::blocking::Client::new().get(format!("http://{host}/v2/_events?since=0"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), header(&r, "www-authenticate"))
}

#[test]
fn the_event_stream_is_guarded_like_the_catalog_and_shows_only_pullable_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    htpasswd(&file, "admin", "admin-pw");
    // A second user in the same file, written by htpasswd too.
    run(Command::new("htpasswd")
        .args(["-B", "-b"])
        .arg(&file)
        .args(["alice", "alice-pw"])
        .stderr(Stdio::null()));
    let yaml = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  htpasswd:\n    realm: r\n    path: @DIR@/htpasswd\n    token:\n      service: wharf\n      issuer: wharf\naccess:\n  rules:\n    - { repositories: ['team/*'], users: [alice], actions: [pull] }\n    - { repositories: ['*'], users: [admin], actions: ['*'] }\n";
    let served = Served::start(dir.path(), yaml, &[]);
    let host = served.host();
    let basic = |u: &str, p: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    // Anonymous callers get what they get from the catalog (with an access policy, a
    // filtered view; here nothing, since no rule names them).
    let catalog = reqwest::blocking::get(format!("http://{host}/v2/_catalog")).unwrap();
    assert_eq!(stream_status(&host, None).0, catalog.status().as_u16());
    // A token for one repository is not enough; one with the catalog scope is.
    let token = |scope: &str| -> String {
        let r: Value = reqwest::blocking::Client::new()
            .get(format!(
                "http://{host}/auth/token?service=wharf&scope={scope}"
            ))
            .header("authorization", basic("alice", "alice-pw"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        format!("Bearer {}", r["token"].as_str().unwrap())
    };
    let (status, challenge) = stream_status(&host, Some(&token("repository:team/a:pull")));
    assert_eq!(status, 401);
    assert!(
        challenge.contains("scope=\"registry:catalog:*\""),
        "{challenge}"
    );
    assert_eq!(
        stream_status(&host, Some(&token("registry:catalog:*"))).0,
        200
    );
    let admin = basic("admin", "admin-pw");
    let push = http_client();
    let base = format!("http://{host}");
    for (repo, tag) in [
        ("secret/app", "s1"),
        ("team/app", "t1"),
        ("secret/app", "s2"),
    ] {
        push_small_as(&push, &base, repo, tag, &admin);
    }
    // alice, by Basic and by a catalog token, sees team/ only; admin sees all.
    for auth in [basic("alice", "alice-pw"), token("registry:catalog:*")] {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{base}/v2/_events?since=0"))
            .header("authorization", auth)
            .send()
            .unwrap();
        let got = read_messages(&mut BufReader::new(resp).lines(), 2);
        let repos: Vec<&str> = got
            .iter()
            .map(|m| m.2["events"][0]["target"]["repository"].as_str().unwrap())
            .collect();
        assert_eq!(
            repos,
            ["team/app", "team/app"],
            "blob and manifest of team/app only"
        );
        assert_eq!(got[1].2["events"][0]["actor"]["name"], "admin");
    }
    let resp = reqwest::blocking::Client::new()
        .get(format!("{base}/v2/_events?since=0"))
        .header("authorization", &admin)
        .send()
        .unwrap();
    let got = read_messages(&mut BufReader::new(resp).lines(), 6);
    assert_eq!(got[5].2["events"][0]["target"]["tag"], "s2");
}

#[test]
fn an_idle_event_stream_gets_a_keep_alive_comment_every_15_s() {
    let w = Wharf::start();
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
        .get(format!("{}/v2/_events", w.url()))
        .send()
        .unwrap();
    let t0 = Instant::now();
    let mut lines = BufReader::new(resp).lines();
    assert_eq!(lines.next().unwrap().unwrap(), ": keep-alive");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(14) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "");
}
