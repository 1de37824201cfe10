//! Metadata in PostgreSQL (`database:`): the store contract on a real server, advisory
//! locks across store instances, docker push and pull, pagination from indexes, an outage,
//! `wharf database import` of what Distribution 2.8.2 wrote, and garbage collection.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_registry::store::{self, StorageConfig, Store};

use crate::harness::postgres::Postgres;
use crate::harness::{
    add_query, docker_pushed, docker_rmi, docker_runs, free_port, header, http_client,
    Distribution, Served,
};
use crate::pushes::*;

async fn open(pg: &Postgres, root: &Path) -> Store {
    let storage = StorageConfig::Filesystem {
        root: root.to_owned(),
    };
    store::open(&storage, Some(&pg.config()), true)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_blobs_with_postgres_metadata_keep_the_store_contract() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let s = open(&pg, dir.path()).await;
    store::suite::blob_store_contract(s.blobs.clone()).await;
    store::suite::meta_store_contract(s.meta.clone(), s.blobs.clone()).await;
    let tables = pg.psql("SELECT count(*) FROM repositories WHERE name LIKE 'suite/%'");
    assert_eq!(tables, "1", "the contract's repository is a row");
}

/// Two stores on one database are two processes (or hosts): the lock protocol holds
/// between them, and a guard dropped in one frees the lock for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_hold_between_stores_and_a_waiting_collector_stops_new_writers() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&pg, dir.path()).await, open(&pg, dir.path()).await);
    let pending = |t: &tokio::task::JoinHandle<()>| !t.is_finished();

    let w1 = a.locks.writer().await.unwrap();
    let w2 = b.locks.writer().await.unwrap(); // writers share
    let locks = b.locks.clone();
    let collector = tokio::spawn(async move {
        let g = locks.collector().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(g);
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pending(&collector), "writers hold the collector off");
    // A collector waiting holds back a writer that comes after it.
    let locks = a.locks.clone();
    let late = tokio::spawn(async move { drop(locks.writer().await.unwrap()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        pending(&late),
        "a new writer queues behind the waiting collector"
    );
    drop((w1, w2));
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), collector)
        .await
        .expect("the collector gets the lock once the writers are gone")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), late)
        .await
        .expect("the late writer follows the collector")
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "it waited for the collector's batch"
    );

    // More writers than lock connections wait out a long collector batch, not fail.
    let mut small = pg.config();
    small.pool.max_open = Some(2);
    small.connect_timeout = Duration::from_millis(300);
    let storage = StorageConfig::Filesystem {
        root: dir.path().to_owned(),
    };
    let few = store::open(&storage, Some(&small), true).await.unwrap();
    let batch = a.locks.collector().await.unwrap();
    let writers: Vec<_> = (0..5)
        .map(|_| {
            let locks = few.locks.clone();
            tokio::spawn(async move { locks.writer().await.map(drop) })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(batch);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("the writers get through")
            .unwrap()
            .expect("a writer waits for the lock, it does not fail as unavailable");
    }

    // A job runs once across stores; dropping its guard frees it for the other store.
    let job = a.locks.try_job("gc").await.unwrap().expect("free");
    assert!(b.locks.try_job("gc").await.unwrap().is_none());
    assert!(a.locks.try_job("other").await.unwrap().is_some());
    drop(job);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if b.locks.try_job("gc").await.unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a dropped job guard frees its lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_database_that_is_down_is_unavailable_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Postgres::config_for_port(free_port());
    db.connect_timeout = Duration::from_millis(500);
    let storage = StorageConfig::Filesystem {
        root: dir.path().to_owned(),
    };
    let s = store::open(&storage, Some(&db), true).await.unwrap();
    let err = s.meta.list_repos(None, None).await.unwrap_err();
    assert!(matches!(err, store::StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("PostgreSQL at 127.0.0.1"), "{err}");
    assert!(matches!(
        s.locks.writer().await.err(),
        Some(store::StoreError::Unavailable(_))
    ));
}

pub(crate) const CONFIG: &str = "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/root\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:@PORT@\n";

/// The config a command reads (a server started later rewrites it with its port).
fn write_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("config.yml");
    let yaml = CONFIG
        .replace("@DIR@", &dir.display().to_string())
        .replace("@PORT@", &free_port().to_string());
    std::fs::write(&config, yaml).unwrap();
    config
}

pub(crate) fn serve(dir: &Path, pg: &Postgres, extra: &str) -> Served {
    let env = pg.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Served::start(dir, &format!("{CONFIG}{extra}"), &env)
}

/// Every page of a paginated listing, following the Link headers; checks each page's size.
fn all_pages(c: &Client, base: &str, first: &str, key: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Some(format!("{first}?n={n}"));
    while let Some(path) = next {
        let r = c.get(format!("{base}{path}")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let link = header(&r, "link");
        let body: Value = r.json().unwrap();
        let items: Vec<String> = serde_json::from_value(body[key].clone()).unwrap();
        assert!(items.len() <= n, "{path}: {items:?}");
        next = link
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(p, _)| p.to_owned());
        if next.is_some() {
            assert_eq!(items.len(), n, "only a full page has a next one");
        }
        out.extend(items);
    }
    out
}

fn list(c: &Client, base: &str, path: &str, key: &str) -> Vec<String> {
    let body: Value = c
        .get(format!("{base}{path}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    serde_json::from_value(body[key].clone()).unwrap_or_default()
}

#[test]
fn docker_pushes_and_pulls_with_metadata_in_postgres_and_lists_page_from_it() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &pg, "");
    let host = served.host();
    let image = docker_pushed(&host, "pg/app", "in postgres");
    docker_runs(&image, "in postgres");
    docker_rmi(&[&image]);

    let (c, base) = (http_client(), format!("http://{host}"));
    for (i, repo) in ["pg/b", "pg/a", "pg/c/d", "pg/e"].iter().enumerate() {
        for tag in ["v3", "v1", "latest", "v2", "v10"] {
            push_image(&c, &base, repo, tag, i as u64 * 10 + tag.len() as u64, 1).unwrap();
        }
    }
    let repos = all_pages(&c, &base, "/v2/_catalog", "repositories", 2);
    assert_eq!(repos, ["pg/a", "pg/app", "pg/b", "pg/c/d", "pg/e"]);
    let tags = all_pages(&c, &base, "/v2/pg/a/tags/list", "tags", 2);
    assert_eq!(tags, ["latest", "v1", "v10", "v2", "v3"]);
    let r = c
        .get(format!("{base}/v2/pg/none/tags/list"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The metadata is in the database, not in link files.
    assert_eq!(pg.psql("SELECT count(*) FROM tags"), "21");
    // (Uploads stay in the storage root, under repositories/<name>/_uploads.)
    let repos_dir = dir.path().join("root/docker/registry/v2/repositories");
    let links = std::process::Command::new("find")
        .arg(&repos_dir)
        .args(["-name", "_manifests", "-o", "-name", "_layers"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&links.stdout), "", "no link files");
}

fn unavailable(r: reqwest::blocking::Response) {
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().unwrap();
    assert_eq!(body["errors"][0]["code"], json!("UNAVAILABLE"), "{body}");
}

#[test]
fn while_postgres_is_down_requests_get_503_and_after_it_returns_nothing_is_lost() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &pg, "");
    let (c, base) = (http_client(), format!("http://{}", served.host()));
    let before = push_image(&c, &base, "outage/app", "v1", 1, 2).unwrap();

    pg.stop();
    unavailable(c.get(format!("{base}/v2/_catalog")).send().unwrap());
    unavailable(
        c.get(format!("{base}/v2/outage/app/manifests/v1"))
            .send()
            .unwrap(),
    );
    let Err(err) = push_image(&c, &base, "outage/app", "v2", 2, 2) else {
        panic!("a push while the database is down succeeded");
    };
    assert!(err.contains("503"), "{err}");
    // A server started now starts, and answers 503 until the database is back.
    let later_dir = tempfile::tempdir().unwrap();
    let yaml = CONFIG.replace("@DIR@/root", &dir.path().join("root").display().to_string());
    let env = pg.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let later = Served::start(later_dir.path(), &yaml, &env);
    let later_base = format!("http://{}", later.host());
    unavailable(c.get(format!("{later_base}/v2/_catalog")).send().unwrap());

    pg.restart();
    let after = push_image(&c, &base, "outage/app", "v2", 2, 2).unwrap();
    for base in [&base, &later_base] {
        verify_pulls(&c, base, &before);
        verify_pulls(&c, base, &after);
        assert_eq!(
            list(&c, base, "/v2/outage/app/tags/list", "tags"),
            ["v1", "v2"]
        );
    }
    // Scrub on the database's metadata: every manifest complete, every link to a blob
    // (it exits 1 on a problem).
    let out = std::process::Command::new(crate::harness::WHARF)
        .args(["scrub", "--json"])
        .arg(dir.path().join("config.yml"))
        .envs(pg.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["repositories"], json!(1), "{report}");
}

/// A blob through an upload session (POST, then PUT with the digest): Distribution 2.8.2
/// ignores a digest on the POST, which is how `push_image` sends blobs.
fn upload(c: &Client, base: &str, repo: &str, data: &[u8]) -> wharf_oci::Digest {
    let d = wharf_oci::Digest::sha256_of(data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    let url = if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        loc
    };
    let r = c
        .put(add_query(&url, "digest", &d))
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text());
    d
}

/// As `push_image`, one layer, through upload sessions.
fn push_by_sessions(c: &Client, base: &str, repo: &str, tag: &str, seed: u64) -> Pushed {
    let layer = noise(seed, 700 + seed as usize % 300);
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let (ld, cd) = (
        upload(c, base, repo, &layer),
        upload(c, base, repo, &config),
    );
    let body = image_manifest(&cd, config.len(), &[(ld.clone(), layer.len())]);
    let manifest = put_manifest(c, base, repo, tag, &body).unwrap();
    Pushed {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        manifest: manifest.clone(),
        blobs: vec![(ld, layer), (cd, config), (manifest, body)],
    }
}

#[test]
fn import_of_a_store_distribution_wrote_serves_the_same_catalog_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let c = http_client();
    let (pushed, catalog, tags) = {
        let d = Distribution::start_on(&root);
        let mut pushed = Vec::new();
        for (i, (repo, tag)) in [
            ("imp/a", "v1"),
            ("imp/a", "v2"),
            ("imp/b/c", "1.0"),
            ("zz", "x"),
        ]
        .iter()
        .enumerate()
        {
            pushed.push(push_by_sessions(&c, &d.url(), repo, tag, 100 + i as u64));
        }
        // An untagged manifest (its tag moved on): imported, and no tag names it.
        push_by_sessions(&c, &d.url(), "imp/a", "moved", 200);
        pushed.push(push_by_sessions(&c, &d.url(), "imp/a", "moved", 201));
        let catalog = list(&c, &d.url(), "/v2/_catalog", "repositories");
        // Sorted: Distribution 2.8.2 lists tags in directory order, wharf in lexical order.
        let tags: Vec<Vec<String>> = catalog
            .iter()
            .map(|r| {
                let mut tags = list(&c, &d.url(), &format!("/v2/{r}/tags/list"), "tags");
                tags.sort();
                tags
            })
            .collect();
        (pushed, catalog, tags)
    };
    let pg = Postgres::start();
    let config = write_config(dir.path());
    let import = || {
        let out = std::process::Command::new(crate::harness::WHARF)
            .args(["database", "import", "--json"])
            .arg(&config)
            .envs(pg.env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = import();
    assert_eq!(first["repositories"], json!(3), "{first}");
    assert_eq!(first["manifests"], json!(6), "{first}");
    assert_eq!(first["skipped"], json!([]), "{first}");
    assert_eq!(
        first["tags"],
        json!(tags.iter().map(Vec::len).sum::<usize>()),
        "{first}"
    );
    let again = import();
    assert_eq!(
        (&again["manifests"], &again["tags"]),
        (&first["manifests"], &first["tags"]),
        "a second import changes nothing: {again}"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM tags"),
        first["tags"].to_string()
    );

    let served = serve(dir.path(), &pg, "");
    let base = format!("http://{}", served.host());
    assert_eq!(list(&c, &base, "/v2/_catalog", "repositories"), catalog);
    for (repo, want) in catalog.iter().zip(&tags) {
        assert_eq!(
            &list(&c, &base, &format!("/v2/{repo}/tags/list"), "tags"),
            want
        );
    }
    for p in &pushed {
        verify_pulls(&c, &base, p);
    }
}

#[test]
fn database_commands_name_the_cause_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let port = free_port().to_string();
    let out = std::process::Command::new(crate::harness::WHARF)
        .args(["database", "migrate", "status"])
        .arg(&config)
        .envs(Postgres::config_env(&port))
        .env("REGISTRY_DATABASE_CONNECTTIMEOUT", "1s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}"))
            && err.contains("is it running? check database.host and database.port"),
        "{err}"
    );
    let out = wharf_cmd(&[
        "database",
        "migrate",
        "status",
        &config.display().to_string(),
    ]);
    assert!(text(&out).contains("enables no database"), "{}", text(&out));

    let pg = Postgres::start();
    let migrate = |args: &[&str]| {
        let out = std::process::Command::new(crate::harness::WHARF)
            .args(["database", "migrate"])
            .args(args)
            .arg(&config)
            .envs(pg.env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(migrate(&["status"]).contains("0001 metadata             pending"));
    assert!(migrate(&["up"]).contains("applied"));
    assert_eq!(pg.psql("SELECT count(*) FROM repositories"), "0");
    // The newest migration goes first: 0009, the proxy's tag checks (the others stay applied).
    let down = migrate(&["down"]);
    assert!(down.contains("reverted migration 9"), "{down}");
    let status = migrate(&["status"]);
    assert!(
        status.contains("0002 login failures       applied")
            && status.contains("0006 pull counts          applied")
            && status.contains("0009 proxy tag checks     pending")
            && status.contains("0003 gc review queues     applied"),
        "{status}"
    );
}

/// The scenario of lifecycle.rs's grace test, on PostgreSQL metadata: young content is
/// held, untagged manifests go only when asked, and what is tagged still pulls.
#[test]
fn garbage_collection_on_postgres_metadata_keeps_what_is_tagged() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &pg, "");
    let (c, base) = (http_client(), format!("http://{}", served.host()));
    let kept = push_image(&c, &base, "gc/app", "v1", 3, 2).unwrap();
    let untagged = push_image(&c, &base, "gc/app", "v2", 4, 2).unwrap();
    let r = c
        .delete(format!("{base}/v2/gc/app/manifests/v2"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let config = dir.path().join("config.yml").display().to_string();
    let gc = |args: &[&str]| {
        // Mark-and-sweep's scenario: the review queues have tests of their own.
        let out = std::process::Command::new(crate::harness::WHARF)
            .arg("garbage-collect")
            .arg("--full")
            .args(args)
            .args(["--json", &config])
            .envs(pg.env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let report = gc(&["-m"]);
    assert_eq!(
        (&report["blobs"], &report["manifests"]),
        (&json!([]), &json!([])),
        "young: {report}"
    );

    // Two hours old: the blob files' retain times and the manifests' put times.
    age_store(&dir.path().join("root"));
    pg.psql("UPDATE manifests SET put_at = put_at - interval '2 hours'");
    let report = gc(&[]);
    assert_eq!(
        report["blobs"],
        json!([]),
        "untagged stays without -m: {report}"
    );
    let report = gc(&["-m"]);
    assert_eq!(
        report["manifests"][0]["digest"],
        json!(untagged.manifest.to_string()),
        "{report}"
    );
    assert_eq!(
        report["blobs"].as_array().unwrap().len(),
        untagged.blobs.len(),
        "{report}"
    );
    let r = c
        .get(format!("{base}/v2/gc/app/manifests/{}", untagged.manifest))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    verify_pulls(&c, &base, &kept);
}

#[test]
fn online_gc_in_serve_runs_under_the_database_locks() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let gc = "gc:\n  enabled: true\n  interval: 1s\n  deleteuntagged: true\n  grace: 3s\n";
    let served = serve(dir.path(), &pg, gc);
    let (c, base) = (http_client(), format!("http://{}", served.host()));
    let kept = push_image(&c, &base, "online/app", "v1", 5, 2).unwrap();
    let untagged = push_image(&c, &base, "online/app", "v2", 6, 2).unwrap();
    let r = c
        .delete(format!("{base}/v2/online/app/manifests/v2"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(60);
    let gone = |d: &wharf_oci::Digest| {
        c.get(format!("{base}/v2/online/app/blobs/{d}"))
            .send()
            .unwrap()
            .status()
            == StatusCode::NOT_FOUND
    };
    while !untagged.blobs.iter().all(|(d, _)| gone(d)) {
        assert!(
            Instant::now() < deadline,
            "the untagged image was not collected: {}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    verify_pulls(&c, &base, &kept);
}
