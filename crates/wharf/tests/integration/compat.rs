//! registry:2 compatibility of the storage: Distribution 2.8.2 and wharf serving each other's directories; crash safety.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::blocking::{Body, Client, Response};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_oci::Digest;

use crate::harness::{
    add_query, build_busybox_image, docker_rmi, header, http_client as client, require,
    require_docker, run, signal, unique, wait_for_exit, Distribution, Wharf,
};

const ACCEPT_ANY_MANIFEST: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

fn skopeo(args: &[&str]) -> String {
    run(Command::new("skopeo").args(args))
}

pub(crate) fn get_json(url: &str) -> Value {
    let r = client().get(url).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {url}");
    r.json().unwrap()
}

/// `/v2/_catalog` of the registry at `base`.
pub(crate) fn catalog(base: &str) -> Value {
    get_json(&format!("{base}/v2/_catalog"))["repositories"].clone()
}

/// `/v2/<repo>/tags/list`, sorted: Distribution 2.8.2 lists tags in directory order.
pub(crate) fn tags(base: &str, repo: &str) -> Value {
    let body = get_json(&format!("{base}/v2/{repo}/tags/list"));
    assert_eq!(body["name"], repo);
    let mut tags: Vec<String> = serde_json::from_value(body["tags"].clone()).unwrap();
    tags.sort();
    json!(tags)
}

/// The digest a registry serves for `repo:reference`, checked against the bytes it sends.
pub(crate) fn manifest_digest(base: &str, repo: &str, reference: &str) -> String {
    let r = client()
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("accept", ACCEPT_ANY_MANIFEST)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {base} {repo}:{reference}");
    let digest = header(&r, "docker-content-digest");
    let body = r.bytes().unwrap();
    assert_eq!(
        Digest::sha256_of(&body).to_string(),
        digest,
        "{repo}:{reference}: the bytes served are not the digest announced"
    );
    digest
}

/// Copy `src` (a `docker://` reference) into a `dir:` layout with skopeo, which verifies
/// every blob against its digest, and return the digest of the manifest it fetched.
pub(crate) fn skopeo_pull(src: &str, into: &Path, all: bool) -> String {
    let dest = format!("dir:{}", into.display());
    let mut args = vec!["copy", "--src-tls-verify=false", "--preserve-digests"];
    if all {
        args.push("--all");
    }
    args.extend([src, dest.as_str()]);
    skopeo(&args);
    Digest::sha256_of(&std::fs::read(into.join("manifest.json")).unwrap()).to_string()
}

/// `skopeo inspect`'s view of a remote image: its digest and tag list.
fn skopeo_inspect(reference: &str) -> Value {
    serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", reference])).unwrap()
}

/// A small deterministic generator (xorshift64*), so the tests need no extra crates.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A hand-written OCI image layout: one image per platform, each a single uncompressed
/// layer holding `/marker`, and an index over them. `index.json` names the index `multi`
/// and each image by its architecture.
struct OciLayout {
    dir: PathBuf,
    index: Digest,
    images: BTreeMap<String, Digest>,
}

impl OciLayout {
    fn build(dir: &Path, arches: &[&str]) -> OciLayout {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| -> (Digest, usize) {
            let d = Digest::sha256_of(bytes);
            std::fs::write(blobs.join(d.hex()), bytes).unwrap();
            (d, bytes.len())
        };
        let mut entries = vec![];
        let mut images = BTreeMap::new();
        for arch in arches {
            let rootfs = tempfile::tempdir().unwrap();
            std::fs::write(rootfs.path().join("marker"), format!("built for {arch}")).unwrap();
            let tar = rootfs.path().join("layer.tar");
            run(Command::new("tar")
                .arg("-C")
                .arg(rootfs.path())
                .args(["-cf"])
                .arg(&tar)
                .arg("marker"));
            let (layer, layer_len) = put(&std::fs::read(&tar).unwrap());
            let config = serde_json::to_vec(&json!({
                "architecture": arch,
                "os": "linux",
                "config": {"Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": [layer]},
            }))
            .unwrap();
            let (config, config_len) = put(&config);
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_len}],
            }))
            .unwrap();
            let (manifest, manifest_len) = put(&manifest);
            entries.push((arch.to_string(), manifest.clone(), manifest_len));
            images.insert(arch.to_string(), manifest);
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries.iter().map(|(arch, d, n)| json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d,
                "size": n,
                "platform": {"architecture": arch, "os": "linux"},
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let (index, index_len) = put(&index);
        let mut refs = vec![json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index,
            "size": index_len,
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        })];
        for (arch, d, n) in &entries {
            refs.push(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d,
                "size": n,
                "annotations": {"org.opencontainers.image.ref.name": arch},
            }));
        }
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": refs})).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        OciLayout {
            dir: dir.to_owned(),
            index,
            images,
        }
    }

    fn reference(&self, name: &str) -> String {
        format!("oci:{}:{name}", self.dir.display())
    }
}

/// A blob uploaded in two PATCHes and a PUT, as a client without skopeo would.
fn chunked_upload(base: &str, repo: &str, data: &[u8]) -> Digest {
    let c = client();
    let digest = Digest::sha256_of(data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut loc = header(&r, "location");
    let half = data.len() / 2;
    for (start, chunk) in [(0, &data[..half]), (half, &data[half..])] {
        let url = if loc.starts_with('/') {
            format!("{base}{loc}")
        } else {
            loc.clone()
        };
        let r = c
            .patch(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(
                CONTENT_RANGE,
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        loc = header(&r, "location");
    }
    let url = if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        loc
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = c.put(format!("{url}{sep}digest={digest}")).send().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    digest
}

fn get_blob(base: &str, repo: &str, digest: &Digest) -> Vec<u8> {
    let r = client()
        .get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "GET {base} blob {repo}@{digest}"
    );
    r.bytes().unwrap().to_vec()
}

#[test]
fn distribution_serves_what_wharf_wrote() {
    require("skopeo", "skopeo");
    require_docker();
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let local = build_busybox_image(&unique("wharf-compat-src:"), "written by wharf");
    let layout = OciLayout::build(&work.path().join("layout"), &["amd64", "arm64"]);

    let mut w = Wharf::start_on(root.path());
    let daemon = format!("docker-daemon:{local}");
    let to_wharf = |name: &str| format!("docker://{}/{name}", w.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &daemon,
        &to_wharf("compat/app:v2s2"),
    ]);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        &daemon,
        &to_wharf("compat/app:oci"),
    ]);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--all",
        "--preserve-digests",
        &layout.reference("multi"),
        &to_wharf("compat/multi:index"),
    ]);
    // A repository with a blob and nothing else: Distribution lists it (it lists every
    // directory with `_layers`). One with only an unfinished upload: nobody lists it.
    let blob_data = Rng::new(seed()).bytes(300_000);
    let blob = chunked_upload(&w.url(), "compat/blob-only", &blob_data);
    let r = client()
        .post(format!("{}/v2/compat/upload-only/blobs/uploads/", w.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    docker_rmi(&[&local]);

    let written = [
        ("compat/app", "v2s2"),
        ("compat/app", "oci"),
        ("compat/multi", "index"),
    ];
    let digests: Vec<String> = written
        .iter()
        .map(|(repo, tag)| manifest_digest(&w.url(), repo, tag))
        .collect();
    assert_eq!(digests[2], layout.index.to_string());
    let wharf_catalog = catalog(&w.url());
    let status = w.stop();
    assert!(status.success(), "wharf exited with {status}");

    let d = Distribution::start_on(root.path());
    assert_eq!(
        catalog(&d.url()),
        wharf_catalog,
        "Distribution and wharf list the same repositories on one root"
    );
    assert_eq!(
        catalog(&d.url()),
        json!(["compat/app", "compat/blob-only", "compat/multi"])
    );
    assert_eq!(tags(&d.url(), "compat/app"), json!(["oci", "v2s2"]));
    assert_eq!(tags(&d.url(), "compat/multi"), json!(["index"]));
    for ((repo, tag), digest) in written.iter().zip(&digests) {
        assert_eq!(
            &manifest_digest(&d.url(), repo, tag),
            digest,
            "{repo}:{tag}"
        );
        let reference = format!("docker://{}/{repo}:{tag}", d.host());
        let inspected = skopeo_inspect(&reference);
        // For the index skopeo reports the digest of the platform image it picked.
        if *tag != "index" {
            assert_eq!(inspected["Digest"], digest.as_str(), "{repo}:{tag}");
        }
        let out = work
            .path()
            .join(format!("{}-{tag}", repo.replace('/', "_")));
        assert_eq!(
            &skopeo_pull(&reference, &out, *tag == "index"),
            digest,
            "{repo}:{tag} pulled from Distribution"
        );
    }
    // Each platform image of the index, by digest.
    for image in layout.images.values() {
        assert_eq!(
            manifest_digest(&d.url(), "compat/multi", &image.to_string()),
            image.to_string()
        );
    }
    assert_eq!(get_blob(&d.url(), "compat/blob-only", &blob), blob_data);
}

#[test]
fn wharf_serves_what_distribution_wrote_and_distribution_sees_wharfs_tags() {
    require("skopeo", "skopeo");
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = OciLayout::build(&work.path().join("layout"), &["amd64", "arm64"]);

    let d = Distribution::start_on(root.path());
    let to_dist = |name: &str| format!("docker://{}/{name}", d.host());
    let copy = |extra: &[&str], src: &str, dest: &str| {
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        args.extend(extra);
        args.extend([src, dest]);
        skopeo(&args);
    };
    copy(
        &["--all", "--preserve-digests"],
        &layout.reference("multi"),
        &to_dist("compat/d2w:multi"),
    );
    copy(
        &["--preserve-digests"],
        &layout.reference("amd64"),
        &to_dist("compat/d2w:v1"),
    );
    // A second tag on the same image, and the image again in Docker's format.
    copy(
        &["--preserve-digests"],
        &layout.reference("amd64"),
        &to_dist("compat/d2w:latest"),
    );
    copy(
        &["--format", "v2s2"],
        &layout.reference("arm64"),
        &to_dist("compat/other:docker"),
    );
    // An upload Distribution started and left half done.
    let data = Rng::new(seed()).bytes(1 << 20);
    let digest = Digest::sha256_of(&data);
    let c = client();
    let r = c
        .post(format!("{}/v2/compat/d2w/blobs/uploads/", d.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let upload_id = header(&r, "docker-upload-uuid");
    let r = c
        .patch(header(&r, "location"))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(data[..400_000].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-399999");

    let refs = [
        ("compat/d2w", "multi"),
        ("compat/d2w", "v1"),
        ("compat/d2w", "latest"),
        ("compat/other", "docker"),
    ];
    let digests: Vec<String> = refs
        .iter()
        .map(|(repo, tag)| manifest_digest(&d.url(), repo, tag))
        .collect();
    assert_eq!(digests[0], layout.index.to_string());
    assert_eq!(digests[1], layout.images["amd64"].to_string());
    assert_eq!(digests[2], digests[1]);
    let dist_catalog = catalog(&d.url());
    drop(d);

    let mut w = Wharf::start_on(root.path());
    assert_eq!(catalog(&w.url()), dist_catalog);
    assert_eq!(catalog(&w.url()), json!(["compat/d2w", "compat/other"]));
    assert_eq!(
        tags(&w.url(), "compat/d2w"),
        json!(["latest", "multi", "v1"])
    );
    assert_eq!(tags(&w.url(), "compat/other"), json!(["docker"]));
    for ((repo, tag), digest) in refs.iter().zip(&digests) {
        assert_eq!(
            &manifest_digest(&w.url(), repo, tag),
            digest,
            "{repo}:{tag}"
        );
        let reference = format!("docker://{}/{repo}:{tag}", w.host());
        let out = work
            .path()
            .join(format!("{}-{tag}", repo.replace('/', "_")));
        assert_eq!(
            &skopeo_pull(&reference, &out, *tag == "multi"),
            digest,
            "{repo}:{tag} pulled from wharf"
        );
    }
    let marker = |dir: &str| -> String {
        // The single layer of the amd64 image, as skopeo saved it, holds the marker.
        let m: Value = serde_json::from_slice(
            &std::fs::read(work.path().join(dir).join("manifest.json")).unwrap(),
        )
        .unwrap();
        let layer = m["layers"][0]["digest"].as_str().unwrap();
        let hex = layer.trim_start_matches("sha256:");
        run(Command::new("tar")
            .arg("-xOf")
            .arg(work.path().join(dir).join(hex))
            .arg("marker"))
    };
    assert_eq!(marker("compat_d2w-v1"), "built for amd64");
    let raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/compat/other:docker", w.host()),
    ]))
    .unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let inspected = skopeo_inspect(&format!("docker://{}/compat/d2w:v1", w.host()));
    assert_eq!(inspected["Digest"], digests[1].as_str());
    assert_eq!(inspected["RepoTags"], json!(["latest", "multi", "v1"]));

    // wharf finishes the upload Distribution started.
    let loc = format!("{}/v2/compat/d2w/blobs/uploads/{upload_id}", w.url());
    let r = c.get(&loc).send().unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-399999");
    let r = c
        .patch(&loc)
        .header(CONTENT_RANGE, format!("400000-{}", data.len() - 1))
        .body(data[400_000..].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.put(add_query(&loc, "digest", &digest)).send().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(get_blob(&w.url(), "compat/d2w", &digest), data);

    // wharf adds a tag to Distribution's repository (skopeo finds every blob present).
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--all",
        "--preserve-digests",
        &format!("docker://{}/compat/d2w:multi", w.host()),
        &format!("docker://{}/compat/d2w:added", w.host()),
    ]);
    let status = w.stop();
    assert!(status.success(), "wharf exited with {status}");

    let d = Distribution::start_on(root.path());
    assert_eq!(
        tags(&d.url(), "compat/d2w"),
        json!(["added", "latest", "multi", "v1"])
    );
    assert_eq!(manifest_digest(&d.url(), "compat/d2w", "added"), digests[0]);
    assert_eq!(
        skopeo_pull(
            &format!("docker://{}/compat/d2w:added", d.host()),
            &work.path().join("added-from-distribution"),
            true
        ),
        digests[0]
    );
    // ...and serves the blob whose upload wharf finished.
    assert_eq!(get_blob(&d.url(), "compat/d2w", &digest), data);
}

/// What the uploading threads of the crash test share with the test.
#[derive(Default)]
struct CrashLog {
    /// (repo, digest, size) of every blob the server answered 201 for.
    committed: Mutex<Vec<(String, Digest, usize)>>,
    /// Requests that failed because the server died under them.
    interrupted: AtomicUsize,
    /// Uploads continued after a restart from the offset the server reported.
    resumed: AtomicUsize,
    /// Uploads the server no longer knew after a restart (404 BLOB_UPLOAD_UNKNOWN): killed
    /// between committing and answering.
    forgotten: AtomicUsize,
    stop: AtomicBool,
}

/// Retry `GET /v2/` until the server answers (it is being restarted).
fn wait_up(c: &Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if c.get(format!("{base}/v2/"))
            .send()
            .is_ok_and(|r| r.status() == StatusCode::OK)
        {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("{base} did not come back within 30 s");
}

/// The length an upload's `Range: 0-<last>` reports; `0-0` is empty (or one byte).
fn range_len(r: &Response) -> usize {
    let range = header(r, "range");
    let (start, end) = range
        .split_once('-')
        .unwrap_or_else(|| panic!("bad Range {range:?}"));
    assert_eq!(start, "0", "Range {range:?}");
    let end: usize = end.parse().unwrap();
    if end == 0 {
        0
    } else {
        end + 1
    }
}

/// Where the upload at `loc` really is after the server died under a PATCH or (when
/// `committing`) a PUT: Some(length) to resume, or None when the server answers that it does
/// not know the upload.
fn upload_status(
    c: &Client,
    base: &str,
    loc: &str,
    log: &CrashLog,
    committing: bool,
) -> Option<usize> {
    loop {
        wait_up(c, base);
        let r = match c.get(loc).send() {
            Ok(r) => r,
            Err(_) => continue, // killed again
        };
        match r.status() {
            StatusCode::NO_CONTENT => {
                log.resumed.fetch_add(1, Ordering::Relaxed);
                return Some(range_len(&r));
            }
            StatusCode::NOT_FOUND => {
                let body: Value = r.json().unwrap();
                assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN", "{body}");
                // The store keeps uploads across restarts, so only a commit can have ended it:
                // the kill came after the commit and before its 201.
                assert!(
                    committing,
                    "{loc}: an upload in progress was lost by a restart"
                );
                log.forgotten.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            s => panic!("GET {loc} after a crash answered {s}"),
        }
    }
}

/// Upload `data` in chunks, surviving any number of server deaths: after each, ask where
/// the upload is and carry on from there, or start over if the server forgot it. Returns
/// once the server answered 201.
fn upload_through_crashes(
    c: &Client,
    base: &str,
    repo: &str,
    data: &[u8],
    chunk: usize,
    rng: &mut Rng,
    log: &CrashLog,
) {
    let digest = Digest::sha256_of(data);
    let interrupted = || {
        log.interrupted.fetch_add(1, Ordering::Relaxed);
    };
    'fresh: loop {
        let r = match c.post(format!("{base}/v2/{repo}/blobs/uploads/")).send() {
            Ok(r) => r,
            Err(_) => {
                interrupted();
                wait_up(c, base);
                continue 'fresh;
            }
        };
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let loc = format!("{base}{}", header(&r, "location"));
        let mut offset = 0usize;
        loop {
            let end = (offset + chunk).min(data.len());
            // Now and then the last chunk travels with the PUT.
            let last_in_put = end == data.len() && rng.below(3) == 0;
            if offset == data.len() || last_in_put {
                let body = data[offset..].to_vec();
                let mut req = c.put(add_query(&loc, "digest", &digest));
                if !body.is_empty() {
                    req = req.header(CONTENT_RANGE, format!("{offset}-{}", data.len() - 1));
                }
                match req.body(body).send() {
                    Ok(r) => {
                        assert_eq!(
                            r.status(),
                            StatusCode::CREATED,
                            "PUT {loc} from {offset}: {:?}",
                            r.text()
                        );
                        assert_eq!(header(&r, "docker-content-digest"), digest.to_string());
                        log.committed.lock().unwrap().push((
                            repo.to_owned(),
                            digest.clone(),
                            data.len(),
                        ));
                        return;
                    }
                    Err(_) => {
                        interrupted();
                        match upload_status(c, base, &loc, log, true) {
                            Some(n) => offset = n,
                            None => continue 'fresh,
                        }
                    }
                }
                continue;
            }
            let r = c
                .patch(&loc)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, format!("{offset}-{}", end - 1))
                .body(data[offset..end].to_vec())
                .send();
            match r {
                Ok(r) if r.status() == StatusCode::ACCEPTED => {
                    assert_eq!(range_len(&r), end, "PATCH {loc}");
                    offset = end;
                }
                Ok(r) if r.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                    // Only after a resume from an ambiguous `0-0`: the upload holds one byte.
                    assert_eq!((offset, range_len(&r)), (0, 0), "PATCH {loc}");
                    offset = 1;
                }
                Ok(r) => panic!("PATCH {loc} at {offset}: {} {:?}", r.status(), r.text()),
                Err(_) => {
                    interrupted();
                    match upload_status(c, base, &loc, log, false) {
                        Some(n) => {
                            assert!(n <= end, "the upload grew past what was sent");
                            offset = n;
                        }
                        None => continue 'fresh,
                    }
                }
            }
        }
    }
}

/// One uploading thread: blobs of random bytes and sizes, mostly chunked, some monolithic.
fn crash_worker(id: u64, seed: u64, base: String, log: Arc<CrashLog>) {
    let c = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut rng = Rng::new(seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let repo = format!("crash/r{}", id % 4);
    let mut n = 0;
    while !log.stop.load(Ordering::Relaxed) {
        let size = (1 << 20) + rng.below(2 << 20) as usize;
        let data = rng.bytes(size);
        n += 1;
        if n % 4 == 0 {
            let digest = Digest::sha256_of(&data);
            let r = c
                .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
                .body(data.clone())
                .send();
            match r {
                Ok(r) => {
                    assert_eq!(r.status(), StatusCode::CREATED, "monolithic upload");
                    log.committed
                        .lock()
                        .unwrap()
                        .push((repo.clone(), digest, size));
                }
                Err(_) => {
                    // The server died: nothing to resume, the next blob starts afresh.
                    log.interrupted.fetch_add(1, Ordering::Relaxed);
                    wait_up(&c, &base);
                }
            }
        } else {
            let chunk = (256 << 10) + rng.below(768 << 10) as usize;
            upload_through_crashes(&c, &base, &repo, &data, chunk, &mut rng, &log);
        }
    }
}

/// Every `blobs/sha256/<xx>/<hex>/data` under `root` hashes to `<hex>`, except those named in
/// `verified` (their content was just checked through the API, which reads the same file).
/// Returns how many blob files there are.
fn check_blob_files(root: &Path, verified: &HashSet<String>) -> usize {
    let base = root.join("docker/registry/v2/blobs/sha256");
    let Ok(prefixes) = std::fs::read_dir(&base) else {
        return 0;
    };
    let mut count = 0;
    for prefix in prefixes {
        let prefix = prefix.unwrap();
        for dir in std::fs::read_dir(prefix.path()).unwrap() {
            let dir = dir.unwrap();
            let hex = dir.file_name().to_string_lossy().into_owned();
            assert!(
                hex.starts_with(&*prefix.file_name().to_string_lossy()),
                "{hex} under {:?}",
                prefix.file_name()
            );
            let path = dir.path().join("data");
            if !path.exists() {
                continue;
            }
            count += 1;
            if verified.contains(&hex) {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            assert_eq!(
                Digest::sha256_of(&data).hex(),
                hex,
                "blob file {} is not its digest's content ({} bytes)",
                path.display(),
                data.len()
            );
        }
    }
    count
}

/// Many clients upload concurrently while the server is killed with SIGKILL again and again.
/// The data is random, sizes 1-3 MiB, mostly chunked uploads (which resume after each
/// crash from where the server says they are), some monolithic. Debug builds hash slowly,
/// so the volume is kept to what ~20 s allow.
#[test]
fn kill_9_during_concurrent_uploads_loses_no_acknowledged_blob_and_shows_no_torn_one() {
    const THREADS: u64 = 16;
    const KILLS: usize = 5;
    let started = Instant::now();
    let mut w = Wharf::start();
    let base = w.url();
    let seed = seed();
    println!("crash test seed {seed}");
    let log = Arc::new(CrashLog::default());
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let (base, log) = (base.clone(), log.clone());
            thread::spawn(move || crash_worker(i, seed, base, log))
        })
        .collect();
    let mut rng = Rng::new(seed);
    let c = client();
    for kill in 0..KILLS {
        thread::sleep(Duration::from_millis(400 + rng.below(800)));
        if workers.iter().any(|t| t.is_finished()) {
            break; // a worker panicked: stop and report it below
        }
        let acknowledged = log.committed.lock().unwrap().clone();
        w.crash_and_restart();
        // Everything acknowledged before the kill is there, whole, after the restart.
        for (repo, digest, size) in &acknowledged {
            let r = c
                .head(format!("{base}/v2/{repo}/blobs/{digest}"))
                .send()
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "{repo}@{digest} after kill {kill}"
            );
            assert_eq!(header(&r, "content-length"), size.to_string());
        }
        println!(
            "kill {kill} at {:.1} s: the {} blobs acknowledged before it are all there",
            started.elapsed().as_secs_f64(),
            acknowledged.len()
        );
    }
    log.stop.store(true, Ordering::Relaxed);
    for t in workers {
        if let Err(panic) = t.join() {
            std::panic::resume_unwind(panic);
        }
    }

    // Every acknowledged blob reads back whole, with its digest.
    let committed = log.committed.lock().unwrap().clone();
    let mut verified = HashSet::new();
    for (repo, digest, size) in &committed {
        let body = get_blob(&base, repo, digest);
        assert_eq!(body.len(), *size, "{repo}@{digest}");
        assert_eq!(&Digest::sha256_of(&body), digest, "{repo}@{digest}");
        verified.insert(digest.hex().to_owned());
    }
    // Whatever the kills left behind: no blob file that is not exactly its digest. (Blob
    // files are never rewritten, so one torn by any kill would still be torn now.)
    let files = check_blob_files(&w.root, &verified);
    assert!(files >= verified.len());
    let interrupted = log.interrupted.load(Ordering::Relaxed);
    println!(
        "{} blobs acknowledged and read back, {files} blob files intact; {interrupted} \
         requests cut by kills, {} uploads resumed, {} forgotten; {:.1} s",
        committed.len(),
        log.resumed.load(Ordering::Relaxed),
        log.forgotten.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    assert!(
        committed.len() >= THREADS as usize,
        "too little was uploaded to mean much"
    );
    assert!(
        interrupted >= KILLS,
        "the kills should have cut requests in flight"
    );
    assert!(
        log.resumed.load(Ordering::Relaxed) > 0,
        "some upload should have been resumed after a kill"
    );
    // And scrub, which re-hashes everything and checks every link, finds nothing wrong.
    let out = std::process::Command::new(crate::harness::WHARF)
        .args(["scrub", "--json", "--root"])
        .arg(&w.root)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "scrub after the kills: {report}");
    assert!(report["blobs_checked"].as_u64().unwrap() >= committed.len() as u64);
}

/// A request body that trickles: `chunk` bytes at a time with a pause before each, counting
/// what it has handed out.
struct SlowReader {
    data: Arc<Vec<u8>>,
    pos: usize,
    chunk: usize,
    pause: Duration,
    sent: Arc<AtomicUsize>,
}

impl Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.data.len() {
            return Ok(0);
        }
        if self.pos.is_multiple_of(self.chunk) {
            thread::sleep(self.pause);
        }
        let boundary = (self.pos / self.chunk + 1) * self.chunk;
        let n = buf
            .len()
            .min(boundary - self.pos)
            .min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        self.sent.store(self.pos, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn sigterm_finishes_the_upload_in_flight_refuses_new_connections_and_exits_0() {
    const SIZE: usize = 64 << 20;
    let mut w = Wharf::start();
    let c = client();
    let r = c
        .post(format!("{}/v2/graceful/big/blobs/uploads/", w.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let path = header(&r, "location");
    let data = Arc::new(Rng::new(seed()).bytes(SIZE));
    let digest = Digest::sha256_of(&data);
    let sent = Arc::new(AtomicUsize::new(0));
    let reader = SlowReader {
        data: data.clone(),
        pos: 0,
        chunk: 1 << 20,
        pause: Duration::from_millis(40),
        sent: sent.clone(),
    };
    let url = format!("{}{path}", w.url());
    let upload = thread::spawn(move || {
        let r = client()
            .patch(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_RANGE, format!("0-{}", SIZE - 1))
            .header(CONTENT_LENGTH, SIZE)
            .body(Body::sized(reader, SIZE as u64))
            .send()
            .expect("the upload in flight is answered");
        (r.status(), header(&r, "range"))
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    while sent.load(Ordering::Relaxed) < 8 << 20 {
        assert!(Instant::now() < deadline, "the upload never got going");
        thread::sleep(Duration::from_millis(5));
    }
    signal(&w.child, "TERM");
    thread::sleep(Duration::from_millis(300));
    // New connections are refused at once, while the upload is still streaming.
    let refused = TcpStream::connect(("127.0.0.1", w.port));
    let in_flight = sent.load(Ordering::Relaxed);
    assert!(
        in_flight < SIZE,
        "the upload finished before the check; make it slower"
    );
    match refused {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a new connection was accepted after SIGTERM"),
    }
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "wharf exited with the upload in flight"
    );

    let (status, range) = upload.join().unwrap();
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(range, format!("0-{}", SIZE - 1));
    let exit = wait_for_exit(&mut w.child, Duration::from_secs(20))
        .expect("wharf did not exit after its last request");
    assert_eq!(exit.code(), Some(0), "wharf exited with {exit}");

    // Every byte of the upload is on disk: a new wharf on the same root finishes it.
    let w2 = Wharf::start_on(&w.root);
    let r = c
        .put(add_query(&format!("{}{path}", w2.url()), "digest", &digest))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text());
    let body = get_blob(&w2.url(), "graceful/big", &digest);
    assert_eq!(body.len(), SIZE);
    assert!(body == *data);
}
