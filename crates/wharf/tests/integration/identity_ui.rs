//! Tokens, the audit page and repository delete in the web UI, driven in Chromium: an
//! admin makes a personal token, docker logs in and pushes with it, the admin adds a user
//! and deletes the repository from its page; the audit page and `wharf audit` show every
//! action once with the right actor. A non-admin's personal token is bounded by their own
//! access, and they see and revoke only their own tokens.

use crate::harness::docker_login;
use std::process::Command;

use super::harness::{build_busybox_image, docker_rmi, require_docker, run, unique, Served};
use super::identity::{audit_records, count, wharf_ok};
use super::ui::{users, Visit, CONFIG};
use super::webdriver::Browser;

/// Poll the page until `ready` holds (5 s at most): a click's navigation is not awaited.
fn wait_for(b: &Browser, ready: impl Fn(&Browser) -> bool) {
    for _ in 0..100 {
        if ready(b) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the page did not get there: {} {}", b.url(), b.text());
}

fn secret_in(source: &str) -> String {
    let at = source.find("wharf_rt_").expect("the secret shown once");
    source[at..at + "wharf_rt_".len() + 43].to_owned()
}

#[test]
fn personal_tokens_user_changes_and_repository_delete_in_chromium_are_audited() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    users(dir.path());
    let w = Served::start(dir.path(), CONFIG, &[]);
    let (host, base) = (w.host(), format!("http://{}", w.host()));
    let config = dir.path().join("config.yml");

    let b = Browser::start();
    b.goto(&format!("{base}/ui/login"));
    b.type_into("input[name=username]", "alice");
    b.type_into("input[name=password]", "alice-pw");
    b.click("#signin");
    // /ui/login matches "/ui/" too: wait for the signed-in page itself.
    wait_for(&b, |b| b.text().contains("Signed in as alice"));

    // A personal token, shown once.
    b.goto(&format!("{base}/ui/tokens"));
    b.type_into("#newtoken input[name=name]", "laptop");
    b.type_into("#newtoken input[name=scope]", "team/*:pull,push");
    b.click("#create");
    wait_for(&b, |b| b.source().contains("wharf_rt_"));
    let secret = secret_in(&b.source());
    assert!(b.text().contains("alice+laptop"), "{}", b.text());
    b.goto(&format!("{base}/ui/tokens"));
    assert!(!b.source().contains(&secret), "the secret is shown once");

    // docker logs in with it and pushes.
    let docker_config = dir.path().join("docker");
    let login = docker_login(&docker_config, &host, "alice+laptop", &secret);
    assert!(login.status.success(), "{login:?}");
    let local = build_busybox_image(&unique("wharf-ptoken:"), &unique("ptoken"));
    let remote = format!("{host}/team/ptoken:v1");
    run(Command::new("docker").args(["tag", &local, &remote]));
    let push = Command::new("docker")
        .env("DOCKER_CONFIG", &docker_config)
        .args(["push", &remote])
        .output()
        .unwrap();
    assert!(push.status.success(), "{push:?}");

    // An admin change: a user added.
    b.goto(&format!("{base}/ui/admin/users"));
    b.type_into("#add input[name=username]", "dave");
    b.type_into("#add input[name=password]", "dave-pw");
    b.click("#adduser");
    wait_for(&b, |b| b.text().contains("dave"));
    assert!(b.text().contains("dave"));

    // The repository deleted from its page.
    b.goto(&format!("{base}/ui/repo?name=team%2Fptoken"));
    b.click("#deleterepo");
    b.wait_url("/ui/delete-repository");
    b.click("#confirm");
    wait_for(&b, |b| b.url().ends_with("/ui/"));
    assert!(!b.text().contains("team/ptoken"), "{}", b.text());

    b.goto(&format!("{base}/ui/admin/audit"));
    let page = b.text();
    assert!(page.contains("Intact:"), "{page}");
    assert!(
        page.contains("delete repository") && page.contains("user add"),
        "{page}"
    );

    // bob's own token can do no more than bob (pull only), and he manages only his own.
    let mut bob = Visit::new(&base);
    bob.sign_in("bob", "bob-pw");
    let token = bob.token("/ui/tokens");
    let (status, html) = bob.post(
        "/ui/tokens",
        &[
            ("_csrf", &token),
            ("action", "create"),
            ("name", "ci"),
            ("scope", "*:pull,push,delete"),
        ],
    );
    assert_eq!(status, 200, "{html}");
    let bobs = secret_in(&html);
    assert!(!html.contains("alice+laptop"), "bob sees only his tokens");
    let token = bob.token("/ui/tokens");
    let (status, _) = bob.post(
        "/ui/tokens",
        &[
            ("_csrf", &token),
            ("action", "revoke"),
            ("name", "alice+laptop"),
        ],
    );
    assert_eq!(status, 400, "bob cannot revoke alice's token");
    let c = reqwest::blocking::Client::new();
    let pushing = c
        .post(format!("{base}/v2/team/x/blobs/uploads/"))
        .basic_auth("bob+ci", Some(&bobs))
        .send()
        .unwrap();
    assert_eq!(
        pushing.status(),
        403,
        "bob's token may not push: bob may not"
    );
    let pulling = c
        .get(format!("{base}/v2/public/x/tags/list"))
        .basic_auth("bob+ci", Some(&bobs))
        .send()
        .unwrap();
    assert_ne!(pulling.status(), 403);

    let records = audit_records(&config, &[]);
    assert_eq!(
        count(&records, "alice", "token create", "alice+laptop"),
        1,
        "{records:#?}"
    );
    assert_eq!(count(&records, "alice+laptop", "push", "team/ptoken:v1"), 1);
    assert_eq!(count(&records, "alice", "user add", "dave"), 1);
    assert_eq!(
        count(&records, "alice", "delete repository", "team/ptoken"),
        1
    );
    assert_eq!(count(&records, "alice", "login", "ui"), 1);
    assert_eq!(count(&records, "bob", "token create", "bob+ci"), 1);
    assert_eq!(count(&records, "bob", "token revoke", "alice+laptop"), 1);
    wharf_ok(&config, &[], &["audit", "verify"]);
    docker_rmi(&[&local, &remote]);
}
