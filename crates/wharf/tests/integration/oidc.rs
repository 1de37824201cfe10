//! OpenID Connect against a real provider (PyPI's oidc-provider-mock): the UI's sign-in in
//! Chromium, where the groups claim decides what a user sees; the flow's `state` and
//! `nonce` refusing replays; and workload identity, where a CI job's ID token is its docker
//! password and its claims decide where it may push. A personal token made after an OIDC
//! sign-in is bounded by the groups the sign-in carried. Expired tokens, another audience,
//! another issuer, forged signatures and `alg: none` are refused; a rotated key is fetched.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::oidc::Provider;
use crate::harness::{
    build_busybox_image, docker_login, docker_rmi, docker_with as docker, header, htpasswd,
    http_client, output_text as text, require_docker, unique, Served,
};
use crate::webdriver::Browser;

/// `GET /v2/` with `password` as Basic password: status and the spec error's message.
fn probe(host: &str, password: &str) -> (u16, String) {
    let r = reqwest::blocking::Client::new()
        .get(format!("http://{host}/v2/"))
        .basic_auth("ci", Some(password))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().unwrap_or(Value::Null);
    (
        status,
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// A one-layer image pushed over the API as the local admin.
fn push_raw(base: &str, repo: &str) {
    use sha2::Digest as _;
    let c = reqwest::blocking::Client::new();
    let blob = |bytes: &[u8]| {
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        let r = c
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
            .basic_auth("admin", Some("admin-pw"))
            .body(bytes.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "blob push: {}", r.text().unwrap());
        digest
    };
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = repo.as_bytes();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(layer), "size": layer.len() }],
    });
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/v1"))
        .basic_auth("admin", Some("admin-pw"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "manifest push: {}", r.text().unwrap());
}

fn wait_text(b: &Browser, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = b.text();
        if t.contains(want) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "never showed {want:?}: {t} at {}",
            b.url()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ui_config(dir: &Path, provider: &Provider) -> String {
    htpasswd(&dir.join("htpasswd"), "admin", "admin-pw");
    format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\n  secret: oidc-ui-secret\n\
         auth:\n  htpasswd:\n    realm: r\n    path: @DIR@/htpasswd\n  oidc:\n    issuer: {}\n    clientid: wharf-ui\n    clientsecret: ui-secret\n\
         access:\n  rules:\n    - {{ repositories: ['team/*'], groups: [devs], actions: [pull] }}\n    - {{ repositories: ['ops/*'], groups: [ops], actions: [pull] }}\n    - {{ repositories: ['*'], users: [admin], actions: ['*'] }}\n",
        provider.issuer()
    )
}

#[test]
fn oidc_sign_in_in_chromium_and_the_groups_claim_decides_what_is_shown() {
    let provider = Provider::start(
        &[
            json!({"sub": "alice", "preferred_username": "alice", "groups": ["devs"]}),
            json!({"sub": "bob", "preferred_username": "bob", "groups": ["ops"]}),
        ],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let w = Served::start(dir.path(), &ui_config(dir.path(), &provider), &[]);
    let base = format!("http://{}", w.host());
    push_raw(&base, "team/app");
    push_raw(&base, "ops/tool");

    let b = Browser::start();
    for (user, sees, hidden) in [
        ("alice", "team/app", "ops/tool"),
        ("bob", "ops/tool", "team/app"),
    ] {
        b.goto(&format!("{base}/ui/login"));
        b.click("#oidc");
        b.wait_url(&provider.issuer());
        b.click(&format!("button[name=sub][value={user}]"));
        let t = wait_text(&b, &format!("Signed in as {user}"));
        assert!(t.contains(sees), "{user} must see {sees}: {t}");
        assert!(!t.contains(hidden), "{user} must not see {hidden}: {t}");
        assert!(b.url().ends_with("/ui/"), "{}", b.url());
        personal_token_counts_the_groups(&b, &base, user, sees, hidden);
        b.click("#logout");
        wait_text(&b, "Sign in");
    }
}

/// A token the signed-in user makes for docker, whose rights come from their groups claim:
/// its scopes reach everything, the owner's groups bound it, as in their session.
fn personal_token_counts_the_groups(b: &Browser, base: &str, user: &str, sees: &str, hidden: &str) {
    b.goto(&format!("{base}/ui/tokens"));
    b.type_into("#newtoken input[name=name]", "laptop");
    b.type_into("#newtoken input[name=scope]", "*:pull");
    b.click("#create");
    let source = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = b.source();
            if s.contains("wharf_rt_") {
                break s;
            }
            assert!(Instant::now() < deadline, "no token shown: {}", b.text());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let at = source.find("wharf_rt_").unwrap();
    let secret = &source[at..at + "wharf_rt_".len() + 43];
    let name = format!("{user}+laptop");
    let host = base.trim_start_matches("http://");
    let docker_config = tempfile::tempdir().unwrap();
    let login = docker_login(docker_config.path(), host, &name, secret);
    assert!(
        login.status.success(),
        "docker login with {name}: {}",
        text(&login)
    );
    let tags = |repo: &str| {
        reqwest::blocking::Client::new()
            .get(format!("{base}/v2/{repo}/tags/list"))
            .basic_auth(&name, Some(secret))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(tags(sees), 200, "{name} reads {sees} through its group");
    assert!(
        matches!(tags(hidden), 401 | 403),
        "{name} must not read {hidden}"
    );
    b.goto(&format!("{base}/ui/"));
}

/// The flow by HTTP: `/ui/oidc/login`'s redirect and flow cookie.
fn start_flow(base: &str) -> (String, String) {
    let r = http_client()
        .get(format!("{base}/ui/oidc/login"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "{}", r.status());
    let cookie = header(&r, "set-cookie");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("wharf_oidc="), "{cookie}");
    (header(&r, "location"), cookie)
}

fn callback(url: &str, cookie: Option<&str>) -> (u16, String) {
    let mut req = http_client().get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("wharf_session=") && !v.starts_with("wharf_session=;"))
        .unwrap_or_default()
        .to_owned();
    (status, session)
}

#[test]
fn oidc_state_and_nonce_refuse_replays() {
    let provider = Provider::start(&[json!({"sub": "alice", "groups": ["devs"]})], &[]);
    let dir = tempfile::tempdir().unwrap();
    let w = Served::start(dir.path(), &ui_config(dir.path(), &provider), &[]);
    let base = format!("http://{}", w.host());

    let (to_provider, cookie) = start_flow(&base);
    assert!(to_provider.contains("code_challenge_method=S256") && to_provider.contains("nonce="));
    let back = provider.authorize(&to_provider, "alice");
    let (status, session) = callback(&back, Some(&cookie));
    assert_eq!(status, 200);
    assert!(!session.is_empty(), "signed in");
    // The same callback again: the code is spent (and a browser would have no flow cookie).
    assert_eq!(callback(&back, Some(&cookie)).0, 401, "a replayed code");
    assert_eq!(
        callback(&back, None).0,
        400,
        "no flow cookie: state mismatch"
    );
    // A state from another sign-in.
    let (to_provider, cookie) = start_flow(&base);
    let back = provider.authorize(&to_provider, "alice");
    let forged = back.replace("state=", "state=x");
    assert_eq!(callback(&forged, Some(&cookie)).0, 400, "a foreign state");
    // An ID token (by its code) from sign-in A presented in sign-in B: nonce mismatch.
    let (to_a, _cookie_a) = start_flow(&base);
    let back_a = provider.authorize(&to_a, "alice");
    let (to_b, cookie_b) = start_flow(&base);
    let state_b = reqwest::Url::parse(&to_b)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut spliced = reqwest::Url::parse(&back_a).unwrap();
    let code_a = spliced
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    spliced
        .query_pairs_mut()
        .clear()
        .append_pair("code", &code_a)
        .append_pair("state", &state_b);
    let (status, session) = callback(spliced.as_str(), Some(&cookie_b));
    assert_eq!((status, session.as_str()), (401, ""), "a replayed nonce");
    assert!(w.log().contains("nonce"), "the log names the cause");
}

fn workload_config(issuers: &[&Provider]) -> String {
    let mut yaml = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  workload:\n".to_owned();
    for p in issuers {
        yaml.push_str(&format!(
            "    - issuer: {}\n      audience: wharf\n      rules:\n        - claims: {{ repository: team/app }}\n          repositories: ['team/app', 'team/app/*']\n          actions: [pull, push]\n",
            p.issuer()
        ));
    }
    yaml
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn workload_id_tokens_push_only_where_their_claims_allow() {
    require_docker();
    let claims = [
        json!({"sub": "repo:team/app", "repository": "team/app"}),
        json!({"sub": "repo:other/x", "repository": "other/x"}),
    ];
    let mut trusted = Provider::start(&claims, &[]);
    let short = Provider::start(&claims, &["--token-max-age", "1"]);
    let stranger = Provider::start(&claims, &[]);
    let dir = tempfile::tempdir().unwrap();
    let w = Served::start(dir.path(), &workload_config(&[&trusted, &short]), &[]);
    let host = w.host();
    let ci = dir.path().join("ci");

    let token = trusted.id_token("repo:team/app", "wharf");
    let keys_fetched = Instant::now();
    let out = docker_login(&ci, &host, "ci", &token);
    assert!(
        out.status.success(),
        "docker login with an ID token: {}",
        text(&out)
    );
    let local = build_busybox_image(&unique("wharf-workload-src:"), "workload");
    let (allowed, elsewhere) = (format!("{host}/team/app:v1"), format!("{host}/other/x:v1"));
    for r in [&allowed, &elsewhere] {
        assert!(docker(&ci, &["tag", &local, r]).status.success());
    }
    let pushed = docker(&ci, &["push", &allowed]);
    assert!(
        pushed.status.success(),
        "push where the claims allow: {}",
        text(&pushed)
    );
    let refused = docker(&ci, &["push", &elsewhere]);
    assert!(
        !refused.status.success(),
        "push elsewhere: {}",
        text(&refused)
    );

    // Claims that match no rule, another audience, another issuer: refused.
    let other_repo = trusted.id_token("repo:other/x", "wharf");
    assert_eq!(probe(&host, &other_repo).0, 401);
    assert_eq!(
        probe(&host, &trusted.id_token("repo:team/app", "not-wharf")).0,
        401
    );
    assert_eq!(
        probe(&host, &stranger.id_token("repo:team/app", "wharf")).0,
        401
    );
    // A forged signature, claims changed under a good signature, and alg none.
    let parts: Vec<&str> = token.split('.').collect();
    // A character inside the signature, every bit of which counts (the last one's low
    // bits are padding a decoder may ignore, so changing it may forge nothing).
    let mut signature = parts[2].as_bytes().to_vec();
    signature[10] = if signature[10] == b'A' { b'B' } else { b'A' };
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(signature).unwrap()
    );
    assert_eq!(probe(&host, &flipped).0, 401, "forged signature");
    let mut payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    payload["repository"] = json!("other/x");
    let edited = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    assert_eq!(probe(&host, &edited).0, 401, "edited claims");
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    assert_eq!(probe(&host, &none).0, 401, "alg none");
    // Expired (the provider's tokens live 1 s; wharf allows 5 s of clock skew).
    let expiring = short.id_token("repo:team/app", "wharf");
    assert_eq!(probe(&host, &expiring).0, 200, "fresh");
    std::thread::sleep(Duration::from_secs(8));
    let (status, message) = probe(&host, &expiring);
    assert_eq!(status, 401, "expired: {message}");

    // Key rotation: a new provider process signs with a new key, which wharf fetches.
    trusted.restart();
    std::thread::sleep(Duration::from_secs(11).saturating_sub(keys_fetched.elapsed()));
    let rotated = trusted.id_token("repo:team/app", "wharf");
    let (status, message) = probe(&host, &rotated);
    assert_eq!(status, 200, "a token under the rotated key: {message}");
    assert_eq!(probe(&host, &token).0, 401, "the old key is gone");
    docker_rmi(&[&allowed, &elsewhere, &local]);
}

#[test]
fn workload_id_tokens_work_through_the_builtin_token_server() {
    require_docker();
    let claims = [json!({"sub": "repo:team/app", "repository": "team/app"})];
    let provider = Provider::start(&claims, &[]);
    let dir = tempfile::tempdir().unwrap();
    htpasswd(&dir.path().join("htpasswd"), "admin", "admin-pw");
    let yaml = workload_config(&[&provider]).replace(
        "auth:\n",
        "  secret: workload-token-secret\nauth:\n  htpasswd:\n    realm: r\n    path: @DIR@/htpasswd\n    token:\n      service: wharf-ci\n",
    );
    let w = Served::start(dir.path(), &yaml, &[]);
    let host = w.host();
    let ci = dir.path().join("ci");
    let token = provider.id_token("repo:team/app", "wharf");
    let out = docker_login(&ci, &host, "ci", &token);
    assert!(
        out.status.success(),
        "docker login through the token server: {}",
        text(&out)
    );
    let local = build_busybox_image(&unique("wharf-workload-token-src:"), "workload token");
    let (allowed, elsewhere) = (format!("{host}/team/app:v2"), format!("{host}/other/x:v2"));
    for r in [&allowed, &elsewhere] {
        assert!(docker(&ci, &["tag", &local, r]).status.success());
    }
    let pushed = docker(&ci, &["push", &allowed]);
    assert!(
        pushed.status.success(),
        "push with a token for the ID token: {}",
        text(&pushed)
    );
    let refused = docker(&ci, &["push", &elsewhere]);
    assert!(
        !refused.status.success(),
        "push elsewhere: {}",
        text(&refused)
    );
    // Listings show a workload only what its rules grant (as a robot's bearer token shows
    // only what it was granted): the admin's repository, asked for too, is not in the
    // catalog its bearer token reads.
    let admin = dir.path().join("admin");
    assert!(docker_login(&admin, &host, "admin", "admin-pw")
        .status
        .success());
    let hidden = format!("{host}/ops/tool:v1");
    assert!(docker(&admin, &["tag", &local, &hidden]).status.success());
    let pushed = docker(&admin, &["push", &hidden]);
    assert!(pushed.status.success(), "admin push: {}", text(&pushed));
    let c = reqwest::blocking::Client::new();
    let grant: Value = c
        .get(format!(
            "http://{host}/auth/token?service=wharf-ci&scope=registry:catalog:*\
             &scope=repository:team/app:pull&scope=repository:ops/tool:pull"
        ))
        .basic_auth("ci", Some(&token))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let bearer = grant["token"].as_str().expect("a token for the catalog");
    let catalog: Value = c
        .get(format!("http://{host}/v2/_catalog"))
        .bearer_auth(bearer)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(catalog["repositories"], json!(["team/app"]), "{catalog}");
    docker_rmi(&[&allowed, &elsewhere, &hidden, &local]);
}
