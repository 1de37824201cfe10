//! Images pushed and checked over plain HTTP, and the commands the upkeep tests run:
//! small, fast and exact about every digest, for tests that push hundreds of images.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use reqwest::blocking::Client;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_oci::Digest;

use crate::harness::{header, require, WHARF};

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

/// `wharf <args> <config>` with `env` added, which must succeed; its output.
pub fn wharf_ok_with(args: &[&str], config: &Path, env: &[(String, String)]) -> String {
    let out = Command::new(WHARF)
        .args(args)
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run wharf");
    assert!(out.status.success(), "wharf {args:?}: {}", text(&out));
    text(&out)
}

/// A push refused because its blobs were collected before its manifest arrived: the clean
/// failure a collector racing pushes without a grace period may cause.
pub fn refused_for_collected_blobs(error: &str) -> bool {
    ["BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID"]
        .iter()
        .any(|c| error.contains(c))
}

pub fn text(out: &Output) -> String {
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
pub fn named_blobs(out: &str, marker: &str) -> BTreeSet<String> {
    out.lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("sha256:")))
        .map(|w| w.trim_end_matches([',', ')']).to_owned())
        .collect()
}

pub fn distribution_gc(root: &Path, dry_run: bool) -> String {
    require("docker-registry", "docker-registry");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
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
    let out = cmd.arg(config.path()).output().unwrap();
    assert!(
        out.status.success(),
        "registry garbage-collect: {}",
        text(&out)
    );
    text(&out)
}
