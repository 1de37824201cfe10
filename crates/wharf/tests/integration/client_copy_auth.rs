//! `wharf copy` between two registries that both want credentials, both over TLS with
//! their own self-signed certificates (trusted through one `--registry-ca` bundle), each
//! side's credentials from a different place: config.json `auths`, a credential helper,
//! `wharf login` (through wharf's token server), `docker login`. The copy is then read by
//! skopeo and pulled and run by docker; a wrong password names the registry and the fix.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::json;

use crate::harness::{
    build_busybox_image, docker_rmi, free_port, htpasswd, ok, output_with_stdin, require,
    require_docker, run, self_signed, unique, wait_for_port, Proc, Served, WHARF,
};

/// One registry's TLS certificate and htpasswd file, under `dir/name.*`.
struct Secured {
    cert: PathBuf,
    key: PathBuf,
    users: PathBuf,
}

fn secured(dir: &Path, name: &str, user: &str, password: &str) -> Secured {
    let (cert, key) = self_signed(dir, name);
    let users = dir.join(format!("{name}.htpasswd"));
    htpasswd(&users, user, password);
    Secured { cert, key, users }
}

/// `wharf serve` over TLS with htpasswd users; `token` makes it its own token server.
fn wharf_tls(dir: &Path, s: &Secured, token: bool) -> Served {
    let token = if token {
        "    token:\n      service: copy-test\n      expiration: 300s\n"
    } else {
        ""
    };
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: Registry Realm\n    path: {}\n{token}",
        s.cert.display(),
        s.key.display(),
        s.users.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    Served::start(dir, &yaml, &[])
}

/// Distribution 2.8.2 over TLS with htpasswd users.
fn distribution_tls(dir: &Path, s: &Secured) -> (Proc, String) {
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: Registry Realm\n    path: {}\n",
        s.users.display()
    );
    distribution_tls_with(dir, "distribution", s, &auth)
}

/// Distribution 2.8.2 over TLS with `s`'s certificate, storing under `dir/name-data`, with
/// `auth` (the config's `auth:` section).
fn distribution_tls_with(dir: &Path, name: &str, s: &Secured, auth: &str) -> (Proc, String) {
    require("docker-registry", "docker-registry");
    let port = free_port();
    let config = dir.join(format!("{name}.yml"));
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n{auth}",
            dir.join(format!("{name}-data")).display(),
            s.cert.display(),
            s.key.display(),
        ),
    )
    .unwrap();
    let mut proc = Proc(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry"),
    );
    wait_for_port(port, &mut proc.0, "docker-registry");
    (proc, format!("127.0.0.1:{port}"))
}

/// Both certificates in one PEM file, as `--registry-ca` takes it.
fn bundle(dir: &Path, certs: &[&Path]) -> PathBuf {
    let pem: String = certs
        .iter()
        .map(|c| std::fs::read_to_string(c).unwrap())
        .collect();
    let path = dir.join("bundle.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

/// A docker config dir with a PATH entry holding `docker-credential-copytest`, a helper
/// that knows one registry's user and password.
struct Config {
    dir: PathBuf,
    bin: PathBuf,
}

impl Config {
    fn new(root: &Path) -> Config {
        let dir = root.join("docker-config");
        let bin = root.join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        Config { dir, bin }
    }

    fn write(&self, config: serde_json::Value) {
        std::fs::write(self.dir.join("config.json"), config.to_string()).unwrap();
    }

    fn helper(&self, host: &str, user: &str, secret: &str) {
        let script = self.bin.join("docker-credential-copytest");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r url\ncase \"$url\" in\n  {host}|https://{host})\n    printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$url\";;\n  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The wharf CLI with this config, the helper on PATH, no ambient credentials or
    /// trust, and the CA bundle.
    fn wharf(&self, ca: &Path) -> Command {
        let mut cmd = Command::new(WHARF);
        cmd.env("DOCKER_CONFIG", &self.dir)
            .env("PATH", self.path())
            .env("WHARF_DOCKER_CERTS_DIR", self.dir.join("no-certs.d"))
            .env_remove("WHARF_INSECURE_REGISTRIES")
            .env_remove("WHARF_REGISTRY_CA")
            .env_remove("REPO_USER")
            .env_remove("REPO_PASS")
            .arg("--registry-ca")
            .arg(ca);
        cmd
    }

    fn docker(&self, args: &[&str]) -> String {
        ok(
            Command::new("docker")
                .env("DOCKER_CONFIG", &self.dir)
                .env("PATH", self.path())
                .args(args)
                .output()
                .unwrap(),
            &format!("docker {args:?}"),
        )
    }
}

fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Build a marker image and docker-push it to `remote` (docker treats 127.0.0.1 as an
/// insecure registry, so it accepts the self-signed certificate). Returns the digest.
fn push_marker_image(config: &Config, remote: &str, marker: &str) -> String {
    let local = build_busybox_image(&unique("wharf-copy-auth:"), marker);
    config.docker(&["tag", &local, remote]);
    let out = config.docker(&["push", remote]);
    docker_rmi(&[&local, remote]);
    out.split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in docker push output: {out}"))
        .to_owned()
}

/// skopeo, trusting `cert` and logging in with `creds`, reads the image's digest.
fn skopeo_digest(image: &str, cert: &Path, creds: &str) -> String {
    require("skopeo", "skopeo");
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(cert, certs.path().join("ca.crt")).unwrap();
    run(Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", certs.path().join("auth.json"))
        .args(["inspect", "--format", "{{.Digest}}", "--cert-dir"])
        .arg(certs.path())
        .args(["--creds", creds])
        .arg(format!("docker://{image}")))
    .trim()
    .to_owned()
}

/// docker pulls the copy with the credentials in `config` and runs it.
fn docker_runs(config: &Config, image: &str, marker: &str) {
    config.docker(&["pull", image]);
    let out = config.docker(&["run", "--rm", image, "cat", "/marker"]);
    assert_eq!(out, marker);
    docker_rmi(&[image]);
}

#[test]
fn copy_from_tls_htpasswd_wharf_to_tls_htpasswd_distribution() {
    require_docker();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let src_auth = secured(root, "copy-src", "alice", "alice's pass");
    let dst_auth = secured(root, "copy-dst", "bob", "bob-pass");
    let src = wharf_tls(&root.join("src"), &src_auth, false);
    let (_dist, dst_host) = distribution_tls(root, &dst_auth);
    let ca = bundle(root, &[&src_auth.cert, &dst_auth.cert]);

    // The source's credentials in config.json `auths`, the destination's from a helper.
    let config = Config::new(root);
    config.helper(&dst_host, "bob", "bob-pass");
    config.write(json!({
        "auths": { src.host(): { "auth": basic("alice", "alice's pass") } },
        "credHelpers": { dst_host.clone(): "copytest" },
    }));
    let marker = unique("copied between logins ");
    let src_image = format!("{}/team/app:v1", src.host());
    let pushed = push_marker_image(&config, &src_image, &marker);

    let dst_image = format!("{dst_host}/mirror/app:v1");
    let out = config
        .wharf(&ca)
        .args(["copy", &src_image, &dst_image])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let copied = ok(out, "wharf copy wharf -> distribution");
    assert_eq!(copied, pushed);
    assert!(stderr.contains("2 blobs uploaded"), "{stderr}");
    let digest = ok(
        config
            .wharf(&ca)
            .args(["digest", &dst_image])
            .output()
            .unwrap(),
        "wharf digest of the copy",
    );
    assert_eq!(digest, pushed);
    assert_eq!(
        skopeo_digest(&dst_image, &dst_auth.cert, "bob:bob-pass"),
        pushed
    );
    // docker takes the destination's credentials from the same helper.
    docker_runs(&config, &dst_image, &marker);

    // A wrong password for the destination: the error names it and says how to fix it.
    config.helper(&dst_host, "bob", "not-bobs-pass");
    let denied = config
        .wharf(&ca)
        .args(["copy", &src_image, &format!("{dst_host}/mirror/other:v1")])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert!(
        stderr.contains(&format!("wharf login {dst_host}")),
        "{stderr}"
    );
    assert!(stderr.contains("copytest"), "names the helper: {stderr}");
    assert!(
        !stderr.contains("not-bobs-pass"),
        "the password reached stderr: {stderr}"
    );
}

#[test]
fn copy_from_token_auth_wharf_to_tls_htpasswd_wharf() {
    require_docker();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let src_auth = secured(root, "token-src", "admin", "admin pass");
    let dst_auth = secured(root, "basic-dst", "carol", "carol-pass");
    let src = wharf_tls(&root.join("src"), &src_auth, true);
    let dst = wharf_tls(&root.join("dst"), &dst_auth, false);
    let ca = bundle(root, &[&src_auth.cert, &dst_auth.cert]);
    let config = Config::new(root);

    // The source through `wharf login` (its token server), the destination through
    // `docker login`: both end up in one config.json, as they would on a workstation.
    ok(
        output_with_stdin(
            config
                .wharf(&ca)
                .args(["login", "-u", "admin", "--password-stdin", &src.host()]),
            "admin pass\n",
        ),
        "wharf login to the token server",
    );
    ok(
        output_with_stdin(
            Command::new("docker")
                .env("DOCKER_CONFIG", &config.dir)
                .args(["login", &dst.host(), "-u", "carol", "--password-stdin"]),
            "carol-pass",
        ),
        "docker login to the destination",
    );
    let marker = unique("copied from a token registry ");
    let src_image = format!("{}/apps/tok:v1", src.host());
    let pushed = push_marker_image(&config, &src_image, &marker);

    // Small chunks: the layer goes up in authenticated PATCHes over TLS.
    let dst_image = format!("{}/mirror/tok:v2", dst.host());
    let copied = ok(
        config
            .wharf(&ca)
            .args([
                "copy",
                "--quiet",
                "--chunk-size",
                "65536",
                &src_image,
                &dst_image,
            ])
            .output()
            .unwrap(),
        "wharf copy token wharf -> htpasswd wharf",
    );
    assert_eq!(copied, pushed);
    assert_eq!(
        ok(
            config
                .wharf(&ca)
                .args(["digest", &dst_image])
                .output()
                .unwrap(),
            "wharf digest of the copy"
        ),
        pushed
    );
    assert_eq!(
        skopeo_digest(&dst_image, &dst_auth.cert, "carol:carol-pass"),
        pushed
    );
    docker_runs(&config, &dst_image, &marker);

    // A wrong REPO_PASS for the token server: refused, named, and the fix given (not
    // `wharf login`, which REPO_* would override).
    let denied = config
        .wharf(&ca)
        .env("REPO_USER", "admin")
        .env("REPO_PASS", "wrong pass")
        .args(["copy", &src_image, &format!("{}/mirror/tok:v3", dst.host())])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} rejected the credentials in REPO_USER/REPO_PASS; they take precedence over config.json",
            src.host()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong pass"),
        "the password reached stderr: {stderr}"
    );
}

/// An ECDSA P-256 certificate and PKCS#8 key for signing tokens.
fn token_signer(dir: &Path) -> (PathBuf, PathBuf) {
    require("openssl", "openssl");
    let (cert, key) = (dir.join("signer.crt"), dir.join("signer.key"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=wharf token signer", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null()));
    (cert, key)
}

/// Distribution 2.8.2 over TLS, trusting the tokens `realm` signs with `signer`.
fn distribution_with_tokens(
    dir: &Path,
    tls: &Secured,
    realm: &str,
    signer: &Path,
) -> (Proc, String) {
    let auth = format!(
        "auth:\n  token:\n    realm: {realm}\n    service: shared-registry\n    issuer: wharf-tokens\n    rootcertbundle: {}\n",
        signer.display()
    );
    distribution_tls_with(dir, "distribution-tokens", tls, &auth)
}

#[test]
fn distribution_accepts_tokens_from_wharfs_token_server_for_docker_skopeo_and_wharf() {
    require_docker();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tls = secured(root, "token-tls", "dana", "dana's pass");
    let (signer, signer_key) = token_signer(root);
    // wharf as the token server only: ES256 tokens carrying the signer in `x5c`.
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: Registry Realm\n    path: {}\n    token:\n      service: shared-registry\n      issuer: wharf-tokens\n      expiration: 300s\n      certificate: {}\n      key: {}\n",
        tls.cert.display(),
        tls.key.display(),
        tls.users.display(),
        signer.display(),
        signer_key.display()
    );
    let tokens_dir = root.join("tokens");
    std::fs::create_dir_all(&tokens_dir).unwrap();
    let tokens = Served::start(&tokens_dir, &yaml, &[]);
    let realm = format!("https://{}/auth/token", tokens.host());
    let (_dist, dist) = distribution_with_tokens(root, &tls, &realm, &signer);
    let config = Config::new(root);
    let ca = bundle(root, &[&tls.cert]);

    // docker logs in to Distribution through wharf's tokens and pushes.
    ok(
        output_with_stdin(
            Command::new("docker")
                .env("DOCKER_CONFIG", &config.dir)
                .args(["login", &dist, "-u", "dana", "--password-stdin"]),
            "dana's pass",
        ),
        "docker login to Distribution with wharf's tokens",
    );
    let marker = unique("signed by wharf ");
    let image = format!("{dist}/team/signed:v1");
    let pushed = push_marker_image(&config, &image, &marker);

    // wharf's client and skopeo take the same token flow.
    let wharf = |args: &[&str]| {
        ok(
            config.wharf(&ca).args(args).output().unwrap(),
            &format!("wharf {args:?}"),
        )
    };
    assert_eq!(wharf(&["digest", &image]), pushed);
    assert_eq!(wharf(&["tags", &format!("{dist}/team/signed")]), "v1");
    assert_eq!(skopeo_digest(&image, &tls.cert, "dana:dana's pass"), pushed);
    let copy = format!("{dist}/team/copied:v1");
    assert_eq!(wharf(&["copy", "--quiet", &image, &copy]), pushed);
    docker_runs(&config, &copy, &marker);

    // A wrong password is refused by the token server, and named.
    let denied = config
        .wharf(&ca)
        .env("REPO_USER", "dana")
        .env("REPO_PASS", "not dana's pass")
        .args(["digest", &image])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains(&tokens.host()) || stderr.contains(&dist),
        "{stderr}"
    );
    assert!(!stderr.contains("not dana's pass"), "{stderr}");
}

#[test]
fn a_token_signer_whose_key_is_missing_or_not_its_certificates_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (mine, _) = token_signer(&a);
    let (_, other_key) = token_signer(&b);
    let users = tmp.path().join("users");
    htpasswd(&users, "erin", "erin-pass");
    let token = |lines: &str| {
        format!(
            "version: 0.1\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n    token:\n      service: s\n{lines}",
            users.display()
        )
    };
    let cases = [
        (
            token(&format!(
                "      certificate: {}\n      key: {}\n",
                mine.display(),
                other_key.display()
            )),
            "not the private key of",
        ),
        (
            token(&format!("      certificate: {}\n", mine.display())),
            "auth.htpasswd.token.key",
        ),
    ];
    for (yaml, expected) in cases {
        let config = tmp.path().join("bad.yml");
        std::fs::write(&config, &yaml).unwrap();
        let out = Command::new(WHARF)
            .arg("serve")
            .arg(&config)
            .args(["--addr", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{yaml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{expected} not named in: {err}");
    }
}
