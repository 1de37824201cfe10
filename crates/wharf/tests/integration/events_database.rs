//! The event log in PostgreSQL: an event rides in the transaction of the change it reports
//! (a push whose event cannot be written fails, and leaves no tag); three replicas on one
//! Garage and one PostgreSQL serve one `/v2/_events` stream; webhook delivery runs once
//! across them and survives the SIGKILL of the replica that delivers.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::database::serve;
use crate::events::{push_small, read_messages, Receiver};
use crate::harness::garage::Garage;
use crate::harness::postgres::Postgres;
use crate::harness::{
    build_busybox_image, docker_rmi, free_port, http_client, require_docker, run, unique, Served,
};
use crate::replicas::{replica_env, round_robin};

/// A manifest put of `repo:tag` over a config blob of its own; the manifest's status.
fn put_manifest(client: &reqwest::blocking::Client, base: &str, repo: &str, tag: &str) -> u16 {
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
    client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn events_naming(pg: &Postgres, tag: &str) -> usize {
    let sql = format!(
        "SELECT count(*) FROM events WHERE body::jsonb->>'action' IN ('push','delete') \
         AND body::jsonb->'target'->>'tag' = '{tag}'"
    );
    pg.psql(&sql).parse().unwrap()
}

#[test]
fn database_events_ride_in_the_transaction_of_the_change_they_report() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), &pg, "");
    let base = format!("http://{}", s.host());
    let client = http_client();
    assert_eq!(put_manifest(&client, &base, "tx/app", "v1"), 201);
    assert_eq!(
        events_naming(&pg, "v1"),
        1,
        "an acknowledged push has its event"
    );

    // The event cannot be written: the push fails as a whole, and leaves no tag.
    pg.psql(
        "CREATE FUNCTION refuse_events() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse_events BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_events();",
    );
    let status = put_manifest(&client, &base, "tx/app", "v2");
    assert!(status >= 500, "a push whose event failed answered {status}");
    let tag = client
        .get(format!("{base}/v2/tx/app/manifests/v2"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(tag.status(), 404, "the failed push left its tag");
    assert_eq!(events_naming(&pg, "v2"), 0);
    // A tag delete whose event fails keeps the tag.
    let del = client
        .delete(format!("{base}/v2/tx/app/manifests/v1"))
        .send()
        .unwrap();
    assert!(del.status().as_u16() >= 500, "{}", del.status());
    let kept = client
        .head(format!("{base}/v2/tx/app/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(kept.status(), 200, "the failed delete removed the tag");

    pg.psql("DROP TRIGGER refuse_events ON events");
    assert_eq!(put_manifest(&client, &base, "tx/app", "v2"), 201);
    assert_eq!(events_naming(&pg, "v2"), 1);
    let del = client
        .delete(format!("{base}/v2/tx/app/manifests/v1"))
        .send()
        .unwrap();
    assert_eq!(del.status(), 202);
    assert_eq!(events_naming(&pg, "v1"), 2, "the push and the delete");
    // Ids count up from 1 with no holes, whatever failed in between.
    let ids = pg.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM events");
    let ids: Vec<u64> = ids.split(',').map(|i| i.parse().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
}

/// Three replicas on one bucket and one database, each with `extra` config, behind nginx.
struct Cluster {
    _garage: Garage,
    replicas: Vec<Served>,
    dirs: Vec<tempfile::TempDir>,
    _nginx: crate::harness::Proc,
    front: String,
}

impl Cluster {
    fn start(pg: &Postgres, extra: &str) -> Cluster {
        let g = Garage::cluster(3);
        let env = replica_env(&g, pg);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let yaml = format!("version: 0.1\nhttp:\n  addr: 127.0.0.1:@PORT@\n{extra}");
        let replicas: Vec<Served> = dirs
            .iter()
            .map(|d| Served::start(d.path(), &yaml, &env))
            .collect();
        let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
        let ndir = dirs[0].path().join("nginx");
        std::fs::create_dir_all(&ndir).unwrap();
        let (nginx, port) = round_robin(&ndir, &ports);
        Cluster {
            _garage: g,
            replicas,
            dirs,
            _nginx: nginx,
            front: format!("127.0.0.1:{port}"),
        }
    }
}

#[test]
fn a_subscriber_on_one_replica_sees_pushes_made_through_the_others() {
    let pg = Postgres::start();
    let c = Cluster::start(&pg, "");
    let client = reqwest::blocking::Client::new();
    let a = format!("http://{}", c.replicas[0].host());
    let resp = client.get(format!("{a}/v2/_events")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let mut lines = BufReader::new(resp).lines();
    let t0 = Instant::now();
    for i in 0..12 {
        let via = &c.replicas[1 + i % 2];
        push_small(
            &client,
            &format!("http://{}", via.host()),
            "spread/app",
            &format!("t{i:02}"),
        );
    }
    // A config blob and a manifest per push.
    let got = read_messages(&mut lines, 24);
    let tags: Vec<String> = got
        .iter()
        .filter(|(_, action, d)| action == "push" && d["events"][0]["target"]["tag"].is_string())
        .map(|(_, _, d)| d["events"][0]["target"]["tag"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    assert_eq!(tags, expected, "every push, in order, on replica A");
    eprintln!("12 pushes through B and C seen on A in {:?}", t0.elapsed());
    let ids: Vec<u64> = got.iter().map(|m| m.0).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    // Resuming on the load balancer (whichever replica answers) replays from the id.
    let resp = client
        .get(format!("http://{}/v2/_events", c.front))
        .header("Last-Event-ID", ids[21].to_string())
        .send()
        .unwrap();
    let replay = read_messages(&mut BufReader::new(resp).lines(), 2);
    assert_eq!((replay[0].0, replay[1].0), (ids[22], ids[23]));
    assert_eq!(replay[1].2, got[23].2);
}

/// The replica that holds the endpoint's lease, by its log.
fn holder(c: &Cluster) -> Option<usize> {
    (0..3).rev().find(|&i| {
        c.replicas[i]
            .log()
            .lines()
            .rfind(|l| l.contains("delivery lease"))
            .is_some_and(|l| l.contains("holds the delivery lease"))
    })
}

#[test]
fn webhooks_deliver_once_across_three_replicas_and_survive_a_sigkill_of_the_deliverer() {
    require_docker();
    let pg = Postgres::start();
    let port = free_port();
    let rx = Receiver::start(port);
    // Blob events ignored, so the receiver counts manifests; short retries.
    let extra = format!(
        "notifications:\n  endpoints:\n    - name: hook\n      url: http://127.0.0.1:{port}/hook\n      timeout: 1s\n      threshold: 3\n      backoff: 200ms\n      ignore:\n        mediatypes: [application/octet-stream]\n"
    );
    let mut c = Cluster::start(&pg, &extra);
    let local = build_busybox_image(&unique("hook:"), &unique("webhooks"));
    let front = c.front.clone();
    let push = |i: usize| {
        let remote = format!("{front}/hooks/app:t{i:03}");
        run(Command::new("docker").args(["tag", &local, &remote]));
        run(Command::new("docker").args(["push", &remote]));
        docker_rmi(&[&remote]);
    };
    for i in 0..50 {
        push(i);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let killed = loop {
        if let Some(h) = holder(&c) {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no replica took the delivery lease"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    c.replicas[killed].kill();
    for i in 50..75 {
        push(i);
    }
    c.replicas[killed].restart(c.dirs[killed].path());
    for i in 75..100 {
        push(i);
    }
    docker_rmi(&[&local]);
    let events = rx.wait_for("/hook", 100, Duration::from_secs(120));
    let tags: Vec<String> = events
        .iter()
        .map(|e| e["target"]["tag"].as_str().unwrap().to_owned())
        .collect();
    let mut first_seen = Vec::new();
    for t in &tags {
        if !first_seen.contains(t) {
            first_seen.push(t.clone());
        }
    }
    let expected: Vec<String> = (0..100).map(|i| format!("t{i:03}")).collect();
    assert_eq!(first_seen, expected, "every push, in order");
    let duplicates = tags.len() - first_seen.len();
    eprintln!(
        "webhooks: {} events received for 100 pushes, {duplicates} duplicates (replica {killed} SIGKILLed while it delivered)",
        tags.len()
    );
    // Re-sends come only around the takeover: at most what was delivered after the
    // dead holder's last saved cursor.
    assert!(duplicates <= 50, "{duplicates} duplicates");
}

/// `wharf watch --events-from` the load balancer: a push that lands on any replica updates
/// the container (the interval is 24 h, so only the event can); the watcher is killed, a
/// push lands while it is down, and the restarted watcher resumes from the event id it
/// kept on disk and applies it.
#[test]
fn a_watcher_behind_the_load_balancer_misses_nothing_across_its_restart() {
    use crate::watch::{image_id, serving_image, Cleanup};
    use crate::watch_events::{wait_for_log, EventWatcher};
    require_docker();
    let pg = Postgres::start();
    let c = Cluster::start(&pg, "");
    let mut cleanup = Cleanup::default();
    let v: Vec<String> = (1..=3)
        .map(|i| serving_image(&mut cleanup, &format!("lb{i}"), &[]))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(docker_config.join("config.json"), "{}").unwrap();
    let image = format!("{}/lb/app:latest", c.front);
    cleanup.images.push(image.clone());
    let push = |local: &str| {
        run(Command::new("docker").args(["tag", local, &image]));
        run(Command::new("docker")
            .env("DOCKER_CONFIG", &docker_config)
            .args(["push", &image]));
    };
    push(&v[0]);
    let name = unique("wharf-events-lb-");
    cleanup.containers.push(name.clone());
    run(Command::new("docker").args(["run", "-d", "--name", &name, &image]));
    let start = || {
        EventWatcher::start(
            dir.path(),
            free_port(),
            &docker_config,
            &["--events-from", &c.front, &name],
        )
    };
    let watcher = start();
    wait_for_log(&watcher, "subscribed to registry events");
    for (i, local) in v.iter().enumerate().skip(1).take(1) {
        push(local);
        let took = watcher.wait_until_runs(&name, &image_id(local), Duration::from_secs(10));
        eprintln!("push {i} to running through the load balancer: {took:?}");
    }
    drop(watcher);
    // Pushed while the watcher is down: only a resumed stream can apply it at once.
    push(&v[2]);
    let watcher = start();
    let took = watcher.wait_until_runs(&name, &image_id(&v[2]), Duration::from_secs(15));
    eprintln!("a push made while the watcher was down applied {took:?} after its restart");
    let log = watcher.log();
    let subscribed = log
        .lines()
        .find(|l| l.contains("subscribed to registry events"))
        .unwrap_or_else(|| panic!("never subscribed: {log}"));
    assert!(
        !subscribed.contains("resumed_after=-"),
        "the restarted watcher must resume from the id it kept: {subscribed}"
    );
    let kept = std::fs::read_dir(dir.path().join("watch-state"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("events."));
    assert!(kept, "no event id file in the state directory");
}
