//! S3 and PostgreSQL together, as a scaled-out registry runs: a bucket Distribution wrote,
//! indexed by `wharf database import`; garbage collection on one replica while the other
//! two take pushes; the database stopped and restarted under pushes.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::compat::{catalog, manifest_digest, skopeo_pull, tags};
use crate::harness::garage::{distribution_on, Garage};
use crate::harness::postgres::Postgres;
use crate::harness::{
    build_busybox_image, docker_manifest, docker_pushed, docker_rmi, http_client, require,
    require_docker, run, unique,
};
use crate::pushes::wharf_ok_with;
use crate::replicas::{replica_env, Cluster};

fn env_of(g: &Garage, pg: &Postgres) -> Vec<(String, String)> {
    let mut env = replica_env(g, pg);
    env.push(("REGISTRY_STORAGE_DELETE_ENABLED".into(), "true".into()));
    env
}

/// `wharf <args> <dir>/config.yml` with `env`, which must succeed; its output.
fn wharf(dir: &Path, env: &[(String, String)], args: &[&str]) -> String {
    let config = dir.join("config.yml");
    if !config.exists() {
        std::fs::write(&config, "version: 0.1\n").unwrap();
    }
    wharf_ok_with(args, &config, env)
}

#[test]
fn database_import_of_a_bucket_distribution_wrote_gives_the_same_catalog_and_tags() {
    require_docker();
    require("skopeo", "skopeo");
    let g = Garage::start();
    let d = distribution_on(&g, "/");
    let pushed = [("imp/one", "v1"), ("imp/one", "v2"), ("imp/two", "latest")];
    for (repo, tag) in pushed {
        let local = build_busybox_image(&unique("imp:"), &unique(repo));
        let remote = format!("{}/{repo}:{tag}", d.host());
        run(Command::new("docker").args(["tag", &local, &remote]));
        run(Command::new("docker").args(["push", &remote]));
        docker_rmi(&[&local, &remote]);
    }
    let theirs = catalog(&d.url());
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let env = env_of(&g, &pg);
    wharf(dir.path(), &env, &["database", "import"]);
    let c = Cluster::start(&env, g);
    let base = format!("http://{}", c.front);
    assert_eq!(catalog(&base), theirs);
    for repo in ["imp/one", "imp/two"] {
        assert_eq!(tags(&base, repo), tags(&d.url(), repo), "{repo}");
    }
    for (repo, tag) in pushed {
        assert_eq!(
            manifest_digest(&base, repo, tag),
            manifest_digest(&d.url(), repo, tag),
            "{repo}:{tag}"
        );
    }
    let into = tempfile::tempdir().unwrap();
    skopeo_pull(
        &format!("docker://{}/imp/two:latest", c.front),
        into.path(),
        false,
    );
}

/// GC on one replica (its CLI, holding the database's collector lock batch by batch) while
/// the other two take docker pushes: every push that succeeded pulls with verified digests
/// afterwards, the old garbage is gone, and scrub is clean.
#[test]
fn gc_on_one_replica_while_two_take_pushes() {
    require_docker();
    require("skopeo", "skopeo");
    let g = Garage::start();
    let pg = Postgres::start();
    let env = env_of(&g, &pg);
    let c = Cluster::start(&env, g);
    let dir = c.dirs[0].path().to_owned();

    // Garbage older than the grace period the collector is given.
    let old = docker_pushed(&c.replicas[0].host(), "gc/old", &unique("old"));
    docker_rmi(&[&old]);
    let base0 = format!("http://{}", c.replicas[0].host());
    let manifest = manifest_digest(&base0, "gc/old", "v1");
    let layer = docker_manifest(&format!("{base0}/v2/gc/old/manifests/v1"))["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let garbage = format!("{base0}/v2/gc/old/blobs/{layer}");
    assert_eq!(http_client().head(&garbage).send().unwrap().status(), 200);
    let r = http_client()
        .delete(format!("{base0}/v2/gc/old/manifests/{manifest}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    std::thread::sleep(Duration::from_secs(12));

    let done = Arc::new(AtomicBool::new(false));
    let pushers: Vec<_> = (1..3)
        .map(|i| {
            let host = c.replicas[i].host();
            std::thread::spawn(move || {
                (0..3)
                    .map(|n| {
                        let repo = format!("busy/r{i}n{n}");
                        let marker = unique("busy");
                        (docker_pushed(&host, &repo, &marker), repo)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let collector = {
        let (done, env, dir) = (done.clone(), env.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !done.load(Ordering::SeqCst) || runs == 0 {
                wharf(&dir, &env, &["garbage-collect", "--grace", "10s"]);
                runs += 1;
            }
            runs
        })
    };
    let pushed: Vec<(String, String)> = pushers
        .into_iter()
        .flat_map(|p| p.join().expect("a push failed while GC ran"))
        .collect();
    done.store(true, Ordering::SeqCst);
    assert!(collector.join().unwrap() >= 1);

    for (image, repo) in &pushed {
        docker_rmi(&[image]);
        let into = tempfile::tempdir().unwrap();
        let got = skopeo_pull(
            &format!("docker://{}/{repo}:v1", c.front),
            into.path(),
            false,
        );
        assert_eq!(
            got,
            manifest_digest(&format!("http://{}", c.front), repo, "v1")
        );
    }
    let gone = http_client().head(&garbage).send().unwrap();
    assert_eq!(gone.status(), 404, "the old garbage was collected");
    wharf(&dir, &env, &["scrub"]);
}

/// Failed logins count across replicas: ten wrong passwords spread over three replicas
/// block the pair on each of them, as one registry would, even with the right password.
#[test]
fn failed_logins_are_limited_across_replicas() {
    let (g, pg) = (Garage::start(), Postgres::start());
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    crate::harness::htpasswd(&users, "alice", "right");
    let mut env = replica_env(&g, &pg);
    env.extend([
        ("REGISTRY_AUTH".to_owned(), "htpasswd".to_owned()),
        (
            "REGISTRY_AUTH_HTPASSWD_REALM".to_owned(),
            "replicas".to_owned(),
        ),
        (
            "REGISTRY_AUTH_HTPASSWD_PATH".to_owned(),
            users.display().to_string(),
        ),
    ]);
    let c = Cluster::start(&env, g);
    let get = |i: usize, password: &str| {
        http_client()
            .get(format!("http://{}/v2/_catalog", c.replicas[i].host()))
            .basic_auth("alice", Some(password))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(get(0, "right"), 200);
    for attempt in 0..10 {
        assert_eq!(get(attempt % 3, "wrong"), 401, "attempt {attempt}");
    }
    for i in 0..3 {
        assert_eq!(
            get(i, "right"),
            429,
            "replica {i} knows of the other replicas' failures"
        );
    }
}
