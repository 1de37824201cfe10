//! A throwaway OpenLDAP (Debian's `slapd`) on a loopback port (recipe: the design notes'
//! test-servers.md, section 6), with StartTLS under an openssl-made certificate and the
//! `memberof` overlay, loaded with users and groups. Stopped when dropped; `stop` and
//! `start` again model an outage.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{free_port, require, run, self_signed, wait_for_port, Proc};

pub const SUFFIX: &str = "dc=example,dc=test";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=test";
pub const ADMIN_PASSWORD: &str = "adminpw";
pub const PEOPLE: &str = "ou=people,dc=example,dc=test";

pub struct Slapd {
    pub port: u16,
    /// The certificate slapd presents, for the client to trust.
    pub cert: PathBuf,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

/// Where `slapd` is: root's PATH has /usr/sbin, others may not.
fn slapd_binary() -> String {
    for candidate in ["/usr/sbin/slapd", "slapd"] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    require("slapd", "slapd");
    "slapd".into()
}

impl Slapd {
    /// slapd with `users` (uid, password) under `ou=people` and `groups` (name, member uids)
    /// under `ou=groups`, as `groupOfNames` (so `memberof` gives each user `memberOf`).
    pub fn start(users: &[(&str, &str)], groups: &[(&str, &[&str])]) -> Slapd {
        require("ldapadd", "ldap-utils");
        require("slappasswd", "slapd");
        let dir = tempfile::Builder::new()
            .prefix("wharf-slapd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("db")).unwrap();
        let (cert, key) = self_signed(d, "ldap");
        let hash = |pw: &str| run(Command::new("slappasswd").args(["-s", pw]));
        let conf = format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\ninclude /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload memberof\n\
             pidfile {dir}/slapd.pid\nTLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n\
             database mdb\nsuffix \"{SUFFIX}\"\nrootdn \"{ADMIN_DN}\"\nrootpw {root}\n\
             directory {dir}/db\noverlay memberof\n",
            dir = d.display(),
            cert = cert.display(),
            key = key.display(),
            root = hash(ADMIN_PASSWORD),
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let mut ldif = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: example\ndc: example\n\n\
             dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
        );
        for (uid, pw) in users {
            ldif.push_str(&format!(
                "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {}\n\n",
                hash(pw)
            ));
        }
        for (name, members) in groups {
            ldif.push_str(&format!(
                "dn: cn={name},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {name}\n"
            ));
            for m in *members {
                ldif.push_str(&format!("member: uid={m},{PEOPLE}\n"));
            }
            ldif.push('\n');
        }
        std::fs::write(d.join("data.ldif"), ldif).unwrap();
        let mut slapd = Slapd {
            port: free_port(),
            cert,
            dir,
            proc: None,
        };
        slapd.start_again();
        let out = Command::new("ldapadd")
            .env("LDAPTLS_CACERT", &slapd.cert)
            .args([
                "-ZZ",
                "-x",
                "-H",
                &slapd.url(),
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
            ])
            .arg(slapd.dir.path().join("data.ldif"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ldapadd (over StartTLS): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        slapd
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Start slapd (again, after `stop`) on the same port and data. `-d 0` keeps it in
    /// the foreground, so it is this test's child and dies with it.
    pub fn start_again(&mut self) {
        let d = self.dir.path();
        let child = Command::new(slapd_binary())
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .args(["-h", &format!("{}/", self.url()), "-u", "root", "-d", "0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("slapd.log")).unwrap())
            .spawn()
            .unwrap();
        let mut proc = Proc(child);
        wait_for_port(self.port, &mut proc.0, "slapd");
        self.proc = Some(proc);
    }

    /// Stop slapd, as an outage would.
    pub fn stop(&mut self) {
        self.proc = None;
    }
}
