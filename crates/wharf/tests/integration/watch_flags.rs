//! watchtower's flags as its users write them: `--flag=true|false` for every boolean,
//! `--debug`, `--no-restart` and friends, their WATCHTOWER_* variables, and seed 001's
//! `--registry-ca-validate=true` in a watcher container.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::watch::{
    container_line, docker_run, image_id, inspect, report_of, v1_pushed, Cleanup, Registry,
};

/// `wharf watch` scoped to a label nothing has, with no logging or watcher settings
/// inherited from the environment.
fn bare_watch(scope: &str) -> Command {
    let mut cmd = Command::new(WHARF);
    cmd.arg("watch")
        .env("WATCHTOWER_SCOPE", scope)
        .env_remove("WHARF_LOG")
        .env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("WATCHTOWER_") && k != "WATCHTOWER_SCOPE" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_boolean_flag_takes_true_or_false_as_watchtower_users_write_it() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = self_signed(dir.path(), "flags-ca");
    let ca = ca.to_str().unwrap();
    let scope = unique("wharf-flags-");
    let out = bare_watch(&scope)
        .args(["--registry-ca", ca, "--registry-ca-validate=true"])
        .args(["--run-once=true", "--cleanup=true", "--label-enable=true"])
        .args(["--monitor-only=true", "--include-stopped=true"])
        .args(["--include-restarting=false", "--rolling-restart=false"])
        .args(["--no-pull=false", "--enable-lifecycle-hooks=false"])
        .args(["--no-restart=false", "--trace=false", "--debug"])
        .args(["--notifications=", "--warn-on-head-failure=never"])
        .args(["--no-startup-message", "--log-format=JSON"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = report_of(&out);
    assert_eq!(report["containers"], Value::Array(vec![]), "{report:#}");
    // --log-format=JSON: every line is an object; --debug: wharf's debug lines are there.
    let lines: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "DEBUG" && l["target"] == "wharf::watch"),
        "{lines:#?}"
    );

    // `=false` really is false: monitor-only off and run-once on leave this report alike,
    // but --run-once=false would keep running; the value is read, not just the name.
    let refused = bare_watch(&scope)
        .args(["--run-once", "--cleanup=maybe"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains(
            "invalid value 'maybe' for '--cleanup[=<BOOL>]': expected true or false (or 1/0, yes/no, on/off)"
        ),
        "{}",
        stderr(&refused)
    );

    // The variables, as watchtower reads them: WATCHTOWER_DEBUG is no longer ignored.
    let out = bare_watch(&scope)
        .env("WATCHTOWER_RUN_ONCE", "true")
        .env("WATCHTOWER_DEBUG", "true")
        .env("WATCHTOWER_NO_RESTART", "1")
        .env("WATCHTOWER_LOG_FORMAT", "json")
        .env("WATCHTOWER_WARN_ON_HEAD_FAILURE", "always")
        .env("WATCHTOWER_NO_STARTUP_MESSAGE", "true")
        .env("WATCHTOWER_REGISTRY_CA", ca)
        .env("WATCHTOWER_REGISTRY_CA_VALIDATE", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(r#""level":"DEBUG""#),
        "{}",
        stderr(&out)
    );

    // A CA file that does not exist stops the watcher at start (validate=true only).
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let stopped = bare_watch(&scope)
        .args(["--run-once", "--registry-ca", missing])
        .arg("--registry-ca-validate=true")
        .output()
        .unwrap();
    assert!(!stopped.status.success());
    let not_checked = bare_watch(&scope)
        .args(["--run-once", "--registry-ca", missing])
        .arg("--registry-ca-validate=false")
        .output()
        .unwrap();
    assert!(
        !stderr(&not_checked).contains("--registry-ca-validate"),
        "{}",
        stderr(&not_checked)
    );
}

#[test]
fn seed_001s_watcher_container_with_registry_ca_validate_true_keeps_running() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "seed001-ca");
    let mut cleanup = Cleanup::default();
    let image = unique("wharf-seed001:");
    crate::image::build_wharf_image(&image);
    cleanup.images.push(image.clone());
    let name = unique("wharf-seed001-");
    cleanup.containers.push(name.clone());
    // The seed's command, with the image swapped; a scope keeps it off other tests'
    // containers.
    run(Command::new("docker")
        .args(["run", "--detach", "--name", &name])
        .args(["--volume", "/var/run/docker.sock:/var/run/docker.sock"])
        .arg("--volume")
        .arg(format!("{}:/certs", dir.path().display()))
        .args(["-e", &format!("WATCHTOWER_SCOPE={name}")])
        .arg(&image)
        .args(["watch", "--registry-ca", "/certs/seed001-ca.crt"])
        .arg("--registry-ca-validate=true"));
    std::thread::sleep(Duration::from_secs(3));
    let state = inspect(&name);
    let logs = Command::new("docker")
        .args(["logs", &name])
        .output()
        .unwrap();
    assert_eq!(
        state["State"]["Running"],
        true,
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert_eq!(state["RestartCount"], 0);
}

#[test]
fn no_restart_pulls_the_new_image_and_leaves_the_container_alone() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, v2, image) = v1_pushed(&registry, &mut cleanup, "nr", "apps/norestart");
    let name = unique("wharf-norestart-");
    cleanup.containers.push(name.clone());
    docker_run(&registry, &["--name", &name, &image]);
    let before = inspect(&name);
    registry.push(&v2, "apps/norestart:latest");

    let report = registry.watch(&["--no-restart=true", &name]);
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "stale", "{report:#}");
    assert_eq!(
        line["detail"],
        "new image pulled; the container is not restarted (--no-restart)"
    );
    let after = inspect(&name);
    assert_eq!(after["Id"], before["Id"]);
    assert_eq!(after["State"]["StartedAt"], before["State"]["StartedAt"]);
    assert_eq!(
        image_id(&image),
        image_id(&v2),
        "the new image was not pulled"
    );
}
