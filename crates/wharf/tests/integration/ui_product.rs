//! The web UI as a product (issue 25, items 13-15), in headless Chromium over WebDriver:
//! the repository list with tag counts, sizes, last pushes and pull counts that docker
//! pulls move (and that survive a restart), sorting and pages with a total, the tag page
//! sorted and filtered with locks and a pull line naming a tag that exists, an empty
//! repository, confirmation notices, error pages with a way back, garbage collection run
//! from its page; every page at 1280 px and 390 px without sideways overflow. The pull
//! counts in PostgreSQL are checked over plain HTTP at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::harness::postgres::Postgres;
use super::harness::{
    build_busybox_image, docker_rmi, require, require_docker, run, unique, Served,
};
use super::ui::{users, Visit, CONFIG};
use super::webdriver::Browser;

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots/product")
}

fn api() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A blob pushed monolithically as alice; its digest.
fn push_blob(base: &str, repo: &str, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    let r = api()
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .basic_auth("alice", Some("alice-pw"))
        .body(bytes.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "blob push: {}", r.text().unwrap());
    digest
}

/// A one-layer OCI image at `repo:tag` over the API; the manifest's digest.
fn push_small(base: &str, repo: &str, tag: &str) -> String {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let c = push_blob(base, repo, config);
    let layer = format!("layer of {repo}:{tag}").into_bytes();
    let l = push_blob(base, repo, &layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len() }]
    });
    let r = api()
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .basic_auth("alice", Some("alice-pw"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{repo}:{tag}: {}", r.text().unwrap());
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// Wait (up to 10 s) for the page to show `text`.
fn wait_text(b: &Browser, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.text().contains(text) {
        assert!(
            Instant::now() < deadline,
            "never showed {text}: {}",
            b.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The page at both widths: a screenshot of each, and nothing wider than the viewport.
fn both_widths(b: &Browser, shots: &Path, name: &str) {
    for (width, tag) in [(1280, "wide"), (390, "phone")] {
        b.set_width(width, 900);
        std::thread::sleep(Duration::from_millis(150));
        let viewport = b.viewport_width();
        assert!(
            (width as i64 - 20..=width as i64).contains(&viewport),
            "viewport {viewport} px for a {width} px window"
        );
        let over = b.overflow_x();
        b.screenshot(shots, &format!("{name}-{tag}"));
        assert!(
            over <= 0,
            "{name} at {width} px overflows sideways by {over} px"
        );
    }
    b.set_width(1280, 900);
}

/// The cells of a table column (by data-label) in row order.
fn column(b: &Browser, table: &str, class: &str) -> Vec<String> {
    let v = b.script(&format!(
        "return Array.from(document.querySelectorAll('#{table} tbody td.{class}')).map(e => e.textContent.trim());"
    ));
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The repository names listed, in order.
fn listed(b: &Browser) -> Vec<String> {
    column(b, "repositories", "main")
}

/// The value shown in `class`'s cell of the row for `repo`.
fn cell(b: &Browser, repo: &str, class: &str) -> String {
    let names = listed(b);
    let i = names
        .iter()
        .position(|n| n == repo)
        .unwrap_or_else(|| panic!("{repo} is not listed: {names:?}"));
    column(b, "repositories", class)[i].clone()
}

/// Pull `image` with docker after removing its only local name, so the pull really pulls.
fn docker_pull(image: &str) {
    docker_rmi(&[image]);
    docker(&["pull", image]);
}

#[test]
fn repository_list_tags_pulls_gc_and_phone_widths_in_chromium() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    users(dir.path());
    let w = Served::start(dir.path(), CONFIG, &[]);
    let host = w.host();
    let base = format!("http://{host}");

    // 55 repositories over the API for the pages, an empty one, a public immutable image,
    // then team/app last, tagged four times a second apart.
    for i in 0..55 {
        push_small(&base, &format!("bulk/r{i:02}"), "v1");
    }
    let gone = push_small(&base, "empty/thing", "only");
    let r = api()
        .delete(format!("{base}/v2/empty/thing/manifests/{gone}"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    push_small(&base, "public/hello", "v1");
    let docker_config = dir.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    // SAFETY: nextest runs each test in its own process; nothing else reads the environment.
    std::env::set_var("DOCKER_CONFIG", &docker_config);
    let mut login = Command::new("docker");
    login.args(["login", &host, "-u", "alice", "--password-stdin"]);
    let out = super::harness::output_with_stdin(&mut login, "alice-pw");
    assert!(out.status.success(), "docker login: {out:?}");
    // Two images: docker keeps manifests it has fetched, and asks only HEAD for one it
    // has seen, so each counted pull must be of an image new to it.
    let first = build_busybox_image(&unique("wharf-ui-product:"), &unique("first"));
    let second = build_busybox_image(&unique("wharf-ui-product:"), &unique("second"));
    let app = format!("{host}/team/app");
    std::thread::sleep(Duration::from_millis(1100));
    for (local, tag) in [
        (&first, "v1"),
        (&first, "v2"),
        (&first, "dev-1"),
        (&second, "latest"),
    ] {
        docker(&["tag", local, &format!("{app}:{tag}")]);
        docker(&["push", &format!("{app}:{tag}")]);
        std::thread::sleep(Duration::from_millis(1100));
    }
    docker_rmi(&[&first, &second]);

    // Two docker pulls count two; a HEAD (what a watcher asks, and what docker sends
    // first) counts none.
    let names: Vec<String> = ["v1", "v2", "dev-1", "latest"]
        .iter()
        .map(|t| format!("{app}:{t}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for tag in ["v1", "latest"] {
        docker_rmi(&names);
        docker(&["pull", &format!("{app}:{tag}")]);
    }
    let head = api()
        .head(format!("{base}/v2/team/app/manifests/v1"))
        .basic_auth("alice", Some("alice-pw"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);

    let shots = screenshots();
    let b = Browser::start();
    let mut ui = Visit::new(&base);
    ui.sign_in("alice", "alice-pw");
    b.goto(&format!("{base}/ui/login"));
    b.type_into("input[name=username]", "alice");
    b.type_into("input[name=password]", "alice-pw");
    both_widths(&b, &shots, "01-sign-in");
    b.click("#signin");
    wait_text(&b, "Signed in as alice");

    // The list by name: 50 of 58, with a total, and a next page holding the rest.
    assert_eq!(b.count("#repositories tbody tr"), 50, "{}", b.text());
    assert!(b.text().contains("1–50 of 58 repositories"), "{}", b.text());
    assert_eq!(listed(&b)[0], "bulk/r00");
    assert_eq!(b.count("#prev"), 0);
    let header = b.text();
    assert!(
        header.contains(&host),
        "the header names the registry: {header}"
    );
    both_widths(&b, &shots, "02-repositories");
    b.click("#next");
    b.wait_url("page=2");
    assert_eq!(
        listed(&b),
        [
            "bulk/r50",
            "bulk/r51",
            "bulk/r52",
            "bulk/r53",
            "bulk/r54",
            "empty/thing",
            "public/hello",
            "team/app"
        ]
    );
    assert!(
        b.text().contains("51–58 of 58 repositories"),
        "{}",
        b.text()
    );
    assert_eq!(b.count("#next"), 0);
    assert_eq!(cell(&b, "team/app", "tags"), "4");
    assert_eq!(
        cell(&b, "team/app", "pulls"),
        "2",
        "two docker pulls, one HEAD"
    );
    assert_eq!(cell(&b, "public/hello", "pulls"), "0");
    assert_eq!(cell(&b, "empty/thing", "tags"), "0");
    assert!(cell(&b, "empty/thing", "pushed").contains("never"));
    let size = cell(&b, "team/app", "num:nth-child(3)");
    assert!(
        size.ends_with("KiB") || size.ends_with("MiB"),
        "team/app's size: {size}"
    );
    let ago = b.script("return document.querySelector('#repositories td.pushed time').title;");
    assert!(
        ago.as_str().unwrap().ends_with('Z'),
        "the exact time on hover: {ago}"
    );
    both_widths(&b, &shots, "03-repositories-page-2");
    b.click("#prev");
    b.wait_url("page=1");

    // By last push: team/app first, the repository never pushed to last.
    b.click("#repositories thead th:nth-child(4) a");
    b.wait_url("sort=pushed");
    assert_eq!(listed(&b)[0], "team/app");
    let pushed = column(&b, "repositories", "pushed");
    assert!(
        pushed[0].contains("ago") || pushed[0] == "just now",
        "{pushed:?}"
    );
    b.click("#next");
    b.wait_url("page=2");
    assert_eq!(listed(&b).last().unwrap(), "empty/thing");

    // Search keeps to the matches.
    b.goto(&format!("{base}/ui/?q=team"));
    assert_eq!(listed(&b), ["team/app"]);
    b.goto(&format!("{base}/ui/?q=nothing-like-this"));
    assert_eq!(b.count("#empty"), 1);

    // The tag page: newest push first, by name on request, filtered, a pull line with a
    // tag that exists.
    b.goto(&format!("{base}/ui/repo?name=team%2Fapp"));
    assert_eq!(column(&b, "tags", "main"), ["latest", "dev-1", "v2", "v1"]);
    let pull = b.script("return document.querySelector('#pull').value;");
    assert_eq!(pull.as_str().unwrap(), format!("docker pull {app}:latest"));
    both_widths(&b, &shots, "04-tags");
    b.click("#tags thead th:nth-child(1) a");
    b.wait_url("sort=name");
    assert_eq!(column(&b, "tags", "main"), ["dev-1", "latest", "v1", "v2"]);
    b.type_into("input[name=filter]", "dev");
    b.click("#filterbutton");
    b.wait_url("filter=dev");
    assert_eq!(column(&b, "tags", "main"), ["dev-1"]);
    assert!(b.text().contains("1–1 of 1 tag"), "{}", b.text());
    b.goto(&format!("{base}/ui/repo?name=team%2Fapp&filter=zzz"));
    assert_eq!(b.count("#nomatch"), 1);

    // An immutable tag carries a lock, no delete link, and the pull line names it.
    b.goto(&format!("{base}/ui/repo?name=public%2Fhello"));
    assert_eq!(b.count("#tags .lock"), 1);
    assert_eq!(b.count("#tags a.delete"), 0);
    let pull = b.script("return document.querySelector('#pull').value;");
    assert_eq!(
        pull.as_str().unwrap(),
        format!("docker pull {host}/public/hello:v1")
    );
    both_widths(&b, &shots, "05-immutable");

    // An empty repository says so.
    b.goto(&format!("{base}/ui/repo?name=empty%2Fthing"));
    assert!(
        b.text().contains("This repository is empty"),
        "{}",
        b.text()
    );
    both_widths(&b, &shots, "06-empty");

    // A manifest, then an error page with a way back.
    b.goto(&format!("{base}/ui/manifest?name=team%2Fapp&ref=v1"));
    both_widths(&b, &shots, "07-manifest");
    b.goto(&format!("{base}/ui/repo?name=no%2Fsuch"));
    assert!(b.text().contains("Not Found"), "{}", b.text());
    both_widths(&b, &shots, "08-error");
    b.click("#back");
    b.wait_url("/ui/");
    assert_eq!(b.count("#repositories"), 1);

    // Deleting shows a confirmation, escaped.
    let junk = push_small(&base, "team/junk", "v1");
    b.goto(&format!("{base}/ui/delete?name=team%2Fjunk&ref={junk}"));
    both_widths(&b, &shots, "09-confirm-delete");
    b.click("#confirm");
    wait_text(&b, "Deleted team/junk@sha256:");
    assert_eq!(b.count("#notice"), 1);
    let forged = format!("{base}/ui/?done=deleted&what=%3Cb%3Ebold%3C%2Fb%3E");
    b.goto(&forged);
    assert!(b.text().contains("Deleted <b>bold</b>."), "{}", b.text());
    assert_eq!(
        b.count("#notice b"),
        0,
        "a notice's value is text, not markup"
    );
    b.goto(&format!("{base}/ui/?done=anything+I+like"));
    assert_eq!(b.count("#notice"), 0, "only the registry's own sentences");

    // GC: the dry run lists team/junk's blobs (grace 0s: nothing is pushing); the button
    // collects them and says so; the API no longer serves them.
    b.goto(&format!("{base}/ui/gc?grace=0s"));
    let would = b.text();
    assert!(would.contains("A dry run"), "{would}");
    let blobs: usize = b
        .script("return document.querySelector('#blobs').textContent;")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // team/junk's layer and manifest, and empty/thing's deleted image's.
    assert!(blobs >= 2, "the deleted manifests' blobs would go: {would}");
    assert!(would.contains("Run garbage collection"), "{would}");
    both_widths(&b, &shots, "10-gc-dry-run");
    // A form without its token, or from a non-admin, is refused and collects nothing.
    assert_eq!(ui.post("/ui/gc", &[("grace", "0s")]).0, 403);
    let mut bob = Visit::new(&base);
    bob.sign_in("bob", "bob-pw");
    let token = bob.token("/ui/");
    assert_eq!(
        bob.post("/ui/gc", &[("_csrf", &token), ("grace", "0s")]).0,
        403
    );
    b.goto(&format!("{base}/ui/gc?grace=0s"));
    b.click("#gc");
    wait_text(&b, "Garbage collection deleted");
    let done = b.text();
    assert!(
        done.contains(&format!("deleted {blobs} blobs and 0 manifests")),
        "{done}"
    );
    assert_eq!(
        b.script("return document.querySelector('#blobs').textContent;"),
        "0",
        "nothing left to collect"
    );
    assert_eq!(
        b.count("nav.main a.on[href='/ui/gc']"),
        1,
        "the nav marks GC"
    );
    both_widths(&b, &shots, "11-gc-done");

    // The other pages keep to the width too.
    for (path, name) in [
        ("/ui/admin/users?done=user-added&user=carol", "12-users"),
        ("/ui/admin/policies", "13-policies"),
        ("/ui/admin/storage", "14-storage"),
        ("/ui/rules", "15-rules"),
    ] {
        b.goto(&format!("{base}{path}"));
        both_widths(&b, &shots, name);
    }

    // Counts are stored: after the flush interval, a crash and a restart keep them.
    std::thread::sleep(Duration::from_secs(6));
    let mut w = w;
    w.kill();
    w.restart(dir.path());
    b.goto(&format!("{base}/ui/?q=team%2Fapp"));
    assert_eq!(
        cell(&b, "team/app", "pulls"),
        "2",
        "counts survive a restart"
    );
    docker_rmi(&names);
    let _ = Command::new("docker").args(["logout", &host]).output();
}

/// With `database:`, pulls are counted in PostgreSQL's `pull_counts` table (migration 0006);
/// and `ui.title` (here `REGISTRY_UI_TITLE`) names the registry in the header.
#[test]
fn pull_counts_live_in_postgresql_with_a_database() {
    require_docker();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    users(dir.path());
    let mut env = pg.env();
    env.push(("REGISTRY_UI_TITLE".into(), "Acme <registry>".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let w = Served::start(dir.path(), CONFIG, &env);
    let host = w.host();
    let base = format!("http://{host}");
    // public/*: anonymous pull, so docker needs no login.
    let docker_config = dir.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::env::set_var("DOCKER_CONFIG", &docker_config);
    let local = build_busybox_image(&unique("wharf-ui-pg:"), "pg");
    let image = format!("{host}/public/counted:v1");
    docker(&["tag", &local, &image]);
    let mut login = Command::new("docker");
    login.args(["login", &host, "-u", "alice", "--password-stdin"]);
    super::harness::output_with_stdin(&mut login, "alice-pw");
    docker(&["push", &image]);
    docker_rmi(&[&local]);
    // One docker pull and two skopeo reads of the manifest: three pulls.
    docker_pull(&image);
    require("skopeo", "skopeo");
    for _ in 0..2 {
        let reference = format!("docker://{image}");
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &reference]));
    }
    // Flushed within the interval.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = pg.psql("SELECT pulls FROM pull_counts WHERE repository = 'public/counted'");
        if n == "3" {
            break;
        }
        assert!(Instant::now() < deadline, "pull_counts holds {n:?}, not 3");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, html) = Visit::new(&base).get("/ui/?q=counted");
    assert_eq!(status, 200);
    // ui.title names the registry in the header, escaped.
    assert!(
        html.contains(r#"<span id="registry">Acme &lt;registry&gt;</span>"#),
        "{html}"
    );
    let row = html.split(">public/counted<").nth(1).unwrap_or_default();
    assert!(
        row.contains(r#"class="num pulls" data-label="Pulls">3<"#),
        "{html}"
    );
    docker_rmi(&[&image]);
}
