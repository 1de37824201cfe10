//! `wharf watch` configured the way watchtower users configure it — credentials from
//! config.json (re-read while running), REPO_USER/REPO_PASS and credential helpers,
//! DOCKER_API_VERSION, schedules, lifecycle hooks — plus multi-arch tags, all against
//! the machine's real Docker Engine and a real wharf registry with TLS and token auth.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::*;
use crate::watch::*;

/// A docker config directory of its own (not the one `docker login` wrote), so a test
/// decides exactly which credentials the watcher sees.
fn config_dir(registry: &Registry, name: &str, config: &str) -> PathBuf {
    let dir = registry.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

fn auths(registry: &Registry, password: &str) -> String {
    format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        registry.host(),
        base64_user_pass(USER, password)
    )
}

/// A run-once that succeeded and left `name` running `image_id`.
fn assert_updated(out: &Output, name: &str, image_id: &str) {
    assert!(out.status.success(), "{out:?}");
    let report = report_of(out);
    assert_eq!(
        container_line(&report, name)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(inspect(name)["Image"].as_str().unwrap(), image_id);
}

/// A container running v1 from `apps/REPO:latest`, and v2 pushed there since; returns
/// the container's name and v2's image id. v2 is then removed locally, so the update has
/// to pull it through the registry's auth: an engine pull without credentials fails.
fn stale_container(registry: &Registry, cleanup: &mut Cleanup, repo: &str) -> (String, String) {
    let (_, v2, image) = v1_pushed(registry, cleanup, repo, &format!("apps/{repo}"));
    let name = unique(&format!("wharf-env-{repo}-"));
    cleanup.containers.push(name.clone());
    docker_run(registry, &["--name", &name, &image]);
    registry.push(&v2, &format!("apps/{repo}:latest"));
    let v2_id = image_id(&v2);
    run(Command::new("docker").args(["rmi", &v2, &image]));
    (name, v2_id)
}

#[test]
fn config_json_is_read_again_at_every_check_of_a_running_watcher() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (name, v2) = stale_container(&registry, &mut cleanup, "reread");
    let before = inspect(&name);
    let config = config_dir(&registry, "reread-config", &auths(&registry, "wrong"));

    let api = ApiWatcher::start(&registry, &[&name], |c| {
        c.env("DOCKER_CONFIG", &config);
    });
    let report = api.update();
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "failed", "{report:#}");
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.contains("rejected the credentials") && detail.contains("config.json"),
        "the detail must say where the credentials came from: {detail}"
    );
    assert_eq!(inspect(&name)["Id"], before["Id"]);

    // Fixed on disk while the watcher runs, as a re-mounted secret would be.
    std::fs::write(config.join("config.json"), auths(&registry, PASSWORD)).unwrap();
    let report = api.update();
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(inspect(&name)["Image"].as_str().unwrap(), v2);
}

#[test]
fn repo_user_and_repo_pass_serve_the_check_and_the_engine_pull() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (name, v2) = stale_container(&registry, &mut cleanup, "envauth");
    let empty = registry.dir.path().join("empty-config");
    std::fs::create_dir_all(&empty).unwrap();

    let out = registry
        .watch_command(&["--run-once", &name])
        .env("DOCKER_CONFIG", &empty)
        .env("REPO_USER", USER)
        .env("REPO_PASS", PASSWORD)
        .output()
        .unwrap();
    assert_updated(&out, &name, &v2);
}

/// `docker-credential-<name>` in `bin`, knowing this registry's user and password.
fn credential_helper(bin: &Path, name: &str, host: &str) {
    std::fs::create_dir_all(bin).unwrap();
    let script = bin.join(format!("docker-credential-{name}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r url\ncase \"$url\" in\n  {host}|https://{host})\n    printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$url\";;\n  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_credential_helper_on_path_is_used_and_a_missing_one_is_named() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (name, v2) = stale_container(&registry, &mut cleanup, "helper");
    let before = inspect(&name);
    let bin = registry.dir.path().join("bin");
    credential_helper(&bin, "wharftest", &registry.host());
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let missing = config_dir(
        &registry,
        "missing-helper",
        r#"{"credsStore":"wharfmissing"}"#,
    );
    let out = registry
        .watch_command(&["--run-once", &name])
        .env("DOCKER_CONFIG", &missing)
        .env("PATH", &path)
        .output()
        .unwrap();
    let report = report_of(&out);
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "failed", "{report:#}");
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.contains("wharfmissing") && detail.contains(&registry.host()),
        "the detail must name the helper and the registry: {detail}"
    );
    assert_eq!(inspect(&name)["Id"], before["Id"]);

    let helped = config_dir(&registry, "helper-config", r#"{"credsStore":"wharftest"}"#);
    let out = registry
        .watch_command(&["--run-once", &name])
        .env("DOCKER_CONFIG", &helped)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_updated(&out, &name, &v2);
}

/// Push a manifest list of `amd64` and `arm64` (local images) to `registry` as
/// `apps/multi:TAG`; returns its digest. `docker manifest push` talks only plain HTTP to
/// a loopback registry, and this one speaks TLS: the list is made on a plain wharf with
/// docker's own commands, then `wharf copy` carries it over byte for byte.
fn push_list(
    registry: &Registry,
    plain: &Wharf,
    cleanup: &mut Cleanup,
    tag: &str,
    amd64: &str,
    arm64: &str,
) -> String {
    let mut parts = Vec::new();
    for (image, arch) in [(amd64, "amd64"), (arm64, "arm64")] {
        let remote = format!("{}/apps/multi:{arch}-{tag}", plain.host());
        run(Command::new("docker").args(["tag", image, &remote]));
        run(Command::new("docker").args(["push", &remote]));
        cleanup.images.push(remote.clone());
        parts.push(remote);
    }
    let list = format!("{}/apps/multi:{tag}", plain.host());
    push_manifest_list(&list, &parts[0], &parts[1]);
    let out = run(Command::new(WHARF)
        .env("DOCKER_CONFIG", registry.docker_config())
        .args(["copy", "--quiet", "--insecure-registry", &plain.host()])
        .arg("--registry-ca")
        .arg(&registry.cert)
        .arg(&list)
        .arg(format!("{}/apps/multi:1", registry.host())));
    out.trim().to_owned()
}

#[test]
fn a_multi_arch_tag_is_compared_by_its_index_digest() {
    let registry = Registry::start();
    let plain = Wharf::start();
    let mut cleanup = Cleanup::default();
    let amd1 = serving_image(&mut cleanup, "amd1", &[]);
    let amd2 = serving_image(&mut cleanup, "amd2", &[]);
    let arm = serving_image(&mut cleanup, "arm", &[]);
    let list = format!("{}/apps/multi:1", registry.host());
    cleanup.images.push(list.clone());
    let first = push_list(&registry, &plain, &mut cleanup, "a", &amd1, &arm);
    assert!(first.starts_with("sha256:"), "{first}");

    let name = unique("wharf-env-multi-");
    cleanup.containers.push(name.clone());
    docker_run(&registry, &["--name", &name, &list]);
    let before = inspect(&name);
    assert_eq!(before["Image"].as_str().unwrap(), image_id(&amd1));
    let recorded = inspect(before["Image"].as_str().unwrap())["RepoDigests"].to_string();
    assert!(
        recorded.contains(&first),
        "docker records the list digest: {recorded}"
    );

    let report = registry.watch(&[&name]);
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "fresh", "{report:#}");
    assert_eq!(line["new_digest"], first.as_str());
    assert_eq!(inspect(&name)["Id"], before["Id"]);

    let second = push_list(&registry, &plain, &mut cleanup, "b", &amd2, &arm);
    assert_ne!(first, second);
    let report = registry.watch(&[&name]);
    let line = container_line(&report, &name);
    assert_eq!(line["outcome"], "updated", "{report:#}");
    assert_eq!(line["old_digest"], first.as_str());
    assert_eq!(line["new_digest"], second.as_str());
    let after = inspect(&name);
    assert_eq!(after["Image"].as_str().unwrap(), image_id(&amd2));
    assert_eq!(after["State"]["Running"], true);
}

#[test]
fn docker_api_version_pins_the_engine_api_or_is_refused_by_name() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (name, v2) = stale_container(&registry, &mut cleanup, "pinned");

    let out = registry
        .watch_command(&["--run-once", &name])
        .env("DOCKER_API_VERSION", "1.40")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("api=1.40"),
        "the pinned version must be the one used: {stderr}"
    );
    let report = report_of(&out);
    assert_eq!(
        container_line(&report, &name)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(inspect(&name)["Image"].as_str().unwrap(), v2);

    let out = registry
        .watch_command(&["--run-once", &name])
        .env("DOCKER_API_VERSION", "garbage")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DOCKER_API_VERSION"), "{stderr}");
}

/// `wharf watch` with none of the ambient WATCHTOWER_* settings, which would change
/// what these arguments mean.
fn bare_watch(args: &[&str]) -> Output {
    let mut cmd = Command::new(WHARF);
    for (key, _) in std::env::vars() {
        if key.starts_with("WATCHTOWER_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("watch").args(args).output().unwrap()
}

#[test]
fn a_five_field_schedule_and_an_api_without_token_are_refused_by_name() {
    let out = bare_watch(&["--schedule", "0 4 * * *"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("6-field"), "{stderr}");

    let out = bare_watch(&["--http-api-update", "--http-api-addr", "127.0.0.1:0"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WATCHTOWER_HTTP_API_TOKEN"), "{stderr}");
}

/// Like serving_image, with a /tmp for hooks to write into (the busybox images have
/// only /bin, and no mkdir).
fn hook_image(cleanup: &mut Cleanup, marker: &str) -> String {
    require_docker();
    require("busybox", "busybox-static");
    let name = unique(&format!("wharf-env-hooks-{marker}:"));
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    let busybox = run(Command::new("sh").args(["-c", "command -v busybox"]));
    std::fs::copy(busybox.trim(), rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("marker"), marker).unwrap();
    let tar = dir.path().join("rootfs.tar");
    tar_dir(&rootfs, &tar);
    run(Command::new("docker")
        .args(["import", "--change", SERVE_CMD])
        .arg(&tar)
        .arg(&name));
    cleanup.images.push(name.clone());
    name
}

fn cat(container: &str, path: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["exec", container, "cat", path])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn lifecycle_hooks_skip_an_update_and_run_in_the_new_container() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let v1 = hook_image(&mut cleanup, "k1");
    let v2 = hook_image(&mut cleanup, "k2");
    let image = format!("{}/apps/hooks:latest", registry.host());
    cleanup.images.push(image.clone());
    registry.push(&v1, "apps/hooks:latest");
    let hook = |name: &str| format!("com.centurylinklabs.watchtower.lifecycle.{name}");
    let pre_check = format!("{}=echo checked > /tmp/pre-check", hook("pre-check"));
    let (skipping, posting) = (unique("wharf-env-skip-"), unique("wharf-env-post-"));
    cleanup
        .containers
        .extend([skipping.clone(), posting.clone()]);
    docker_run(
        &registry,
        &[
            "--name",
            &skipping,
            "-l",
            &format!("{}=exit 75", hook("pre-update")),
            "-l",
            &pre_check,
            &image,
        ],
    );
    docker_run(
        &registry,
        &[
            "--name",
            &posting,
            "-l",
            &format!("{}=echo done > /tmp/post", hook("post-update")),
            &image,
        ],
    );
    let skipping_before = inspect(&skipping);
    registry.push(&v2, "apps/hooks:latest");

    let report = registry.watch(&["--enable-lifecycle-hooks", &skipping, &posting]);
    let line = container_line(&report, &skipping);
    assert_eq!(line["outcome"], "skipped", "{report:#}");
    assert!(
        line["detail"].as_str().unwrap().contains("75"),
        "{report:#}"
    );
    let now = inspect(&skipping);
    assert_eq!(
        now["Id"], skipping_before["Id"],
        "a skipped container stays"
    );
    assert_eq!(now["Image"].as_str().unwrap(), image_id(&v1));
    assert_eq!(now["State"]["Running"], true);
    assert_eq!(
        cat(&skipping, "/tmp/pre-check").as_deref(),
        Some("checked"),
        "the pre-check hook did not run"
    );

    assert_eq!(
        container_line(&report, &posting)["outcome"],
        "updated",
        "{report:#}"
    );
    assert_eq!(inspect(&posting)["Image"].as_str().unwrap(), image_id(&v2));
    assert_eq!(
        cat(&posting, "/tmp/post").as_deref(),
        Some("done"),
        "the post-update hook did not run in the new container"
    );
}

/// A CA, an engine certificate for 127.0.0.1 and a client certificate, all signed by the
/// CA, in `dir`: `ca.pem`, `cert.pem` and `key.pem` as docker's DOCKER_CERT_PATH holds
/// them, and `server.pem`/`server-key.pem` for the engine's side.
fn engine_certs(dir: &Path) {
    require("openssl", "openssl");
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        run(Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stderr(std::process::Stdio::null()))
    };
    openssl(
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ]
        .iter()
        .chain(&[
            "-subj",
            "/CN=wharf test CA",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ])
        .copied()
        .collect::<Vec<_>>(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, key, cert, ext) in [
        ("engine", "server-key.pem", "server.pem", "server.ext"),
        ("watcher", "key.pem", "cert.pem", "client.ext"),
    ] {
        let subject = format!("/CN={name}");
        openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", key, "-out",
            "req.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "req.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            cert,
        ]);
    }
}

/// The engine's socket behind TLS that demands a client certificate, as `dockerd
/// --tlsverify` serves it. Python's ssl, not socat: socat's OpenSSL server refuses the
/// session resumption that rustls (and Go) clients use.
const TLS_ENGINE: &str = r#"
import socket, ssl, sys, threading
port, cert, key, ca, engine = sys.argv[1:]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED
def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(conn):
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError):
        conn.close()
        return
    up = socket.socket(socket.AF_UNIX)
    up.connect(engine)
    threading.Thread(target=pump, args=(tls, up), daemon=True).start()
    pump(up, tls)
server = socket.create_server(("127.0.0.1", int(port)))
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

#[test]
fn a_tcp_engine_is_reached_over_tls_with_docker_tls_verify_and_cert_path() {
    require("python3", "python3");
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (name, v2) = stale_container(&registry, &mut cleanup, "overtls");
    let certs = registry.dir.path().join("engine-tls");
    engine_certs(&certs);
    let port = free_port();
    let mut proxy = Proc(
        Command::new("python3")
            .args(["-c", TLS_ENGINE, &port.to_string()])
            .args(["server.pem", "server-key.pem", "ca.pem"].map(|f| certs.join(f)))
            .arg("/var/run/docker.sock")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the TLS engine proxy"),
    );
    wait_for_port(port, &mut proxy.0, "the TLS engine proxy");
    let host = format!("tcp://127.0.0.1:{port}");
    // A run-once against it, with `DOCKER_CERT_PATH` when it should use TLS.
    let watch = |cert_path: Option<&Path>| {
        let mut cmd = registry.watch_command(&["--run-once", &name]);
        cmd.env("DOCKER_HOST", &host);
        match cert_path {
            Some(dir) => cmd
                .env("DOCKER_TLS_VERIFY", "1")
                .env("DOCKER_CERT_PATH", dir),
            None => cmd.env_remove("DOCKER_TLS_VERIFY"),
        };
        cmd.output().unwrap()
    };
    let refused = |out: Output| {
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Plain HTTP to it fails, and says where.
    let stderr = refused(watch(None));
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");

    // A DOCKER_CERT_PATH without the files names the one missing.
    let empty = registry.dir.path().join("no-certs");
    std::fs::create_dir_all(&empty).unwrap();
    let stderr = refused(watch(Some(&empty)));
    assert!(
        stderr.contains("key.pem") && stderr.contains("DOCKER_CERT_PATH"),
        "{stderr}"
    );

    // With them, the check, the pull and the swap all go through the TLS engine.
    assert_updated(&watch(Some(&certs)), &name, &v2);
}

#[test]
fn boolean_variables_take_1_and_0_as_docker_and_watchtower_users_write_them() {
    for value in ["1", "true", "0", "false", "yes"] {
        let out = Command::new(WHARF)
            .args(["watch", "--run-once"])
            .env("WATCHTOWER_CLEANUP", value)
            .env("WATCHTOWER_MONITOR_ONLY", value)
            .env("DOCKER_TLS_VERIFY", "")
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("/nonexistent/docker.sock"),
            "{value}: the value was refused before the engine was tried: {stderr}"
        );
    }
}
