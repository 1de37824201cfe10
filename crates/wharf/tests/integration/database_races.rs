//! Garbage collection on PostgreSQL metadata under load: pushers race a collector that
//! loops with no grace and --delete-untagged, in another process, sharing nothing with
//! the server but the database (its advisory locks) and the blob store.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::database::serve;
use crate::harness::http_client as client;
use crate::harness::postgres::Postgres;
use crate::pushes::*;

#[test]
fn gc_looping_under_pushers_on_postgres_loses_nothing_a_successful_push_stored() {
    let secs: u64 = std::env::var("WHARF_GC_RACE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &pg, "");
    let base = format!("http://{}", served.host());
    let config = dir.path().join("config.yml");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let gc = {
        let (config, env) = (config.clone(), pg.env());
        std::thread::spawn(move || {
            let (mut runs, mut deleted) = (0, 0);
            while Instant::now() < deadline {
                let out = std::process::Command::new(crate::harness::WHARF)
                    .args(["garbage-collect", "-m", "--grace", "0s", "--json"])
                    .arg(&config)
                    .envs(env.clone())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", text(&out));
                let report: Value = serde_json::from_slice(&out.stdout).unwrap();
                deleted += report["manifests"].as_array().map_or(0, Vec::len);
                runs += 1;
            }
            (runs, deleted)
        })
    };
    let pushers: Vec<_> = (0..4u64)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let c = client();
                let mut last: HashMap<String, Pushed> = HashMap::new();
                let (mut ok, mut refused, mut n) = (0, 0, 0u64);
                while Instant::now() < deadline {
                    n += 1;
                    let tag = format!("t{}", n % 3); // tags move: old manifests become untagged
                    let repo = format!("race/c{i}");
                    match push_image(&c, &base, &repo, &tag, i * 1_000_000 + n, 2) {
                        Ok(p) => {
                            ok += 1;
                            last.insert(tag, p);
                        }
                        // Blobs collected before their manifest arrived: refused cleanly
                        // (what the grace period, zero here, prevents).
                        Err(e) if crate::pushes::refused_for_collected_blobs(&e) => refused += 1,
                        Err(e) => panic!("push failed unexpectedly: {e}"),
                    }
                }
                (last, ok, refused)
            })
        })
        .collect();
    let results: Vec<_> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
    let (runs, deleted) = gc.join().unwrap();
    let c = client();
    let (mut stored, mut refused, mut verified) = (0, 0, 0);
    for (last, ok, no) in &results {
        stored += ok;
        refused += no;
        for p in last.values() {
            verify_pulls(&c, &base, p);
            verified += 1;
        }
    }
    eprintln!("{runs} collections deleted {deleted} manifests; {stored} pushes stored, {refused} refused cleanly; {verified} tags verified");
    assert!(runs >= 3, "the collector ran only {runs} times");
    assert!(
        deleted > 0,
        "the collector never deleted an untagged manifest"
    );
    assert!(stored >= 20, "only {stored} pushes succeeded");
    let out = std::process::Command::new(crate::harness::WHARF)
        .arg("scrub")
        .arg(&config)
        .envs(pg.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}
