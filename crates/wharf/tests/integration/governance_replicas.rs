//! The registry's own rules when several processes serve one registry: one process on a
//! filesystem, two processes on one filesystem root, and processes sharing a filesystem
//! root and one PostgreSQL (the database's advisory locks and rows in place of files).
//! - A quota with room for ten blobs, raced by twenty pushes: exactly ten land, usage
//!   never exceeds the quota, and `wharf scrub` counts what the figure says.
//! - Fifty rounds of two racing first pushes of one immutable tag through two processes:
//!   exactly one winner each, the other refused with DENIED naming the rule.
//! - Signing out of the UI on replica 1 ends the session on replica 3; a scrub report
//!   made by one process shows in another's metrics.
//!
//! Pushes are the Distribution API calls docker makes, from 20 threads at once (twenty
//! docker pushes at once would measure the machine, not the race).

use std::path::Path;
use std::thread;

use reqwest::blocking::Client;
use serde_json::Value;
use wharf_oci::Digest;

use crate::harness::postgres::Postgres;
use crate::harness::{free_port, http_client, require, run, Served, WHARF};
use crate::ui::Visit;

fn yaml(root: &Path, rules: &str, extra: &str) -> String {
    format!(
        "version: 0.1\nhttp:\n  addr: 127.0.0.1:@PORT@\n  secret: replicas-share-this\n{extra}\
         storage:\n  filesystem: {{ rootdirectory: \"{}\" }}\n  delete: {{ enabled: true }}\n{rules}",
        root.display()
    )
}

/// `n` processes on one root (each with its own config directory); with `pg`, on its
/// database too.
fn processes(
    n: usize,
    root: &Path,
    rules: &str,
    extra: &str,
    pg: Option<&Postgres>,
) -> (Vec<tempfile::TempDir>, Vec<Served>) {
    let env: Vec<(String, String)> = pg.map(|p| p.env()).unwrap_or_default();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut dirs = Vec::new();
    let mut served = Vec::new();
    for _ in 0..n {
        let d = tempfile::tempdir().unwrap();
        served.push(Served::start(d.path(), &yaml(root, rules, extra), &env));
        dirs.push(d);
    }
    (dirs, served)
}

/// A monolithic blob push: (status, body).
fn push_blob(c: &Client, host: &str, repo: &str, data: Vec<u8>) -> (u16, String) {
    let d = Digest::sha256_of(&data);
    let r = c
        .post(format!("http://{host}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(data)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn scrub(config_dir: &Path, pg: Option<&Postgres>) -> Value {
    let out = std::process::Command::new(WHARF)
        .args(["scrub", "--json"])
        .arg(config_dir.join("config.yml"))
        .envs(pg.map(|p| p.env()).unwrap_or_default())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap()
}

fn quota_race(topology: &str, n: usize, pg: Option<&Postgres>) {
    let root = tempfile::tempdir().unwrap();
    let rules = "quotas:\n  - { repositories: [\"q/*\"], bytes: 100 }\n";
    let (dirs, served) = processes(n, root.path(), rules, "", pg);
    let hosts: Vec<String> = served.iter().map(Served::host).collect();
    let racers: Vec<_> = (0..20u8)
        .map(|i| {
            let host = hosts[i as usize % n].clone();
            thread::spawn(move || {
                let c = http_client();
                push_blob(&c, &host, &format!("q/r{}", i % 4), vec![i; 10])
            })
        })
        .collect();
    let (mut landed, mut refused) = (0, 0);
    for r in racers {
        match r.join().unwrap() {
            (201, _) => landed += 1,
            (403, body) => {
                assert!(
                    body.contains("DENIED") && body.contains("quota 100 B for q/*"),
                    "{body}"
                );
                refused += 1;
            }
            other => panic!("{topology}: {other:?}"),
        }
    }
    assert_eq!((landed, refused), (10, 10), "{topology}");
    // A scrub's count agrees with the figure the pushes left (drift is a finding).
    let report = scrub(dirs[0].path(), pg);
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    assert!(
        !findings.iter().any(|f| f["kind"] == "quota_drift"),
        "{topology}: scrub found the figure drifted: {report}"
    );
    drop(served);
}

#[test]
fn twenty_racing_pushes_fill_a_quota_with_room_for_ten_on_every_topology() {
    quota_race("one process on a filesystem", 1, None);
    quota_race("two processes on one root", 2, None);
    let pg = Postgres::start();
    quota_race("three processes on one root and PostgreSQL", 3, Some(&pg));
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn immutable_race(topology: &str, pg: Option<&Postgres>) {
    let root = tempfile::tempdir().unwrap();
    let rules = "immutable:\n  - { repositories: [\"rel/*\"], tags: \"^v\" }\n";
    let (_dirs, served) = processes(2, root.path(), rules, "", pg);
    let hosts: Vec<String> = served.iter().map(Served::host).collect();
    let c = http_client();
    let config = b"{}".to_vec();
    assert_eq!(push_blob(&c, &hosts[0], "rel/app", config.clone()).0, 201);
    let cd = Digest::sha256_of(&config);
    for round in 0..50 {
        let racers: Vec<_> = (0..2)
            .map(|i| {
                let host = hosts[i].clone();
                let body = serde_json::json!({
                    "schemaVersion": 2, "mediaType": MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": cd.to_string(), "size": 2},
                    "layers": [], "annotations": {"racer": format!("{round}-{i}")},
                });
                thread::spawn(move || {
                    let r = http_client()
                        .put(format!("http://{host}/v2/rel/app/manifests/v{round}"))
                        .header("content-type", MANIFEST)
                        .body(serde_json::to_vec(&body).unwrap())
                        .send()
                        .unwrap();
                    let digest = r
                        .headers()
                        .get("docker-content-digest")
                        .map(|v| v.to_str().unwrap().to_owned());
                    (r.status().as_u16(), digest, r.text().unwrap())
                })
            })
            .collect();
        let mut winners = Vec::new();
        for r in racers {
            match r.join().unwrap() {
                (201, Some(d), _) => winners.push(d),
                (403, _, body) => assert!(
                    body.contains("DENIED") && body.contains("immutable rule 1"),
                    "{topology}: {body}"
                ),
                other => panic!("{topology}, round {round}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{topology}, round {round}");
        let r = c
            .head(format!("http://{}/v2/rel/app/manifests/v{round}", hosts[1]))
            .header("accept", MANIFEST)
            .send()
            .unwrap();
        assert_eq!(
            r.headers()["docker-content-digest"].to_str().unwrap(),
            winners[0],
            "{topology}, round {round}: the tag holds the winner"
        );
    }
}

#[test]
fn fifty_rounds_of_racing_first_pushes_of_an_immutable_tag_have_one_winner_each() {
    immutable_race("two processes on one root", None);
    let pg = Postgres::start();
    immutable_race("two processes on one root and PostgreSQL", Some(&pg));
}

#[test]
fn sign_out_on_replica_1_ends_the_session_on_replica_3_and_reports_are_shared() {
    require("htpasswd", "apache2-utils");
    let pg = Postgres::start();
    let root = tempfile::tempdir().unwrap();
    let users = root.path().join("htpasswd");
    run(std::process::Command::new("htpasswd")
        .args(["-c", "-B", "-b"])
        .arg(&users)
        .args(["alice", "alice-pw"]));
    let debug = free_port();
    let rules = format!(
        "auth:\n  htpasswd: {{ realm: wharf, path: \"{}\" }}\nui:\n  admins: [alice]\n",
        users.display()
    );
    // Replica 3 alone answers metrics, for the report check.
    let (dirs, mut served) = processes(2, root.path(), &rules, "", Some(&pg));
    let extra =
        format!("  debug: {{ addr: 127.0.0.1:{debug}, prometheus: {{ enabled: true }} }}\n");
    let (dir3, third) = processes(1, root.path(), &rules, &extra, Some(&pg));
    served.extend(third);
    let base = |i: usize| format!("http://{}", served[i].host());
    let mut on1 = Visit::new(&base(0));
    on1.sign_in("alice", "alice-pw");
    // The same cookie on replica 3 (the replicas share http.secret).
    let mut on3 = Visit::new(&base(2));
    on3.cookies = on1.cookies.clone();
    let (_, page) = on3.get("/ui/");
    assert!(
        page.contains("Signed in as"),
        "the session holds on replica 3 before sign-out: {page}"
    );
    assert_eq!(on3.get("/ui/admin/users").0, 200);
    let token = on1.token("/ui/");
    assert_eq!(on1.post("/ui/logout", &[("_csrf", &token)]).0, 303);
    let (_, page) = on3.get("/ui/");
    assert!(
        !page.contains("Signed in as"),
        "replica 3 still honours the signed-out session"
    );
    assert_eq!(on3.get("/ui/admin/users").0, 403);

    // A scrub run by a command on replica 1's config shows in replica 3's metrics.
    scrub(dirs[0].path(), Some(&pg));
    let metrics = http_client()
        .get(format!("http://127.0.0.1:{debug}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let runs = metrics
        .lines()
        .find(|l| l.contains("scrub_runs") && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no scrub runs in {metrics}"));
    assert!(runs.ends_with(" 1"), "{runs}");
    drop(dir3);
}
