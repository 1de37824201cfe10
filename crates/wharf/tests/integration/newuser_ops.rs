//! What a new user hits (issue 25), continued: a mirror with a wrong upstream password,
//! flags as users type them, and what `garbage-collect` tells them.

use std::process::{Command, Stdio};

use crate::harness::*;
use crate::newuser::{output, STORE};
use crate::proxy::{push_upstream, wharf_upstream, USER};

/// 401s in a wharf's access log.
fn refusals(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("status=401") && l.contains("method="))
        .count()
}

#[test]
fn a_mirror_with_a_wrong_upstream_password_says_so_to_docker_and_backs_off() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let upstream = wharf_upstream(&dir.path().join("up"));
    let cfg = dir.path().join("docker-config");
    let repo = unique("team/app");
    push_upstream(&cfg, &upstream.host(), &repo, "from upstream");
    let before = refusals(&upstream.log());
    let mdir = dir.path().join("mirror");
    std::fs::create_dir_all(&mdir).unwrap();
    let yaml = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nproxy:\n  upstreams:\n    - prefix: up/\n      remoteurl: http://{}\n      username: {USER}\n      password: not-the-password\n",
        upstream.host()
    );
    let m = Served::start(&mdir, &yaml, &[("WHARF_LOG", "info")]);
    // The start checks the credentials and warns, naming the user and the upstream.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !m.log().contains("refused the password") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = m.log();
    let warning = format!(
        "the upstream http://{} refused the password of user {USER}",
        upstream.host()
    );
    assert!(log.contains(&warning), "no start warning: {log}");
    let after_start = refusals(&upstream.log());
    assert!(after_start > before, "the start did not ask the upstream");

    // docker sees a 4xx whose message names the cause, not a bare 502.
    let through = format!("{}/up/{repo}:v1", m.host());
    for _ in 0..4 {
        let (ok, out) = output(Command::new("docker").args(["pull", &through]));
        assert!(!ok, "a pull with a refused upstream password succeeded");
        assert!(out.contains(&warning), "docker: {out}");
        assert!(!out.contains("502"), "docker: {out}");
        assert!(!out.contains("higher limit"), "docker: {out}");
    }
    // Backed off: the four pulls did not send the refused password again.
    assert_eq!(
        refusals(&upstream.log()),
        after_start,
        "the mirror retried a refused password: {}",
        upstream.log()
    );
}

#[test]
fn delete_enabled_before_the_config_path_leaves_the_path_alone() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = STORE
        .replace("@PORT@", &port.to_string())
        .replace("@DIR@", &dir.path().display().to_string())
        .replace("  delete:\n    enabled: true\n", "");
    let config = dir.path().join("config.yml");
    std::fs::write(&config, yaml).unwrap();
    let child = Command::new(WHARF)
        .args(["serve", "--delete-enabled"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Proc(child);
    wait_for_port(
        port,
        &mut server.0,
        "wharf serve --delete-enabled config.yml",
    );
    let host = format!("127.0.0.1:{port}");
    let pushed = docker_pushed(&host, "flags/app", "flags");
    let cfg = dir.path().join("docker-config");
    wharf_insecure_ok(&cfg, &["delete", &pushed]);
    let (ok, _) = output(Command::new("docker").args(["pull", &pushed]));
    assert!(!ok, "the deleted image still pulls");
    // `=false` still takes a value.
    let (ok, text) = output(Command::new(WHARF).args([
        "serve",
        "--delete-enabled=maybe",
        config.to_str().unwrap(),
    ]));
    assert!(!ok && text.contains("maybe"), "{text}");
}

#[test]
fn client_flags_work_after_watch_and_chunk_sizes_take_units() {
    require_docker();
    // Parsed, not refused as unknown: help is printed only once every flag is known.
    let (ok, text) = output(Command::new(WHARF).args(["watch", "--insecure", "--help"]));
    assert!(ok, "wharf watch --insecure: {text}");
    let (ok, text) = output(Command::new(WHARF).args(["push", "--chunk-size", "8MiB", "--help"]));
    assert!(ok, "wharf push --chunk-size 8MiB: {text}");
    let (ok, text) =
        output(Command::new(WHARF).args(["copy", "--chunk-size", "8 parsecs", "a", "b"]));
    assert!(!ok && text.contains("unknown unit"), "{text}");

    // `wharf push --chunk-size 64KiB` sends a layer of about 1 MiB in PATCHes of 64 KiB.
    let dir = tempfile::tempdir().unwrap();
    let w = Served::start(dir.path(), STORE, &[("WHARF_LOG", "info")]);
    let local = build_busybox_image(&unique("wharf-chunks:"), "chunks");
    let tar = dir.path().join("image.tar");
    run(Command::new("docker")
        .args(["save", "-o"])
        .arg(&tar)
        .arg(&local));
    let cfg = dir.path().join("docker-config");
    let target = format!("{}/chunks/app:v1", w.host());
    wharf_insecure_ok(
        &cfg,
        &[
            "push",
            "--chunk-size",
            "64KiB",
            tar.to_str().unwrap(),
            &target,
        ],
    );
    let patches = w
        .log()
        .lines()
        .filter(|l| l.contains("method=PATCH") && l.contains("status=202"))
        .count();
    assert!(patches >= 8, "{patches} PATCH requests: {}", w.log());
    docker_rmi(&[&local]);
    run(Command::new("docker").args(["pull", &target]));
    docker_runs(&target, "chunks");
    docker_rmi(&[&target]);
}

/// `wharf garbage-collect`'s summary: singulars, what the grace kept and what to do, and
/// repositories left empty leave `_catalog`, for wharf and for Distribution on that root.
#[test]
fn garbage_collect_says_what_the_grace_kept_and_drops_emptied_repositories() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let w = Served::start(dir.path(), STORE, &[]);
    let gone = docker_pushed(&w.host(), "gc/gone", "gone");
    let kept = docker_pushed(&w.host(), "gc/kept", "kept");
    let cfg = dir.path().join("docker-config");
    wharf_insecure_ok(&cfg, &["delete", &gone]);
    let root = dir.path().join("data");
    let gc = |extra: &[&str]| {
        let (ok, text) = output(
            Command::new(WHARF)
                .args(["garbage-collect", "--root", root.to_str().unwrap()])
                .args(extra),
        );
        assert!(ok, "{text}");
        text
    };
    let first = gc(&[]);
    assert!(
        first.contains("kept: they were pushed within the grace period (1h)")
            && first.contains("Run again after 1h, or pass --grace 0s when nothing is pushing"),
        "{first}"
    );
    for wrong in [
        "1 manifests",
        "1 blobs",
        "1 repositories",
        "1 unreferenced blobs",
    ] {
        assert!(
            !first.contains(&format!(" {wrong}")) && !first.starts_with(wrong),
            "{first}"
        );
    }
    let catalog = || -> Vec<String> {
        let body: serde_json::Value = http_client()
            .get(format!("http://{}/v2/_catalog", w.host()))
            .send()
            .unwrap()
            .json()
            .unwrap();
        serde_json::from_value(body["repositories"].clone()).unwrap()
    };
    assert!(catalog().contains(&"gc/gone".to_owned()), "{:?}", catalog());
    let second = gc(&["--grace", "0s"]);
    assert!(second.contains("gc/gone: repository removed"), "{second}");
    assert!(
        second.contains("nothing held by the grace period"),
        "{second}"
    );
    assert_eq!(catalog(), ["gc/kept"]);
    // Distribution 2.8.2 on the same root: the same catalog, and what is kept pulls.
    let d = Distribution::start_on(&root);
    let theirs: serde_json::Value = http_client()
        .get(format!("{}/v2/_catalog", d.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(theirs["repositories"], serde_json::json!(["gc/kept"]));
    let via_distribution = kept.replace(&w.host(), &d.host());
    run(Command::new("docker").args(["pull", &via_distribution]));
    docker_runs(&via_distribution, "kept");
    docker_rmi(&[&via_distribution, &kept]);
}
