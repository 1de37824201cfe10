//! The review queues under load and through a crash: three `wharf serve` replicas on one
//! store and one PostgreSQL, their review workers and a looping drain racing pushes,
//! mounts and retags; and kill -9 of a replica in the middle of a review.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::database_gc_queues::wharf_json;
use crate::harness::postgres::Postgres;
use crate::harness::{http_client as client, Served};
use crate::lifecycle_races::mount_and_push;
use crate::pushes::*;

/// A replica: its own config directory and log, the shared root and database.
fn replica(
    root: &Path,
    pg: &Postgres,
    gc: &str,
    extra_env: &[(&str, &str)],
) -> (tempfile::TempDir, Served) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:@PORT@\n{gc}",
        root.display()
    );
    let env = pg.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra_env);
    let served = Served::start(dir.path(), &yaml, &env);
    (dir, served)
}

const WORKERS: &str =
    "gc:\n  workers: 2\n  reviewafter: 0s\n  reviewinterval: 100ms\n  deleteuntagged: true\n";

/// lifecycle_races.rs's scenario against the queues: 6 pushers (new images, mounts from
/// another repository, tags that move so old manifests become untagged) spread over three
/// replicas whose workers review with no delay, plus a drain looping with --grace 0s.
/// Every push that succeeded pulls from every replica; scrub is clean.
#[test]
fn queue_workers_on_three_replicas_lose_nothing_a_successful_push_stored() {
    let secs: u64 = std::env::var("WHARF_GC_RACE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let pg = Postgres::start();
    let store = tempfile::tempdir().unwrap();
    let root = store.path().join("root");
    let replicas: Vec<_> = (0..3).map(|_| replica(&root, &pg, WORKERS, &[])).collect();
    let bases: Vec<String> = replicas
        .iter()
        .map(|(_, s)| format!("http://{}", s.host()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let drain = {
        let (dir, env) = (replicas[0].0.path().to_owned(), pg.env());
        std::thread::spawn(move || {
            let mut runs = 0;
            while Instant::now() < deadline {
                let out = std::process::Command::new(crate::harness::WHARF)
                    .args(["garbage-collect", "-m", "--grace", "0s"])
                    .arg(dir.join("config.yml"))
                    .envs(env.clone())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", text(&out));
                runs += 1;
            }
            runs
        })
    };
    let pushers: Vec<_> = (0..6u64)
        .map(|i| {
            let base = bases[i as usize % 3].clone();
            std::thread::spawn(move || {
                let c = client();
                let mut last: std::collections::HashMap<String, Pushed> = Default::default();
                let (mut ok, mut refused, mut n) = (0, 0, 0u64);
                while Instant::now() < deadline {
                    n += 1;
                    let repo = format!("qrace/c{i}");
                    let tag = format!("t{}", n % 3);
                    let from = format!("qrace/c{}", (i + 1) % 6);
                    let seed = i * 1_000_000 + n;
                    let pushed = if n.is_multiple_of(4) {
                        mount_and_push(&c, &base, &repo, &from, &tag, seed)
                    } else {
                        push_image(&c, &base, &repo, &tag, seed, 2)
                    };
                    match pushed {
                        Ok(p) => {
                            ok += 1;
                            last.insert(tag, p);
                        }
                        // A review that took a blob before the manifest that names it came.
                        Err(e) if refused_for_collected_blobs(&e) => refused += 1,
                        Err(e) => panic!("push failed unexpectedly: {e}"),
                    }
                }
                (last, ok, refused)
            })
        })
        .collect();
    let results: Vec<_> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
    let runs = drain.join().unwrap();
    let c = client();
    let (mut ok, mut refused, mut verified) = (0, 0, 0);
    for (last, o, r) in &results {
        ok += o;
        refused += r;
        for p in last.values() {
            for base in &bases {
                verify_pulls(&c, base, p);
            }
            verified += 1;
        }
    }
    let reviews = replicas
        .iter()
        .filter(|(_, s)| s.log().contains("garbage reviewed"))
        .count();
    eprintln!("{runs} drains; {reviews} replicas' workers deleted garbage; {ok} pushes stored, {refused} refused cleanly; {verified} tags verified on 3 replicas");
    assert!(runs >= 3, "the drain ran only {runs} times");
    assert!(ok >= 30, "only {ok} pushes succeeded");
    assert!(reviews >= 1, "no worker deleted anything");
    wharf_json(replicas[0].0.path(), &pg, &["scrub"]);
}

/// kill -9 of a replica while its review has deleted the bytes but not committed: the
/// rows are still queued and due, another replica reviews them again, and what is left
/// is consistent (no link to a deleted blob, scrub clean, the kept image pulls).
#[test]
fn a_replica_killed_mid_review_leaves_its_rows_for_the_next_review() {
    let pg = Postgres::start();
    let store = tempfile::tempdir().unwrap();
    let root = store.path().join("root");
    let hook = [("WHARF_GC_TEST_REVIEW_DELAY_MS", "60000")];
    let gc = "gc:\n  workers: 1\n  reviewafter: 0s\n  reviewinterval: 100ms\n";
    let (_d1, mut slow) = replica(&root, &pg, gc, &hook);
    let base = format!("http://{}", slow.host());
    let c = client();
    let kept = push_image(&c, &base, "crash/app", "v1", 41, 2).unwrap();
    let gone = push_image(&c, &base, "crash/app", "v2", 42, 2).unwrap();
    let r = c
        .delete(format!("{base}/v2/crash/app/manifests/{}", gone.manifest))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let file = |d: &wharf_oci::Digest| {
        root.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{}/data",
            &d.hex()[..2],
            d.hex()
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while gone.blobs.iter().any(|(d, _)| file(d).exists()) {
        assert!(
            Instant::now() < deadline,
            "the review did not start: {}",
            slow.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    slow.kill();
    let queued: usize = pg
        .psql("SELECT count(*) FROM gc_blob_review_queue")
        .parse()
        .unwrap();
    assert_eq!(
        queued,
        gone.blobs.len(),
        "the killed review committed nothing"
    );
    let links = format!(
        "SELECT count(*) FROM blob_links WHERE digest IN ('{}')",
        gone.blobs
            .iter()
            .map(|(d, _)| d.to_string())
            .collect::<Vec<_>>()
            .join("','")
    );
    assert_ne!(
        pg.psql(&links),
        "0",
        "its link deletions were rolled back with it"
    );

    let (d2, other) = replica(&root, &pg, gc, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.psql("SELECT count(*) FROM gc_blob_review_queue") != "0" {
        assert!(
            Instant::now() < deadline,
            "not reviewed again: {}",
            other.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pg.psql(&links), "0", "the second review removed the links");
    verify_pulls(&c, &format!("http://{}", other.host()), &kept);
    wharf_json(d2.path(), &pg, &["scrub"]);
}
