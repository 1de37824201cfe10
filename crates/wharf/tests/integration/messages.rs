//! What a user sees: the password not echoed at a terminal, docker's `-p` warning, and
//! messages and exit codes that point the right way, checked word for word.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::watch::{container_line, docker_run, v1_pushed, Cleanup, Registry};

const USER: &str = "alice";
const PASSWORD: &str = "typed s3cret";

/// A plain-http wharf on loopback with one htpasswd user.
fn registry(dir: &std::path::Path) -> Served {
    htpasswd(&dir.join("htpasswd"), USER, PASSWORD);
    let yaml = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nauth:\n  htpasswd:\n    realm: wharf\n    path: @DIR@/htpasswd\n";
    Served::start(dir, yaml, &[])
}

fn wharf(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(WHARF);
    cmd.env("DOCKER_CONFIG", dir.join("docker-config"))
        .env("WHARF_DAEMON_JSON", dir.join("no-daemon.json"))
        .env_remove("REPO_USER")
        .env_remove("REPO_PASS");
    cmd
}

/// What a terminal showed while `command` ran in it, typing each answer once its prompt
/// appeared (typing earlier would be echoed by the terminal before wharf could stop it).
fn under_a_terminal(command: &str, dialogue: &[(&str, &str)]) -> (bool, String) {
    require("script", "bsdutils");
    let mut child = Command::new("script")
        .args(["-qfec", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = screen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = 0;
    for (prompt, answer) in dialogue {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let shown = String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
            if let Some(at) = shown[seen..].find(prompt) {
                seen += at + prompt.len();
                break;
            }
            assert!(Instant::now() < deadline, "no {prompt:?} prompt: {shown}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let the prompt's read begin (and turn echo off) before typing.
        std::thread::sleep(Duration::from_millis(300));
        stdin.write_all(answer.as_bytes()).unwrap();
        stdin.write_all(b"\r").unwrap();
        stdin.flush().unwrap();
    }
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let shown = String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    (status.success(), shown)
}

#[test]
fn wharf_login_at_a_terminal_does_not_echo_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let served = registry(dir.path());
    let command = format!(
        "DOCKER_CONFIG={} WHARF_DAEMON_JSON={} {WHARF} login {}",
        dir.path().join("docker-config").display(),
        dir.path().join("no-daemon.json").display(),
        served.host()
    );
    let (ok, shown) = under_a_terminal(&command, &[("Username: ", USER), ("Password: ", PASSWORD)]);
    assert!(ok, "{shown}");
    assert!(shown.contains("Login Succeeded"), "{shown}");
    assert!(
        shown.contains(USER),
        "the user name is echoed, as docker does: {shown}"
    );
    assert!(
        !shown.contains("s3cret"),
        "the password was echoed: {shown}"
    );
    let config = std::fs::read_to_string(dir.path().join("docker-config/config.json")).unwrap();
    assert!(config.contains(&served.host()), "{config}");

    // The same registry, user and password, refused word for word when mistyped.
    let (ok, shown) = under_a_terminal(
        &format!("{command} -u {USER}"),
        &[("Password: ", "wrong one")],
    );
    assert!(!ok);
    assert!(!shown.contains("wrong one"), "{shown}");
    assert!(
        shown.contains(&format!(
            "Error: unauthorized: {} refused the password for {USER}; nothing was stored",
            served.host()
        )),
        "{shown}"
    );
}

#[test]
fn login_takes_dash_p_with_dockers_warning_and_says_which_credentials_failed() {
    let dir = tempfile::tempdir().unwrap();
    let served = registry(dir.path());
    let host = served.host();
    let out = wharf(dir.path())
        .args(["login", "-u", USER, "-p", PASSWORD, &host])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Login Succeeded\n");
    let both = output_with_stdin(
        wharf(dir.path()).args(["login", "-u", USER, "-p", "x", "--password-stdin", &host]),
        PASSWORD,
    );
    assert_eq!(
        String::from_utf8_lossy(&both.stderr)
            .lines()
            .last()
            .unwrap(),
        "Error: --password and --password-stdin are mutually exclusive"
    );

    let wrong = output_with_stdin(
        wharf(dir.path()).args(["login", "-u", USER, "--password-stdin", &host]),
        "wrong",
    );
    assert!(!wrong.status.success());
    assert_eq!(
        String::from_utf8_lossy(&wrong.stderr),
        format!(
            "Error: unauthorized: {host} refused the password for {USER}; nothing was stored\n"
        )
    );

    // REPO_USER/REPO_PASS beat config.json, which holds the right login by now.
    let env_wrong = wharf(dir.path())
        .env("REPO_USER", USER)
        .env("REPO_PASS", "wrong")
        .args(["tags", &format!("{host}/any/repo")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&env_wrong.stderr),
        format!("Error: unauthorized: {host} rejected the credentials in REPO_USER/REPO_PASS; they take precedence over config.json, so `wharf login` cannot help: correct them, or unset both to use config.json\n")
    );
    for (set, missing) in [("REPO_USER", "REPO_PASS"), ("REPO_PASS", "REPO_USER")] {
        let half = wharf(dir.path())
            .env(set, "something")
            .args(["tags", &format!("{host}/any/repo")])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&half.stderr),
            format!("Error: {set} is set but {missing} is not: set both (they are used for every registry) or neither (to use config.json)\n")
        );
    }

    // A missing CA file: the OS error once.
    let missing = wharf(dir.path())
        .args([
            "tags",
            "--registry-ca",
            "/nonexistent/ca.pem",
            &format!("{host}/a"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "Error: cannot read CA bundle /nonexistent/ca.pem: No such file or directory (os error 2); pass a readable PEM file to --registry-ca\n"
    );
}

#[test]
fn each_subcommand_lists_only_its_own_options() {
    let help = |args: &[&str]| run(Command::new(WHARF).args(args).arg("--help"));
    for args in [&["serve"][..], &["htpasswd", "add"], &["logout"]] {
        let text = help(args);
        assert!(!text.contains("--registry-ca"), "{args:?}: {text}");
        assert!(!text.contains("--insecure"), "{args:?}: {text}");
    }
    let tags = help(&["tags"]);
    assert!(tags.contains("--registry-ca <FILE>"), "{tags}");
    let watch = help(&["watch"]);
    for var in [
        "WATCHTOWER_REGISTRY_CA=",
        "WATCHTOWER_REGISTRY_CA_VALIDATE=",
        "WATCHTOWER_DEBUG=",
        "WATCHTOWER_TRACE=",
        "WATCHTOWER_NO_RESTART=",
        "WATCHTOWER_NOTIFICATIONS=",
        "WATCHTOWER_WARN_ON_HEAD_FAILURE=",
        "WATCHTOWER_NO_STARTUP_MESSAGE=",
        "WATCHTOWER_LOG_FORMAT=",
        "WATCHTOWER_CLEANUP=",
        "WATCHTOWER_RUN_ONCE=",
    ] {
        assert!(watch.contains(var), "watch --help does not name {var}");
    }
}

#[test]
fn a_watch_logs_each_step_of_an_update_and_warns_about_a_name_no_container_has() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, v2, image) = v1_pushed(&registry, &mut cleanup, "steps", "apps/steps");
    let name = unique("wharf-steps-");
    cleanup.containers.push(name.clone());
    docker_run(&registry, &["--name", &name, &image]);
    registry.push(&v2, "apps/steps:latest");
    let ghost = unique("wharf-no-such-");

    let out = registry.watch_output(&[&name, &ghost]);
    let report = crate::watch::report_of(&out);
    assert!(out.status.success(), "{report:#}");
    assert_eq!(container_line(&report, &name)["outcome"], "updated");
    let log = String::from_utf8_lossy(&out.stderr);
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"))
    };
    let steps = [
        "new image ready; replacing the container",
        "replacement created",
        "old container stopped",
        "replacement started",
        "waiting 4 s (--rollback-grace) for the replacement to stay up before keeping it",
        "updated to the registry's newer image",
    ];
    for pair in steps.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{pair:?} out of order:\n{log}");
    }
    assert!(log.contains(&format!(
        "no container is named {ghost}, so it is not watched: check the name with `docker ps -a`"
    )));
    // The message comes before the fields; an empty one leaves the fields first.
    for line in log.lines().filter(|l| l.contains("outcome=")) {
        let after_target = line.split_once(": ").map(|(_, m)| m).unwrap_or("");
        assert!(
            !after_target.starts_with("container="),
            "a log line without a message: {line}"
        );
    }
}
