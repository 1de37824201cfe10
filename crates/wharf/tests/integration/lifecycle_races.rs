//! Garbage collection under load and through crashes: pushers racing a looping
//! collector, and kill -9 in the middle of a sweep while 100 uploads are in flight.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;
use wharf_oci::Digest;

use crate::harness::{header, http_client as client, Wharf};
use crate::pushes::*;

/// Pushers (new images, cross-repository mounts, retags) race a collector that loops with
/// no grace and --delete-untagged; every push that succeeded is then pulled and verified.
#[test]
fn gc_looping_under_eight_pushers_loses_nothing_a_successful_push_stored() {
    let secs: u64 = std::env::var("WHARF_GC_RACE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let w = Wharf::start();
    let base = w.url();
    let root = w.root.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let gc = {
        let root = root.clone();
        std::thread::spawn(move || {
            let mut runs = 0;
            while Instant::now() < deadline {
                let out = wharf_cmd(&["garbage-collect", "-m", "--grace", "0s", "--root", &root]);
                assert!(out.status.success(), "{}", text(&out));
                runs += 1;
            }
            runs
        })
    };
    let pushers: Vec<_> = (0..8u64)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let c = client();
                let mut last: std::collections::HashMap<String, Pushed> = Default::default();
                let (mut ok, mut failed) = (0, 0);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let repo = format!("race/c{i}");
                    let tag = format!("t{}", n % 3); // tags move: old manifests become untagged
                    let pushed = if n.is_multiple_of(4) {
                        mount_and_push(
                            &c,
                            &base,
                            &repo,
                            &format!("race/c{}", (i + 1) % 8),
                            &tag,
                            i * 1_000_000 + n,
                        )
                    } else {
                        push_image(&c, &base, &repo, &tag, i * 1_000_000 + n, 2)
                    };
                    match pushed {
                        Ok(p) => {
                            ok += 1;
                            last.insert(tag, p);
                        }
                        // A push whose blobs were collected before its manifest arrived is
                        // refused cleanly (that is what the grace period prevents).
                        Err(e) if crate::pushes::refused_for_collected_blobs(&e) => failed += 1,
                        Err(e) => panic!("push failed unexpectedly: {e}"),
                    }
                }
                (last, ok, failed)
            })
        })
        .collect();
    let mut verified = 0;
    let mut total_ok = 0;
    let results: Vec<_> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
    let runs = gc.join().unwrap();
    let c = client();
    let mut total_failed = 0;
    for (last, ok, failed) in &results {
        total_ok += ok;
        total_failed += failed;
        for p in last.values() {
            verify_pulls(&c, &base, p);
            verified += 1;
        }
    }
    eprintln!("{runs} collections; {total_ok} pushes stored, {total_failed} refused cleanly; {verified} tags verified");
    assert!(runs >= 3, "the collector ran only {runs} times");
    assert!(total_ok >= 40, "only {total_ok} pushes succeeded");
    assert!(verified >= 8);
    let out = wharf_cmd(&["scrub", "--root", &root]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Mount a layer of `from`'s (if it has one) into `repo`, and push an image using it.
pub(crate) fn mount_and_push(
    c: &Client,
    base: &str,
    repo: &str,
    from: &str,
    tag: &str,
    seed: u64,
) -> Result<Pushed, String> {
    let r = c
        .get(format!("{base}/v2/{from}/tags/list"))
        .send()
        .map_err(|e| e.to_string())?;
    let source_tag = r
        .json::<Value>()
        .ok()
        .and_then(|v| v["tags"].as_array()?.first()?.as_str().map(str::to_owned));
    let Some(source_tag) = source_tag else {
        return push_image(c, base, repo, tag, seed, 2);
    };
    let r = c
        .get(format!("{base}/v2/{from}/manifests/{source_tag}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .map_err(|e| e.to_string())?;
    if r.status() != StatusCode::OK {
        return push_image(c, base, repo, tag, seed, 2);
    }
    let m: Value = r.json().map_err(|e| e.to_string())?;
    let layer: Digest = m["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
    let r = c
        .post(format!(
            "{base}/v2/{repo}/blobs/uploads/?mount={layer}&from={from}"
        ))
        .send()
        .map_err(|e| e.to_string())?;
    if r.status() != StatusCode::CREATED {
        return push_image(c, base, repo, tag, seed, 2); // not mountable (collected meanwhile)
    }
    let data = c
        .get(format!("{base}/v2/{repo}/blobs/{layer}"))
        .send()
        .map_err(|e| e.to_string())?;
    if data.status() != StatusCode::OK {
        return Err("BLOB_UNKNOWN after mount".into());
    }
    let layer_bytes = data.bytes().unwrap().to_vec();
    let config = format!(r#"{{"os":"linux","mounted":{seed}}}"#).into_bytes();
    let config_digest = push_blob(c, base, repo, &config)?;
    let body = image_manifest(
        &config_digest,
        config.len(),
        &[(layer.clone(), layer_bytes.len())],
    );
    let manifest = put_manifest(c, base, repo, tag, &body)?;
    Ok(Pushed {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        manifest: manifest.clone(),
        blobs: vec![
            (layer, layer_bytes),
            (config_digest, config),
            (manifest, body),
        ],
    })
}

/// Blob directories under the store's `blobs/`.
fn count_blobs(root: &Path) -> usize {
    let base = root.join("docker/registry/v2/blobs/sha256");
    std::fs::read_dir(base)
        .map(|prefixes| {
            prefixes
                .flatten()
                .map(|p| std::fs::read_dir(p.path()).map_or(0, |d| d.count()))
                .sum()
        })
        .unwrap_or(0)
}

/// Garbage written straight into the layout: `n` valid blobs no manifest names.
fn plant_garbage(root: &Path, n: u64) {
    for i in 0..n {
        let data = noise(7_000_000 + i, 256);
        let d = Digest::sha256_of(&data);
        let dir = root.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{}",
            &d.hex()[..2],
            d.hex()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data"), &data).unwrap();
    }
}

/// A chunked upload in two PATCHes and a PUT; Ok(digest) once the registry acknowledged it.
fn chunked(c: &Client, base: &str, repo: &str, data: &[u8]) -> Result<Digest, String> {
    let e = |e: reqwest::Error| e.to_string();
    let digest = Digest::sha256_of(data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .map_err(e)?;
    let mut loc = format!("{base}{}", header(&r, "location"));
    let half = data.len() / 2;
    for (start, part) in [(0, &data[..half]), (half, &data[half..])] {
        let r = c
            .patch(&loc)
            .header(
                "Content-Range",
                format!("{start}-{}", start + part.len() - 1),
            )
            .body(part.to_vec())
            .send()
            .map_err(e)?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(format!("PATCH: {}", r.status()));
        }
        loc = format!("{base}{}", header(&r, "location"));
    }
    let r = c
        .put(crate::harness::add_query(&loc, "digest", &digest))
        .send()
        .map_err(e)?;
    match r.status() {
        StatusCode::CREATED => Ok(digest),
        s => Err(format!("PUT: {s}")),
    }
}

/// kill -9 while the scheduled collection sweeps and 100 uploads are in flight; after a
/// restart every acknowledged blob and tagged image is whole, and scrub finds nothing wrong.
#[test]
fn kill_9_during_a_sweep_and_100_uploads_leaves_a_store_scrub_finds_clean() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let images: Vec<Pushed> = {
        let w = Wharf::start_on(&root);
        let c = client();
        (0..3)
            .map(|i| push_image(&c, &w.url(), &format!("crash/app{i}"), "v1", 500 + i, 2).unwrap())
            .collect()
    };
    plant_garbage(&root, 4000);
    age_store(&root);
    let before = count_blobs(&root);
    let mut w = Wharf::start_on_with_env(&root, &[("REGISTRY_GC_INTERVAL", "1s")]);
    let base = w.url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Digest)>::new()));
    let uploaders: Vec<_> = (0..100u64)
        .map(|i| {
            let (base, stop, acked) = (base.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let c = client();
                let repo = format!("crash/up{}", i % 10);
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let data = noise(i * 100_000 + n, 8192 + (n as usize % 7) * 4096);
                    match chunked(&c, &base, &repo, &data) {
                        Ok(d) => acked.lock().unwrap().push((repo.clone(), d)),
                        Err(_) => std::thread::sleep(Duration::from_millis(50)), // the server died
                    }
                }
            })
        })
        .collect();
    // Wait for the sweep to be well under way, then kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_blobs(&root) + 200 > before {
        assert!(
            Instant::now() < deadline,
            "the scheduled collection never started sweeping"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    let at_kill = count_blobs(&root);
    assert!(
        at_kill > 1000,
        "the kill came after the sweep ended ({at_kill} blobs left): plant more garbage"
    );
    w.crash_and_restart();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for u in uploaders {
        u.join().unwrap();
    }
    let c = client();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} uploads were acknowledged",
        acked.len()
    );
    for (repo, d) in &acked {
        let r = c
            .get(format!("{}/v2/{repo}/blobs/{d}", w.url()))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{repo}@{d}");
        assert_eq!(Digest::sha256_of(&r.bytes().unwrap()), *d);
    }
    for p in &images {
        verify_pulls(&c, &w.url(), p);
    }
    let out = wharf_cmd(&["scrub", "--json", "--root", &root.display().to_string()]);
    assert!(out.status.success(), "scrub after the kill: {}", text(&out));
    eprintln!(
        "killed with {at_kill} of {before} blobs left; {} uploads acknowledged",
        acked.len()
    );
}
