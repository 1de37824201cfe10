//! Notation's X.509 signatures: an envelope built by an independent implementation
//! (Python's jwcrypto and cryptography, from PyPI, in the venv `.ci/run` makes) over a CA
//! chain openssl makes, pushed to a real wharf as a referrer the way `notation sign` stores
//! it. `wharf verify --cert-root` accepts it under its root, and refuses a chain to
//! another root, an expired leaf, and an envelope for another digest.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::harness::{docker_pushed, require, run, unique, Wharf};
use crate::trust_sign::{
    digest_of, get_manifest, put_blob, put_manifest, sha256, wharf_fails, wharf_ok,
};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/integration/notation_sign.py"
);

/// The venv with jwcrypto; `.ci/run` makes it, `WHARF_NOTATION_VENV` overrides where.
fn python() -> PathBuf {
    let venv = std::env::var_os("WHARF_NOTATION_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/wharf-test/notation-venv"));
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import jwcrypto, cryptography"])
        .output();
    assert!(
        ok.is_ok_and(|o| o.status.success()),
        "the Notation tests need jwcrypto and cryptography in {}: run .ci/run, or `python3 -m venv {0} && {0}/bin/pip install jwcrypto cryptography`",
        venv.display()
    );
    python
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// An EC P-256 key and a CSR for `subject`.
fn key_and_csr(dir: &Path, name: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
}

/// A self-signed root CA.
fn root(dir: &Path, name: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "3650",
            "-subj",
            subject,
        ],
    );
}

/// `name`'s CSR signed by `ca` with the extensions in `ext` (a file in `dir`).
fn issue(dir: &Path, name: &str, ca: &str, ext: &str, days: &str) {
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            days,
            "-extfile",
            ext,
        ],
    );
}

/// root → intermediate → leaf; a leaf of the same intermediate that expired in 2021
/// (`openssl ca` sets past dates); and a second root with a leaf of its own.
fn pki(dir: &Path) {
    require("openssl", "openssl");
    std::fs::write(
        dir.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    std::fs::write(dir.join("leaf.ext"), "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n").unwrap();
    root(dir, "root", "/CN=wharf test root");
    key_and_csr(dir, "intermediate", "/CN=wharf test intermediate");
    issue(dir, "intermediate", "root", "ca.ext", "365");
    key_and_csr(dir, "leaf", "/O=wharf tests/CN=release signer");
    issue(dir, "leaf", "intermediate", "leaf.ext", "30");
    root(dir, "other-root", "/CN=another root");
    key_and_csr(dir, "stranger", "/CN=signer under another root");
    issue(dir, "stranger", "other-root", "leaf.ext", "30");
    std::fs::create_dir_all(dir.join("newcerts")).unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    let d = dir.display();
    std::fs::write(dir.join("ca.cnf"), format!(
        "[ca]\ndefault_ca=CA_default\n[CA_default]\ndatabase={d}/index.txt\nnew_certs_dir={d}/newcerts\nserial={d}/serial\ndefault_md=sha256\npolicy=any\nx509_extensions=leaf\n[any]\ncommonName=supplied\n[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    )).unwrap();
    key_and_csr(dir, "expired", "/CN=expired signer");
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "intermediate.pem",
            "-keyfile",
            "intermediate.key",
            "-in",
            "expired.csr",
            "-out",
            "expired.pem",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20210101000000Z",
            "-notext",
        ],
    );
}

/// Sign `digest` with the Python implementation and push the envelope as Notation does:
/// an OCI manifest of artifact type `application/vnd.cncf.notary.signature`, an empty
/// config, one `application/jose+json` layer, the image as its subject.
fn notation_sign(
    dir: &Path,
    host: &str,
    repo: &str,
    subject_digest: &str,
    signed_digest: &str,
    key: &str,
    chain: &[&str],
) {
    let subject = get_manifest(host, repo, subject_digest);
    let media_type = subject["mediaType"].as_str().unwrap().to_owned();
    let size = serde_json::to_vec(&subject).unwrap().len().to_string();
    let mut cmd = Command::new(python());
    cmd.current_dir(dir)
        .arg(SCRIPT)
        .args([key, signed_digest, &media_type, &size])
        .args(chain);
    let envelope = run(&mut cmd);
    let layer = put_blob(host, repo, envelope.as_bytes());
    let empty = put_blob(host, repo, b"{}");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.notary.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/jose+json", "digest": layer, "size": envelope.len()}],
        "subject": {"mediaType": media_type, "digest": subject_digest, "size": size.parse::<u64>().unwrap()},
        "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": "[]"},
    });
    let at = sha256(&serde_json::to_vec(&manifest).unwrap());
    let (status, body) = put_manifest(host, repo, &at, &manifest);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_notation_envelope_over_an_openssl_chain_verifies_under_its_root_only() {
    let w = Wharf::start();
    let host = w.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d);
    let roots = ["--cert-root", "root.pem"];

    let good = docker_pushed(&host, "team/notary", &unique("notation "));
    let digest = digest_of(d, &good);
    notation_sign(
        d,
        &host,
        "team/notary",
        &digest,
        &digest,
        "leaf.key",
        &["leaf.pem", "intermediate.pem", "root.pem"],
    );
    let out = wharf_ok(d, &[&["verify"], &roots[..], &[good.as_str()]].concat());
    assert!(
        out.contains("Notation signature") && out.contains("release signer"),
        "{out}"
    );
    // The same signature under another root: refused.
    let refused = wharf_fails(d, None, &["verify", "--cert-root", "other-root.pem", &good]);
    assert!(refused.contains("untrusted root"), "{refused}");

    let cases = [
        (
            "team/notary-stranger",
            "stranger.key",
            vec!["stranger.pem", "other-root.pem"],
            "untrusted root",
        ),
        (
            "team/notary-expired",
            "expired.key",
            vec!["expired.pem", "intermediate.pem", "root.pem"],
            "certificate expired",
        ),
    ];
    for (repo, key, chain, expected) in cases {
        let image = docker_pushed(&host, repo, &unique("notation "));
        let digest = digest_of(d, &image);
        notation_sign(d, &host, repo, &digest, &digest, key, &chain);
        let refused = wharf_fails(
            d,
            None,
            &[&["verify"], &roots[..], &[image.as_str()]].concat(),
        );
        assert!(refused.contains(expected), "{repo}: {refused}");
    }

    // A genuine envelope whose payload names another digest.
    let image = docker_pushed(&host, "team/notary-other", &unique("notation "));
    let digest = digest_of(d, &image);
    notation_sign(
        d,
        &host,
        "team/notary-other",
        &digest,
        &sha256(b"another"),
        "leaf.key",
        &["leaf.pem", "intermediate.pem", "root.pem"],
    );
    let refused = wharf_fails(
        d,
        None,
        &[&["verify"], &roots[..], &[image.as_str()]].concat(),
    );
    assert!(
        refused.contains("signature is for another digest"),
        "{refused}"
    );
}
