//! Authentication, authorization, TLS and config.yml with real clients: docker login over
//! TLS with htpasswd users in every format, skopeo verifying a private CA, nginx in front
//! with an apr1 file (seed 003), the built-in token flow with an access policy, external
//! tokens verified against a certificate bundle, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{
    build_busybox_image, docker_login, docker_rmi, docker_with as docker, free_port,
    output_with_stdin, require, require_docker, run, self_signed, unique, Served, WHARF,
};

/// An htpasswd file made by Apache's `htpasswd` (`flag` is -B, -m or -s).
fn htpasswd_add(file: &Path, flag: &str, user: &str, password: &str) {
    require("htpasswd", "apache2-utils");
    let mut cmd = Command::new("htpasswd");
    if !file.exists() {
        cmd.arg("-c");
    }
    run(cmd
        .args([flag, "-b"])
        .arg(file)
        .args([user, password])
        .stderr(Stdio::null()));
}

fn docker_ok(config: &Path, args: &[&str]) -> String {
    let out = docker(config, args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Docker reads `/etc/docker/certs.d/<host:port>/ca.crt`; removed when dropped.
struct DockerCa(PathBuf);

impl DockerCa {
    fn install(host: &str, ca: &Path) -> DockerCa {
        let dir = PathBuf::from("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&dir).expect("write /etc/docker/certs.d (run as root, as CI does)");
        std::fs::copy(ca, dir.join("ca.crt")).unwrap();
        DockerCa(dir)
    }
}

impl Drop for DockerCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls_client(ca: &Path) -> Client {
    let cert = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    Client::builder()
        .add_root_certificate(cert)
        .tls_built_in_root_certs(false)
        .build()
        .unwrap()
}

fn error_code(r: reqwest::blocking::Response) -> String {
    let body: Value = r.json().expect("spec error body");
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn docker_logs_in_over_tls_with_a_bcrypt_htpasswd_and_pushes_and_pulls() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "registry");
    let users = dir.path().join("htpasswd");
    htpasswd_add(&users, "-B", "alice", "s3cret pass");
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: Registry Realm\n    path: {}\n",
        cert.display(),
        key.display(),
        users.display()
    );
    let w = Served::start(dir.path(), &yaml, &[]);
    let _ca = DockerCa::install(&w.host(), &cert);
    let config = dir.path().join("docker-config");

    let denied = docker_login(&config, &w.host(), "alice", "wrong");
    assert!(!denied.status.success(), "a wrong password must not log in");
    let out = docker_login(&config, &w.host(), "alice", "s3cret pass");
    assert!(
        out.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(config.join("config.json")).unwrap())
            .unwrap();
    assert!(saved["auths"][w.host()]["auth"].is_string(), "{saved}");

    let local = build_busybox_image(&unique("wharf-tls-src:"), "over tls");
    let remote = format!("{}/secure/app:v1", w.host());
    docker_ok(&config, &["tag", &local, &remote]);
    docker_ok(&config, &["push", &remote]);
    docker_rmi(&[&remote, &local]);

    docker_ok(&config, &["logout", &w.host()]);
    let anonymous = docker(&config, &["pull", &remote]);
    assert!(
        !anonymous.status.success(),
        "pull without credentials must fail"
    );
    assert!(docker_login(&config, &w.host(), "alice", "s3cret pass")
        .status
        .success());
    docker_ok(&config, &["pull", &remote]);
    assert_eq!(
        docker_ok(&config, &["run", "--rm", &remote, "cat", "/marker"]).trim(),
        "over tls"
    );
    docker_rmi(&[&remote]);
    assert!(!w.log().contains("s3cret"), "a password reached the log");
}

#[test]
fn every_htpasswd_format_works_and_skopeo_verifies_the_private_ca() {
    require("skopeo", "skopeo");
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "registry");
    let users = dir.path().join("htpasswd");
    htpasswd_add(&users, "-B", "bcrypt", "pw-b");
    htpasswd_add(&users, "-m", "apr1", "pw-m");
    htpasswd_add(&users, "-s", "sha", "pw-s");
    let openssl = run(Command::new("openssl").args(["passwd", "-apr1", "pw-o"]));
    std::fs::write(
        &users,
        format!(
            "{}openssl:{}",
            std::fs::read_to_string(&users).unwrap(),
            openssl
        ),
    )
    .unwrap();
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n",
        cert.display(),
        key.display(),
        users.display()
    );
    let w = Served::start(dir.path(), &yaml, &[]);
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&cert, certs.join("ca.crt")).unwrap();
    let certs = certs.display().to_string();

    let local = build_busybox_image(&unique("wharf-formats-src:"), "formats");
    for (user, password) in [
        ("bcrypt", "pw-b"),
        ("apr1", "pw-m"),
        ("sha", "pw-s"),
        ("openssl", "pw-o"),
    ] {
        let dest = format!("docker://{}/formats/{user}:v1", w.host());
        let creds = format!("{user}:{password}");
        run(Command::new("skopeo").args([
            "copy",
            "--dest-cert-dir",
            &certs,
            "--dest-creds",
            &creds,
            &format!("docker-daemon:{local}"),
            &dest,
        ]));
        let inspected: Value = serde_json::from_str(&run(Command::new("skopeo").args([
            "inspect",
            "--cert-dir",
            &certs,
            "--creds",
            &creds,
            &dest,
        ])))
        .unwrap();
        assert!(
            inspected["Digest"].as_str().unwrap().starts_with("sha256:"),
            "{user}"
        );
        let wrong = Command::new("skopeo")
            .args([
                "inspect",
                "--cert-dir",
                &certs,
                "--creds",
                &format!("{user}:nope"),
                &dest,
            ])
            .output()
            .unwrap();
        assert!(!wrong.status.success(), "{user} with a wrong password");
    }

    // Without the CA, verification fails and says why.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    self_signed(&other, "ca");
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--cert-dir",
            &other.display().to_string(),
            "--creds",
            "sha:pw-s",
        ])
        .arg(format!("docker://{}/formats/sha:v1", w.host()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    docker_rmi(&[&local]);
}

#[test]
fn nginx_in_front_with_an_apr1_file_as_in_seed_003() {
    require("nginx", "nginx");
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let backend = Served::start(dir.path(), "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n", &[]);
    let (cert, key) = self_signed(dir.path(), "proxy");
    let hash = run(Command::new("openssl").args(["passwd", "-apr1", "admin"]));
    let users = dir.path().join("nginx.htpasswd");
    std::fs::write(&users, format!("admin:{hash}")).unwrap();
    let (_nginx, port) = crate::harness::nginx::nginx(
        dir.path(),
        &format!(
            r#"    access_log off;
    server {{
        listen      127.0.0.1:@PORT@ ssl;
        ssl_certificate   {cert};
        ssl_certificate_key  {key};
        chunked_transfer_encoding on;
        client_max_body_size 0;
        location /v2/ {{
            auth_basic "Registry realm";
            auth_basic_user_file {users};
            add_header 'Docker-Distribution-Api-Version' 'registry/2.0' always;
            proxy_pass                          http://127.0.0.1:{backend};
            proxy_set_header  Host              $http_host;
            proxy_set_header  X-Real-IP         $remote_addr;
            proxy_set_header  X-Forwarded-For   $proxy_add_x_forwarded_for;
            proxy_set_header  X-Forwarded-Proto $scheme;
            proxy_read_timeout                  900;
        }}
    }}"#,
            cert = cert.display(),
            key = key.display(),
            users = users.display(),
            backend = backend.port,
        ),
    );
    let host = format!("127.0.0.1:{port}");
    let config = dir.path().join("docker-config");
    let out = docker_login(&config, &host, "admin", "admin");
    assert!(
        out.status.success(),
        "docker login through nginx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = build_busybox_image(&unique("wharf-nginx-src:"), "behind nginx");
    let remote = format!("{host}/proxied/app:v1");
    docker_ok(&config, &["tag", &local, &remote]);
    docker_ok(&config, &["push", &remote]);
    docker_rmi(&[&remote, &local]);
    docker_ok(&config, &["pull", &remote]);
    assert_eq!(
        docker_ok(&config, &["run", "--rm", &remote, "cat", "/marker"]).trim(),
        "behind nginx"
    );
    docker_rmi(&[&remote]);
}

const POLICY_CONFIG: &str = "version: 0.1
storage:
  filesystem:
    rootdirectory: @DIR@/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:@PORT@
auth:
  htpasswd:
    realm: wharf
    path: @DIR@/htpasswd
    token:
      service: wharf-test
      expiration: 300s
access:
  groups:
    ci: [alice]
  rules:
    - { repositories: ['public/*'], anonymous: true, actions: [pull] }
    - { repositories: ['apps/*', 'public/*'], groups: [ci], actions: [pull, push] }
    - { repositories: ['*'], users: [admin], actions: ['*'] }
";

#[test]
fn token_flow_with_an_access_policy_for_docker_and_plain_http() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    htpasswd_add(&dir.path().join("htpasswd"), "-B", "alice", "alice-pw");
    htpasswd_add(&dir.path().join("htpasswd"), "-B", "admin", "admin-pw");
    let w = Served::start(dir.path(), POLICY_CONFIG, &[]);
    let base = format!("http://{}", w.host());
    let c = Client::new();

    // The challenge points at the built-in token endpoint.
    let r = c.get(format!("{base}/v2/")).send().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(
        challenge,
        format!("Bearer realm=\"{base}/auth/token\",service=\"wharf-test\"")
    );

    // alice (group ci) pushes to public/ with docker, through the token flow.
    let alice = dir.path().join("alice");
    assert!(docker_login(&alice, &w.host(), "alice", "alice-pw")
        .status
        .success());
    // docker asked for a refresh token and keeps it instead of the password; the pushes
    // below then trade it for access tokens (the refresh_token grant).
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(alice.join("config.json")).unwrap()).unwrap();
    assert!(
        saved["auths"][w.host()]["identitytoken"].is_string(),
        "{saved}"
    );
    let local = build_busybox_image(&unique("wharf-token-src:"), "token flow");
    let public = format!("{}/public/base:v1", w.host());
    docker_ok(&alice, &["tag", &local, &public]);
    docker_ok(&alice, &["push", &public]);
    let denied = format!("{}/private/base:v1", w.host());
    docker_ok(&alice, &["tag", &local, &denied]);
    let out = docker(&alice, &["push", &denied]);
    assert!(!out.status.success(), "alice may not push to private/");
    docker_rmi(&[&public, &denied, &local]);

    // Anonymous callers may pull public/ and nothing more.
    let anon = dir.path().join("anonymous");
    docker_ok(&anon, &["pull", &public]);
    docker_ok(&anon, &["tag", &public, &format!("{}/apps/x:v1", w.host())]);
    let out = docker(&anon, &["push", &format!("{}/apps/x:v1", w.host())]);
    assert!(!out.status.success(), "anonymous push must be refused");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("unauthorized") || err.contains("denied") || err.contains("authentication"),
        "{err}"
    );
    docker_rmi(&[&public, &format!("{}/apps/x:v1", w.host())]);

    // The token endpoint grants what the policy allows, no more.
    let token: Value = c
        .get(format!("{base}/auth/token?service=wharf-test&scope=repository:public/base:pull,push&scope=repository:apps/y:push"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(token["expires_in"], 300);
    let claims = decode_claims(token["token"].as_str().unwrap());
    assert_eq!(
        claims["access"],
        json!([
            {"type": "repository", "name": "public/base", "actions": ["pull", "push"]},
            {"type": "repository", "name": "apps/y", "actions": ["push"]}
        ])
    );
    let anonymous: Value = c
        .get(format!(
            "{base}/auth/token?scope=repository:public/base:pull,push"
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        decode_claims(anonymous["token"].as_str().unwrap())["access"],
        json!([{"type": "repository", "name": "public/base", "actions": ["pull"]}])
    );
    let r = c
        .get(format!("{base}/auth/token?scope=repository:a:pull"))
        .basic_auth("alice", Some("nope"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A token works for what it grants, and a push needing more is challenged with the scope.
    let bearer = token["token"].as_str().unwrap();
    let r = c
        .get(format!("{base}/v2/public/base/tags/list"))
        .bearer_auth(bearer)
        .send()
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!(["v1"]));
    let r = c
        .delete(format!("{base}/v2/public/base/manifests/v1"))
        .bearer_auth(bearer)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("scope=\"repository:public/base:delete\"")
            && challenge.contains("insufficient_scope"),
        "{challenge}"
    );

    // OAuth2 password grant and refresh, as docker login uses.
    let form = [
        ("grant_type", "password"),
        ("username", "admin"),
        ("password", "admin-pw"),
        ("service", "wharf-test"),
        ("client_id", "test"),
        ("access_type", "offline"),
        ("scope", "registry:catalog:*"),
    ];
    let granted: Value = c
        .post(format!("{base}/auth/token"))
        .form(&form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let refresh = granted["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let refreshed: Value = c
        .post(format!("{base}/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "wharf-test"),
            ("scope", "repository:private/z:delete"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        decode_claims(refreshed["token"].as_str().unwrap())["access"][0]["actions"],
        json!(["delete"])
    );

    // The catalog shows each caller what they may pull.
    let catalog: Value = c
        .get(format!("{base}/v2/_catalog"))
        .bearer_auth(granted["token"].as_str().unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(catalog["repositories"], json!(["public/base"]));
    let r = c
        .get(format!("{base}/v2/_catalog"))
        .bearer_auth(bearer)
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "alice's token was not granted the catalog"
    );
}

fn decode_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn external_tokens_are_verified_against_the_root_cert_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "token-signer");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (_, other_key) = self_signed(&other, "impostor");
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  token:\n    realm: https://auth.example.test/token\n    service: registry.example.test\n    issuer: example-issuer\n    rootcertbundle: {}\n",
        cert.display()
    );
    let w = Served::start(dir.path(), &yaml, &[]);
    let base = format!("http://{}", w.host());
    let c = Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |key: &Path, claims: Value| {
        let pem = std::fs::read(key).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
        )
        .unwrap()
    };
    let claims = |iss: &str, exp: u64| {
        json!({"iss": iss, "sub": "ci", "aud": "registry.example.test", "exp": exp, "nbf": now - 10, "iat": now - 10, "jti": "1",
               "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]})
    };

    let r = c
        .get(format!("{base}/v2/team/app/tags/list"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"https://auth.example.test/token\",service=\"registry.example.test\",scope=\"repository:team/app:pull\""
    );

    let good = sign(&key, claims("example-issuer", now + 300));
    assert_eq!(
        c.get(format!("{base}/v2/"))
            .bearer_auth(&good)
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = c
        .get(format!("{base}/v2/team/app/tags/list"))
        .bearer_auth(&good)
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "authorized; the repository just does not exist"
    );
    let r = c
        .get(format!("{base}/v2/team/other/tags/list"))
        .bearer_auth(&good)
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "no grant for this repository"
    );

    let mut tampered: Vec<String> = good.split('.').map(str::to_owned).collect();
    {
        use base64::Engine;
        let mut forged = claims("example-issuer", now + 300);
        forged["access"][0]["name"] = json!("team/other");
        tampered[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
    }
    for (what, token) in [
        ("tampered", tampered.join(".")),
        ("expired", sign(&key, claims("example-issuer", now - 120))),
        (
            "wrong issuer",
            sign(&key, claims("someone-else", now + 300)),
        ),
        (
            "unknown key",
            sign(&other_key, claims("example-issuer", now + 300)),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ] {
        let r = c
            .get(format!("{base}/v2/team/app/tags/list"))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what} token");
        assert_eq!(error_code(r), "UNAUTHORIZED", "{what} token");
    }
}

#[test]
fn bad_credentials_headers_and_login_floods_are_refused_and_others_still_served() {
    let dir = tempfile::tempdir().unwrap();
    htpasswd_add(&dir.path().join("htpasswd"), "-B", "alice", "alice-pw");
    htpasswd_add(&dir.path().join("htpasswd"), "-B", "bob", "bob-pw");
    let yaml = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  htpasswd:\n    realm: r\n    path: @DIR@/htpasswd\n";
    let w = Served::start(dir.path(), yaml, &[]);
    let base = format!("http://{}/v2/", w.host());
    let c = Client::new();
    for bad in [
        "Basic",
        "Basic !!notbase64!!",
        "Basic Ym9iOg==",
        "Digest abc",
        "Bearer",
        "Basic YWxpY2U=",
    ] {
        let r = c.get(&base).header("authorization", bad).send().unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad}");
        assert!(r.headers().contains_key("www-authenticate"), "{bad}");
        assert_eq!(error_code(r), "UNAUTHORIZED", "{bad}");
    }
    let huge = "x".repeat(512 * 1024);
    let r = c.get(&base).header("x-huge", huge).send();
    assert!(
        r.map(|r| r.status().is_client_error()).unwrap_or(true),
        "an oversized header is refused"
    );

    // A flood of wrong passwords for alice is cut off; bob is served meanwhile.
    let mut limited = 0;
    for _ in 0..15 {
        let r = c
            .get(&base)
            .basic_auth("alice", Some("guess"))
            .send()
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert_eq!(error_code(r), "TOOMANYREQUESTS");
        }
        assert_eq!(
            c.get(&base)
                .basic_auth("bob", Some("bob-pw"))
                .send()
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    assert!(
        limited >= 4,
        "only {limited} of 15 wrong passwords were rate-limited"
    );
    let r = c
        .get(&base)
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "alice stays blocked for the window, even with the right password"
    );
    assert!(
        !w.log().contains("alice-pw") && !w.log().contains("guess"),
        "a password reached the log"
    );
}

/// The config.yml the registry:2 image ships, started unchanged; only the environment
/// moves it, as compose files do.
#[test]
fn the_registry2_image_config_starts_unchanged_and_env_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: /var/lib/registry\nhttp:\n  addr: :5000\n  headers:\n    X-Content-Type-Options: [nosniff]\nhealth:\n  storagedriver:\n    enabled: true\n    interval: 10s\n    threshold: 3\n";
    let port = free_port();
    let data = dir.path().join("data");
    let w = Served::start(
        dir.path(),
        yaml,
        &[
            ("REGISTRY_HTTP_ADDR", &format!("127.0.0.1:{port}")),
            (
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                &data.display().to_string(),
            ),
        ],
    );
    assert_eq!(w.port, port, "wharf listens where REGISTRY_HTTP_ADDR says");
    let c = Client::new();
    let r = c
        .get(format!("http://127.0.0.1:{port}/v2/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // A push lands under the root the environment named.
    let blob = b"env root";
    let digest = wharf_oci::Digest::sha256_of(blob);
    let r = c
        .post(format!(
            "http://127.0.0.1:{port}/v2/env/blobs/uploads/?digest={digest}"
        ))
        .body(blob.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(data
        .join("docker/registry/v2/blobs/sha256")
        .join(&digest.hex()[..2])
        .join(digest.hex())
        .join("data")
        .is_file());
    // health.storagedriver included: wharf acts on every key of the image's config.
    let log = w.log();
    assert!(
        !log.contains("not supported"),
        "a key of the image's config is ignored: {log}"
    );
}

#[test]
fn config_mistakes_are_reported_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("version: 0.1\nstorage:\n  delete:\n    enabled: perhaps\n", "storage.delete.enabled"),
        ("version: 0.1\nauth:\n  htpasswd:\n    realm: r\n", "auth.htpasswd.path"),
        // A missing file is provisioned (as registry:2 does); one that cannot be is named.
        ("version: 0.1\nauth:\n  htpasswd:\n    realm: r\n    path: @DIR@/a-file/htpasswd\n", "a-file/htpasswd"),
        ("version: 0.1\nhttp:\n  tls:\n    certificate: /nonexistent.crt\n    key: /nonexistent.key\n", "/nonexistent.crt"),
        ("version: 0.1\naccess:\n  rules:\n    - { repositories: ['*'], actions: [fly] }\n", "fly"),
    ];
    std::fs::write(dir.path().join("a-file"), "not a directory").unwrap();
    for (yaml, expected) in cases {
        let config = dir.path().join("bad.yml");
        let yaml = yaml.replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(&config, &yaml).unwrap();
        let out = Command::new(WHARF)
            .arg("serve")
            .arg(&config)
            .arg("--addr")
            .arg("127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{yaml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{expected} not named in: {err}");
    }
}

#[test]
fn tls_certificates_are_reloaded_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (first, first_key) = self_signed(dir.path(), "first");
    let live = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::copy(&first, &live.0).unwrap();
    std::fs::copy(&first_key, &live.1).unwrap();
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  tls:\n    certificate: {}\n    key: {}\n",
        live.0.display(),
        live.1.display()
    );
    let w = Served::start(dir.path(), &yaml, &[]);
    let url = format!("https://{}/v2/", w.host());
    assert_eq!(
        tls_client(&first).get(&url).send().unwrap().status(),
        StatusCode::OK
    );

    let renewed = dir.path().join("renewed");
    std::fs::create_dir_all(&renewed).unwrap();
    let (second, second_key) = self_signed(&renewed, "second");
    std::fs::copy(&second_key, &live.1).unwrap();
    std::fs::copy(&second, &live.0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tls_client(&second)
            .get(&url)
            .send()
            .is_ok_and(|r| r.status() == StatusCode::OK)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        tls_client(&first).get(&url).send().is_err(),
        "the old certificate is no longer served"
    );
}

#[test]
fn wharf_htpasswd_writes_entries_apache_htpasswd_and_the_registry_accept() {
    require("htpasswd", "apache2-utils");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let wharf_htpasswd = |args: &[&str], stdin: &str| {
        output_with_stdin(
            Command::new(WHARF).arg("htpasswd").args(args).arg(&file),
            stdin,
        )
    };
    let add = |user: &str, password: &str| {
        let out = output_with_stdin(
            Command::new(WHARF)
                .args(["htpasswd", "add"])
                .arg(&file)
                .arg(user),
            password,
        );
        assert!(
            out.status.success(),
            "wharf htpasswd add {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    add("alice", "first");
    add("bob", "bob-pw");
    add("alice", "second"); // a new password replaces the old entry
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .all(|l| l.split(':').nth(1).unwrap().starts_with("$2y$")),
        "bcrypt as htpasswd -B writes"
    );

    // Apache's own tool verifies what wharf wrote.
    let verify = |user: &str, password: &str| {
        Command::new("htpasswd")
            .arg("-vb")
            .arg(&file)
            .args([user, password])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(verify("alice", "second"));
    assert!(!verify("alice", "first"));
    assert!(verify("bob", "bob-pw"));

    let listed = wharf_htpasswd(&["list"], "");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "alice\nbob\n");
    assert!(Command::new(WHARF)
        .args(["htpasswd", "delete"])
        .arg(&file)
        .arg("bob")
        .status()
        .unwrap()
        .success());
    let missing = Command::new(WHARF)
        .args(["htpasswd", "delete"])
        .arg(&file)
        .arg("bob")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("bob is not in"));
    let empty_password = wharf_htpasswd(&["add"], "");
    assert!(
        !empty_password.status.success(),
        "add without a user or password is refused"
    );

    // And the registry takes it.
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n",
        file.display()
    );
    let w = Served::start(dir.path(), &yaml, &[]);
    let c = Client::new();
    let base = format!("http://{}/v2/", w.host());
    assert_eq!(
        c.get(&base)
            .basic_auth("alice", Some("second"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(&base)
            .basic_auth("bob", Some("bob-pw"))
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn the_token_realm_follows_the_proxy_in_front() {
    let dir = tempfile::tempdir().unwrap();
    htpasswd_add(&dir.path().join("htpasswd"), "-B", "alice", "alice-pw");
    let w = Served::start(dir.path(), POLICY_CONFIG, &[]);
    let r = Client::new()
        .get(format!("http://{}/v2/", w.host()))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "registry.example.test")
        .send()
        .unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"https://registry.example.test/auth/token\",service=\"wharf-test\""
    );
}
