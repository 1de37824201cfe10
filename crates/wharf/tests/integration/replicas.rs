//! Three `wharf serve` replicas on one bucket (a three-node Garage) and one PostgreSQL,
//! behind nginx round-robin without sticky sessions: pushes spread across them, any
//! replica continues any upload, a replica killed mid-push costs only a retry.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use wharf_oci::Digest;

use crate::compat::{manifest_digest, skopeo_pull};
use crate::harness::garage::Garage;
use crate::harness::nginx::nginx;
use crate::harness::postgres::Postgres;
use crate::harness::{
    build_busybox_image_with, docker_rmi, header, http_client, require, require_docker, run,
    unique, Proc, Served,
};

/// nginx spreading requests over `backends` in turn, streaming bodies both ways.
pub(crate) fn round_robin(dir: &Path, backends: &[u16]) -> (Proc, u16) {
    let servers: String = backends
        .iter()
        .map(|p| format!("server 127.0.0.1:{p} max_fails=1 fail_timeout=2s; "))
        .collect();
    nginx(
        dir,
        &format!(
            r#"    access_log @DIR@/access.log;
    upstream replicas {{ {servers} keepalive 16; }}
    server {{
        listen 127.0.0.1:@PORT@;
        client_max_body_size 0;
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}"#
        ),
    )
}

/// The replicas' shared environment: the bucket, the metadata database (whose advisory
/// locks hold across them), and one `http.secret` so that upload locations one replica
/// signs are accepted by the others.
pub(crate) fn replica_env(g: &Garage, pg: &Postgres) -> Vec<(String, String)> {
    let mut env = g.storage_env("/");
    env.extend(pg.env());
    env.push(("REGISTRY_HTTP_SECRET".into(), "replicas-share-this".into()));
    env
}

pub(crate) struct Cluster {
    _garage: Garage,
    pub replicas: Vec<Served>,
    pub dirs: Vec<tempfile::TempDir>,
    _nginx: Proc,
    pub front: String,
}

impl Cluster {
    pub fn start(env: &[(String, String)], garage: Garage) -> Cluster {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let replicas: Vec<Served> = dirs
            .iter()
            .map(|d| {
                Served::start(
                    d.path(),
                    "version: 0.1\nhttp:\n  addr: 127.0.0.1:@PORT@\n",
                    &env,
                )
            })
            .collect();
        let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
        let ndir = dirs[0].path().join("nginx");
        std::fs::create_dir_all(&ndir).unwrap();
        let (nginx, port) = round_robin(&ndir, &ports);
        Cluster {
            _garage: garage,
            replicas,
            dirs,
            _nginx: nginx,
            front: format!("127.0.0.1:{port}"),
        }
    }
}

fn random_text(bytes: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; bytes / 2];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    hex::encode(b)
}

/// An image of busybox plus `mib` MiB of incompressible text: several layers' worth of
/// uploads, long enough to be interrupted.
fn big_image(mib: usize) -> (String, String) {
    let marker = unique("replicas");
    let data = random_text(mib * 1024 * 1024);
    let name = build_busybox_image_with(
        &unique("wharf-replicas:"),
        &marker,
        &[("payload", &data)],
        &["CMD [\"/bin/sh\"]"],
    );
    (name, marker)
}

fn docker_push(local: &str, remote: &str) -> std::process::Child {
    run(Command::new("docker").args(["tag", local, remote]));
    Command::new("docker")
        .args(["push", remote])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn three_replicas_share_pushes_uploads_and_survive_a_kill_mid_push() {
    require_docker();
    require("skopeo", "skopeo");
    let (g, pg) = (Garage::cluster(3), Postgres::start());
    let env = replica_env(&g, &pg);
    let mut c = Cluster::start(&env, g);

    // A docker push through the round-robin: its uploads land on every replica.
    let (first, _) = big_image(2);
    let remote = format!("{}/spread/app:v1", c.front);
    let status = docker_push(&first, &remote).wait().unwrap();
    assert!(status.success(), "docker push through nginx");
    for (i, r) in c.replicas.iter().enumerate() {
        assert!(
            r.log().contains("/blobs/uploads/"),
            "replica {i} took no part of the upload:\n{}",
            r.log()
        );
    }
    let digest = manifest_digest(&format!("http://{}", c.front), "spread/app", "v1");
    for r in &c.replicas {
        let into = tempfile::tempdir().unwrap();
        let got = skopeo_pull(
            &format!("docker://{}/spread/app:v1", r.host()),
            into.path(),
            false,
        );
        assert_eq!(got, digest, "replica {} serves the image", r.host());
    }

    // A chunked upload started on one replica, continued on another, finished on the third.
    chunked_across(&c);

    // kill -9 of a replica mid-push; the retry goes to the others and succeeds.
    let (second, marker) = big_image(48);
    let remote = format!("{}/killed/app:v1", c.front);
    let mut push = docker_push(&second, &remote);
    // Killed once it has taken part in this push, so the kill lands mid-push.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !c.replicas[1]
        .log()
        .contains("/v2/killed/app/blobs/uploads/")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the push never reached replica 1"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.replicas[1].kill();
    let _ = push.wait();
    let retried = Command::new("docker")
        .args(["push", &remote])
        .output()
        .unwrap();
    assert!(
        retried.status.success(),
        "the retried push failed: {}",
        String::from_utf8_lossy(&retried.stderr)
    );
    docker_rmi(&[&second, &remote, &first]);
    let out = run(Command::new("docker").args(["run", "--rm", &remote, "cat", "/marker"]));
    assert_eq!(out.trim(), marker);
    docker_rmi(&[&remote]);
    let dir = c.dirs[1].path().to_owned();
    c.replicas[1].restart(&dir);
    let into = tempfile::tempdir().unwrap();
    let host = c.replicas[1].host();
    skopeo_pull(
        &format!("docker://{host}/killed/app:v1"),
        into.path(),
        false,
    );
}

fn chunked_across(c: &Cluster) {
    let client = http_client();
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256_of(&data);
    let base = |i: usize| format!("http://{}", c.replicas[i].host());
    let r = client
        .post(format!("{}/v2/chunks/across/blobs/uploads/", base(0)))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut location = header(&r, "location");
    let third = data.len() / 3;
    for (i, part) in data.chunks(third).enumerate() {
        let start = i * third;
        let url = format!("{}{}", base(1 + i % 2), location);
        let r = client
            .patch(&url)
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{start}-{}", start + part.len() - 1),
            )
            .body(part.to_vec())
            .send()
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "PATCH on replica {}",
            1 + i % 2
        );
        location = header(&r, "location");
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = client
        .put(format!("{}{location}{sep}digest={digest}", base(2)))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "PUT on the third replica");
    for i in 0..3 {
        let got = client
            .get(format!("{}/v2/chunks/across/blobs/{digest}", base(i)))
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        assert_eq!(Digest::sha256_of(&got), digest, "replica {i}");
    }
}
