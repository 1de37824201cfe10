//! Seed 003's quick start with the wharf image in place of registry:2: no htpasswd file
//! mounted, users added afterwards with `docker exec`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A container removed when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .output();
    }
}

fn docker_login(config: &std::path::Path, host: &str, user: &str, password: &str) -> bool {
    output_with_stdin(
        Command::new("docker").env("DOCKER_CONFIG", config).args([
            "login",
            "-u",
            user,
            "--password-stdin",
            host,
        ]),
        password,
    )
    .status
    .success()
}

#[test]
fn seed_003_quick_start_provisions_htpasswd_and_takes_users_from_docker_exec() {
    require_docker();
    let image = unique("wharf-seed003:");
    crate::image::build_wharf_image(&image);
    let _image = scopeguard_rmi(&image);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("registry");
    let config = dir.path().join("docker-config");
    let port = free_port();
    let name = unique("wharf-seed003-");
    // The seed's line, with the image swapped, a free port and a temporary data directory.
    run(Command::new("docker").args([
        "run",
        "-d",
        "-p",
        &format!("{port}:5000"),
        "--restart=always",
        "--name",
        &name,
        "-v",
        &format!("{}:/var/lib/registry", data.display()),
        "-e",
        "REGISTRY_AUTH=htpasswd",
        "-e",
        "REGISTRY_AUTH_HTPASSWD_REALM=Registry Realm",
        "-e",
        "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd",
        &image,
    ]));
    let _container = Container(name.clone());
    let host = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = reqwest::blocking::get(format!("http://{host}/v2/")).map(|r| r.status());
        if status.as_ref().is_ok_and(|s| *s == 401) {
            break;
        }
        let logs = logs(&name);
        assert!(
            Instant::now() < deadline,
            "the registry did not answer 401 within 30 s: {status:?}\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let state = run(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.RestartCount}} {{.State.Running}}",
        &name,
    ]));
    assert_eq!(state.trim(), "0 true");

    // Logged once, as registry:2 logs it: the default user and its password.
    let logs = logs(&name);
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("htpasswd is missing, provisioning with default user"))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(lines[0].contains("user=\"docker\""), "{logs}");
    let password = lines[0]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("password="))
        .unwrap_or_else(|| panic!("no password in {logs}"));
    assert!(docker_login(&config, &host, "docker", password));
    assert!(!docker_login(&config, &host, "docker", "wrong"));

    // The image has no htpasswd tool: wharf itself adds the user, reading the password
    // from stdin.
    let added = output_with_stdin(
        Command::new("docker").args([
            "exec",
            "-i",
            &name,
            "wharf",
            "htpasswd",
            "add",
            "/auth/htpasswd",
            "admin",
        ]),
        "admin\n",
    );
    assert!(added.status.success(), "{added:?}");
    let users = run(Command::new("docker").args([
        "exec",
        &name,
        "wharf",
        "htpasswd",
        "list",
        "/auth/htpasswd",
    ]));
    assert_eq!(users, "docker\nadmin\n");
    // Still 0600, as provisioned.
    let listing = run(Command::new("sh")
        .arg("-c")
        .arg(format!("docker cp {name}:/auth/htpasswd - | tar -tvf -")));
    assert!(listing.starts_with("-rw------- "), "{listing}");
    // The registry re-reads the file within a second or two.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !docker_login(&config, &host, "admin", "admin") {
        assert!(Instant::now() < deadline, "docker login as admin failed");
        std::thread::sleep(Duration::from_millis(300));
    }
    let local = build_busybox_image(&unique("wharf-seed003-src:"), "seed003");
    let remote = format!("{host}/alpine:latest");
    run(Command::new("docker").args(["tag", &local, &remote]));
    run(Command::new("docker")
        .env("DOCKER_CONFIG", &config)
        .args(["push", &remote]));
    docker_rmi(&[&local, &remote]);
}

fn logs(name: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", name])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The built image, removed when the returned guard drops.
fn scopeguard_rmi(image: &str) -> impl Drop {
    struct Rmi(String);
    impl Drop for Rmi {
        fn drop(&mut self) {
            docker_rmi(&[&self.0]);
        }
    }
    Rmi(image.to_owned())
}
