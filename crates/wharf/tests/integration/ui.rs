//! The web UI at /ui/: driven in headless Chromium over WebDriver (sign-in, browse, search,
//! a multi-arch index pushed by docker, deleting a tag, adding a user who then logs in with
//! `docker login`, sign-out), and over plain HTTP for what a browser would never send
//! (forms without their CSRF token, a non-admin on admin pages, a revoked session).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::harness::{
    build_busybox_image_with, docker_pushed, push_manifest_list, require, require_docker, run,
    Served,
};
use super::webdriver::Browser;

const CONFIG: &str = r#"
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
fn users(dir: &Path) {
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

fn docker(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(args)
        .output()
        .unwrap()
}

fn docker_login(config: &Path, host: &str, user: &str, password: &str) -> std::process::Output {
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(["login", host, "-u", user, "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A plain HTTP visitor that keeps the UI's cookies (no redirects followed).
struct Visit {
    base: String,
    http: reqwest::blocking::Client,
    cookies: Vec<(String, String)>,
}

impl Visit {
    fn new(base: &str) -> Visit {
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

    fn get(&mut self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .unwrap();
        self.keep(&r);
        (r.status().as_u16(), r.text().unwrap())
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
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
    fn token(&mut self, page: &str) -> String {
        let (status, html) = self.get(page);
        assert_eq!(status, 200, "{page}: {html}");
        let start = html.find(r#"name="_csrf" value=""#).expect("a CSRF field") + 20;
        html[start..start + 64].to_owned()
    }

    fn sign_in(&mut self, user: &str, password: &str) {
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

#[test]
fn forms_need_their_csrf_token_and_admin_pages_need_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path());
    let w = Served::start(dir.path(), CONFIG, &[]);
    let base = format!("http://{}", w.host());

    // No token, or a token from another visitor: 403, and nobody is signed in.
    let mut mallory = Visit::new(&base);
    let (status, _) = mallory.post(
        "/ui/login",
        &[("username", "alice"), ("password", "alice-pw")],
    );
    assert_eq!(status, 403);
    let mut other = Visit::new(&base);
    let stolen = other.token("/ui/login");
    mallory.get("/ui/login");
    let (status, _) = mallory.post(
        "/ui/login",
        &[
            ("_csrf", &stolen),
            ("username", "alice"),
            ("password", "alice-pw"),
        ],
    );
    assert_eq!(status, 403, "a token bound to another visitor's cookie");

    // A signed-in admin's forms still need the token.
    let mut alice = Visit::new(&base);
    alice.sign_in("alice", "alice-pw");
    let (status, _) = alice.post(
        "/ui/admin/users",
        &[("action", "add"), ("username", "eve"), ("password", "x")],
    );
    assert_eq!(status, 403);
    let pre_login = other.token("/ui/login");
    let (status, _) = alice.post(
        "/ui/admin/users",
        &[
            ("_csrf", &pre_login),
            ("action", "add"),
            ("username", "eve"),
            ("password", "x"),
        ],
    );
    assert_eq!(status, 403, "a token from before sign-in");
    let (status, _) = alice.post("/ui/delete", &[("name", "public/x"), ("ref", "v1")]);
    assert_eq!(status, 403);
    let (status, _) = alice.post("/ui/logout", &[]);
    assert_eq!(status, 403);
    assert!(!std::fs::read_to_string(dir.path().join("htpasswd"))
        .unwrap()
        .contains("eve:"));

    // The UI's answers carry http.headers, as the API's do, and forbid scripts.
    let r = reqwest::blocking::get(format!("{base}/ui/")).unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));

    // bob is signed in but no admin: 403 on every admin page and action.
    let mut bob = Visit::new(&base);
    bob.sign_in("bob", "bob-pw");
    for page in [
        "/ui/admin/users",
        "/ui/admin/policies",
        "/ui/admin/storage",
        "/ui/gc",
    ] {
        assert_eq!(bob.get(page).0, 403, "{page} for a non-admin");
        assert_eq!(
            Visit::new(&base).get(page).0,
            403,
            "{page} for an anonymous visitor"
        );
    }
    let token = bob.token("/ui/");
    let (status, _) = bob.post(
        "/ui/admin/users",
        &[
            ("_csrf", &token),
            ("action", "add"),
            ("username", "eve"),
            ("password", "x"),
        ],
    );
    assert_eq!(status, 403);
    for page in [
        "/ui/admin/users",
        "/ui/admin/policies",
        "/ui/admin/storage",
        "/ui/gc",
    ] {
        assert_eq!(alice.get(page).0, 200, "{page} for the admin");
    }

    // Signing out revokes the session everywhere: the old cookie no longer signs anyone in.
    let (_, before) = alice.get("/ui/");
    assert!(before.contains("Signed in as"));
    let saved = alice.cookies.clone();
    let token = alice.token("/ui/");
    assert_eq!(alice.post("/ui/logout", &[("_csrf", &token)]).0, 303);
    let mut replay = Visit::new(&base);
    replay.cookies = saved;
    let (_, after) = replay.get("/ui/");
    assert!(
        !after.contains("Signed in as"),
        "a signed-out session still works"
    );
    assert_eq!(replay.get("/ui/admin/users").0, 403);
}

#[test]
fn ui_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path());
    let w = Served::start(dir.path(), CONFIG, &[("REGISTRY_UI_ENABLED", "false")]);
    let r = reqwest::blocking::get(format!("http://{}/ui/", w.host())).unwrap();
    assert_eq!(r.status(), 404);
    // The registry API is unchanged.
    let r = reqwest::blocking::get(format!("http://{}/v2/", w.host())).unwrap();
    assert_eq!(r.status(), 401);
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
    assert_eq!(b.count("#repositories li"), 1, "{}", b.text());
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
    assert!(!b.text().contains("evil"), "{}", b.text());
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
    b.goto(&format!("{base}/ui/gc"));
    b.click("#gc");
    wait_text(&b, "dry run");
    assert!(b.text().contains("dry run"), "{}", b.text());
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

/// Push blob `bytes` into `repo` as alice (monolithic POST with its digest).
fn push_blob(base: &str, repo: &str, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .basic_auth("alice", Some("alice-pw"))
        .body(bytes.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "blob push: {}", r.text().unwrap());
    digest
}

#[test]
fn hostile_labels_and_annotations_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path());
    let w = Served::start(dir.path(), CONFIG, &[]);
    let base = format!("http://{}", w.host());
    let evil = "<script>alert(1)</script>";
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Labels": { evil: evil }, "Env": [format!("X={evil}")] },
        "history": [{ "created_by": evil }]
    })
    .to_string();
    let layer = b"not really a tarball";
    let (c, l) = (
        push_blob(&base, "team/x", config.as_bytes()),
        push_blob(&base, "team/x", layer),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len() }],
        "annotations": { evil: evil }
    });
    let r = reqwest::blocking::Client::new()
        .put(format!("{base}/v2/team/x/manifests/v1"))
        .basic_auth("alice", Some("alice-pw"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "manifest push: {}", r.text().unwrap());

    let mut alice = Visit::new(&base);
    alice.sign_in("alice", "alice-pw");
    for page in [
        "/ui/manifest?name=team%2Fx&ref=v1",
        "/ui/repo?name=team%2Fx",
    ] {
        let (status, html) = alice.get(page);
        assert_eq!(status, 200, "{page}: {html}");
        assert!(
            !html.contains("<script"),
            "{page} lets markup through: {html}"
        );
    }
    let (_, html) = alice.get("/ui/manifest?name=team%2Fx&ref=v1");
    // Label key and value, annotation key and value, the env entry and the history line.
    assert!(
        html.matches("&lt;script&gt;alert(1)&lt;/script&gt;")
            .count()
            >= 6,
        "{html}"
    );
}
