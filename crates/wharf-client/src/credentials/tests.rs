//! Credential lookup against real files and real helper processes: each test gets its own
//! config directory and a `docker-credential-*` script on its own PATH.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

// Storing and erasing, as docker login and logout do.
mod storing;

/// A docker-credential-helpers implementation backed by a JSON file (`$FAKE_HELPER_STORE`),
/// plus a few servers that misbehave on purpose.
const HELPER: &str = r#"#!/usr/bin/env python3
import json, os, sys, time
path = os.environ["FAKE_HELPER_STORE"]
def load():
    try:
        with open(path) as f: return json.load(f)
    except FileNotFoundError:
        return {}
def save(d):
    with open(path, "w") as f: json.dump(d, f)
def not_found():
    print("credentials not found in native keychain"); sys.exit(1)
action = sys.argv[1]
data = sys.stdin.read()
with open(path + ".log", "a") as log: log.write(action + " " + (data if action != "store" else json.loads(data)["ServerURL"]) + "\n")
if action == "get":
    url = data.strip()
    if url == "broken.example.com": print("this is not json"); sys.exit(0)
    if url == "fail.example.com": print("the keychain is locked"); sys.exit(1)
    if url == "slow.example.com": time.sleep(30)
    d = load()
    if url not in d: not_found()
    print(json.dumps({"ServerURL": url, "Username": d[url]["Username"], "Secret": d[url]["Secret"]}))
elif action == "store":
    req = json.loads(data); d = load()
    d[req["ServerURL"]] = {"Username": req["Username"], "Secret": req["Secret"]}; save(d)
elif action == "erase":
    d = load(); url = data.strip()
    if url not in d: not_found()
    del d[url]; save(d)
elif action == "list":
    print(json.dumps({k: v["Username"] for k, v in load().items()}))
else:
    print("unknown action " + action); sys.exit(1)
"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    source: CredentialSource,
}

impl Fixture {
    /// A source with its own config dir and a PATH that has `docker-credential-fake` first.
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_owned();
        let bin = root.join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        let script = bin.join("docker-credential-fake");
        std::fs::write(&script, HELPER).expect("write helper");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // The process environment (python3 may need HOME, PYENV_*), minus what we test.
        let mut env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| !matches!(k.as_str(), "REPO_USER" | "REPO_PASS" | "DOCKER_CONFIG"))
            .collect();
        let path = env.get("PATH").cloned().unwrap_or_default();
        env.insert("PATH".into(), format!("{}:{path}", bin.display()));
        env.insert(
            "FAKE_HELPER_STORE".into(),
            root.join("helper-store.json").display().to_string(),
        );
        let source = CredentialSource::new(env, root.join("docker"));
        Fixture {
            _tmp: tmp,
            root,
            source,
        }
    }

    fn write_config(&self, config: &Value) {
        std::fs::create_dir_all(&self.source.docker_config_dir).expect("config dir");
        std::fs::write(self.source.config_path(), config.to_string()).expect("write config");
    }

    fn config(&self) -> Value {
        let text = std::fs::read_to_string(self.source.config_path()).expect("read config");
        serde_json::from_str(&text).expect("config is JSON")
    }

    fn helper_store(&self) -> Value {
        std::fs::read_to_string(self.root.join("helper-store.json"))
            .map(|t| serde_json::from_str(&t).expect("helper store is JSON"))
            .unwrap_or(json!({}))
    }

    fn helper_log(&self) -> String {
        std::fs::read_to_string(self.root.join("helper-store.json.log")).unwrap_or_default()
    }

    fn lookup(&self, registry: &str) -> Option<Found> {
        self.source
            .lookup(&reg(registry))
            .unwrap_or_else(|e| panic!("lookup {registry}: {e}"))
    }
}

fn reg(s: &str) -> Registry {
    s.parse().expect("registry")
}

fn b64(s: &str) -> String {
    config_file::encode_auth(
        s.split_once(':').expect("colon").0,
        s.split_once(':').expect("colon").1,
    )
}

fn basic(user: &str, pass: &str) -> Credential {
    Credential::Basic {
        username: user.into(),
        password: Secret::new(pass),
    }
}

#[test]
fn environment_wins_when_both_variables_are_set_and_one_alone_is_an_error() {
    let mut f = Fixture::new();
    f.write_config(&json!({"auths": {"localhost:5000": {"auth": b64("file:pw")}}}));
    f.source.env.insert("REPO_USER".into(), "env-user".into());
    let registry: Registry = "localhost:5000".parse().unwrap();
    assert_eq!(
        f.source.lookup(&registry).unwrap_err().to_string(),
        "REPO_USER is set but REPO_PASS is not: set both (they are used for every registry) or neither (to use config.json)"
    );
    f.source.env.remove("REPO_USER");
    f.source.env.insert("REPO_PASS".into(), "env-pw".into());
    assert!(matches!(
        f.source.lookup(&registry),
        Err(CredentialError::HalfEnvironment {
            set: "REPO_PASS",
            missing: "REPO_USER"
        })
    ));
    f.source.env.insert("REPO_USER".into(), "env-user".into());
    for r in ["localhost:5000", "docker.io", "quay.io"] {
        let found = f.lookup(r).expect("env credentials");
        assert_eq!(found.origin, Origin::Environment);
        assert_eq!(found.credential, basic("env-user", "env-pw"));
    }
}

#[test]
fn no_config_file_means_anonymous() {
    let f = Fixture::new();
    assert_eq!(f.lookup("localhost:5000"), None);
    std::fs::create_dir_all(&f.source.docker_config_dir).expect("dir");
    std::fs::write(f.source.config_path(), "").expect("empty file");
    assert_eq!(f.lookup("localhost:5000"), None);
}

#[test]
fn config_dir_from_docker_config_or_home() {
    let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let s = CredentialSource::from_env(env(&[("DOCKER_CONFIG", "/cfg"), ("HOME", "/home/u")]))
        .expect("source");
    assert_eq!(s.config_path(), Path::new("/cfg/config.json"));
    let s = CredentialSource::from_env(env(&[("HOME", "/home/u")])).expect("source");
    assert_eq!(s.config_path(), Path::new("/home/u/.docker/config.json"));
    let err = CredentialSource::from_env(env(&[])).expect_err("no dir");
    assert!(err.to_string().contains("DOCKER_CONFIG"), "{err}");
}

#[test]
fn auths_entries_in_every_form() {
    let f = Fixture::new();
    let gcloud_key = r#"{"type":"service_account","private_key":"-----BEGIN..."}"#;
    f.write_config(&json!({
        "auths": {
            "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")},
            "host.domain": {"auth": b64(&format!("_json_key:{gcloud_key}"))},
            "https://secure.example.com": {"auth": b64("s:pw")},
            "http://plain.example.com:8080": {"username": "u", "password": "p"},
            "https://token.example.com/v1/": {"auth": b64("alice:"), "identitytoken": "refresh-1"},
            "123.dkr.ecr.us-west-1.amazonaws.com": {},
        },
        "HttpHeaders": {"User-Agent": "Docker-Client/19.03.1"}
    }));
    let cred = |r: &str| f.lookup(r).map(|x| x.credential);
    assert_eq!(cred("docker.io"), Some(basic("hubuser", "hubpw")));
    assert_eq!(cred("host.domain"), Some(basic("_json_key", gcloud_key)));
    assert_eq!(cred("secure.example.com"), Some(basic("s", "pw")));
    assert_eq!(cred("plain.example.com:8080"), Some(basic("u", "p")));
    assert_eq!(
        cred("plain.example.com"),
        None,
        "the port is part of the key"
    );
    assert_eq!(
        cred("token.example.com"),
        Some(Credential::IdentityToken {
            username: "alice".into(),
            token: Secret::new("refresh-1")
        })
    );
    assert_eq!(
        cred("123.dkr.ecr.us-west-1.amazonaws.com"),
        None,
        "an empty entry"
    );
    assert_eq!(cred("unknown.example.com"), None);
}

#[test]
fn docker_hub_under_the_names_watchtower_accepts() {
    for key in [
        "index.docker.io",
        "docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
    ] {
        let f = Fixture::new();
        f.write_config(&json!({"auths": {key: {"auth": b64("hub:pw")}}}));
        let found = f.lookup("docker.io").unwrap_or_else(|| panic!("{key}"));
        assert_eq!(found.credential, basic("hub", "pw"), "{key}");
        // A reference with no registry, or with the legacy one, means Docker Hub.
        let image: crate::ImageRef = "busybox".parse().expect("ref");
        assert!(f.source.lookup(image.registry()).expect("lookup").is_some());
        let image: crate::ImageRef = "index.docker.io/library/busybox".parse().expect("ref");
        assert!(f.source.lookup(image.registry()).expect("lookup").is_some());
    }
}

#[test]
fn the_file_is_read_fresh_on_every_lookup() {
    let f = Fixture::new();
    f.write_config(&json!({"auths": {"localhost:5000": {"auth": b64("a:1")}}}));
    assert_eq!(
        f.lookup("localhost:5000").map(|x| x.credential),
        Some(basic("a", "1"))
    );
    f.write_config(&json!({"auths": {"localhost:5000": {"auth": b64("b:2")}}}));
    assert_eq!(
        f.lookup("localhost:5000").map(|x| x.credential),
        Some(basic("b", "2"))
    );
}

#[test]
fn broken_config_files_name_the_file_and_the_fix() {
    let f = Fixture::new();
    f.write_config(&json!({"auths": {"localhost:5000": {"auth": "bm9jb2xvbg=="}}}));
    let err = f
        .source
        .lookup(&reg("localhost:5000"))
        .expect_err("bad auth");
    let msg = err.to_string();
    assert!(matches!(err, CredentialError::BadAuthField { .. }), "{msg}");
    assert!(
        msg.contains("localhost:5000") && msg.contains("config.json"),
        "{msg}"
    );

    std::fs::write(f.source.config_path(), "{\"auths\": {").expect("write");
    let err = f
        .source
        .lookup(&reg("localhost:5000"))
        .expect_err("bad json");
    assert!(
        matches!(err, CredentialError::ConfigInvalid { .. }),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains(&f.source.config_path().display().to_string()));
    // A broken file is never overwritten by store.
    let err = f
        .source
        .store(&reg("localhost:5000"), &basic("u", "p"))
        .expect_err("store over broken file");
    assert!(
        matches!(err, CredentialError::ConfigInvalid { .. }),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(f.source.config_path()).expect("read"),
        "{\"auths\": {"
    );
}

#[test]
fn credential_helpers_take_precedence_and_speak_the_protocol() {
    let f = Fixture::new();
    f.write_config(&json!({
        "auths": {
            "localhost:5000": {"auth": b64("file:pw")},
            "registry.example.com": {"auth": b64("file:pw")},
        },
        "credHelpers": {"localhost:5000": "fake"},
    }));
    std::fs::write(
        f.root.join("helper-store.json"),
        json!({
            "localhost:5000": {"Username": "helper-user", "Secret": "helper-pw"},
            "token.example.com": {"Username": "<token>", "Secret": "refresh-2"},
        })
        .to_string(),
    )
    .expect("seed helper store");

    let found = f.lookup("localhost:5000").expect("from helper");
    assert_eq!(found.credential, basic("helper-user", "helper-pw"));
    assert_eq!(
        found.origin,
        Origin::Helper {
            helper: "docker-credential-fake".into()
        }
    );
    assert!(
        f.helper_log().contains("get localhost:5000"),
        "{}",
        f.helper_log()
    );
    // Registries the helper is not configured for still come from auths.
    assert_eq!(
        f.lookup("registry.example.com").map(|x| x.credential),
        Some(basic("file", "pw"))
    );

    // credsStore applies to every registry without a credHelpers entry, and as in docker
    // the helper alone answers: "not found" means anonymous, not a fall back to auths.
    f.write_config(&json!({
        "auths": {"registry.example.com": {"auth": b64("file:pw")}},
        "credsStore": "fake",
    }));
    assert_eq!(f.lookup("registry.example.com"), None);
    assert_eq!(
        f.lookup("token.example.com").map(|x| x.credential),
        Some(Credential::IdentityToken {
            username: String::new(),
            token: Secret::new("refresh-2")
        }),
        "Username <token> means an identity token"
    );
    // Docker Hub is asked for by docker's key.
    assert_eq!(f.lookup("docker.io"), None);
    assert!(f.helper_log().contains("get https://index.docker.io/v1/"));
}

#[test]
fn helper_failures_name_the_helper_and_the_registry() {
    let f = Fixture::new();
    f.write_config(&json!({
        "credHelpers": {
            "missing.example.com": "nonexistent",
            "broken.example.com": "fake",
            "fail.example.com": "fake",
        }
    }));
    let err = f
        .source
        .lookup(&reg("missing.example.com"))
        .expect_err("missing helper");
    let msg = err.to_string();
    assert!(
        matches!(err, CredentialError::HelperNotFound { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("docker-credential-nonexistent")
            && msg.contains("missing.example.com")
            && msg.contains("credHelpers"),
        "{msg}"
    );

    let err = f
        .source
        .lookup(&reg("broken.example.com"))
        .expect_err("bad JSON");
    let msg = err.to_string();
    assert!(matches!(err, CredentialError::HelperOutput { .. }), "{msg}");
    assert!(
        msg.contains("docker-credential-fake") && msg.contains("broken.example.com"),
        "{msg}"
    );

    let err = f
        .source
        .lookup(&reg("fail.example.com"))
        .expect_err("failing helper");
    let msg = err.to_string();
    assert!(matches!(err, CredentialError::HelperFailed { .. }), "{msg}");
    assert!(
        msg.contains("docker-credential-fake")
            && msg.contains("fail.example.com")
            && msg.contains("the keychain is locked")
            && msg.contains("exit status: 1"),
        "{msg}"
    );
}

#[test]
fn a_hanging_helper_is_stopped() {
    let mut f = Fixture::new();
    f.source.helper_timeout = Duration::from_millis(500);
    f.write_config(&json!({"credsStore": "fake"}));
    let started = std::time::Instant::now();
    let err = f
        .source
        .lookup(&reg("slow.example.com"))
        .expect_err("timeout");
    assert!(
        matches!(err, CredentialError::HelperTimeout { .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn secrets_never_show_in_debug_output() {
    let f = Fixture::new();
    f.write_config(&json!({"auths": {"localhost:5000": {"auth": b64("alice:hunter2")}}}));
    let found = f.lookup("localhost:5000").expect("found");
    let shown = format!("{found:?} {}", found.origin);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("alice"), "{shown}");
    let token = Credential::IdentityToken {
        username: String::new(),
        token: Secret::new("refresh-xyz"),
    };
    assert!(!format!("{token:?}").contains("refresh-xyz"));
}
