//! The pull-through cache across processes: two `wharf serve` on one filesystem root, and
//! three replicas on Garage and PostgreSQL. Concurrent cold pulls spread over them fetch
//! each blob once from the upstream, by the upstream's access log (a process that finds
//! another's fetch lease waits for the blob and serves it from the store), and a tag one
//! process confirmed upstream is fresh for the others (check times live in the store).

use std::path::Path;
use std::process::Command;

use crate::harness::garage::Garage;
use crate::harness::postgres::Postgres;
use crate::harness::*;
use crate::proxy::{blob_gets, docker_cfg, skopeo_copy, wharf_upstream, PASSWORD, USER};
use crate::proxy_faults::{nginx_front, random_hex};
use crate::replicas::replica_env;

/// A mirror's `proxy:` section: `up/` from `remote`, tags fresh for an hour.
fn proxy_yaml(remote: &str) -> String {
    format!(
        "proxy:\n  upstreams:\n    - prefix: up/\n      remoteurl: {remote}\n      username: {USER}\n      password: {PASSWORD}\n      ttl: 1h\n"
    )
}

/// Push an image with a 16 MiB incompressible layer to the upstream as `repo:v1`.
fn push_big(cfg: &Path, upstream: &Served, repo: &str) {
    let big = random_hex(16 << 20);
    let local = build_busybox_image_with(
        &unique("wharf-proxy-cluster:"),
        "big",
        &[("big", &big)],
        &["CMD [\"/bin/sh\"]"],
    );
    let out = output_with_stdin(
        Command::new("docker").env("DOCKER_CONFIG", cfg).args([
            "login",
            &upstream.host(),
            "-u",
            USER,
            "--password-stdin",
        ]),
        PASSWORD,
    );
    ok(out, "docker login to the upstream");
    let remote = format!("{}/{repo}:v1", upstream.host());
    docker_cfg(cfg, &["tag", &local, &remote]);
    docker_cfg(cfg, &["push", &remote]);
    docker_rmi(&[&local, &remote]);
}

/// Upstream manifest requests (GET and HEAD) for `repo` in `log`.
fn manifest_requests(log: &str, repo: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!("path=/v2/{repo}/manifests/")))
        .map(str::to_owned)
        .collect()
}

/// 8 concurrent skopeo pulls of `up/<repo>:v1`, the i-th through `hosts[i % len]`; then
/// each blob was fetched from the upstream once, and the manifest GET once.
fn eight_cold_pulls_fetch_once(dir: &Path, upstream: &Served, hosts: &[String], repo: &str) {
    let gets_before = blob_gets(&upstream.log()).len();
    let log_before = upstream.log().len();
    let pulls: Vec<_> = (0..8)
        .map(|i| {
            let through = format!("{}/up/{repo}:v1", hosts[i % hosts.len()]);
            let target = dir.join(format!("pull{i}"));
            std::thread::spawn(move || skopeo_copy(&through, &target))
        })
        .collect();
    for p in pulls {
        ok(
            p.join().unwrap(),
            "a concurrent skopeo copy through a mirror",
        );
    }
    let gets = blob_gets(&upstream.log());
    let fetched = &gets[gets_before..];
    let mut unique_paths = fetched.to_vec();
    unique_paths.sort();
    unique_paths.dedup();
    assert_eq!(unique_paths.len(), 2, "config and one layer: {fetched:?}");
    assert_eq!(
        fetched.len(),
        unique_paths.len(),
        "a blob was fetched from the upstream more than once across the processes: {fetched:?}"
    );
    let manifest_gets: Vec<_> = manifest_requests(&upstream.log()[log_before..], repo)
        .into_iter()
        .filter(|l| l.contains("method=GET"))
        .collect();
    assert_eq!(
        manifest_gets.len(),
        1,
        "the manifest was fetched more than once: {manifest_gets:#?}"
    );
}

/// A process that never asked the upstream about `up/<repo>:v1` serves it without asking:
/// another process's check time, in the store, is fresh.
fn tag_check_is_shared(upstream: &Served, fresh_process: &Served, repo: &str) {
    let before = upstream.log().len();
    let resp = http_client()
        .get(format!(
            "http://{}/v2/up/{repo}/manifests/v1",
            fresh_process.host()
        ))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let asked = manifest_requests(&upstream.log()[before..], repo);
    assert!(
        asked.is_empty(),
        "a process asked the upstream about a tag another confirmed a moment ago: {asked:#?}"
    );
}

#[test]
fn two_processes_on_one_root_fetch_each_blob_once_and_share_tag_checks() {
    two_processes_on_one_root(None);
}

/// The same with `database:`: the leases are PostgreSQL advisory locks and the check
/// times rows of `proxy_tag_checks`.
#[test]
fn two_processes_on_one_root_with_postgres_fetch_each_blob_once_and_share_tag_checks() {
    let pg = Postgres::start();
    two_processes_on_one_root(Some(&pg));
}

fn two_processes_on_one_root(pg: Option<&Postgres>) {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let upstream = wharf_upstream(&dir.path().join("up"));
    let repo = unique("shared/root");
    push_big(&dir.path().join("docker-config"), &upstream, &repo);
    // A slow link to the upstream (2 MiB/s), so that all eight pulls overlap the fill.
    let ndir = dir.path().join("nginx");
    std::fs::create_dir_all(&ndir).unwrap();
    let (_nginx, nport) = nginx_front(&ndir, upstream.port, &ndir.join("never"), "2m");
    let root = dir.path().join("shared-root");
    let yaml = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:@PORT@\n{}",
        root.display(),
        proxy_yaml(&format!("http://127.0.0.1:{nport}"))
    );
    let mut env = pg.map(Postgres::env).unwrap_or_default();
    env.push(("WHARF_LOG".into(), "info".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let start = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        Served::start(&d, &yaml, &env)
    };
    let (a, b) = (start("a"), start("b"));
    eight_cold_pulls_fetch_once(dir.path(), &upstream, &[a.host(), b.host()], &repo);
    let c = start("c");
    tag_check_is_shared(&upstream, &c, &repo);
}

#[test]
fn three_replicas_on_garage_and_postgres_fetch_each_blob_once_and_share_tag_checks() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let upstream = wharf_upstream(&dir.path().join("up"));
    let repo = unique("three/replicas");
    push_big(&dir.path().join("docker-config"), &upstream, &repo);
    let ndir = dir.path().join("nginx");
    std::fs::create_dir_all(&ndir).unwrap();
    let (_nginx, nport) = nginx_front(&ndir, upstream.port, &ndir.join("never"), "2m");
    let g = Garage::start();
    let pg = Postgres::start();
    let env = replica_env(&g, &pg);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let yaml = format!(
        "version: 0.1\nlog:\n  level: info\nhttp:\n  addr: 127.0.0.1:@PORT@\n{}",
        proxy_yaml(&format!("http://127.0.0.1:{nport}"))
    );
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut env_info = env.clone();
    env_info.push(("WHARF_LOG", "info"));
    let mut replicas: Vec<Served> = dirs
        .iter()
        .map(|d| Served::start(d.path(), &yaml, &env_info))
        .collect();
    let hosts: Vec<String> = replicas.iter().map(Served::host).collect();
    eight_cold_pulls_fetch_once(dir.path(), &upstream, &hosts, &repo);
    // A restarted replica remembers nothing in memory: the database says the tag is fresh.
    replicas[2].kill();
    replicas[2].restart(dirs[2].path());
    tag_check_is_shared(&upstream, &replicas[2], &repo);
}
