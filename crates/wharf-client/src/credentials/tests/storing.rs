//! Credentials stored and erased as `docker login` and `docker logout` do: in the file,
//! through a symlinked config, and through a helper.

// The credentials tests' fixtures and the module under test.
use super::*;

#[test]
fn store_and_erase_in_the_file_like_docker_login_and_logout() {
    let f = Fixture::new();
    // A new directory is created private, as docker creates it.
    let stored = f
        .source
        .store(
            &reg("localhost:5000"),
            &basic("alice", "s3cret:with:colons"),
        )
        .expect("store");
    assert_eq!(
        stored,
        StoredIn::ConfigFile {
            path: f.source.config_path(),
            key: "localhost:5000".into()
        }
    );
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&f.source.docker_config_dir), 0o700);
    assert_eq!(mode(&f.source.config_path()), 0o600);
    assert_eq!(
        f.config(),
        json!({"auths": {"localhost:5000": {"auth": b64("alice:s3cret:with:colons")}}})
    );
    let text = std::fs::read_to_string(f.source.config_path()).expect("read");
    assert!(
        text.contains("\n\t\"auths\""),
        "tab-indented like docker: {text}"
    );

    // Other keys and entries survive; Docker Hub goes under docker's key.
    let mut existing = json!({
        "auths": {
            "localhost:5000": {"auth": b64("alice:old")},
            "http://localhost:5000": {"auth": b64("alice:legacy")},
            "quay.io": {"auth": b64("q:q"), "email": "q@example.com"},
        },
        "HttpHeaders": {"User-Agent": "x"},
        "psFormat": "table {{.ID}}",
        "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
        "currentContext": "default",
    });
    f.write_config(&existing);
    f.source
        .store(&reg("docker.io"), &basic("hub", "hubpw"))
        .expect("store hub");
    existing["auths"]["https://index.docker.io/v1/"] = json!({"auth": b64("hub:hubpw")});
    assert_eq!(f.config(), existing);
    f.source
        .store(
            &reg("localhost:5000"),
            &Credential::IdentityToken {
                username: "alice".into(),
                token: Secret::new("refresh-3"),
            },
        )
        .expect("store token");
    existing["auths"]["localhost:5000"] =
        json!({"auth": b64("alice:"), "identitytoken": "refresh-3"});
    assert_eq!(f.config(), existing);

    // Logout removes host, http://host and https://host, nothing else.
    assert!(f.source.erase(&reg("localhost:5000")).expect("erase"));
    let auths = f.config()["auths"].clone();
    assert_eq!(auths.get("localhost:5000"), None);
    assert_eq!(auths.get("http://localhost:5000"), None);
    assert!(auths.get("quay.io").is_some() && auths.get("https://index.docker.io/v1/").is_some());
    assert_eq!(f.config()["psFormat"], "table {{.ID}}");
    assert!(!f.source.erase(&reg("localhost:5000")).expect("erase again"));
    assert!(f.source.erase(&reg("docker.io")).expect("erase hub"));
    assert_eq!(
        f.config()["auths"],
        json!({"quay.io": {"auth": b64("q:q"), "email": "q@example.com"}})
    );
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&f.source.docker_config_dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
}

#[test]
fn store_follows_a_symlinked_config() {
    let f = Fixture::new();
    let real = f.root.join("real-config.json");
    std::fs::write(&real, "{}").expect("write");
    std::fs::create_dir_all(&f.source.docker_config_dir).expect("dir");
    std::os::unix::fs::symlink(&real, f.source.config_path()).expect("symlink");
    f.source
        .store(&reg("localhost:5000"), &basic("u", "p"))
        .expect("store");
    assert!(std::fs::symlink_metadata(f.source.config_path())
        .expect("stat")
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&real)
        .expect("read")
        .contains(&b64("u:p")));
}

#[test]
fn store_and_erase_through_a_helper() {
    let f = Fixture::new();
    f.write_config(&json!({"credsStore": "fake", "auths": {"quay.io": {"auth": b64("q:q")}}}));
    let stored = f
        .source
        .store(&reg("localhost:5000"), &basic("alice", "pw"))
        .expect("store");
    assert_eq!(
        stored,
        StoredIn::Helper {
            helper: "docker-credential-fake".into(),
            key: "localhost:5000".into()
        }
    );
    assert_eq!(
        f.helper_store()["localhost:5000"],
        json!({"Username": "alice", "Secret": "pw"})
    );
    // The file only records that the registry is logged in, like docker.
    assert_eq!(f.config()["auths"]["localhost:5000"], json!({}));
    assert_eq!(f.config()["auths"]["quay.io"], json!({"auth": b64("q:q")}));
    assert!(!std::fs::read_to_string(f.source.config_path())
        .expect("read")
        .contains("pw\""));

    f.source
        .store(
            &reg("docker.io"),
            &Credential::IdentityToken {
                username: "hub".into(),
                token: Secret::new("refresh-4"),
            },
        )
        .expect("store token");
    assert_eq!(
        f.helper_store()["https://index.docker.io/v1/"],
        json!({"Username": "<token>", "Secret": "refresh-4"})
    );
    assert_eq!(
        f.lookup("docker.io").map(|x| x.credential),
        Some(Credential::IdentityToken {
            username: String::new(),
            token: Secret::new("refresh-4")
        })
    );
    let helper = f
        .source
        .helper_for(&reg("localhost:5000"))
        .expect("config")
        .expect("a helper");
    let listed = helper.list().expect("list");
    assert_eq!(
        listed.get("localhost:5000").map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        listed
            .get("https://index.docker.io/v1/")
            .map(String::as_str),
        Some("<token>")
    );

    assert!(f.source.erase(&reg("localhost:5000")).expect("erase"));
    assert_eq!(f.helper_store().get("localhost:5000"), None);
    assert_eq!(f.config()["auths"].get("localhost:5000"), None);
    assert_eq!(f.lookup("localhost:5000"), None);
}
