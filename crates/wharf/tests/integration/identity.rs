//! Robot tokens, repository delete and the audit log, with real clients: docker logs in
//! with a token and pushes within its scope only; a revoked or expired token (and bearer
//! tokens issued to it) are refused at once; `wharf delete --repository` empties the
//! catalog and GC frees the bytes; `wharf audit verify` names the tampered record.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{
    build_busybox_image, docker_login, docker_rmi, docker_with as docker, output_text as text,
    require_docker, run, unique, Served, WHARF,
};

pub(crate) const TOKEN_CONFIG: &str = "version: 0.1
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
  rules:
    - { repositories: ['*'], users: [admin], actions: ['*'] }
immutable:
  - { repositories: ['frozen/*'], tags: 'v*' }
";

/// `wharf <args> CONFIG`.
pub(crate) fn wharf(config: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(WHARF)
        .args(args)
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run wharf")
}

pub(crate) fn wharf_ok(config: &Path, env: &[(String, String)], args: &[&str]) -> String {
    let out = wharf(config, env, args);
    assert!(
        out.status.success(),
        "wharf {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Make a token; its secret (stdout holds it alone).
pub(crate) fn create_token(
    config: &Path,
    env: &[(String, String)],
    name: &str,
    scope: &str,
    expires: &str,
) -> String {
    let out = wharf_ok(
        config,
        env,
        &[
            "token",
            "create",
            "--name",
            name,
            "--scope",
            scope,
            "--expires",
            expires,
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "the secret alone on stdout: {out:?}");
    assert!(lines[0].starts_with("wharf_rt_"), "{out}");
    lines[0].to_owned()
}

/// Every record of the audit log, as `wharf audit --json` prints them.
pub(crate) fn audit_records(config: &Path, env: &[(String, String)]) -> Vec<Value> {
    wharf_ok(config, env, &["audit", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn count(records: &[Value], actor: &str, action: &str, target: &str) -> usize {
    records
        .iter()
        .filter(|r| r["actor"] == actor && r["action"] == action)
        .filter(|r| r["target"].as_str().unwrap_or("").starts_with(target))
        .count()
}

/// Poll `check` for up to `limit`; how long it took to hold.
pub(crate) fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn token_for(
    c: &Client,
    base: &str,
    user: &str,
    password: &str,
    scope: &str,
) -> reqwest::blocking::Response {
    c.get(format!(
        "{base}/auth/token?service=wharf-test&scope={scope}"
    ))
    .basic_auth(user, Some(password))
    .send()
    .unwrap()
}

#[test]
fn a_robot_token_pushes_with_docker_within_its_scope_until_revoked() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    crate::harness::htpasswd(&dir.path().join("htpasswd"), "admin", "admin-pw");
    let w = Served::start(dir.path(), TOKEN_CONFIG, &[]);
    let config = dir.path().join("config.yml");
    let base = format!("http://{}", w.host());
    let c = Client::new();

    let secret = create_token(&config, &[], "ci-deploy", "team/*:pull,push", "90d");
    // Only a hash is stored.
    let tokens = dir.path().join("data/docker/registry/v2/_wharf/tokens");
    let stored: Vec<_> = std::fs::read_dir(&tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let file = std::fs::read_to_string(&stored[0]).unwrap();
    assert!(
        !file.contains(&secret) && !file.contains(&secret["wharf_rt_".len()..]),
        "{file}"
    );
    assert!(file.contains("team/*:pull,push"), "{file}");

    // docker login and push with it, within its scope; outside it, denied, although
    // `access:` would not be asked (a token's scopes are all it may do).
    let docker_config = dir.path().join("docker");
    let login = docker_login(&docker_config, &w.host(), "ci-deploy", &secret);
    assert!(login.status.success(), "{}", text(&login));
    let local = build_busybox_image(&unique("wharf-robot:"), &unique("robot"));
    let allowed = format!("{}/team/app:v1", w.host());
    let denied = format!("{}/other/x:v1", w.host());
    run(Command::new("docker").args(["tag", &local, &allowed]));
    run(Command::new("docker").args(["tag", &local, &denied]));
    let pushed = docker(&docker_config, &["push", &allowed]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    let refused = docker(&docker_config, &["push", &denied]);
    assert!(
        !refused.status.success(),
        "a push outside the token's scope"
    );

    // The token server grants the token's scopes, no more, and nothing for another service.
    let r = token_for(
        &c,
        &base,
        "ci-deploy",
        &secret,
        "repository:other/x:pull,push",
    );
    assert_eq!(r.status(), StatusCode::OK);
    let granted: Value = r.json().unwrap();
    let jwt = granted["token"].as_str().unwrap().to_owned();
    let claims = decode(&jwt);
    assert_eq!(claims["access"], serde_json::json!([]), "{claims}");
    let r = c
        .post(format!("{base}/v2/other/x/blobs/uploads/"))
        .bearer_auth(&jwt)
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a push outside the scope"
    );
    let r = c
        .get(format!(
            "{base}/auth/token?service=another&scope=repository:team/app:pull"
        ))
        .basic_auth("ci-deploy", Some(&secret))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A forged scope: the payload rewritten to grant other/x, the signature kept.
    let team: Value = token_for(&c, &base, "ci-deploy", &secret, "repository:team/app:pull")
        .json()
        .unwrap();
    let team_jwt = team["token"].as_str().unwrap().to_owned();
    let forged = forge(&team_jwt, "other/x");
    let r = c
        .get(format!("{base}/v2/other/x/tags/list"))
        .bearer_auth(&forged)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a forged token");
    let tags = |jwt: &str| {
        c.get(format!("{base}/v2/team/app/tags/list"))
            .bearer_auth(jwt)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(tags(&team_jwt), StatusCode::OK);

    // Revoked: the password and every bearer token issued to it are refused at once.
    wharf_ok(&config, &[], &["token", "revoke", "ci-deploy"]);
    let took = within(Duration::from_secs(1), || {
        tags(&team_jwt) == StatusCode::UNAUTHORIZED
            && token_for(&c, &base, "ci-deploy", &secret, "repository:team/app:pull").status()
                == StatusCode::UNAUTHORIZED
    });
    assert!(took.is_some(), "a revoked token still works after 1 s");
    let r = token_for(&c, &base, "ci-deploy", &secret, "repository:team/app:pull");
    let body = r.text().unwrap();
    assert!(body.contains("revoked"), "{body}");
    let again = docker(&docker_config, &["push", &allowed]);
    assert!(!again.status.success(), "docker with a revoked token");

    // Expired: refused once its time is up.
    let short = create_token(&config, &[], "short-lived", "team/*:pull", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    let r = token_for(&c, &base, "short-lived", &short, "repository:team/app:pull");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().unwrap().contains("expired"));

    let list = wharf_ok(&config, &[], &["token", "list"]);
    assert!(
        list.contains("ci-deploy") && list.contains("revoked"),
        "{list}"
    );
    let listed: Value =
        serde_json::from_str(&wharf_ok(&config, &[], &["token", "list", "--json"])).unwrap();
    let ci = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci-deploy")
        .unwrap();
    assert!(
        ci["last_used"].as_u64().is_some(),
        "last use recorded: {ci}"
    );

    // The audit log saw it all, with the token as the pusher.
    let records = audit_records(&config, &[]);
    assert_eq!(
        count(&records, "ci-deploy", "push", "team/app:v1"),
        1,
        "{records:#?}"
    );
    assert!(count(&records, "ci-deploy", "login", "token") >= 1);
    assert!(records.iter().any(|r| r["actor"] == "ci-deploy"
        && r["action"] == "login"
        && r["outcome"].as_str().unwrap().contains("revoked")));
    assert!(records.iter().any(|r| r["actor"] == "ci-deploy"
        && r["target"] == "other/x"
        && r["outcome"].as_str().unwrap().starts_with("denied")));
    let operator = records
        .iter()
        .find(|r| r["action"] == "token create")
        .unwrap()["actor"]
        .clone();
    assert!(operator.as_str().unwrap().ends_with("(cli)"), "{operator}");
    assert_eq!(
        count(
            &records,
            operator.as_str().unwrap(),
            "token revoke",
            "ci-deploy"
        ),
        1
    );
    wharf_ok(&config, &[], &["audit", "verify"]);
    docker_rmi(&[&local, &allowed, &denied]);
}

fn decode(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// `jwt` with its grants rewritten to `repo` (push included), signature unchanged.
fn forge(jwt: &str, repo: &str) -> String {
    use base64::Engine;
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut claims = decode(jwt);
    claims["access"] =
        serde_json::json!([{"type": "repository", "name": repo, "actions": ["pull", "push"]}]);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

const OPEN_CONFIG: &str = "version: 0.1
storage:
  filesystem:
    rootdirectory: @DIR@/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:@PORT@
immutable:
  - { repositories: ['frozen/*'], tags: 'v*' }
audit:
  pulls: true
  file: @DIR@/audit.jsonl
";

fn catalog(base: &str) -> Vec<String> {
    let v: Value = reqwest::blocking::get(format!("{base}/v2/_catalog"))
        .unwrap()
        .json()
        .unwrap();
    serde_json::from_value(v["repositories"].clone()).unwrap()
}

#[test]
fn a_repository_delete_empties_the_catalog_and_gc_frees_its_bytes() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let w = Served::start(dir.path(), OPEN_CONFIG, &[]);
    let config = dir.path().join("config.yml");
    let base = format!("http://{}", w.host());
    let gone = format!("{}/team/gone:v1", w.host());
    let gone2 = format!("{}/team/gone:v2", w.host());
    let frozen = format!("{}/frozen/app:v1", w.host());
    let (a, b) = (
        build_busybox_image(&unique("wharf-del-a:"), &unique("gone")),
        build_busybox_image(&unique("wharf-del-b:"), &unique("frozen")),
    );
    for (local, remote) in [(&a, &gone), (&a, &gone2), (&b, &frozen)] {
        run(Command::new("docker").args(["tag", local, remote]));
        run(Command::new("docker").args(["push", remote]));
    }
    assert!(catalog(&base).contains(&"team/gone".to_owned()));

    let out = run(Command::new(WHARF).args([
        "delete",
        "--repository",
        &format!("{}/team/gone", w.host()),
    ]));
    assert!(
        out.contains("Deleted repository team/gone (1 manifests)"),
        "{out}"
    );
    assert!(!catalog(&base).contains(&"team/gone".to_owned()));
    let r = reqwest::blocking::get(format!("{base}/v2/team/gone/tags/list")).unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let ui = reqwest::blocking::get(format!("{base}/ui/"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !ui.contains("team/gone") && ui.contains("frozen/app"),
        "{ui}"
    );
    docker_rmi(&[&gone, &gone2]);
    let pull = Command::new("docker")
        .args(["pull", &gone])
        .output()
        .unwrap();
    assert!(
        !pull.status.success(),
        "docker pull of a deleted repository"
    );

    // An immutable tag blocks the delete, with a message, and nothing goes.
    let out = Command::new(WHARF)
        .args([
            "delete",
            "--repository",
            &format!("{}/frozen/app", w.host()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("immutable") && message.contains("not deleted"),
        "{message}"
    );
    assert!(catalog(&base).contains(&"frozen/app".to_owned()));
    // Unknown: a spec-shaped 404.
    let r = Client::new()
        .delete(format!("{base}/wharf/v1/repositories/no/such"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().unwrap().contains("NAME_UNKNOWN"));

    // GC frees the deleted repository's bytes (the other image keeps its own).
    let report: Value = serde_json::from_str(&wharf_ok(
        &config,
        &[],
        &["garbage-collect", "--grace", "0s", "--json"],
    ))
    .unwrap();
    assert!(report["bytes_freed"].as_u64().unwrap() > 0, "{report}");
    let records = audit_records(&config, &[]);
    assert_eq!(
        count(&records, "-", "delete repository", "team/gone"),
        1,
        "{records:#?}"
    );
    let refused = records
        .iter()
        .find(|r| r["action"] == "delete repository" && r["target"] == "frozen/app")
        .unwrap();
    assert!(
        refused["outcome"].as_str().unwrap().starts_with("refused"),
        "{refused}"
    );
    assert!(records
        .iter()
        .any(|r| r["action"] == "gc" && r["actor"] == "wharf"));
    // Pulls are recorded when `audit.pulls` asks, and every record (the server's and the
    // CLI's, which reads the same config) is also a line of `audit.file`.
    let pulled = records
        .iter()
        .find(|r| r["action"] == "pull" && r["target"] == "team/gone:v1")
        .expect("the refused pull recorded");
    assert_eq!(pulled["outcome"], "not found");
    let sink = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(sink.lines().count(), records.len(), "{sink}");
    docker_rmi(&[&a, &b, &frozen]);
}

/// Flip a byte, remove a record, swap two, cut the last: verify names each position.
#[test]
fn audit_verify_names_the_first_edited_removed_or_reordered_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("data/docker/registry/v2")).unwrap();
    for i in 0..5 {
        create_token(&config, &[], &format!("t{i}"), "a/*:pull", "1h");
    }
    let ok = wharf_ok(&config, &[], &["audit", "verify"]);
    assert!(ok.contains("5 records"), "{ok}");
    let log = dir
        .path()
        .join("data/docker/registry/v2/_wharf/audit/log.jsonl");
    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let check = |lines: Vec<String>, position: usize| {
        std::fs::write(&log, lines.join("\n") + "\n").unwrap();
        let out = wharf(&config, &[], &["audit", "verify"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("broken at record {position}:")),
            "{err}"
        );
    };
    let owned = || lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    let mut flipped = owned();
    flipped[1] = flipped[1].replacen("t1", "t9", 1);
    check(flipped, 2);
    let mut removed = owned();
    removed.remove(2);
    check(removed, 3);
    let mut swapped = owned();
    swapped.swap(1, 3);
    check(swapped, 2);
    let mut cut = owned();
    cut.pop();
    check(cut, 5);
    std::fs::write(&log, &original).unwrap();
    wharf_ok(&config, &[], &["audit", "verify"]);
    // Listing with filters.
    let some = wharf_ok(&config, &[], &["audit", "--actor", "nobody"]);
    assert!(some.is_empty());
    let all = wharf_ok(&config, &[], &["audit", "--since", "2000-01-01"]);
    assert_eq!(all.lines().count(), 5);
}
