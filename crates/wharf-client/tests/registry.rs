//! The client against a real wharf registry (`wharf serve`, htpasswd users, built-in token
//! server) and a real `docker login`: the token cache's request count and expiry, and
//! config.json files exactly as docker writes them.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wharf_client::challenge::Challenge;
use wharf_client::credentials::{Credential, CredentialSource, Origin, Secret};
use wharf_client::token_cache::{fetch_token, TokenError, TokenKey};
use wharf_client::{BearerChallenge, ClientOptions, Registry, RegistryClient, TokenCache};

/// The `wharf` binary of this workspace, built first if it is missing.
fn wharf_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("../../target"));
        let bin = target.join("debug/wharf");
        if !bin.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "wharf"])
                .current_dir(manifest)
                .status()
                .expect("run cargo");
            assert!(
                status.success() && bin.exists(),
                "this test needs the wharf binary at {}; `cargo build -p wharf` failed",
                bin.display()
            );
        }
        bin
    })
}

/// Tests must fail, not skip, when docker is missing: the docker-login test is the proof
/// that we read what docker writes.
fn require_docker() {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "this test needs a docker CLI and a running Docker Engine (`docker version` failed): install docker.io and start dockerd, or run .ci/run");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `wharf serve` with a config; killed when dropped.
struct Wharf {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Wharf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Wharf {
    /// A registry in `dir` whose htpasswd has alice/alice-pw; `token` adds the built-in
    /// token server with that expiration.
    fn start(dir: &Path, token_expiration: Option<&str>) -> Wharf {
        Self::start_on(dir, token_expiration, free_port())
    }

    /// As `start`, on `port` (to start the same registry again).
    fn start_on(dir: &Path, token_expiration: Option<&str>, port: u16) -> Wharf {
        let htpasswd = dir.join("htpasswd");
        let mut add = Command::new(wharf_bin())
            .args(["htpasswd", "add"])
            .arg(&htpasswd)
            .arg("alice")
            .stdin(Stdio::piped())
            .spawn()
            .expect("wharf htpasswd add");
        add.stdin
            .take()
            .expect("stdin")
            .write_all(b"alice-pw\n")
            .expect("password");
        assert!(add.wait().expect("wait").success(), "wharf htpasswd add");

        let token = token_expiration
            .map(|e| format!("    token: {{ service: wharf-test, expiration: {e} }}\n"))
            .unwrap_or_default();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: wharf-realm\n    path: {}\n{token}",
                dir.join("data").display(),
                htpasswd.display()
            ),
        )
        .expect("config");
        let log = dir.join("wharf.log");
        let child = Command::new(wharf_bin())
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start wharf serve");
        let mut w = Wharf { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!("wharf serve exited with {status}: {}", w.log());
            }
            assert!(
                Instant::now() < deadline,
                "wharf did not listen on {port}: {}",
                w.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        w
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn base(&self) -> String {
        format!("http://{}", self.host())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The challenge of an unauthenticated `/v2/`.
    async fn challenge(&self, client: &reqwest::Client) -> Challenge {
        let r = client
            .get(format!("{}/v2/", self.base()))
            .send()
            .await
            .expect("GET /v2/");
        assert_eq!(r.status(), 401);
        let header = r.headers()["www-authenticate"]
            .to_str()
            .expect("ASCII header");
        Challenge::parse(header).unwrap_or_else(|e| panic!("{header}: {e}"))
    }

    async fn bearer_challenge(&self, client: &reqwest::Client) -> BearerChallenge {
        match self.challenge(client).await {
            Challenge::Bearer(b) => b,
            other => panic!("expected a Bearer challenge, got {other:?}"),
        }
    }

    /// The status of `GET path` with `token`.
    async fn get_with(&self, client: &reqwest::Client, path: &str, token: &Secret) -> u16 {
        client
            .get(format!("{}{path}", self.base()))
            .bearer_auth(token.expose())
            .send()
            .await
            .expect("GET")
            .status()
            .as_u16()
    }
}

fn alice() -> Credential {
    Credential::Basic {
        username: "alice".into(),
        password: Secret::new("alice-pw"),
    }
}

const SCOPE: &str = "repository:team/app:pull";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_cache_fetches_once_and_again_after_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = Wharf::start(dir.path(), Some("2s"));
    let client = reqwest::Client::new();
    let challenge = w.bearer_challenge(&client).await;
    assert_eq!(challenge.realm, format!("{}/auth/token", w.base()));
    assert_eq!(challenge.service.as_deref(), Some("wharf-test"));

    let cache = Arc::new(TokenCache::new(client.clone()));
    let cred = alice();
    let first = cache
        .token(&challenge, &[SCOPE], Some(&cred))
        .await
        .expect("token");
    assert_eq!(cache.fetch_count(), 1);
    assert_eq!(
        w.get_with(&client, "/v2/", &first).await,
        200,
        "the token is accepted"
    );

    // Repeated and concurrent lookups: zero extra token requests.
    for _ in 0..5 {
        let again = cache
            .token(&challenge, &[SCOPE], Some(&cred))
            .await
            .expect("token");
        assert_eq!(again, first);
    }
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (cache, challenge, cred) = (cache.clone(), challenge.clone(), cred.clone());
            tokio::spawn(async move { cache.token(&challenge, &[SCOPE], Some(&cred)).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("token"), first);
    }
    assert_eq!(cache.fetch_count(), 1, "one request for many lookups");

    // Another scope or another caller is another token.
    cache
        .token(&challenge, &["repository:team/other:pull"], Some(&cred))
        .await
        .expect("token");
    cache
        .token(&challenge, &[SCOPE], None)
        .await
        .expect("anonymous token");
    assert_eq!(cache.fetch_count(), 3);

    // expires_in is 2 s: usable for 1.8 s, then fetched again, once, by concurrent callers.
    tokio::time::sleep(Duration::from_millis(1900)).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (cache, challenge, cred) = (cache.clone(), challenge.clone(), cred.clone());
            tokio::spawn(async move { cache.token(&challenge, &[SCOPE], Some(&cred)).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("token");
    }
    assert_eq!(cache.fetch_count(), 4, "exactly one refetch after expiry");

    // A 401 with the cached token drops it; the next lookup fetches.
    let current = cache
        .token(&challenge, &[SCOPE], Some(&cred))
        .await
        .expect("token");
    let key = TokenKey::new(&challenge, &[SCOPE], Some(&cred));
    cache
        .invalidate(&key, &Secret::new("some other token"))
        .await;
    cache
        .token(&challenge, &[SCOPE], Some(&cred))
        .await
        .expect("token");
    assert_eq!(
        cache.fetch_count(),
        4,
        "invalidating a token we do not hold changes nothing"
    );
    cache.invalidate(&key, &current).await;
    cache
        .token(&challenge, &[SCOPE], Some(&cred))
        .await
        .expect("token");
    assert_eq!(cache.fetch_count(), 5);

    tokio::time::sleep(Duration::from_secs(2)).await;
    cache.purge_expired();
    assert!(cache.is_empty(), "expired tokens are purged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_the_registry_stopped_accepting_is_replaced_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = Wharf::start(dir.path(), Some("300s"));
    let port = w.port;
    let registry = Registry::from_server_address(&w.host()).expect("registry");
    let options = ClientOptions {
        insecure: true,
        ..ClientOptions::default()
    };
    let client =
        RegistryClient::with_credential(registry, &options, Some(alice())).expect("client");
    client.ping().await.expect("ping");
    assert_eq!(client.token_cache().fetch_count(), 1);

    // The registry restarts without http.secret: a new signing key, so the token this
    // client holds, valid for minutes yet, is refused. As a long-running watcher meets it.
    drop(w);
    let _w = Wharf::start_on(dir.path(), Some("300s"), port);
    client.ping().await.expect("ping after the restart");
    assert_eq!(
        client.token_cache().fetch_count(),
        2,
        "one fresh token after the 401"
    );
    client.ping().await.expect("ping again");
    assert_eq!(client.token_cache().fetch_count(), 2, "and it is cached");
}

#[tokio::test]
async fn fetch_token_reports_expiry_and_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = Wharf::start(dir.path(), Some("300s"));
    let client = reqwest::Client::new();
    let challenge = w.bearer_challenge(&client).await;

    let r = fetch_token(
        &client,
        &challenge.realm,
        challenge.service.as_deref(),
        &[SCOPE, "repository:team/b:pull,push"],
        Some(&alice()),
    )
    .await
    .expect("token");
    assert_eq!(r.expires_in, Some(300));
    assert_eq!(r.usable_for(), Duration::from_secs(295));

    let wrong = Credential::Basic {
        username: "alice".into(),
        password: Secret::new("wrong-pw"),
    };
    let err = fetch_token(
        &client,
        &challenge.realm,
        challenge.service.as_deref(),
        &[SCOPE],
        Some(&wrong),
    )
    .await
    .expect_err("wrong password");
    let msg = err.to_string();
    assert!(
        matches!(err, TokenError::Refused { status: 401, .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&challenge.realm) && !msg.contains("wrong-pw"),
        "{msg}"
    );

    let err = fetch_token(
        &client,
        &format!("{}/nothing-here", w.base()),
        None,
        &[SCOPE],
        None,
    )
    .await
    .expect_err("not a token server");
    assert!(
        matches!(
            err,
            TokenError::Refused { status: 404, .. } | TokenError::BadResponse { .. }
        ),
        "{err}"
    );

    let closed = format!("http://127.0.0.1:{}/token", free_port());
    let err = fetch_token(&client, &closed, None, &[SCOPE], None)
        .await
        .expect_err("refused");
    assert!(matches!(err, TokenError::Request { .. }), "{err}");
}

fn docker(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("docker output")
}

fn docker_ok(config: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = docker(config, args, stdin);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A source reading only `dir`, with no REPO_USER/REPO_PASS.
fn source_for(dir: &Path) -> CredentialSource {
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| !matches!(k.as_str(), "REPO_USER" | "REPO_PASS" | "DOCKER_CONFIG"))
        .collect();
    CredentialSource::new(env, dir.to_owned())
}

#[tokio::test]
async fn config_json_written_by_docker_login_is_read() {
    require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let basic_dir = dir.path().join("basic");
    let token_dir = dir.path().join("token");
    std::fs::create_dir_all(&basic_dir).expect("dir");
    std::fs::create_dir_all(&token_dir).expect("dir");
    let basic = Wharf::start(&basic_dir, None);
    let tokens = Wharf::start(&token_dir, Some("300s"));
    let client = reqwest::Client::new();

    // htpasswd only: docker keeps base64 user:password in auths[host].auth.
    let config = dir.path().join("docker-config");
    docker_ok(
        &config,
        &["login", &basic.host(), "-u", "alice", "--password-stdin"],
        Some("alice-pw"),
    );
    let source = source_for(&config);
    let registry: Registry = basic.host().parse().expect("registry");
    let found = source
        .lookup(&registry)
        .expect("lookup")
        .expect("credentials");
    assert_eq!(found.credential, alice());
    assert_eq!(
        found.origin,
        Origin::ConfigFile {
            path: config.join("config.json"),
            key: basic.host()
        }
    );
    assert!(
        matches!(basic.challenge(&client).await, Challenge::Basic { realm: Some(r) } if r == "wharf-realm")
    );

    // Against a token server, docker keeps either the password (docker 20.10 asks with
    // GET) or a refresh token as `identitytoken` (newer clients, OAuth POST). Either way
    // what we read trades for an access token the registry accepts.
    docker_ok(
        &config,
        &["login", &tokens.host(), "-u", "alice", "--password-stdin"],
        Some("alice-pw"),
    );
    let raw: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(config.join("config.json")).expect("config.json"),
    )
    .expect("JSON");
    let registry: Registry = tokens.host().parse().expect("registry");
    let found = source
        .lookup(&registry)
        .expect("lookup")
        .expect("credentials");
    // wharf answers docker login's `offline_token=true` with a refresh token, so current
    // docker keeps an identity token; a token traded for it is one more POST below.
    let docker_kept_identity_token = raw["auths"][tokens.host()]["identitytoken"].is_string();
    if docker_kept_identity_token {
        assert!(
            matches!(&found.credential, Credential::IdentityToken { username, .. } if username == "alice"),
            "{:?}",
            found.credential
        );
    } else {
        assert_eq!(found.credential, alice());
    }
    let challenge = tokens.bearer_challenge(&client).await;
    let cache = TokenCache::new(client.clone());
    let token = cache
        .token(&challenge, &[SCOPE], Some(&found.credential))
        .await
        .expect("token from docker's stored credential");
    assert_eq!(tokens.get_with(&client, "/v2/", &token).await, 200);

    // The identity-token path end to end: a refresh token from the OAuth password grant
    // (as docker's newer login gets it), kept in config.json as docker keeps it, read
    // back and traded with grant_type=refresh_token.
    let granted: serde_json::Value = client
        .post(&challenge.realm)
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("service", "wharf-test"),
            ("client_id", "docker"),
            ("access_type", "offline"),
        ])
        .send()
        .await
        .expect("password grant")
        .json()
        .await
        .expect("JSON");
    let refresh = granted["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    let with_token = dir.path().join("identity");
    std::fs::create_dir_all(&with_token).expect("dir");
    std::fs::write(
        with_token.join("config.json"),
        serde_json::json!({"auths": {tokens.host(): {
            "auth": "YWxpY2U6", // base64 "alice:", as docker writes next to a token
            "identitytoken": refresh,
        }}})
        .to_string(),
    )
    .expect("write config");
    let found = source_for(&with_token)
        .lookup(&registry)
        .expect("lookup")
        .expect("credentials");
    // A cache of its own: the one above may already hold alice's token for this scope.
    let cache = TokenCache::new(client.clone());
    assert_eq!(
        found.credential,
        Credential::IdentityToken {
            username: "alice".into(),
            token: Secret::new(refresh)
        }
    );
    let token = cache
        .token(&challenge, &[SCOPE], Some(&found.credential))
        .await
        .expect("token from the identity token");
    assert_eq!(tokens.get_with(&client, "/v2/", &token).await, 200);
    assert_eq!(cache.fetch_count(), 1);
    // The request log line may trail the response by a moment.
    let posts = || {
        tokens
            .log()
            .matches("method=POST path=/auth/token status=200")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let expected_posts = 2 + usize::from(docker_kept_identity_token);
    while posts() < expected_posts && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        posts() == expected_posts,
        "the password grant, then the refresh token traded by POST: {}",
        tokens.log()
    );

    // The first login is untouched by the second.
    let first: Registry = basic.host().parse().expect("registry");
    assert_eq!(
        source.lookup(&first).expect("lookup").map(|f| f.credential),
        Some(alice())
    );

    // What we store, docker reads: docker logout finds it; what docker logs out, we lose.
    let ours = dir.path().join("ours");
    let source = source_for(&ours);
    source.store(&first, &alice()).expect("store");
    let out = docker_ok(&ours, &["logout", &basic.host()], None);
    assert!(out.contains("Removing login credentials"), "{out}");
    assert_eq!(source.lookup(&first).expect("lookup"), None);
}
