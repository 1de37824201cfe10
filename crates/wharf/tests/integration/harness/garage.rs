//! Garage, a real S3-compatible object store, as a test fixture: one node (or three on
//! loopback) with a bucket and a key, in a temporary directory, stopped when dropped.
//! Recipe: ../shared/design/test-servers.md.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require, Distribution};

pub const BUCKET: &str = "registry";

pub struct Garage {
    /// `http://127.0.0.1:PORT`, node 1's S3 endpoint.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

struct Node {
    config: PathBuf,
    child: Option<Child>,
    s3_port: u16,
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    hex::encode(b)
}

/// Fail (never skip) when Garage is missing, saying how to get it.
pub fn require_garage() {
    let found = Command::new("garage")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`garage` (an S3-compatible object store) is not installed: this test needs it. Install it with \
         `cargo install garage --version 2.5.0 --locked` (or run .ci/run, which does)."
    );
}

impl Garage {
    /// One node with one bucket and one key, ready in about a second.
    pub fn start() -> Garage {
        Self::cluster(1)
    }

    /// `n` nodes on loopback, each holding a full copy (replication factor `n`).
    pub fn cluster(n: usize) -> Garage {
        require_garage();
        let dir = tempfile::tempdir().unwrap();
        let secret = random_hex(32);
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| write_node(dir.path(), i, n, &secret))
            .collect();
        for node in &mut nodes {
            node.start();
        }
        let g = Garage {
            endpoint: format!("http://127.0.0.1:{}", nodes[0].s3_port),
            access_key: String::new(),
            secret_key: String::new(),
            nodes,
            dir,
        };
        g.wire_up()
    }

    fn cli(&self, args: &[&str]) -> String {
        garage(&self.nodes[0].config, args)
    }

    fn wire_up(mut self) -> Garage {
        let ids: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                retry(|| try_garage(&n.config, &["node", "id", "-q"]))
                    .trim()
                    .to_owned()
            })
            .collect();
        for id in &ids[1..] {
            retry(|| try_garage(&self.nodes[0].config, &["node", "connect", id]));
        }
        for (i, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            self.cli(&[
                "layout",
                "assign",
                "-z",
                &format!("dc{i}"),
                "-c",
                "1G",
                short,
            ]);
        }
        self.cli(&["layout", "apply", "--version", "1"]);
        retry(|| try_garage(&self.nodes[0].config, &["bucket", "create", BUCKET]));
        let key = self.cli(&["key", "create", "wharf-key"]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            "wharf-key",
        ]);
        self.access_key = field(&key, "Key ID");
        self.secret_key = field(&key, "Secret key");
        self.wait_ready();
        self
    }

    /// Until a signed request gets through (layouts take a moment to reach every node).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if try_garage(&self.nodes[0].config, &["bucket", "info", BUCKET]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("garage's bucket did not become ready within 30 s");
    }

    /// registry:2's `storage.s3` section (indented for `storage:`), under `rootdirectory`.
    pub fn storage_yaml(&self, rootdirectory: &str) -> String {
        format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: garage\n    regionendpoint: {}\n    bucket: {BUCKET}\n    secure: false\n    v4auth: true\n    rootdirectory: {rootdirectory}\n  redirect:\n    disable: true\n",
            self.access_key, self.secret_key, self.endpoint
        )
    }

    /// The same as `REGISTRY_STORAGE_S3_*` variables.
    pub fn storage_env(&self, rootdirectory: &str) -> Vec<(String, String)> {
        [
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", &self.access_key),
            ("REGISTRY_STORAGE_S3_SECRETKEY", &self.secret_key),
            ("REGISTRY_STORAGE_S3_REGION", "garage"),
            ("REGISTRY_STORAGE_S3_REGIONENDPOINT", &self.endpoint),
            ("REGISTRY_STORAGE_S3_BUCKET", BUCKET),
            ("REGISTRY_STORAGE_S3_SECURE", "false"),
            ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", rootdirectory),
            ("REGISTRY_STORAGE_REDIRECT_DISABLE", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Objects in the bucket, as `garage bucket info` counts them.
    pub fn object_count(&self) -> usize {
        let info = self.cli(&["bucket", "info", BUCKET]);
        info.lines()
            .find(|l| l.trim_start().starts_with("Objects:"))
            .and_then(|l| l.split(':').nth(1)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stop node `i` (as a crash would), and start it again.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    pub fn restart_node(&mut self, i: usize) {
        self.nodes[i].start();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }
}

fn write_node(dir: &Path, i: usize, n: usize, secret: &str) -> Node {
    let (rpc, s3_port) = (free_port(), free_port());
    let home = dir.join(format!("node{i}"));
    std::fs::create_dir_all(&home).unwrap();
    let config = home.join("garage.toml");
    std::fs::write(
        &config,
        format!(
            r#"metadata_dir = "{home}/meta"
data_dir = "{home}/data"
db_engine = "sqlite"
replication_factor = {n}
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
api_bind_addr = "127.0.0.1:{s3_port}"
s3_region = "garage"
root_domain = ".s3.garage.localhost"
"#,
            home = home.display()
        ),
    )
    .unwrap();
    Node {
        config,
        child: None,
        s3_port,
    }
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_file_name("garage.log"))
            .unwrap();
        let child = Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start garage");
        self.child = Some(child);
        retry(|| try_garage(&self.config, &["status"]));
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn try_garage(config: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("garage")
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn garage(config: &Path, args: &[&str]) -> String {
    try_garage(config, args).unwrap_or_else(|e| panic!("garage {args:?} failed: {e}"))
}

fn retry(mut f: impl FnMut() -> Result<String, String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(out) => return out,
            Err(e) if Instant::now() > deadline => panic!("garage did not come up: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `Key ID: GK...` style lines of `garage key create`.
fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.trim_start().strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name:?} in garage's output:\n{text}"))
}

/// `docker-registry garbage-collect --dry-run` on the bucket: what Distribution calls garbage.
pub fn distribution_s3_gc(garage: &Garage, rootdirectory: &str) -> String {
    require("docker-registry", "docker-registry");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "version: 0.1\nstorage:\n{}",
            garage.storage_yaml(rootdirectory)
        ),
    )
    .unwrap();
    // Its Go AWS SDK panics on AWS_CA_BUNDLE with a custom transport (test-servers.md).
    let out = Command::new("docker-registry")
        .args(["garbage-collect", "--dry-run"])
        .arg(config.path())
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "registry garbage-collect: {text}");
    text
}

/// Distribution 2.8.2 with `storage.s3` on the Garage bucket, under `rootdirectory`.
pub fn distribution_on(garage: &Garage, rootdirectory: &str) -> Distribution {
    Distribution::start_storage(&garage.storage_yaml(rootdirectory), "")
}
