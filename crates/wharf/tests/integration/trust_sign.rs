//! `wharf key generate`, `wharf sign` and `wharf verify` against a real wharf with images
//! docker pushed: both stored forms (cosign's `.sig` tag and its OCI 1.1 referrer), a
//! multi-arch index signed once, `wharf copy --referrers`, and every bad input the issue
//! lists refused with its reason (never a crash or a 5xx).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::harness::{docker_pushed, http_client, push_manifest_list, unique, Wharf, WHARF};

pub const PASSWORD: &str = "correct horse";

/// `wharf ARGS` in `cwd`, plain http allowed, with `COSIGN_PASSWORD` as given.
pub fn wharf_in(cwd: &Path, password: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(WHARF);
    cmd.current_dir(cwd)
        .env("DOCKER_CONFIG", cwd.join("docker-config"))
        .env_remove("REPO_USER")
        .env_remove("REPO_PASS")
        .env_remove("COSIGN_PASSWORD")
        .arg("--insecure")
        .args(args);
    if let Some(p) = password {
        cmd.env("COSIGN_PASSWORD", p);
    }
    cmd.output().unwrap()
}

/// As `wharf_in`, which must succeed: its stdout.
pub fn wharf_ok(cwd: &Path, args: &[&str]) -> String {
    let out = wharf_in(cwd, Some(PASSWORD), args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "wharf {args:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// As `wharf_in`, which must fail: its stderr (one line, the reason).
pub fn wharf_fails(cwd: &Path, password: Option<&str>, args: &[&str]) -> String {
    let out = wharf_in(cwd, password, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "wharf {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Upload a blob monolithically (POST then PUT ?digest=), as a raw client would.
pub fn put_blob(host: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let http = http_client();
    let start = http
        .post(format!("http://{host}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(start.status(), 202, "{}", start.text().unwrap());
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let url = if location.starts_with('/') {
        format!("http://{host}{location}")
    } else {
        location
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{url}{sep}digest={digest}"))
        .body(bytes.to_vec())
        .send()
        .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().unwrap());
    digest
}

/// PUT a manifest; the registry's status and body.
pub fn put_manifest(host: &str, repo: &str, reference: &str, manifest: &Value) -> (u16, String) {
    let body = serde_json::to_vec(manifest).unwrap();
    let r = http_client()
        .put(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", manifest["mediaType"].as_str().unwrap())
        .body(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

pub fn get_manifest(host: &str, repo: &str, reference: &str) -> Value {
    let r = http_client()
        .get(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{reference}");
    r.json().unwrap()
}

/// The digest of `host/repo:tag`.
pub fn digest_of(cwd: &Path, image: &str) -> String {
    wharf_ok(cwd, &["digest", image]).trim().to_owned()
}

/// A cosign signature image (one simple-signing layer per entry of `layers`) under the
/// `.sig` tag of `digest`, pushed by hand: (payload, annotation) pairs.
fn push_sig_tag(host: &str, repo: &str, digest: &str, layers: &[(Vec<u8>, String)]) {
    let mut descriptors = Vec::new();
    for (payload, signature) in layers {
        let d = put_blob(host, repo, payload);
        descriptors.push(json!({
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": d, "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": signature},
        }));
    }
    let config = b"{}";
    let config_digest = put_blob(host, repo, config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
        "layers": descriptors,
    });
    let tag = digest.replace(':', "-") + ".sig";
    let (status, body) = put_manifest(host, repo, &tag, &manifest);
    assert_eq!(status, 201, "{body}");
}

/// The first layer of the `.sig` tag of `digest`: (payload, signature annotation).
fn first_signature(host: &str, repo: &str, digest: &str) -> (Vec<u8>, String) {
    let tag = digest.replace(':', "-") + ".sig";
    let manifest = get_manifest(host, repo, &tag);
    let layer = &manifest["layers"][0];
    let payload = http_client()
        .get(format!(
            "http://{host}/v2/{repo}/blobs/{}",
            layer["digest"].as_str().unwrap()
        ))
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec();
    let signature = layer["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap();
    (payload, signature.to_owned())
}

#[test]
fn generate_sign_and_verify_in_both_forms_with_docker_pushed_images() {
    let w = Wharf::start();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let image = docker_pushed(&w.host(), "team/app", &unique("signed "));

    let out = wharf_in(cwd, Some(PASSWORD), &["key", "generate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::read_to_string(cwd.join("cosign.key")).unwrap();
    assert!(
        key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{key}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cwd.join("cosign.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(cwd.join("cosign.pub"))
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    // A second generate does not overwrite the key.
    let again = wharf_fails(cwd, Some(PASSWORD), &["key", "generate"]);
    assert!(again.contains("already exists"), "{again}");

    // Unsigned: refused with the reason, non-zero exit.
    let unsigned = wharf_fails(cwd, None, &["verify", "--key", "cosign.pub", &image]);
    assert!(unsigned.contains("no signature"), "{unsigned}");

    // A wrong password is named as such, and nothing is pushed.
    let wrong = wharf_fails(
        cwd,
        Some("not it"),
        &["sign", "--key", "cosign.key", &image],
    );
    assert!(wrong.contains("wrong password"), "{wrong}");
    let none = wharf_fails(cwd, None, &["sign", "--key", "cosign.key", &image]);
    assert!(none.contains("COSIGN_PASSWORD"), "{none}");

    let digest = digest_of(cwd, &image);
    let signed = wharf_ok(cwd, &["sign", "--key", "cosign.key", &image]);
    let sig_tag = digest.replace(':', "-") + ".sig";
    assert!(signed.contains(&sig_tag), "{signed}");
    let verified = wharf_ok(cwd, &["verify", "--key", "cosign.pub", &image]);
    assert!(
        verified.contains(&format!("Verified {}/team/app@{digest}", w.host())),
        "{verified}"
    );
    assert!(
        verified.contains(".sig tag") && verified.contains("cosign.pub (sha256:"),
        "{verified}"
    );
    let sig = get_manifest(&w.host(), "team/app", &sig_tag);
    assert_eq!(
        sig["layers"][0]["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );

    // Another key does not verify it.
    let other = tempfile::tempdir().unwrap();
    wharf_ok(other.path(), &["key", "generate"]);
    let stranger = other.path().join("cosign.pub");
    let refused = wharf_fails(
        cwd,
        None,
        &["verify", "--key", stranger.to_str().unwrap(), &image],
    );
    assert!(refused.contains("signed by an untrusted key"), "{refused}");

    // The referrer form, on a second image.
    let second = docker_pushed(&w.host(), "team/other", &unique("referred "));
    let second_digest = digest_of(cwd, &second);
    let signed = wharf_ok(
        cwd,
        &["sign", "--referrers", "--key", "cosign.key", &second],
    );
    assert!(signed.contains("(referrer)"), "{signed}");
    let index: Value = http_client()
        .get(format!(
            "http://{}/v2/team/other/referrers/{second_digest}",
            w.host()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        index["manifests"][0]["artifactType"], "application/vnd.dev.cosign.artifact.sig.v1+json",
        "{index}"
    );
    let verified = wharf_ok(cwd, &["verify", "--key", "cosign.pub", &second]);
    assert!(verified.contains("OCI 1.1 referrer"), "{verified}");
    // Signing twice adds nothing to the .sig tag (cosign deduplicates the same way).
    wharf_ok(cwd, &["sign", "--key", "cosign.key", &image]);
    assert_eq!(
        get_manifest(&w.host(), "team/app", &sig_tag)["layers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_multi_arch_index_signed_once_verifies() {
    let w = Wharf::start();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    wharf_ok(cwd, &["key", "generate"]);
    let host = w.host();
    let amd = docker_pushed(&host, "team/multi-amd64", &unique("amd64 "));
    let arm = docker_pushed(&host, "team/multi-arm64", &unique("arm64 "));
    // docker manifest needs both in the list's repository.
    for (src, dst) in [(&amd, "amd64"), (&arm, "arm64")] {
        let target = format!("{host}/team/multi:{dst}");
        wharf_ok(cwd, &["copy", src, &target]);
    }
    let list = format!("{host}/team/multi:v1");
    push_manifest_list(
        &list,
        &format!("{host}/team/multi:amd64"),
        &format!("{host}/team/multi:arm64"),
    );
    let digest = digest_of(cwd, &list);
    wharf_ok(cwd, &["sign", "--key", "cosign.key", &list]);
    let verified = wharf_ok(cwd, &["verify", "--key", "cosign.pub", &list]);
    assert!(verified.contains(&digest), "{verified}");
    let by_digest = format!("{host}/team/multi@{digest}");
    wharf_ok(cwd, &["verify", "--key", "cosign.pub", &by_digest]);
}

#[test]
fn tampered_other_digest_oversized_malformed_and_thousand_layer_signatures_are_refused() {
    let w = Wharf::start();
    let host = w.host();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    wharf_ok(cwd, &["key", "generate"]);
    let a = docker_pushed(&host, "team/a", &unique("a "));
    let b = docker_pushed(&host, "team/a-other", &unique("b "));
    let a_digest = digest_of(cwd, &a);
    let b_digest = digest_of(cwd, &b);
    wharf_ok(cwd, &["sign", "--key", "cosign.key", &b]);
    let (b_payload, b_signature) = first_signature(&host, "team/a-other", &b_digest);

    let verify = |what: &str, layers: &[(Vec<u8>, String)], expected: &str| {
        push_sig_tag(&host, "team/a", &a_digest, layers);
        let refused = wharf_fails(cwd, None, &["verify", "--key", "cosign.pub", &a]);
        assert!(refused.contains(expected), "{what}: {refused}");
    };
    // B's genuine signature copied under A's tag: it names B's digest.
    verify(
        "another digest",
        &[(b_payload.clone(), b_signature.clone())],
        "signature is for another digest",
    );
    // A payload edited to name A, under B's signature: the signature no longer verifies.
    let tampered = String::from_utf8(b_payload.clone())
        .unwrap()
        .replace(&b_digest, &a_digest);
    verify(
        "tampered",
        &[(tampered.into_bytes(), b_signature.clone())],
        "signed by an untrusted key",
    );
    let huge = "A".repeat(65 * 1024 + 3);
    verify("oversized", &[(b_payload.clone(), huge)], "more than 65536");
    verify(
        "malformed",
        &[(b_payload.clone(), "%%% not base64".into())],
        "not base64",
    );
    let thousand: Vec<(Vec<u8>, String)> = (0..1000)
        .map(|_| (b_payload.clone(), b_signature.clone()))
        .collect();
    verify("1,000 layers", &thousand, "1000 layers");

    // The registry itself stayed healthy throughout: no 5xx.
    let ping = http_client()
        .get(format!("http://{host}/v2/"))
        .send()
        .unwrap();
    assert_eq!(ping.status(), 200);
}

#[test]
fn copy_with_referrers_takes_signatures_and_sboms_along() {
    let a = Wharf::start();
    let b = Wharf::start();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    wharf_ok(cwd, &["key", "generate"]);
    let image = docker_pushed(&a.host(), "team/app", &unique("copied signed "));
    let digest = digest_of(cwd, &image);
    wharf_ok(cwd, &["sign", "--key", "cosign.key", &image]);
    wharf_ok(cwd, &["sign", "--referrers", "--key", "cosign.key", &image]);
    // An SBOM attached as a referrer, as `oras attach` or `regctl artifact put --subject` do.
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"app"}"#;
    let sbom_digest = put_blob(&a.host(), "team/app", sbom);
    let empty = put_blob(&a.host(), "team/app", b"{}");
    let subject = get_manifest(&a.host(), "team/app", &digest);
    let subject_bytes = serde_json::to_vec(&subject).unwrap();
    let sbom_manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sbom_digest, "size": sbom.len()}],
        "subject": {"mediaType": subject["mediaType"], "digest": digest, "size": subject_bytes.len()},
    });
    let sbom_at = sha256(&serde_json::to_vec(&sbom_manifest).unwrap());
    let (status, body) = put_manifest(&a.host(), "team/app", &sbom_at, &sbom_manifest);
    assert_eq!(status, 201, "{body}");

    let dst = format!("{}/mirror/app:v1", b.host());
    let plain = format!("{}/plain/app:v1", b.host());
    wharf_ok(cwd, &["copy", &image, &plain]);
    let unsigned = wharf_fails(cwd, None, &["verify", "--key", "cosign.pub", &plain]);
    assert!(
        unsigned.contains("no signature"),
        "without --referrers: {unsigned}"
    );

    let out = wharf_in(cwd, None, &["copy", "--referrers", &image, &dst]);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("3 referrers and signatures"), "{report}");
    let verified = wharf_ok(cwd, &["verify", "--key", "cosign.pub", &dst]);
    assert!(
        verified.contains(".sig tag") && verified.contains("OCI 1.1 referrer"),
        "{verified}"
    );
    let index: Value = http_client()
        .get(format!(
            "http://{}/v2/mirror/app/referrers/{digest}",
            b.host()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let types: BTreeMap<String, usize> =
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .fold(BTreeMap::new(), |mut m, d| {
                *m.entry(d["artifactType"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
                m
            });
    assert_eq!(types.get("application/spdx+json"), Some(&1), "{index}");
    assert_eq!(
        types.get("application/vnd.dev.cosign.artifact.sig.v1+json"),
        Some(&1),
        "{index}"
    );
}
