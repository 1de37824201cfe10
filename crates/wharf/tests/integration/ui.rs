//! The web UI at /ui/ driven in headless Chromium over WebDriver: sign-in, browse, search,
//! a multi-arch index pushed by docker, deleting a tag, adding a user who then logs in with
//! `docker login`, the admin pages, sign-out. Plain-HTTP checks are in ui_http.rs; the
//! config and the cookie-keeping HTTP visitor here are shared with them.

use crate::harness::{docker_login, docker_with as docker};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::harness::{
    build_busybox_image_with, docker_pushed, push_manifest_list, require, require_docker, run,
    Served,
};
use super::webdriver::Browser;
pub const CONFIG: &str = r#"
version: 0.1
http:
  addr: 127.0.0.1:@PORT@
  secret: ui-test-secret
  headers:
    X-Content-Type-Options: [nosniff]
storage:
  filesystem: { rootdirectory: "@DIR@/data" }
  delete: { enabled: true }
auth:
  htpasswd: { realm: wharf, path: "@DIR@/htpasswd" }
access:
  rules:
    - { repositories: ["public/*"], anonymous: true, actions: [pull] }
    - { repositories: ["*"], users: [alice, carol], actions: ["*"] }
    - { repositories: ["*"], users: [bob], actions: [pull] }
ui:
  admins: [alice]
retention:
  rules:
    - { repositories: ["team/*"], keeplast: 10 }
immutable:
  - { repositories: ["public/*"], tags: "^v[0-9]+" }
quotas:
  - { repositories: ["team/*"], bytes: 10GiB }
"#;

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots")
}

/// alice (admin) and bob, written by Apache's htpasswd -B.
pub fn users(dir: &Path) {
    require("htpasswd", "apache2-utils");
    let file = dir.join("htpasswd");
    run(Command::new("htpasswd")
        .args(["-c", "-B", "-b"])
        .arg(&file)
        .args(["alice", "alice-pw"]));
    run(Command::new("htpasswd")
        .args(["-B", "-b"])
        .arg(&file)
        .args(["bob", "bob-pw"]));
}

/// A plain HTTP visitor that keeps the UI's cookies (no redirects followed).
pub struct Visit {
    base: String,
    http: reqwest::blocking::Client,
    pub cookies: Vec<(String, String)>,
}

impl Visit {
    pub fn new(base: &str) -> Visit {
        Visit {
            base: base.to_owned(),
            http: reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    fn keep(&mut self, r: &reqwest::blocking::Response) {
        for v in r.headers().get_all("set-cookie") {
            let pair = v.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn get(&mut self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .unwrap();
        self.keep(&r);
        (r.status().as_u16(), r.text().unwrap())
    }

    pub fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let body = form_body(form);
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .unwrap();
        self.keep(&r);
        (r.status().as_u16(), r.text().unwrap())
    }

    /// The CSRF token of the form on `page`.
    pub fn token(&mut self, page: &str) -> String {
        let (status, html) = self.get(page);
        assert_eq!(status, 200, "{page}: {html}");
        let start = html.find(r#"name="_csrf" value=""#).expect("a CSRF field") + 20;
        html[start..start + 64].to_owned()
    }

    pub fn sign_in(&mut self, user: &str, password: &str) {
        let token = self.token("/ui/login");
        let (status, body) = self.post(
            "/ui/login",
            &[
                ("_csrf", &token),
                ("username", user),
                ("password", password),
            ],
        );
        assert_eq!(status, 303, "sign-in as {user}: {body}");
    }
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Wait (up to 10 s) for a form's answer to show `text`.
fn wait_text(b: &Browser, text: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.text().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "never showed {text}: {}",
            b.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A console entry at SEVERE level is an error the page caused.
fn assert_no_console_errors(b: &Browser, what: &str) {
    let errors: Vec<_> = b
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors on {what}: {errors:?}");
}

#[test]
fn browse_delete_manage_users_and_sign_out_in_chromium() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    users(dir.path());
    let w = Served::start(dir.path(), CONFIG, &[]);
    let host = w.host();
    let base = format!("http://{host}");
    let docker_config = dir.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    let login = docker_login(&docker_config, &host, "alice", "alice-pw");
    assert!(login.status.success(), "docker login: {login:?}");
    // docker_pushed and push_manifest_list run `docker` from this process's environment.
    // SAFETY: nextest runs each test in its own process; nothing else reads the environment.
    std::env::set_var("DOCKER_CONFIG", &docker_config);

    // A multi-arch index of two images, an image with a hostile label, and a public image.
    let amd64 = docker_pushed(&host, "team/app", "built for amd64");
    let arm64 = format!("{host}/team/app:arm64");
    build_busybox_image_with(&arm64, "built for arm64", &[], &["CMD [\"/bin/sh\"]"]);
    run(Command::new("docker").args(["push", &arm64]));
    push_manifest_list(&format!("{host}/team/app:multi"), &amd64, &arm64);
    let evil = format!("{host}/team/app:evil");
    build_busybox_image_with(
        &evil,
        "evil",
        &[],
        &[
            "LABEL evil=\"<script>alert(1)</script>\"",
            "ENV GREETING=hello",
            "CMD [\"/bin/sh\"]",
        ],
    );
    run(Command::new("docker").args(["push", &evil]));
    docker_pushed(&host, "public/hello", "public");

    let shots = screenshots();
    let b = Browser::start();

    // Anonymous: only what the policy lets anonymous callers pull.
    b.goto(&format!("{base}/ui/"));
    let text = b.text();
    assert!(text.contains("public/hello"), "{text}");
    assert!(
        !text.contains("team/app"),
        "anonymous sees team/app: {text}"
    );
    b.screenshot(&shots, "01-anonymous");
    assert_no_console_errors(&b, "the anonymous catalog");

    // Sign in.
    b.click("#login");
    b.wait_url("/ui/login");
    b.type_into("input[name=username]", "alice");
    b.type_into("input[name=password]", "alice-pw");
    b.screenshot(&shots, "02-sign-in");
    b.click("#signin");
    wait_text(&b, "Signed in as alice");
    assert!(b.url().ends_with("/ui/"), "{}", b.url());
    let text = b.text();
    assert!(
        text.contains("Signed in as alice") && text.contains("team/app"),
        "{text}"
    );
    b.screenshot(&shots, "03-repositories");

    // Search.
    b.type_into("input[name=q]", "team");
    b.click("#search");
    b.wait_url("q=team");
    assert_eq!(b.count("#repositories tbody tr"), 1, "{}", b.text());
    assert!(!b.text().contains("public/hello"));
    b.screenshot(&shots, "04-search");

    // The repository's tags, with platforms.
    b.click("#repositories a[href='/ui/repo?name=team%2Fapp']");
    b.wait_url("/ui/repo?");
    let text = b.text();
    for tag in ["arm64", "evil", "v1", "multi"] {
        assert!(text.contains(tag), "tag {tag}: {text}");
    }
    let multi = text.lines().find(|l| l.starts_with("multi ")).unwrap();
    assert!(
        multi.contains("linux/amd64") && multi.contains("linux/arm64"),
        "{text}"
    );
    assert!(
        text.contains(&format!("docker pull {host}/team/app"))
            || b.source().contains(&format!("docker pull {host}/team/app"))
    );
    b.screenshot(&shots, "05-tags");

    // The index, then one of its images.
    b.click("a.tag[href*='ref=multi']");
    b.wait_url("ref=multi");
    assert_eq!(b.count("#platforms tbody tr"), 2, "{}", b.text());
    assert!(b.text().contains("linux/arm64"));
    b.screenshot(&shots, "06-index");
    b.click("#platforms a.child");
    b.wait_url("ref=sha256");
    assert!(b.count("#layers tbody tr") >= 1, "{}", b.text());
    b.screenshot(&shots, "07-manifest");

    // A hostile label is shown as text, never run.
    b.goto(&format!("{base}/ui/manifest?name=team%2Fapp&ref=evil"));
    let text = b.text();
    assert!(text.contains("<script>alert(1)</script>"), "{text}");
    assert!(text.contains("GREETING=hello"), "{text}");
    let source = b.source();
    assert!(
        !source.contains("<script>alert"),
        "unescaped label in {source}"
    );
    b.screenshot(&shots, "08-escaped-label");
    assert_no_console_errors(&b, "browsing");

    // Delete a tag, confirmed; the registry API no longer has it.
    b.goto(&format!("{base}/ui/repo?name=team%2Fapp"));
    b.click("a[href='/ui/delete?name=team%2Fapp&ref=evil']");
    b.wait_url("/ui/delete?");
    b.screenshot(&shots, "09-confirm-delete");
    b.click("#confirm");
    b.wait_url("/ui/repo?");
    wait_text(&b, "Deleted team/app:evil.");
    assert_eq!(b.count("#tags a.tag[href*='ref=evil']"), 0, "{}", b.text());
    let api = reqwest::blocking::Client::new()
        .get(format!("{base}/v2/team/app/manifests/evil"))
        .basic_auth("alice", Some("alice-pw"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(api.status(), 404, "the deleted tag through the API");
    b.screenshot(&shots, "10-deleted");

    // An immutable tag (public/*: ^v[0-9]+) is refused with the rule, not deleted.
    b.goto(&format!("{base}/ui/delete?name=public%2Fhello&ref=v1"));
    b.click("#confirm");
    wait_text(&b, "Forbidden");
    assert!(b.text().contains("immutable"), "{}", b.text());
    b.console(); // the 403 itself is logged by the browser
    let kept = reqwest::blocking::Client::new()
        .head(format!("{base}/v2/public/hello/manifests/v1"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(kept.status(), 200, "the immutable tag is still there");

    // Add a user, who then logs in with docker.
    b.goto(&format!("{base}/ui/admin/users"));
    b.type_into("#add input[name=username]", "carol");
    b.type_into("#add input[name=password]", "carol-pw");
    b.click("#adduser");
    wait_text(&b, "carol");
    assert!(b.text().contains("carol"), "{}", b.text());
    b.screenshot(&shots, "11-users");
    let carol = docker_login(&dir.path().join("docker-carol"), &host, "carol", "carol-pw");
    assert!(
        carol.status.success(),
        "docker login as the new user: {carol:?}"
    );
    b.goto(&format!("{base}/ui/admin/policies"));
    assert!(b.text().contains("public/*"), "{}", b.text());
    b.screenshot(&shots, "12-policies");
    b.goto(&format!("{base}/ui/rules"));
    let text = b.text();
    assert!(
        text.contains("^v[0-9]+") && text.contains("10.0 GiB"),
        "{text}"
    );
    let quota = text
        .lines()
        .find(|l| l.starts_with("team/*") && l.contains("GiB"))
        .unwrap();
    assert!(
        quota.contains("MiB"),
        "the quota's usage counts team/app's layers: {quota}"
    );
    b.screenshot(&shots, "13-rules");
    b.goto(&format!("{base}/ui/admin/storage"));
    b.screenshot(&shots, "13-storage-summary");
    // The GC page opens on a dry run (its button runs a collection: ui_product.rs).
    b.goto(&format!("{base}/ui/gc"));
    assert!(b.text().contains("A dry run"), "{}", b.text());
    b.screenshot(&shots, "14-gc-dry-run");
    assert_no_console_errors(&b, "the admin pages");

    // Sign out: the nav offers sign-in again and team/app is hidden once more; the old
    // session cookie, replayed, signs nobody in.
    let session = b.cookie("wharf_session").expect("a session cookie");
    b.click("#logout");
    wait_text(&b, "Sign in");
    assert_eq!(b.count("#login"), 1);
    assert!(!b.text().contains("team/app"));
    b.screenshot(&shots, "15-signed-out");
    assert_no_console_errors(&b, "signing out");
    let replayed = reqwest::blocking::Client::new()
        .get(format!("{base}/ui/"))
        .header("cookie", format!("wharf_session={session}"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !replayed.contains("Signed in as"),
        "a signed-out session still works"
    );
    let _ = docker(&docker_config, &["logout", &host]);
}
