//! What a new user hits (issue 25), proven with the real clients: the registry's own reason
//! reaches `wharf push`/`wharf copy`, typos in config.yml stop `wharf serve`, a storage
//! root it cannot use stops it (and one that turns unusable answers 503), and the flags
//! take what users type.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::*;

pub(crate) const STORE: &str = "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:@PORT@\n";

/// Everything a command printed, and whether it succeeded.
pub(crate) fn output(cmd: &mut Command) -> (bool, String) {
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Text gzip cannot shrink much: a layer of about `n` bytes.
pub(crate) fn noise(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64 ^ n as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

/// `wharf serve ARGS` until it exits (it must, within 20 s): (succeeded, stderr).
fn serve_exits(args: &[&str], uid: Option<u32>) -> (bool, String) {
    let mut cmd = match uid {
        Some(uid) => {
            require("setpriv", "util-linux");
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                WHARF,
            ]);
            c
        }
        None => Command::new(WHARF),
    };
    let mut child = cmd
        .arg("serve")
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for_exit(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        status.is_some(),
        "wharf serve {args:?} kept running: {stderr}"
    );
    (out.status.success(), stderr)
}

#[test]
fn wharf_push_and_copy_show_the_registrys_quota_message() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("{STORE}quotas:\n  - repositories: [\"team/*\"]\n    bytes: 3MiB\nimmutable:\n  - repositories: [\"prod/*\"]\n    tags: \"^v[0-9]+\"\n");
    let w = Served::start(dir.path(), &yaml, &[]);
    let big = build_busybox_image_with(
        &unique("wharf-newuser-big:"),
        "big",
        &[("noise", &noise(6 << 20))],
        &["CMD [\"/bin/sh\"]"],
    );
    let tar = dir.path().join("big.tar");
    run(Command::new("docker")
        .args(["save", "-o"])
        .arg(&tar)
        .arg(&big));
    let cfg = dir.path().join("docker-config");
    let target = format!("{}/team/b:v1", w.host());
    let out = wharf_insecure(&cfg, &["push", tar.to_str().unwrap(), &target]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a push over quota succeeded: {stderr}"
    );
    assert!(
        stderr.contains("quota 3.0 MiB for team/*, used"),
        "wharf push shows the registry's message: {stderr}"
    );
    assert!(
        !stderr.contains("ask its administrator for access"),
        "a quota is not fixed by asking for access: {stderr}"
    );
    // The same image outside the quota, then copied into it.
    let free = format!("{}/free/b:v1", w.host());
    wharf_insecure_ok(&cfg, &["push", tar.to_str().unwrap(), &free]);
    let out = wharf_insecure(&cfg, &["copy", &free, &format!("{}/team/c:v1", w.host())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a copy over quota succeeded: {stderr}"
    );
    assert!(
        stderr.contains("quota 3.0 MiB for team/*, used") && stderr.contains("does not fit"),
        "wharf copy shows the registry's message: {stderr}"
    );
    // An immutable tag: the registry's rule, and the hint that fits it.
    let small = build_busybox_image(&unique("wharf-newuser-small:"), "small");
    let small_tar = dir.path().join("small.tar");
    run(Command::new("docker")
        .args(["save", "-o"])
        .arg(&small_tar)
        .arg(&small));
    let prod = format!("{}/prod/app:v1", w.host());
    wharf_insecure_ok(&cfg, &["push", small_tar.to_str().unwrap(), &prod]);
    let out = wharf_insecure(&cfg, &["push", tar.to_str().unwrap(), &prod]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an immutable tag moved: {stderr}");
    assert!(
        stderr.contains("tag v1 of prod/app is immutable (immutable rule 1")
            && stderr.contains("push under a new tag instead"),
        "{stderr}"
    );
    docker_rmi(&[&big, &small]);
}

#[test]
fn typos_in_config_yml_stop_wharf_serve_and_name_the_key_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cases = [
        (
            format!("version: 0.1\nhttp:\n  adr: 127.0.0.1:{port}\n"),
            "unknown key `http.adr`; did you mean `addr`?",
        ),
        (
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectroy: /srv/x\n".to_owned(),
            "unknown key `storage.filesystem.rootdirectroy`; did you mean `rootdirectory`?",
        ),
        (
            "version: 0.1\nstorage:\n  delete:\n    enabeld: true\n".to_owned(),
            "unknown key `storage.delete.enabeld`; did you mean `enabled`?",
        ),
        (
            "version: 0.1\nui:\n  admin: [alice]\n".to_owned(),
            "unknown key `ui.admin`; did you mean `admins`?",
        ),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("config{i}.yml"));
        std::fs::write(&config, yaml).unwrap();
        let (ok, stderr) = serve_exits(&[config.to_str().unwrap()], None);
        assert!(!ok, "{yaml} started");
        assert!(stderr.contains(expected), "{yaml}: {stderr}");
        assert!(
            !stderr.contains("stack backtrace") && !stderr.contains("Stack backtrace"),
            "a user error printed a backtrace: {stderr}"
        );
    }
    // A YAML error says so once, without a backtrace even with RUST_BACKTRACE set.
    let config = dir.path().join("broken.yml");
    std::fs::write(&config, "version: 0.1\nhttp: [\n").unwrap();
    let (ok, stderr) = serve_exits(&[config.to_str().unwrap()], None);
    assert!(!ok);
    assert_eq!(stderr.matches("not valid YAML").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_real_registry2_config_with_keys_wharf_ignores_starts_with_warnings() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    // registry:2's shipped config, plus sections wharf does not act on.
    let yaml = "version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: @DIR@/data\n  tag:\n    concurrencylimit: 8\nhttp:\n  addr: 127.0.0.1:@PORT@\n  headers:\n    X-Content-Type-Options: [nosniff]\n  http2:\n    disabled: false\nredis:\n  addr: localhost:6379\nvalidation:\n  disabled: true\nhealth:\n  storagedriver:\n    enabled: true\n    interval: 10s\n    threshold: 3\n";
    let w = Served::start(dir.path(), yaml, &[]);
    let pushed = docker_pushed(&w.host(), "r2/app", "registry2 config");
    docker_runs(&pushed, "registry2 config");
    let log = w.log();
    for key in ["redis", "validation", "http.http2", "storage.tag"] {
        assert!(
            log.contains(&format!(
                "`{key}` is not supported by wharf yet and is ignored"
            )),
            "no warning for {key}: {log}"
        );
    }
    docker_rmi(&[&pushed]);
}

/// A directory `nobody` (65534) may enter: the test's temporary directories are 0700.
fn open_to_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Permission bits do not bind root, which the tests run as: the server runs as nobody
/// (setpriv) on a root owned by root, which nobody cannot write.
#[test]
fn a_storage_root_the_server_cannot_write_stops_it_naming_the_path_and_uid() {
    let dir = tempfile::tempdir().unwrap();
    open_to_all(dir.path());
    let root = dir.path().join("data");
    std::fs::create_dir(&root).unwrap();
    open_to_all(&root);
    let port = free_port().to_string();
    let (ok, stderr) = serve_exits(
        &[
            "--root",
            root.to_str().unwrap(),
            "--addr",
            &format!("127.0.0.1:{port}"),
        ],
        Some(65534),
    );
    assert!(!ok, "wharf serve started on a root it cannot write");
    assert!(
        stderr.contains(&format!("storage root {}", root.display()))
            && stderr.contains("as uid 65534")
            && stderr.contains("Permission denied"),
        "{stderr}"
    );
}

/// A root that turns unusable while the server runs (as nobody, whose permissions bind):
/// 503 with the cause, never "corrupt metadata"; docker pulls again once it is fixed.
#[test]
fn a_storage_root_that_turns_unreadable_answers_503_never_corrupt() {
    use std::os::unix::fs::{chown, PermissionsExt};
    require_docker();
    require("setpriv", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    open_to_all(dir.path());
    let root = dir.path().join("data");
    std::fs::create_dir(&root).unwrap();
    chown(&root, Some(65534), Some(65534)).unwrap();
    let port = free_port();
    let log = dir.path().join("wharf.log");
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", WHARF])
        .args(["serve", "--root", root.to_str().unwrap()])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut server = Proc(child);
    wait_for_port(port, &mut server.0, "wharf serve as nobody");
    let host = format!("127.0.0.1:{port}");
    let pushed = docker_pushed(&host, "perm/app", "permissions");
    let repos = root.join("docker/registry/v2/repositories");
    std::fs::set_permissions(&repos, std::fs::Permissions::from_mode(0o000)).unwrap();
    let cfg = dir.path().join("docker-config");
    let out = wharf_insecure(&cfg, &["inspect", &format!("{host}/perm/app:v1")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let restore =
        || std::fs::set_permissions(&repos, std::fs::Permissions::from_mode(0o755)).unwrap();
    if out.status.success() || !stderr.contains("503") {
        restore();
        panic!("wharf inspect on an unreadable root: {stderr}");
    }
    assert!(stderr.contains("storage refuses access"), "{stderr}");
    assert!(!stderr.contains("corrupt"), "{stderr}");
    let raw = http_client()
        .get(format!("http://{host}/v2/perm/app/manifests/v1"))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    let status = raw.status().as_u16();
    let body = raw.text().unwrap();
    restore();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"UNAVAILABLE\""), "{body}");
    docker_rmi(&[&pushed]);
    run(Command::new("docker").args(["pull", &pushed]));
    docker_runs(&pushed, "permissions");
    docker_rmi(&[&pushed]);
}
