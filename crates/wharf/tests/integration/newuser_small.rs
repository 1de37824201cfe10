//! What a new user hits (issue 25), the smaller ones: `wharf catalog` with stored
//! credentials, login from a pipe, an unresolvable host, `inspect`'s platforms, and log
//! and metric text a person reads.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::newuser::output;

const USERS: &str = "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  htpasswd:\n    realm: r\n    path: @DIR@/htpasswd\naccess:\n  rules:\n    - { repositories: ['public/*'], anonymous: true, actions: [pull] }\n    - { repositories: ['*'], users: [admin], actions: ['*'] }\n    - { repositories: ['apps/*'], users: [alice], actions: [pull] }\n";

fn wharf(cfg: &std::path::Path) -> Command {
    let mut cmd = Command::new(WHARF);
    cmd.env("DOCKER_CONFIG", cfg)
        .env("RUST_BACKTRACE", "1")
        .env_remove("REPO_USER")
        .env_remove("REPO_PASS");
    cmd
}

#[test]
fn wharf_catalog_sends_the_stored_credentials_and_login_from_a_pipe_needs_a_user() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    htpasswd(&dir.path().join("htpasswd"), "admin", "admin-pw");
    run(Command::new("htpasswd")
        .args(["-B", "-b"])
        .arg(dir.path().join("htpasswd"))
        .args(["alice", "alice-pw"])
        .stderr(Stdio::null()));
    let w = Served::start(dir.path(), USERS, &[]);
    let host = w.host();
    let docker_cfg = dir.path().join("docker-admin");
    let login = |cfg: &std::path::Path, user: &str, pw: &str| {
        ok(
            output_with_stdin(
                wharf(cfg).args(["login", "-u", user, "--password-stdin", &host]),
                pw,
            ),
            "wharf login",
        )
    };
    login(&docker_cfg, "admin", "admin-pw");
    for repo in ["public/base", "apps/app", "secret/db"] {
        let local = build_busybox_image(&unique("wharf-catalog:"), repo);
        let remote = format!("{host}/{repo}:v1");
        run(Command::new("docker").args(["tag", &local, &remote]));
        run(Command::new("docker")
            .env("DOCKER_CONFIG", &docker_cfg)
            .args(["push", &remote]));
        docker_rmi(&[&local, &remote]);
    }
    let cfg = dir.path().join("alice");
    let (ok_, anonymous) = output(wharf(&cfg).args(["catalog", &host]));
    assert!(ok_, "{anonymous}");
    assert_eq!(anonymous.trim(), "public/base");
    login(&cfg, "alice", "alice-pw");
    let (ok_, text) = output(wharf(&cfg).args(["catalog", &host]));
    assert!(ok_, "{text}");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["apps/app", "public/base"],
        "alice's credentials were not sent"
    );

    // A password piped in without --username is not taken for the user name.
    let fresh = dir.path().join("fresh");
    let out = output_with_stdin(wharf(&fresh).args(["login", &host]), "alice-pw\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Cannot perform an interactive login from a non TTY device"),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(!fresh.join("config.json").exists());
}

#[test]
fn an_unresolvable_host_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let (ok_, text) = output(wharf(dir.path()).args(["tags", "no-such-registry.invalid/app"]));
    assert!(!ok_);
    assert!(
        text.contains("cannot resolve host no-such-registry.invalid"),
        "{text}"
    );
    assert!(!text.contains("connection refused"), "{text}");
    assert!(!text.contains("backtrace"), "{text}");
}

#[test]
fn inspect_lists_platforms_without_null_variants() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let w = Served::start(dir.path(), crate::newuser::STORE, &[]);
    let amd64 = docker_pushed(&w.host(), "multi/amd", "amd64");
    let arm64 = docker_pushed(&w.host(), "multi/arm", "arm64");
    let list = format!("{}/multi/list:v1", w.host());
    push_manifest_list(&list, &amd64, &arm64);
    let cfg = dir.path().join("docker-config");
    let (stdout, _) = wharf_insecure_ok(&cfg, &["inspect", &list]);
    let parsed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let platforms = parsed["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2, "{stdout}");
    assert!(!stdout.contains("null"), "{stdout}");
    assert!(
        platforms.iter().any(|p| p.get("variant").is_none()),
        "{stdout}"
    );
    docker_rmi(&[&amd64, &arm64]);
}

#[test]
fn logs_and_metrics_read_as_text_and_quota_refusals_say_why() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let debug = free_port();
    let yaml = format!(
        "{}  debug:\n    addr: 127.0.0.1:{debug}\n    prometheus:\n      enabled: true\nquotas:\n  - repositories: [\"tight/*\"]\n    bytes: 1KiB\n",
        crate::newuser::STORE
    );
    let w = Served::start(dir.path(), &yaml, &[]);
    let local = build_busybox_image(&unique("wharf-logs:"), "logs");
    let remote = format!("{}/tight/app:v1", w.host());
    run(Command::new("docker").args(["tag", &local, &remote]));
    let (pushed, _) = output(Command::new("docker").args(["push", &remote]));
    assert!(!pushed, "a push over a 1 KiB quota succeeded");
    docker_rmi(&[&local, &remote]);
    let metrics = http_client()
        .get(format!("http://127.0.0.1:{debug}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let helps: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("# HELP"))
        .collect();
    assert!(!helps.is_empty(), "{metrics}");
    for help in &helps {
        assert!(!help.ends_with(".."), "{help}");
    }
    let log = w.log();
    assert!(log.contains("metrics=/metrics"), "{log}");
    assert!(!log.contains("Some("), "{log}");
    let refused = log
        .lines()
        .find(|l| l.contains("request refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {log}"));
    assert!(
        refused.contains("quota 1.0 KiB for tight/*") && refused.contains("does not fit"),
        "{refused}"
    );

    // `wharf watch`'s start line names its interval as a person writes it. It watches
    // only containers of a scope nobody uses, and checks first after an hour.
    let scope = unique("newuser-scope-");
    let mut watcher = Proc(
        Command::new(WHARF)
            .args([
                "watch",
                "--interval",
                "1h",
                "--label-enable",
                "--scope",
                &scope,
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("watch.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains("watching") {
        std::thread::sleep(Duration::from_millis(100));
        text = std::fs::read_to_string(dir.path().join("watch.log")).unwrap_or_default();
        if let Ok(Some(status)) = watcher.0.try_wait() {
            panic!("wharf watch exited with {status}: {text}");
        }
    }
    assert!(text.contains("schedule=every 1h"), "{text}");
    assert!(!text.contains("Every("), "{text}");
}
