//! The transparent mirror: upstreams given with `host:` serve their images under their own
//! names, with no prefix. containerd (`ctr images pull --hosts-dir`) names the upstream in
//! `?ns=`; podman and skopeo (a `registries.conf` mirror) send no `?ns=` and reach the
//! configured default. The upstreams are loopback wharfs that the clients know by the
//! names `upstream-a.test` and `upstream-b.test`, through their hosts configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::proxy::{blob_gets, docker_cfg, wharf_upstream, PASSWORD, USER};
use crate::proxy_faults::{nginx_front, random_hex};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Push a busybox image marked `marker` (with `extra` files) to `upstream` as `repo:tag`.
fn push(cfg: &Path, upstream: &Served, repo: &str, tag: &str, extra: &[(&str, &str)]) {
    let out = output_with_stdin(
        Command::new("docker").env("DOCKER_CONFIG", cfg).args([
            "login",
            &upstream.host(),
            "-u",
            USER,
            "--password-stdin",
        ]),
        PASSWORD,
    );
    ok(out, "docker login to the upstream");
    let local = build_busybox_image_with(
        &unique("wharf-mirror-src:"),
        &unique(repo),
        extra,
        &["CMD [\"/bin/sh\"]"],
    );
    let remote = format!("{}/{repo}:{tag}", upstream.host());
    docker_cfg(cfg, &["tag", &local, &remote]);
    docker_cfg(cfg, &["push", &remote]);
    docker_rmi(&[&local, &remote]);
}

/// The digest the upstream serves for `repo:tag`.
fn upstream_digest(upstream: &Served, repo: &str, tag: &str) -> String {
    let resp = http_client()
        .head(format!(
            "http://{}/v2/{repo}/manifests/{tag}",
            upstream.host()
        ))
        .basic_auth(USER, Some(PASSWORD))
        .header("Accept", ACCEPT)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "HEAD {repo}:{tag} upstream");
    resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// A transparent mirror of the given `(host, remote url, default)` upstreams.
fn mirror(dir: &Path, upstreams: &[(&str, String, bool)]) -> Served {
    std::fs::create_dir_all(dir).unwrap();
    let mut yaml = "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: @DIR@/data\nhttp:\n  addr: 127.0.0.1:@PORT@\nproxy:\n  upstreams:\n".to_owned();
    for (host, url, default) in upstreams {
        yaml += &format!(
            "    - host: {host}\n      remoteurl: {url}\n      username: {USER}\n      password: {PASSWORD}\n      ttl: 1h\n      default: {default}\n"
        );
    }
    Served::start(dir, &yaml, &[("WHARF_LOG", "info")])
}

/// A containerd to pull with: the machine's when it answers, else one of our own with its
/// own root, state and socket (killed with the guard).
struct Containerd {
    address: PathBuf,
    _proc: Option<Proc>,
}

fn ctr(address: &Path) -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address")
        .arg(address)
        .args(["-n", "wharf-mirror-test"]);
    c
}

fn containerd(dir: &Path) -> Containerd {
    require("ctr", "containerd");
    let machine = PathBuf::from("/run/containerd/containerd.sock");
    let answers = |address: &Path| {
        Command::new("ctr")
            .arg("--address")
            .arg(address)
            .args(["--timeout", "2s", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if answers(&machine) {
        return Containerd {
            address: machine,
            _proc: None,
        };
    }
    require("containerd", "containerd");
    std::fs::create_dir_all(dir).unwrap();
    let address = dir.join("containerd.sock");
    let config = dir.join("containerd.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.devmapper\"]\n[grpc]\n  address = \"{address}\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            address = address.display(),
        ),
    )
    .unwrap();
    let log = dir.join("containerd.log");
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(&address) {
        assert!(
            Instant::now() < deadline,
            "containerd did not answer on {}:\n{}",
            address.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Containerd {
        address,
        _proc: Some(proc),
    }
}

/// containerd's hosts directory: `host` is served by `upstream` and mirrored by `mirror`.
fn hosts_toml(hosts_dir: &Path, host: &str, upstream: &Served, mirror: &Served) {
    let d = hosts_dir.join(host);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"http://{up}\"\n\n[host.\"http://{m}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            up = upstream.host(),
            m = mirror.host()
        ),
    )
    .unwrap();
}

#[test]
fn ctr_pulls_two_upstreams_through_one_mirror_with_no_prefix() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("docker-config");
    let a = wharf_upstream(&dir.path().join("a"));
    let b = wharf_upstream(&dir.path().join("b"));
    push(&cfg, &a, "team/app", "v1", &[]);
    push(&cfg, &b, "lib/x", "v2", &[]);
    let m = mirror(
        &dir.path().join("mirror"),
        &[
            ("upstream-a.test", format!("http://{}", a.host()), false),
            ("upstream-b.test", format!("http://{}", b.host()), false),
        ],
    );
    let hosts = dir.path().join("hosts");
    hosts_toml(&hosts, "upstream-a.test", &a, &m);
    hosts_toml(&hosts, "upstream-b.test", &b, &m);
    let cd = containerd(&dir.path().join("containerd"));
    for (image, upstream, repo, tag) in [
        ("upstream-a.test/team/app:v1", &a, "team/app", "v1"),
        ("upstream-b.test/lib/x:v2", &b, "lib/x", "v2"),
    ] {
        let out = ctr(&cd.address)
            .args(["images", "pull", "--snapshotter", "native", "--hosts-dir"])
            .arg(&hosts)
            .arg(image)
            .output()
            .unwrap();
        ok(out, &format!("ctr images pull {image} through the mirror"));
        let listed = ctr(&cd.address).args(["images", "ls"]).output().unwrap();
        let listed = ok(listed, "ctr images ls");
        let want = upstream_digest(upstream, repo, tag);
        let line = listed
            .lines()
            .find(|l| l.starts_with(image))
            .unwrap_or_else(|| panic!("{image} not listed:\n{listed}"));
        assert!(line.contains(&want), "{image}: {line} (upstream {want})");
        let _ = ctr(&cd.address).args(["images", "rm", image]).output();
    }
    // Through the mirror, not around it: the cache holds both, each under its host.
    let catalog: serde_json::Value = http_client()
        .get(format!("http://{}/v2/_catalog", m.host()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let repos = catalog["repositories"].to_string();
    assert!(
        repos.contains("upstream-a.test/team/app") && repos.contains("upstream-b.test/lib/x"),
        "{repos}"
    );
    assert!(
        m.log().contains("path=/v2/lib/x/blobs/sha256:"),
        "ctr did not fetch blobs through the mirror:\n{}",
        m.log()
    );
    // A host the mirror has no upstream for, and no default: a spec error that says
    // which key to add.
    let resp = http_client()
        .get(format!(
            "http://{}/v2/team/app/manifests/v1?ns=quay.io",
            m.host()
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("quay.io") && message.contains("proxy.upstreams"),
        "{message}"
    );
}

/// A `registries.conf` whose mirror for `host` is the wharf at `mirror`.
fn registries_conf(path: &Path, host: &str, mirror: &Served) {
    std::fs::write(
        path,
        format!(
            "[[registry]]\nprefix = \"{host}\"\nlocation = \"{host}\"\n[[registry.mirror]]\nlocation = \"{m}\"\ninsecure = true\n",
            m = mirror.host()
        ),
    )
    .unwrap();
}

#[test]
fn podman_pulls_through_a_registries_conf_mirror_served_by_the_default_upstream() {
    require_docker();
    require("podman", "podman");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("docker-config");
    let a = wharf_upstream(&dir.path().join("a"));
    let b = wharf_upstream(&dir.path().join("b"));
    push(&cfg, &b, "lib/x", "v2", &[]);
    let m = mirror(
        &dir.path().join("mirror"),
        &[
            ("upstream-a.test", format!("http://{}", a.host()), false),
            ("upstream-b.test", format!("http://{}", b.host()), true),
        ],
    );
    let conf = dir.path().join("registries.conf");
    registries_conf(&conf, "upstream-b.test", &m);
    let image = "upstream-b.test/lib/x:v2";
    // upstream-b.test resolves nowhere: only the mirror can answer.
    let pulled = Command::new("podman")
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .args(["pull", image])
        .output()
        .unwrap();
    ok(pulled, "podman pull through its registries.conf mirror");
    let inspected = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Digest}}", image])
        .output()
        .unwrap();
    let digest = ok(inspected, "podman image inspect");
    let _ = Command::new("podman").args(["rmi", "-f", image]).output();
    assert_eq!(digest.trim(), upstream_digest(&b, "lib/x", "v2"));
}

#[test]
fn eight_concurrent_cold_pulls_through_the_transparent_mirror_fetch_each_blob_once() {
    require_docker();
    require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("docker-config");
    let b = wharf_upstream(&dir.path().join("b"));
    let big = random_hex(16 << 20);
    push(&cfg, &b, "lib/big", "v1", &[("big", &big)]);
    // A slow link to the upstream (2 MiB/s), so that all eight pulls overlap the fill.
    let ndir = dir.path().join("nginx");
    std::fs::create_dir_all(&ndir).unwrap();
    let (_nginx, nport) = nginx_front(&ndir, b.port, &ndir.join("never"), "2m");
    let m = mirror(
        &dir.path().join("mirror"),
        &[("upstream-b.test", format!("http://127.0.0.1:{nport}"), true)],
    );
    let conf = dir.path().join("registries.conf");
    registries_conf(&conf, "upstream-b.test", &m);
    let gets_before = blob_gets(&b.log()).len();
    let pulls: Vec<_> = (0..8)
        .map(|i| {
            let (conf, target) = (conf.clone(), dir.path().join(format!("pull{i}")));
            std::thread::spawn(move || {
                Command::new("skopeo")
                    .arg("--registries-conf")
                    .arg(&conf)
                    .args(["copy", "--retry-times", "0"])
                    .arg("docker://upstream-b.test/lib/big:v1")
                    .arg(format!("dir:{}", target.display()))
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for p in pulls {
        ok(
            p.join().unwrap(),
            "a concurrent skopeo copy through the mirror",
        );
    }
    let gets = blob_gets(&b.log());
    let fetched = &gets[gets_before..];
    let mut unique_paths = fetched.to_vec();
    unique_paths.sort();
    unique_paths.dedup();
    assert!(unique_paths.len() >= 2, "config and layers: {fetched:?}");
    assert_eq!(
        fetched.len(),
        unique_paths.len(),
        "a blob was fetched from the upstream more than once: {fetched:?}"
    );
}
