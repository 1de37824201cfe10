//! `auth.ldap` against a real OpenLDAP (Debian's slapd) reached over StartTLS: docker logs
//! in as directory users, LDAP groups decide pushes through `access:` rules, htpasswd keeps
//! local admins working, injection in user names finds nobody, and an outage gives new
//! logins a spec-shaped 503 while cached ones keep pushing.

use std::path::Path;

use reqwest::blocking::Client;
use serde_json::Value;

use crate::harness::slapd::{Slapd, ADMIN_DN, ADMIN_PASSWORD, PEOPLE};
use crate::harness::{
    build_busybox_image, docker_login, docker_rmi, docker_with as docker, htpasswd,
    output_text as text, require_docker, unique, Served,
};
use crate::ui::Visit;

fn assert_ok(out: std::process::Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", text(&out));
}

/// `GET /v2/` with Basic credentials: the status and the spec error code, if any.
fn probe(host: &str, user: &str, password: &str) -> (u16, String, String) {
    let r = Client::new()
        .get(format!("http://{host}/v2/"))
        .basic_auth(user, Some(password))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().unwrap_or(Value::Null);
    let err = &body["errors"][0];
    (
        status,
        err["code"].as_str().unwrap_or_default().to_owned(),
        err["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn config(dir: &Path, slapd: &Slapd, token: bool) -> String {
    let admin = dir.join("htpasswd");
    htpasswd(&admin, "admin", "admin-pw");
    let secret = dir.join("bind-password");
    std::fs::write(&secret, format!("{ADMIN_PASSWORD}\n")).unwrap();
    let token = if token {
        "\n    token:\n      service: wharf-ldap"
    } else {
        ""
    };
    format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  secret: ldap-test-secret\n\
         auth:\n  htpasswd:\n    realm: r\n    path: {admin}{token}\n  ldap:\n    url: {url}\n    ca: {ca}\n    binddn: {ADMIN_DN}\n    bindpasswordfile: {secret}\n    basedn: {PEOPLE}\n    userfilter: (&(objectClass=inetOrgPerson)(uid={{username}}))\n    cachettl: 10m\n    timeout: 2s\n\
         access:\n  rules:\n    - {{ repositories: ['team/*'], groups: [devs], actions: [pull, push] }}\n    - {{ repositories: ['*'], users: [admin], actions: ['*'] }}\n    - {{ repositories: ['team/*'], users: ['*'], actions: [pull] }}\n",
        admin = admin.display(),
        url = slapd.url(),
        ca = slapd.cert.display(),
        secret = secret.display(),
    )
}

fn directory() -> Slapd {
    Slapd::start(
        &[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("carol", "carol-pw"),
        ],
        &[("devs", &["alice", "carol"]), ("others", &["bob"])],
    )
}

#[test]
fn ldap_users_push_by_group_and_an_outage_is_a_503_for_new_logins_only() {
    require_docker();
    let mut slapd = directory();
    let dir = tempfile::tempdir().unwrap();
    let w = Served::start(dir.path(), &config(dir.path(), &slapd, false), &[]);
    let host = w.host();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));

    assert_ok(
        docker_login(&alice, &host, "alice", "alice-pw"),
        "docker login alice",
    );
    assert!(
        !docker_login(&bob, &host, "bob", "wrong").status.success(),
        "a wrong LDAP password must not log in"
    );
    assert_ok(
        docker_login(&bob, &host, "bob", "bob-pw"),
        "docker login bob",
    );

    let local = build_busybox_image(&unique("wharf-ldap-src:"), "ldap");
    let remote = format!("{host}/team/app:v1");
    assert_ok(docker(&alice, &["tag", &local, &remote]), "tag");
    assert_ok(
        docker(&alice, &["push", &remote]),
        "alice (group devs) pushes",
    );
    let denied = docker(&bob, &["push", &remote]);
    assert!(
        !denied.status.success(),
        "bob is not in devs: {}",
        text(&denied)
    );
    assert_ok(docker(&bob, &["pull", &remote]), "bob may pull team/*");

    // RFC 4515 escaping: these names match no entry, whatever the password.
    for name in ["*)(uid=*", "*", "alice)(uid=*", "al*"] {
        let (status, code, _) = probe(&host, name, "alice-pw");
        assert_eq!(
            (status, code.as_str()),
            (401, "UNAUTHORIZED"),
            "user name {name:?}"
        );
    }

    // The UI: an LDAP user signs in with a password and gets a session.
    let mut ui = Visit::new(&format!("http://{host}"));
    ui.sign_in("alice", "alice-pw");
    let (_, page) = ui.get("/ui/");
    assert!(
        page.contains("Signed in as") && page.contains("team/app"),
        "{page}"
    );

    slapd.stop();
    // The session outlives the directory's outage; a new UI sign-in is a 503.
    let (status, page) = ui.get("/ui/");
    assert!(status == 200 && page.contains("alice"), "{status} {page}");
    let mut carol_ui = Visit::new(&format!("http://{host}"));
    let token = carol_ui.token("/ui/login");
    let (status, page) = carol_ui.post(
        "/ui/login",
        &[
            ("_csrf", &token),
            ("username", "carol"),
            ("password", "carol-pw"),
        ],
    );
    assert_eq!(status, 503, "{page}");
    // A login the cache has not seen: the directory decides it, and it is down.
    let (status, code, message) = probe(&host, "carol", "carol-pw");
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"), "{message}");
    assert!(
        message.contains("LDAP"),
        "the message names the cause: {message}"
    );
    let refused = docker_login(&dir.path().join("carol"), &host, "carol", "carol-pw");
    assert!(
        !refused.status.success(),
        "no new login while slapd is down"
    );
    // alice logged in before: her cached bind keeps pushing.
    let second = format!("{host}/team/app:v2");
    assert_ok(docker(&alice, &["tag", &local, &second]), "tag");
    assert_ok(
        docker(&alice, &["push", &second]),
        "a cached login pushes while slapd is down",
    );
    // Local (htpasswd) accounts do not need the directory.
    assert_eq!(probe(&host, "admin", "admin-pw").0, 200);

    slapd.start_again();
    assert_eq!(
        probe(&host, "carol", "carol-pw").0,
        200,
        "back once slapd is"
    );
    docker_rmi(&[&remote, &second, &local]);
    assert!(!w.log().contains("alice-pw") && !w.log().contains(ADMIN_PASSWORD));
}

#[test]
fn ldap_users_get_tokens_from_the_builtin_token_server() {
    require_docker();
    let slapd = directory();
    let dir = tempfile::tempdir().unwrap();
    let w = Served::start(dir.path(), &config(dir.path(), &slapd, true), &[]);
    let host = w.host();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    assert_ok(
        docker_login(&alice, &host, "alice", "alice-pw"),
        "docker login alice",
    );
    assert_ok(
        docker_login(&bob, &host, "bob", "bob-pw"),
        "docker login bob",
    );
    let local = build_busybox_image(&unique("wharf-ldap-token-src:"), "ldap token");
    let remote = format!("{host}/team/tokens:v1");
    assert_ok(docker(&alice, &["tag", &local, &remote]), "tag");
    assert_ok(
        docker(&alice, &["push", &remote]),
        "alice (devs) pushes with a token",
    );
    let denied = docker(&bob, &["push", &remote]);
    assert!(
        !denied.status.success(),
        "bob's token has no push: {}",
        text(&denied)
    );
    docker_rmi(&[&remote, &local]);
}
