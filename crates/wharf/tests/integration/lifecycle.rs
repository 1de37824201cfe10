//! The store's upkeep: `wharf garbage-collect` and `wharf scrub`, checked against docker,
//! Distribution 2.8.2 (its server and its own `garbage-collect`), damage and races.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use reqwest::blocking::Client;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_oci::Digest;

use crate::harness::{
    docker_pushed, docker_rmi, docker_runs, header, http_client as client, require, run,
    Distribution, Wharf, WHARF,
};

/// A small image pushed over HTTP: its tag, manifest digest and blobs with their bytes.
pub struct Pushed {
    pub repo: String,
    pub tag: String,
    pub manifest: Digest,
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

pub fn push_blob(c: &Client, base: &str, repo: &str, data: &[u8]) -> Result<Digest, String> {
    let d = Digest::sha256_of(data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(data.to_vec())
        .send()
        .map_err(|e| e.to_string())?;
    match r.status() {
        StatusCode::CREATED => Ok(d),
        s => Err(format!("blob push: {s} {:?}", r.text())),
    }
}

pub fn image_manifest(config: &Digest, config_len: usize, layers: &[(Digest, usize)]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": layers,
    }))
    .unwrap()
}

pub fn put_manifest(
    c: &Client,
    base: &str,
    repo: &str,
    reference: &str,
    body: &[u8],
) -> Result<Digest, String> {
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header(CONTENT_TYPE, "application/vnd.oci.image.manifest.v1+json")
        .body(body.to_vec())
        .send()
        .map_err(|e| e.to_string())?;
    match r.status() {
        StatusCode::CREATED => Ok(header(&r, "docker-content-digest").parse().unwrap()),
        s => Err(format!("manifest put: {s} {:?}", r.text())),
    }
}

/// Push an image of `layers` distinct random layers (plus a config) as `repo:tag`.
pub fn push_image(
    c: &Client,
    base: &str,
    repo: &str,
    tag: &str,
    seed: u64,
    layers: usize,
) -> Result<Pushed, String> {
    let mut blobs = Vec::new();
    for i in 0..layers {
        let data = noise(
            seed * 31 + i as u64,
            512 + (seed as usize * 7 + i * 13) % 4096,
        );
        blobs.push((push_blob(c, base, repo, &data)?, data));
    }
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let config_digest = push_blob(c, base, repo, &config)?;
    let body = image_manifest(
        &config_digest,
        config.len(),
        &blobs
            .iter()
            .map(|(d, b)| (d.clone(), b.len()))
            .collect::<Vec<_>>(),
    );
    blobs.push((config_digest, config));
    let manifest = put_manifest(c, base, repo, tag, &body)?;
    blobs.push((manifest.clone(), body));
    Ok(Pushed {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        manifest,
        blobs,
    })
}

pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The tag resolves to the pushed manifest and every blob comes back with its digest.
pub fn verify_pulls(c: &Client, base: &str, p: &Pushed) {
    let r = c
        .get(format!("{base}/v2/{}/manifests/{}", p.repo, p.tag))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{base} {}:{}", p.repo, p.tag);
    assert_eq!(header(&r, "docker-content-digest"), p.manifest.to_string());
    for (d, bytes) in &p.blobs[..p.blobs.len() - 1] {
        let r = c
            .get(format!("{base}/v2/{}/blobs/{d}", p.repo))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{base} {}@{d}", p.repo);
        let got = r.bytes().unwrap();
        assert_eq!(Digest::sha256_of(&got), *d);
        assert_eq!(&got[..], &bytes[..]);
    }
}

pub fn wharf_cmd(args: &[&str]) -> Output {
    Command::new(WHARF).args(args).output().expect("run wharf")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `root` as if written two hours ago: an old store, past any grace.
pub fn age_store(root: &Path) {
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    for entry in walk(root) {
        let f = std::fs::File::open(&entry).unwrap();
        f.set_modified(old).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The blob digests a collector's output names on lines containing `marker`.
fn named_blobs(out: &str, marker: &str) -> BTreeSet<String> {
    out.lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("sha256:")))
        .map(|w| w.trim_end_matches([',', ')']).to_owned())
        .collect()
}

fn distribution_gc(root: &Path, dry_run: bool) -> String {
    require("docker-registry", "docker-registry");
    let config = root.join("..").join(format!(
        "dist-gc-{}.yml",
        root.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            root.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("docker-registry");
    cmd.arg("garbage-collect");
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.arg(&config).output().unwrap();
    assert!(
        out.status.success(),
        "registry garbage-collect: {}",
        text(&out)
    );
    text(&out)
}

#[test]
fn garbage_collect_frees_what_nothing_reaches_and_docker_and_distribution_still_pull_the_rest() {
    let w = Wharf::start();
    let c = client();
    let base = w.url();
    // Two docker images that stay tagged, and HTTP images of which one loses its tag.
    let kept_docker = [
        docker_pushed(&w.host(), "gc/app", "gc-marker-1"),
        docker_pushed(&w.host(), "gc/tool", "gc-marker-2"),
    ];
    let kept = push_image(&c, &base, "gc/http", "v1", 1, 3).unwrap();
    let dropped = push_image(&c, &base, "gc/http", "old", 2, 3).unwrap();
    let r = c
        .delete(format!("{base}/v2/gc/http/manifests/{}", dropped.manifest))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A blob pushed and never used.
    let orphan = push_blob(&c, &base, "gc/orphans", &noise(99, 3000)).unwrap();
    age_store(&w.root);

    // On a copy never collected, wharf's dry run and Distribution's name the same blobs.
    let copy = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(w.root.join("docker"))
        .arg(copy.path()));
    let theirs = named_blobs(
        &distribution_gc(copy.path(), true),
        "blob eligible for deletion",
    );
    let out = wharf_cmd(&[
        "garbage-collect",
        "--dry-run",
        "--root",
        &copy.path().display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let ours = named_blobs(&text(&out), "blob eligible for deletion");
    assert_eq!(
        ours, theirs,
        "wharf and Distribution disagree on what is garbage"
    );
    assert!(ours.contains(&orphan.to_string()));
    assert!(ours.contains(&dropped.manifest.to_string()));

    // The real run, while the server serves.
    let out = wharf_cmd(&["garbage-collect", "--root", &w.root.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let deleted = named_blobs(&text(&out), "blob deleted");
    assert_eq!(deleted, ours, "{}", text(&out));
    assert!(text(&out).contains(" freed;"), "{}", text(&out));
    for (d, _) in &dropped.blobs {
        assert!(!w
            .root
            .join(format!(
                "docker/registry/v2/blobs/sha256/{}/{}",
                &d.hex()[..2],
                d.hex()
            ))
            .exists());
    }

    // Everything tagged still pulls: with docker, and from Distribution on the same root.
    verify_pulls(&c, &base, &kept);
    for image in &kept_docker {
        docker_runs(
            image,
            if image.contains("app") {
                "gc-marker-1"
            } else {
                "gc-marker-2"
            },
        );
        docker_rmi(&[image]);
    }
    let d = Distribution::start_on(&w.root);
    verify_pulls(&c, &d.url(), &kept);
    drop(d);
    // Distribution's own collector finds nothing more; scrub finds nothing wrong.
    let theirs_after = named_blobs(
        &distribution_gc(&w.root, true),
        "blob eligible for deletion",
    );
    assert!(
        theirs_after.is_empty(),
        "Distribution would still delete {theirs_after:?}"
    );
    let out = wharf_cmd(&["scrub", "--root", &w.root.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_fresh_push_is_held_by_the_grace_period_and_untagged_manifests_go_only_when_asked() {
    let w = Wharf::start();
    let c = client();
    let base = w.url();
    let kept = push_image(&c, &base, "grace/app", "v1", 3, 2).unwrap();
    let untagged = push_image(&c, &base, "grace/app", "v2", 4, 2).unwrap();
    let r = c
        .delete(format!("{base}/v2/grace/app/manifests/v2"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "a tag delete");
    let root = w.root.display().to_string();

    // Young: nothing goes, and the report says what it held.
    let out = wharf_cmd(&[
        "garbage-collect",
        "--delete-untagged",
        "--json",
        "--root",
        &root,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["blobs"], json!([]), "{report}");
    assert_eq!(report["manifests"], json!([]), "{report}");

    // Old, without --delete-untagged: the untagged manifest and its blobs stay, as in registry:2.
    age_store(&w.root);
    let out = wharf_cmd(&["garbage-collect", "--json", "--root", &root]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["blobs"], json!([]), "{report}");
    verify_pulls(&c, &base, &kept);

    // With it: the untagged manifest goes, its blobs with it; the tagged one stays.
    let out = wharf_cmd(&["garbage-collect", "-m", "--json", "--root", &root]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["manifests"][0]["digest"],
        json!(untagged.manifest.to_string()),
        "{report}"
    );
    assert_eq!(
        report["blobs"].as_array().unwrap().len(),
        untagged.blobs.len(),
        "{report}"
    );
    let r = c
        .get(format!(
            "{base}/v2/grace/app/manifests/{}",
            untagged.manifest
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    verify_pulls(&c, &base, &kept);
}

#[test]
fn scrub_names_each_kind_of_damage_and_repair_leaves_a_clean_store() {
    let w = Wharf::start();
    let c = client();
    let base = w.url();
    let images: Vec<Pushed> = (0..4)
        .map(|i| push_image(&c, &base, &format!("scrub/r{i}"), "v1", 10 + i, 2).unwrap())
        .collect();
    let blob_path = |d: &Digest| {
        w.root.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{}/data",
            &d.hex()[..2],
            d.hex()
        ))
    };
    // A corrupt layer, a deleted layer, a dangling tag, a truncated manifest.
    let corrupt = &images[0].blobs[0].0;
    std::fs::write(blob_path(corrupt), b"not what was pushed").unwrap();
    let deleted = &images[1].blobs[0].0;
    std::fs::remove_file(blob_path(deleted)).unwrap();
    let nowhere = Digest::sha256_of(b"no such manifest");
    let tag_dir = w
        .root
        .join("docker/registry/v2/repositories/scrub/r2/_manifests/tags/dangling/current");
    std::fs::create_dir_all(&tag_dir).unwrap();
    std::fs::write(tag_dir.join("link"), nowhere.to_string()).unwrap();
    let truncated = &images[3].manifest;
    let bytes = std::fs::read(blob_path(truncated)).unwrap();
    std::fs::write(blob_path(truncated), &bytes[..bytes.len() / 2]).unwrap();
    let root = w.root.display().to_string();

    let out = wharf_cmd(&["scrub", "--root", &root]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "problems make scrub fail: {}",
        text(&out)
    );
    let found = text(&out);
    for expected in [
        format!("(blobs): problem: corrupt blob {corrupt}"),
        format!(
            "scrub/r0: problem: manifest incomplete {}: needs blob {corrupt}",
            images[0].manifest
        ),
        format!(
            "scrub/r1: problem: manifest incomplete {}: needs blob {deleted}",
            images[1].manifest
        ),
        format!("scrub/r1: problem: link to missing blob {deleted}"),
        format!("scrub/r2: problem: dangling tag dangling: points at {nowhere}"),
        format!("(blobs): problem: corrupt blob {truncated}"),
    ] {
        assert!(
            found.contains(&expected),
            "missing {expected:?} in:\n{found}"
        );
    }

    let out = wharf_cmd(&["scrub", "--repair", "--json", "--root", &root]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let moved = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["repaired"]
                .as_str()
                .is_some_and(|r| r.starts_with("moved aside"))
        })
        .count();
    assert_eq!(
        moved, 2,
        "the corrupt layer and the truncated manifest are kept aside: {report}"
    );
    let quarantine = w.root.join("docker/registry/v2/_wharf/quarantine");
    assert_eq!(
        std::fs::read(quarantine.join(format!("sha256-{}", corrupt.hex()))).unwrap(),
        b"not what was pushed"
    );

    let out = wharf_cmd(&["scrub", "--json", "--root", &root]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !matches!(f["kind"].as_str(), Some("orphan_blob" | "stale_upload")))
        .collect();
    assert!(
        problems.is_empty(),
        "a second scrub still finds {problems:?}"
    );
    // The undamaged image is untouched.
    verify_pulls(&c, &base, &images[2]);
}

#[test]
fn garbage_collect_and_scrub_refuse_what_is_not_a_registry_and_name_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a registry").unwrap();
    let root = dir.path().display().to_string();
    for cmd in [
        &["garbage-collect", "--root", &root][..],
        &["scrub", "--root", &root],
    ] {
        let out = wharf_cmd(cmd);
        assert!(!out.status.success());
        assert!(
            text(&out).contains("is not a registry root: it has no docker/registry/v2 directory"),
            "{}",
            text(&out)
        );
    }
    let out = wharf_cmd(&["garbage-collect", "--root", "/nonexistent/wharf-root"]);
    assert!(
        text(&out).contains("/nonexistent/wharf-root does not exist"),
        "{}",
        text(&out)
    );
    assert!(dir.path().join("notes.txt").exists());

    // A manifest whose bytes cannot be read stops the collection before anything goes.
    let w = Wharf::start();
    let c = client();
    let kept = push_image(&c, &w.url(), "bad/app", "v1", 20, 2).unwrap();
    let orphan = push_blob(&c, &w.url(), "bad/app", &noise(21, 100)).unwrap();
    age_store(&w.root);
    let data = w.root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{}/data",
        &kept.manifest.hex()[..2],
        kept.manifest.hex()
    ));
    std::fs::remove_file(&data).unwrap();
    std::fs::create_dir(&data).unwrap(); // reads fail: "Is a directory"
    let out = wharf_cmd(&["garbage-collect", "--root", &w.root.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("nothing more deleted"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(&kept.manifest.hex()[..12]) || text(&out).contains("Is a directory"),
        "{}",
        text(&out)
    );
    let orphan_data = w.root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{}/data",
        &orphan.hex()[..2],
        orphan.hex()
    ));
    assert!(
        orphan_data.exists(),
        "nothing is deleted when the mark cannot finish"
    );
}

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
                        Err(e)
                            if ["BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID"]
                                .iter()
                                .any(|c| e.contains(c)) =>
                        {
                            failed += 1
                        }
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
fn mount_and_push(
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

/// A read-only bind mount of a directory, unmounted when dropped.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn mount(source: &Path, at: &Path) -> ReadOnly {
        require("mount", "mount");
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount").arg("--bind").arg(source).arg(at));
        let ro = ReadOnly(at.to_owned());
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(at));
        ro
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn on_a_read_only_root_gc_refuses_clearly_and_dry_run_and_scrub_still_report() {
    let w = Wharf::start();
    let c = client();
    let kept = push_image(&c, &w.url(), "ro/app", "v1", 30, 2).unwrap();
    let orphan = push_blob(&c, &w.url(), "ro/app", &noise(31, 100)).unwrap();
    age_store(&w.root);
    let mnt = tempfile::tempdir().unwrap();
    let ro = ReadOnly::mount(&w.root, &mnt.path().join("ro"));
    let root = ro.0.display().to_string();

    let out = wharf_cmd(&["garbage-collect", "--root", &root]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("garbage collection stopped, nothing more deleted")
            && said.contains("Read-only file system")
            && said.contains("writable storage root"),
        "{said}"
    );
    let out = wharf_cmd(&["garbage-collect", "--dry-run", "--root", &root]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(named_blobs(&text(&out), "eligible").contains(&orphan.to_string()));
    let out = wharf_cmd(&["scrub", "--root", &root]);
    assert!(out.status.success(), "{}", text(&out));
    drop(ro);
    verify_pulls(&c, &w.url(), &kept);
    assert!(c
        .head(format!("{}/v2/ro/app/blobs/{orphan}", w.url()))
        .send()
        .unwrap()
        .status()
        .is_success());
}
