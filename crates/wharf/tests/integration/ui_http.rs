//! The web UI over plain HTTP: what a browser would never send (forms without their CSRF
//! token, a non-admin on admin pages, a revoked session), hostile image metadata, paging
//! and referrers, and the switch that turns the UI off.

use super::harness::Served;
use super::ui::{users, Visit, CONFIG};

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

#[test]
fn tags_come_50_to_a_page_and_referrers_show_on_their_subject() {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path());
    let w = Served::start(dir.path(), CONFIG, &[]);
    let base = format!("http://{}", w.host());
    let config = br#"{"architecture":"arm64","os":"linux","variant":"v8"}"#;
    let c = push_blob(&base, "team/many", config);
    let manifest = |extra: serde_json::Value| {
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len() },
            "layers": []
        });
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m.to_string()
    };
    let put = |reference: &str, body: String| {
        let r = reqwest::blocking::Client::new()
            .put(format!("{base}/v2/team/many/manifests/{reference}"))
            .basic_auth("alice", Some("alice-pw"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{reference}: {}", r.text().unwrap());
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let image = put("t00", manifest(serde_json::json!({})));
    for i in 1..55 {
        put(&format!("t{i:02}"), manifest(serde_json::json!({})));
    }
    // An SBOM-like referrer of the image.
    let size = manifest(serde_json::json!({})).len();
    put(
        "sbom",
        manifest(serde_json::json!({
            "artifactType": "application/vnd.example.sbom+json",
            "subject": { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image, "size": size }
        })),
    );

    let mut bob = Visit::new(&base);
    bob.sign_in("bob", "bob-pw");
    let (_, first) = bob.get("/ui/repo?name=team%2Fmany");
    assert_eq!(
        first.matches("<tr>").count(),
        1 + 50,
        "a header and 50 rows"
    );
    assert!(first.contains("linux/arm64/v8"), "{first}");
    let next = first
        .split("id=\"next\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a next page link")
        .replace("&amp;", "&");
    let (_, second) = bob.get(&next);
    // 56 tags: t00..t54 and sbom.
    assert_eq!(second.matches("<tr>").count(), 1 + 6, "{second}");
    assert!(!second.contains("id=\"next\""));
    // bob may pull but not delete: no delete links.
    assert!(!first.contains("/ui/delete"));

    let (_, page) = bob.get("/ui/manifest?name=team%2Fmany&ref=t00");
    let referrers = page.split("id=\"referrers\"").nth(1).unwrap();
    assert!(
        referrers.contains("application/vnd.example.sbom+json"),
        "{page}"
    );
}
