//! A second Docker Engine beside the machine's (test-servers.md section 7): `dockerd` with
//! its own socket, data root, exec root, pid file, an empty config file (the machine's
//! `/etc/docker/daemon.json` would clash on `data-root`) and a bridge of its own with
//! `--iptables=false`. Never `--bridge none`: that deletes `docker0`, the machine engine's
//! bridge. Images come from the machine's engine (`docker save | docker -H … load`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{require, require_docker, run, Proc};

/// Engines started by this test process: each gets its own bridge and /24.
static STARTED: AtomicU32 = AtomicU32::new(0);

pub struct SecondEngine {
    dir: tempfile::TempDir,
    bridge: String,
    proc: Option<Proc>,
    /// With `start_tls`: the `tcp://127.0.0.1:PORT` it also listens on, with
    /// `--tlsverify`, and the client's files (ca.pem, cert.pem, key.pem) in `dir/client`.
    tls: Option<String>,
}

impl SecondEngine {
    /// Start one and wait until it answers (about 3 s).
    pub fn start() -> SecondEngine {
        SecondEngine::start_with(false)
    }

    /// As `start`, also listening on a loopback TCP port with `--tlsverify`, as
    /// `docker --tlsverify` reaches an engine: its CA, server and client certificates
    /// made with openssl; the client's in `client_certs()`.
    pub fn start_tls() -> SecondEngine {
        SecondEngine::start_with(true)
    }

    fn start_with(tls: bool) -> SecondEngine {
        require_docker();
        require("dockerd", "docker.io");
        require("ip", "iproute2");
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        // Unique across test processes too (interface names are at most 15 characters).
        let id = (std::process::id() % 10_000) * 10 + n % 10;
        let bridge = format!("wharfbr{id}");
        // 172.30.0.0/16 is carved per engine: never the machine's 172.17/16.
        let subnet = format!("172.30.{}.1/24", (std::process::id() * 7 + n) % 250 + 1);
        let dir = tempfile::Builder::new()
            .prefix("wharf-dockerd-")
            .tempdir()
            .unwrap();
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]));
        run(Command::new("ip").args(["addr", "add", &subnet, "dev", &bridge]));
        run(Command::new("ip").args(["link", "set", &bridge, "up"]));
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let tls = tls.then(|| {
            make_certs(dir.path());
            format!("tcp://127.0.0.1:{}", super::free_port())
        });
        let mut engine = SecondEngine {
            dir,
            bridge,
            proc: None,
            tls,
        };
        engine.launch();
        engine
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        let mut dockerd = Command::new("dockerd");
        if let Some(tcp) = &self.tls {
            let c = d.join("certs");
            dockerd
                .args(["--host", tcp, "--tlsverify"])
                .arg("--tlscacert")
                .arg(c.join("ca.pem"))
                .arg("--tlscert")
                .arg(c.join("server.pem"))
                .arg("--tlskey")
                .arg(c.join("server-key.pem"));
        }
        let child = dockerd
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args([
                "--bridge",
                &self.bridge,
                "--iptables=false",
                "--ip-masq=false",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let mut proc = Proc(child);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = proc.0.try_wait() {
                panic!("the second dockerd exited with {status}: {}", self.log());
            }
            if self
                .docker()
                .arg("info")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the second dockerd did not answer within 60 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        self.proc = Some(proc);
    }

    /// `unix:///…/docker.sock`, as `DOCKER_HOST` or `--host` take it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The `tcp://` address of a `start_tls` engine.
    pub fn tls_host(&self) -> String {
        self.tls.clone().expect("started with start_tls")
    }

    /// The client's ca.pem, cert.pem and key.pem (`DOCKER_CERT_PATH`) for `tls_host`.
    pub fn client_certs(&self) -> PathBuf {
        self.dir.path().join("certs").join("client")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `docker -H <this engine>`.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("-H").arg(self.host());
        cmd
    }

    /// Copy `image` from the machine's engine into this one.
    pub fn load(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let out = self
            .docker()
            .arg("load")
            .stdin(save.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(save.wait().unwrap().success(), "docker save {image} failed");
        assert!(
            out.status.success(),
            "docker load of {image} into the second engine: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker inspect -f FORMAT what` on this engine, trimmed ("" if it does not exist).
    pub fn inspect(&self, format: &str, what: &str) -> String {
        let out = self
            .docker()
            .args(["inspect", "-f", format, what])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stop the engine (SIGTERM, as `systemctl stop docker`): its socket goes away.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            super::signal(&proc.0, "TERM");
            if super::wait_for_exit(&mut proc.0, Duration::from_secs(30)).is_none() {
                let _ = proc.0.kill();
                let _ = proc.0.wait();
            }
        }
    }

    /// Start it again after `stop`, on the same data, socket and bridge.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        // Its containers go first, so none outlives the daemon holding its mounts.
        if self.proc.is_some() {
            let ids = self.docker().args(["ps", "-aq"]).output();
            if let Ok(ids) = ids {
                for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                    let _ = self.docker().args(["rm", "-f", id]).output();
                }
            }
        }
        self.stop();
        kill_leftovers(self.dir.path());
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        // The data root may keep mounts a killed daemon left; unmount what is left.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.dir.path().display().to_string();
        for line in mounts.lines() {
            if let Some(point) = line.split_whitespace().nth(1) {
                if point.starts_with(&root) {
                    let _ = Command::new("umount").args(["-l", point]).output();
                }
            }
        }
    }
}

/// Processes of this engine that outlived it (a containerd shim, a container's process
/// whose daemon was killed): those whose command line names its directory, by pid.
fn kill_leftovers(dir: &Path) {
    let dir = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&dir) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as docker's
/// "Protect the Docker daemon socket" guide makes them.
fn make_certs(dir: &Path) {
    require("openssl", "openssl");
    let c = dir.join("certs");
    let client = c.join("client");
    std::fs::create_dir_all(&client).unwrap();
    let ssl = |args: &[&str]| {
        run(Command::new("openssl")
            .current_dir(&c)
            .args(args)
            .stderr(Stdio::null()));
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=wharf test docker CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        c.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=wharf watch",
        "-keyout",
        "client/key.pem",
        "-out",
        "client.csr",
    ]);
    std::fs::write(c.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "client.ext",
        "-out",
        "client/cert.pem",
    ]);
    std::fs::copy(c.join("ca.pem"), client.join("ca.pem")).unwrap();
}
