//! wharf's registry client commands (`login`, `tags`, `digest`, `inspect`, `catalog`,
//! `delete`) against a real wharf over TLS with htpasswd, against wharf's own token
//! server, and against Distribution 2.8.2 over plain http; docker uses what `wharf login`
//! stored.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::{
    build_busybox_image, docker_rmi, htpasswd, ok, output_with_stdin, require_docker, self_signed,
    unique, Distribution, Served, WHARF,
};

/// The wharf CLI with a private docker config and certs.d, and no ambient settings.
fn wharf(config: &Path, certs: &Path) -> Command {
    let mut cmd = Command::new(WHARF);
    cmd.env("DOCKER_CONFIG", config)
        .env("WHARF_DOCKER_CERTS_DIR", certs)
        .env_remove("WHARF_REGISTRY_CA")
        .env_remove("WHARF_INSECURE_REGISTRIES")
        .env_remove("REPO_USER")
        .env_remove("REPO_PASS");
    cmd
}

fn docker(config: &Path, args: &[&str]) -> String {
    ok(
        Command::new("docker")
            .env("DOCKER_CONFIG", config)
            .args(args)
            .output()
            .unwrap(),
        &format!("docker {args:?}"),
    )
}

/// The digest `docker push` printed (`latest: digest: sha256:... size: N`).
fn pushed_digest(push_output: &str) -> String {
    push_output
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in docker push output: {push_output}"))
        .to_owned()
}

#[test]
fn login_tags_digest_inspect_catalog_delete_over_tls_with_a_private_ca() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "wharf-client-test");
    let users = dir.path().join("htpasswd");
    htpasswd(&users, "alice", "s3cret pass");
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:@PORT@\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: Registry Realm\n    path: {}\n",
        cert.display(),
        key.display(),
        users.display()
    );
    let w = Served::start(dir.path(), &yaml, &[]);
    let host = w.host();
    let config = dir.path().join("docker-config");
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = cert.to_str().unwrap();

    // A wrong password is refused and nothing is stored.
    let denied = output_with_stdin(
        wharf(&config, &certs).args([
            "--registry-ca",
            ca,
            "login",
            "-u",
            "alice",
            "--password-stdin",
            &host,
        ]),
        "wrong\n",
    );
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert!(
        !stderr.contains("wrong"),
        "the password reached stderr: {stderr}"
    );
    assert!(!config.join("config.json").exists());

    let out = ok(
        output_with_stdin(
            wharf(&config, &certs).args([
                "--registry-ca",
                ca,
                "login",
                "-u",
                "alice",
                "--password-stdin",
                &host,
            ]),
            "s3cret pass\n",
        ),
        "wharf login",
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(config.join("config.json")).unwrap())
            .unwrap();
    assert!(saved["auths"][&host]["auth"].is_string(), "{saved}");

    // docker pushes with what wharf login stored (127.0.0.1 is insecure to docker).
    let local = build_busybox_image(&unique("wharf-client-src:"), "client cli");
    let remote = format!("{host}/team/app:v1");
    docker(&config, &["tag", &local, &remote]);
    let pushed = pushed_digest(&docker(&config, &["push", &remote]));
    docker_rmi(&[&remote, &local]);

    let cli = |args: &[&str]| {
        ok(
            wharf(&config, &certs)
                .args(["--registry-ca", ca])
                .args(args)
                .output()
                .unwrap(),
            &format!("wharf {args:?}"),
        )
    };
    assert_eq!(cli(&["tags", &format!("{host}/team/app")]).trim(), "v1");
    assert_eq!(cli(&["digest", &remote]).trim(), pushed);
    assert_eq!(cli(&["catalog", &host]).trim(), "team/app");
    let inspect: Value = serde_json::from_str(&cli(&["inspect", &remote])).unwrap();
    assert_eq!(inspect["digest"], pushed.as_str(), "{inspect}");
    assert_eq!(inspect["os"], "linux", "{inspect}");
    assert!(inspect["architecture"].is_string(), "{inspect}");
    assert!(inspect["created"].is_string(), "{inspect}");
    assert!(
        inspect["layers"][0]["size"].as_u64().unwrap() > 0,
        "{inspect}"
    );

    // Without the CA, the error names the flag that fixes it.
    let untrusted = wharf(&config, &certs)
        .args(["tags", &format!("{host}/team/app")])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("--registry-ca"), "{stderr}");
    assert!(stderr.contains("unknown authority"), "{stderr}");

    // docker's certs.d convention is enough on its own.
    std::fs::create_dir_all(certs.join(&host)).unwrap();
    std::fs::copy(&cert, certs.join(&host).join("ca.crt")).unwrap();
    assert_eq!(
        ok(
            wharf(&config, &certs)
                .args(["digest", &remote])
                .output()
                .unwrap(),
            "digest via certs.d"
        )
        .trim(),
        pushed
    );

    // A bad CA file stops at once, naming the file.
    let empty = dir.path().join("empty-ca.pem");
    std::fs::write(&empty, "").unwrap();
    let bad = wharf(&config, &certs)
        .args([
            "--registry-ca",
            empty.to_str().unwrap(),
            "--registry-ca-validate",
            "tags",
            &remote,
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("empty-ca.pem"));

    cli(&["delete", &remote]);
    let gone = wharf(&config, &certs)
        .args(["--registry-ca", ca, "digest", &remote])
        .output()
        .unwrap();
    assert!(
        !gone.status.success(),
        "the manifest is still there after delete"
    );

    ok(
        wharf(&config, &certs)
            .args(["logout", &host])
            .output()
            .unwrap(),
        "wharf logout",
    );
    let anonymous = wharf(&config, &certs)
        .args(["--registry-ca", ca, "tags", &format!("{host}/team/app")])
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("wharf login"));
}

#[test]
fn one_token_serves_several_operations_on_a_token_auth_wharf() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    htpasswd(&dir.path().join("htpasswd"), "admin", "adminpw");
    let w = Served::start(
        dir.path(),
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  htpasswd:\n    realm: wharf\n    path: @DIR@/htpasswd\n    token:\n      service: wharf-test\n      expiration: 300s\n",
        &[],
    );
    let host = w.host();
    let config = dir.path().join("docker-config");
    let certs = dir.path().join("certs.d");
    // A wrong password is refused by the token server, and said so.
    let denied = output_with_stdin(
        wharf(&config, &certs).args([
            "--insecure",
            "login",
            "-u",
            "admin",
            "--password-stdin",
            &host,
        ]),
        "nope",
    );
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("unauthorized"));
    // wharf login through the token flow, then docker pushes with it.
    ok(
        output_with_stdin(
            wharf(&config, &certs).args([
                "--insecure",
                "login",
                "-u",
                "admin",
                "--password-stdin",
                &host,
            ]),
            "adminpw",
        ),
        "wharf login (token)",
    );
    let local = build_busybox_image(&unique("wharf-token-src:"), "token");
    let remote = format!("{host}/apps/tok:v1");
    docker(&config, &["tag", &local, &remote]);
    let pushed = pushed_digest(&docker(&config, &["push", &remote]));
    docker_rmi(&[&remote, &local]);

    let source = wharf_client::CredentialSource::new(Default::default(), config.clone());
    let options = wharf_client::ClientOptions {
        certs_dir: certs,
        insecure: true,
        ..Default::default()
    };
    let registry: wharf_client::Registry = host.parse().unwrap();
    let client = wharf_client::RegistryClient::new(registry, &options, source).unwrap();
    let image: wharf_client::ImageRef = remote.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let repo = image.repository();
        assert_eq!(client.list_tags(repo).await.unwrap(), ["v1"]);
        let digest = client
            .head_digest(repo, &image.manifest_reference())
            .await
            .unwrap();
        assert_eq!(digest.to_string(), pushed);
        let manifest = client
            .get_manifest(repo, &image.manifest_reference())
            .await
            .unwrap();
        assert_eq!(manifest.digest, digest);
        assert_eq!(client.list_tags(repo).await.unwrap(), ["v1"]);
    });
    assert_eq!(
        client.token_cache().fetch_count(),
        1,
        "one pull token for every call"
    );
    // The catalog needs its own scope (registry:catalog:*), so its own token.
    let repos = runtime.block_on(client.catalog()).unwrap();
    assert_eq!(repos, ["apps/tok"]);
    assert_eq!(client.token_cache().fetch_count(), 2);
}

#[test]
fn reads_distribution_over_plain_http_with_insecure() {
    require_docker();
    let root = tempfile::tempdir().unwrap();
    let d = Distribution::start_on(root.path());
    let config = root.path().join("docker-config-unused");
    let local = build_busybox_image(&unique("wharf-dist-src:"), "distribution");
    let remote = format!("{}/lib/dist:v2", d.host());
    docker(&config, &["tag", &local, &remote]);
    let pushed = pushed_digest(&docker(&config, &["push", &remote]));
    docker_rmi(&[&remote, &local]);
    let certs = root.path().join("certs.d");
    let digest = ok(
        wharf(&config, &certs)
            .args(["--insecure", "digest", &remote])
            .output()
            .unwrap(),
        "wharf digest against Distribution",
    );
    assert_eq!(digest.trim(), pushed);
    let tags = ok(
        wharf(&config, &certs)
            .args(["--insecure", "tags", &remote])
            .output()
            .unwrap(),
        "wharf tags against Distribution",
    );
    assert_eq!(tags.trim(), "v2");
    // On loopback, as for docker, plain http needs no flag (other hosts: plain_http.rs).
    let unflagged = ok(
        wharf(&config, &certs)
            .args(["tags", &remote])
            .output()
            .unwrap(),
        "wharf tags against Distribution on 127.0.0.1 without --insecure",
    );
    assert_eq!(unflagged.trim(), "v2");
}
