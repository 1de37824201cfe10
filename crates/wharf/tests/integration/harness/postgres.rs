//! A throwaway PostgreSQL cluster on a loopback port (recipe: the design notes'
//! test-servers.md, section 5): `initdb` as the `postgres` user when running as root (it
//! refuses root), its socket in a private directory, durability off for speed. Stopped
//! and removed when dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::free_port;

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_root: bool,
}

/// Where `initdb` and `pg_ctl` are: on the PATH, else Debian's versioned directory.
fn bin_dir() -> PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(initdb) = on_path {
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        return real.parent().expect("a directory").to_owned();
    }
    let debian = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(debian)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .max();
    newest.unwrap_or_else(|| {
        panic!("`initdb` is not installed: these tests start their own PostgreSQL. Install it with `apt-get install postgresql` (or run .ci/run, which does).")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let as_root = is_root();
        // World-traversable, so the postgres user reaches it when we are root.
        let dir = tempfile::Builder::new()
            .prefix("wharf-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        if as_root {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot chown the cluster's directory to `postgres` (is the postgresql package installed? it creates that user)");
        }
        let pg = Postgres {
            port: free_port(),
            bin,
            dir,
            as_root,
        };
        let data = pg.data();
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "test", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start_server();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `bin/<tool>`, as the postgres user when we are root.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(args)
            .stdout(Stdio::null())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
        );
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log");
        self.pg_ctl(&[
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "30",
            "-o",
            &options,
            "start",
        ]);
    }

    /// Stop the server, cutting its clients off as an outage would. `fast`, not
    /// `immediate`: with synchronous_commit off, a crash may lose the last commits, which
    /// a real server (synchronous commits) would not.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    /// Start it again on the same port, with the same data.
    pub fn restart(&self) {
        self.start_server();
    }

    /// `REGISTRY_DATABASE_*` for a wharf to keep its metadata here.
    pub fn env(&self) -> Vec<(String, String)> {
        Self::config_env(&self.port.to_string())
    }

    /// The variables for a server on `port` of 127.0.0.1 (one may be down).
    pub fn config_env(port: &str) -> Vec<(String, String)> {
        [
            ("REGISTRY_DATABASE_ENABLED", "true"),
            ("REGISTRY_DATABASE_HOST", "127.0.0.1"),
            ("REGISTRY_DATABASE_PORT", port),
            ("REGISTRY_DATABASE_USER", "test"),
            ("REGISTRY_DATABASE_DBNAME", "postgres"),
            ("REGISTRY_DATABASE_SSLMODE", "disable"),
            ("REGISTRY_DATABASE_CONNECTTIMEOUT", "2s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The same, as wharf-registry's configuration.
    pub fn config(&self) -> wharf_registry::store::postgres::DatabaseConfig {
        Self::config_for_port(self.port)
    }

    pub fn config_for_port(port: u16) -> wharf_registry::store::postgres::DatabaseConfig {
        wharf_registry::store::postgres::DatabaseConfig {
            host: "127.0.0.1".into(),
            port,
            user: "test".into(),
            password: None,
            dbname: "postgres".into(),
            sslmode: "disable".into(),
            sslcert: None,
            sslkey: None,
            sslrootcert: None,
            connect_timeout: std::time::Duration::from_secs(2),
            pool: Default::default(),
        }
    }

    /// Run SQL with psql and return its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "test", "-d", "postgres", "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
