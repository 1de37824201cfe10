//! `trust:` rules with real clients: docker and skopeo pull what `wharf sign` signed and
//! are refused, with the rule's reason, what it did not; warn mode answers with a header
//! and a metric; `wharf watch` keeps a container off an image that does not verify.

use std::path::Path;
use std::process::Command;

use crate::harness::*;

const PASSWORD: &str = "trust-test-password";

/// `wharf key generate` in `dir` with `prefix`: (private key, public key).
pub(crate) fn key_pair(dir: &Path, prefix: &str) -> (String, String) {
    let out = Command::new(WHARF)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", PASSWORD)
        .args(["key", "generate", "--output-key-prefix", prefix])
        .output()
        .unwrap();
    ok(out, "wharf key generate");
    let path = |ext: &str| dir.join(format!("{prefix}.{ext}")).display().to_string();
    (path("key"), path("pub"))
}

/// `wharf sign --key KEY IMAGE` (plain http allowed), with `extra` flags.
pub(crate) fn sign(config: &Path, key: &str, image: &str, extra: &[&str]) -> String {
    let out = Command::new(WHARF)
        .env("DOCKER_CONFIG", config)
        .env("COSIGN_PASSWORD", PASSWORD)
        .arg("--insecure")
        .args(["sign", "--key", key])
        .args(extra)
        .arg(image)
        .output()
        .unwrap();
    ok(out, "wharf sign")
}

/// A registry with an enforce rule for `prod/*` and a warn rule for `warn/*`, both
/// trusting `public`, and a Prometheus listener: (server, debug port).
fn serve(dir: &Path, public: &str) -> (Served, u16) {
    let debug = free_port();
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  debug:\n    addr: 127.0.0.1:{debug}\n    prometheus:\n      enabled: true\n      path: /metrics\ntrust:\n  - repositories: [\"prod/*\"]\n    mode: enforce\n    keys: [{public}]\n  - repositories: [\"warn/*\"]\n    name: lenient\n    mode: warn\n    keys: [{public}]\n"
    );
    (Served::start(dir, &yaml, &[("WHARF_LOG", "info")]), debug)
}

fn docker_pull(image: &str) -> std::process::Output {
    Command::new("docker")
        .args(["pull", image])
        .output()
        .unwrap()
}

#[test]
fn trust_enforce_refuses_unsigned_docker_pulls_with_the_rules_reason_and_serves_signed_ones() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("docker");
    let (private, public) = key_pair(dir.path(), "cosign");
    let (other_private, _) = key_pair(dir.path(), "other");
    let (served, _) = serve(dir.path(), &public);
    let host = served.host();

    let image = docker_pushed(&host, "prod/app", "signed later");
    let refused = docker_pull(&image);
    let said = output_text(&refused);
    assert!(!refused.status.success(), "an unsigned image was pulled");
    assert!(said.contains("trust rule \"prod/*\""), "{said}");
    assert!(said.contains("no signature"), "{said}");

    let page = |path: &str| {
        let got = http_client()
            .get(format!("http://{host}{path}"))
            .send()
            .unwrap();
        assert_eq!(got.status(), 200, "{path}");
        got.text().unwrap()
    };
    let tags = page("/ui/repo?name=prod%2Fapp");
    assert!(tags.contains("refused: no signature"), "{tags}");

    let signed = sign(&config, &private, &image, &[]);
    assert!(signed.contains("Signed"), "{signed}");
    docker_runs(&image, "signed later");
    docker_rmi(&[&image]);
    let manifest = page("/ui/manifest?name=prod%2Fapp&ref=v1");
    assert!(manifest.contains("verified: "), "{manifest}");
    assert!(
        manifest.contains(&public),
        "the page names the key: {manifest}"
    );
    assert!(
        manifest.contains("cosign signature (.sig tag)"),
        "{manifest}"
    );
    assert!(page("/ui/repo?name=prod%2Fapp").contains("verified: "));

    let stranger = docker_pushed(&host, "prod/stranger", "signed by another key");
    sign(&config, &other_private, &stranger, &[]);
    let said = output_text(&docker_pull(&stranger));
    assert!(said.contains("signed by an untrusted key"), "{said}");

    // The OCI 1.1 referrer form verifies as well: signed where no rule applies (signing
    // by referrer reads the subject manifest), then copied in with its referrers.
    let staged = docker_pushed(&host, "staging/referred", "signed as a referrer");
    sign(&config, &private, &staged, &["--referrers"]);
    let referred = format!("{host}/prod/referred:v1");
    wharf_insecure_ok(&config, &["copy", "--referrers", &staged, &referred]);
    docker_runs(&referred, "signed as a referrer");
    docker_rmi(&[&referred]);
}

#[test]
fn trust_enforce_serves_each_platform_of_an_index_signed_once_to_skopeo() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("docker");
    let (private, public) = key_pair(dir.path(), "cosign");
    let (served, _) = serve(dir.path(), &public);
    let host = served.host();
    // docker manifest create reads each platform's manifest, which an enforce rule
    // refuses before signing: the index is made in staging/ and copied in whole.
    let mut parts = vec![];
    for arch in ["amd64", "arm64"] {
        parts.push(docker_pushed(
            &host,
            &format!("staging/{arch}"),
            &format!("built for {arch}"),
        ));
    }
    let staged = format!("{host}/staging/multi:latest");
    push_manifest_list(&staged, &parts[0], &parts[1]);
    let list = format!("{host}/prod/multi:latest");
    wharf_insecure_ok(&config, &["copy", &staged, &list]);
    let skopeo = |arch: &str| {
        let to = dir.path().join(format!("copy-{arch}-{}", free_port()));
        Command::new("skopeo")
            .args(["--override-arch", arch, "copy", "--src-tls-verify=false"])
            .arg(format!("docker://{list}"))
            .arg(format!("dir:{}", to.display()))
            .output()
            .unwrap()
    };
    let before = skopeo("arm64");
    assert!(!before.status.success(), "an unsigned index was copied");
    assert!(
        output_text(&before).contains("no signature"),
        "{}",
        output_text(&before)
    );

    sign(&config, &private, &list, &[]);
    for arch in ["amd64", "arm64"] {
        ok(
            skopeo(arch),
            &format!("skopeo copy of {arch}; log:\n{}", served.log()),
        );
    }
}

#[test]
fn trust_warn_serves_unsigned_pulls_with_a_header_a_metric_and_a_log_line() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = key_pair(dir.path(), "cosign");
    let (served, debug) = serve(dir.path(), &public);
    let host = served.host();
    let image = docker_pushed(&host, "warn/app", "warned");
    docker_runs(&image, "warned");
    docker_rmi(&[&image]);

    let url = format!("http://{host}/v2/warn/app/manifests/v1");
    let got = http_client()
        .get(&url)
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    let said = header(&got, "wharf-trust");
    assert!(said.starts_with("unverified; no signature"), "{said}");
    assert!(said.contains("rule=\"lenient\""), "{said}");

    let metrics = http_client()
        .get(format!("http://127.0.0.1:{debug}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let line = "wharf_trust_pulls_total{rule=\"lenient\",mode=\"warn\",verdict=\"unverified\"}";
    assert!(metrics.contains(line), "{metrics}");
    assert!(served
        .log()
        .contains("served an image no trusted signature covers"));
}

/// A signature manifest under the image's `.sig` tag, with `layers` simple-signing layers
/// whose annotation is `annotation`.
fn bad_signature(host: &str, repo: &str, digest: &str, layers: usize, annotation: &str) -> u16 {
    let client = http_client();
    let payload = b"{}";
    let payload_digest = format!("sha256:{}", sha256_hex(payload));
    let upload = client
        .post(format!(
            "http://{host}/v2/{repo}/blobs/uploads/?digest={payload_digest}"
        ))
        .body(payload.to_vec())
        .send()
        .unwrap();
    assert!(upload.status().is_success(), "{}", upload.status());
    let layer = serde_json::json!({
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "digest": payload_digest,
        "size": payload.len(),
        "annotations": { "dev.cosignproject.cosign/signature": annotation },
    });
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": payload_digest, "size": payload.len() },
        "layers": vec![layer; layers],
    });
    let tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
    let put = client
        .put(format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .unwrap();
    put.status().as_u16()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn trust_bad_signatures_are_refused_with_a_reason_and_never_a_5xx() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = key_pair(dir.path(), "cosign");
    let (served, _) = serve(dir.path(), &public);
    let host = served.host();
    let client = http_client();
    for (name, layers, annotation) in [
        ("many", 1000, "bm90IGEgc2lnbmF0dXJl".to_owned()),
        ("huge", 1, "A".repeat(65 * 1024)),
        ("garbled", 1, "%%% not base64 %%%".to_owned()),
    ] {
        let repo = format!("prod/{name}");
        let image = docker_pushed(&host, &repo, name);
        let digest = docker_manifest_digest(&host, &repo);
        let put = bad_signature(&host, &repo, &digest, layers, &annotation);
        assert!(
            put < 300,
            "{name}: the signature manifest was not stored ({put})"
        );
        let got = client
            .get(format!("http://{host}/v2/{repo}/manifests/v1"))
            .header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .unwrap();
        let status = got.status().as_u16();
        let body = got.text().unwrap();
        assert_eq!(status, 403, "{name}: {body}");
        assert!(
            body.contains("DENIED") && body.contains("trust rule"),
            "{name}: {body}"
        );
        let said = output_text(&docker_pull(&image));
        assert!(said.contains("trust rule"), "{name}: {said}");
    }
    assert!(!served.log().contains("panicked"), "{}", served.log());
}

fn docker_manifest_digest(host: &str, repo: &str) -> String {
    let head = http_client()
        .head(format!("http://{host}/v2/{repo}/manifests/v1"))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(head.status(), 200, "a HEAD is answered under enforce");
    assert!(header(&head, "wharf-trust").starts_with("unverified"));
    header(&head, "docker-content-digest")
}
