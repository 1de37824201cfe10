//! htpasswd files as Apache's `htpasswd` writes them: bcrypt (`$2y$`, `$2a$`, `$2b$`),
//! apr1 (`$apr1$`, also nginx's `openssl passwd -apr1`) and `{SHA}`.
//!
//! bcrypt is deliberately slow, so credentials that verified once are remembered under a
//! keyed hash of user and password (never the password itself) until the file changes.
//! The file is re-read when its modification time or size changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use dashmap::DashSet;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use wharf_oci::sync::{lock, read, write};

/// How often the file's metadata is looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Bound on remembered credentials; the cache starts over beyond it.
const CACHE_LIMIT: usize = 10_000;

#[derive(Debug, Clone)]
enum Hash {
    Bcrypt(String),
    Apr1 { salt: String, encoded: String },
    Sha1([u8; 20]),
}

struct Users {
    hashes: HashMap<String, Hash>,
    stamp: Option<(SystemTime, u64)>,
}

pub struct Htpasswd {
    path: PathBuf,
    users: RwLock<Users>,
    last_check: Mutex<Instant>,
    verified: DashSet<[u8; 32]>,
    cache_key: [u8; 32],
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// Parse the file's text. Lines it cannot use are reported, naming the user, not the hash.
fn parse(text: &str, origin: &Path) -> HashMap<String, Hash> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            tracing::warn!(file = %origin.display(), line = n + 1, "htpasswd line has no ':'; ignored");
            continue;
        };
        let parsed =
            if hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$") {
                Some(Hash::Bcrypt(hash.to_owned()))
            } else if let Some(rest) = hash.strip_prefix("$apr1$") {
                rest.split_once('$').map(|(salt, encoded)| Hash::Apr1 {
                    salt: salt.to_owned(),
                    encoded: encoded.to_owned(),
                })
            } else if let Some(b64) = hash.strip_prefix("{SHA}") {
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .ok()
                    .and_then(|d| d.try_into().ok())
                    .map(Hash::Sha1)
            } else {
                None
            };
        match parsed {
            Some(h) => {
                users.insert(user.to_owned(), h);
            }
            None => tracing::warn!(
                file = %origin.display(),
                user,
                "unsupported password hash (use bcrypt: htpasswd -B; apr1: htpasswd -m; or SHA: htpasswd -s); user ignored"
            ),
        }
    }
    users
}

/// The user registry:2 provisions a missing file with.
const DEFAULT_USER: &str = "docker";

/// What registry:2 does when the file is missing: create it (and its directory) with user
/// `docker` and a random password, logged once, so a container started before its users
/// were added comes up instead of crash-looping. `O_EXCL`: a file another process just
/// created is kept.
fn provision(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let what = |e: std::io::Error| format!("cannot create htpasswd file {}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(what)?;
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness for a password: {e}"))?;
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let hash = bcrypt::hash(&password, bcrypt::DEFAULT_COST).map_err(|e| e.to_string())?;
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(what(e)),
    };
    file.write_all(format!("{DEFAULT_USER}:{hash}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(what)?;
    tracing::warn!(
        user = DEFAULT_USER,
        password = %password,
        file = %path.display(),
        "htpasswd is missing, provisioning with default user"
    );
    Ok(())
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        if !path.exists() {
            provision(path)?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read htpasswd file {}: {e} (create it with `htpasswd -Bc FILE USER`)",
                path.display()
            )
        })?;
        let mut cache_key = [0u8; 32];
        getrandom::fill(&mut cache_key)
            .map_err(|e| format!("no randomness for the credential cache: {e}"))?;
        Ok(Htpasswd {
            path: path.to_owned(),
            users: RwLock::new(Users {
                hashes: parse(&text, path),
                stamp: stamp(path),
            }),
            last_check: Mutex::new(Instant::now()),
            verified: DashSet::new(),
            cache_key,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-read the file now, after this process rewrote it (the UI's user management), so
    /// the change takes effect at once rather than at the next once-a-second check.
    pub fn reload_now(&self) {
        *lock(&self.last_check) = Instant::now() - RELOAD_CHECK;
        write(&self.users).stamp = None;
        self.refresh();
    }

    /// The user names, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.refresh();
        let mut names: Vec<String> = read(&self.users).hashes.keys().cloned().collect();
        names.sort();
        names
    }

    /// Re-read the file if it changed (checked at most once a second).
    fn refresh(&self) {
        {
            let mut last = lock(&self.last_check);
            if last.elapsed() < RELOAD_CHECK {
                return;
            }
            *last = Instant::now();
        }
        let now = stamp(&self.path);
        if now == read(&self.users).stamp {
            return;
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let hashes = parse(&text, &self.path);
                tracing::info!(file = %self.path.display(), users = hashes.len(), "htpasswd reloaded");
                *write(&self.users) = Users { hashes, stamp: now };
                self.verified.clear();
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "htpasswd unreadable; keeping the previous users")
            }
        }
    }

    fn cache_id(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.cache_key).expect("any key length");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn has_user(&self, user: &str) -> bool {
        self.refresh();
        read(&self.users).hashes.contains_key(user)
    }

    /// Whether `password` is `user`'s. bcrypt runs off the async threads.
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        self.refresh();
        let id = self.cache_id(user, password);
        if self.verified.contains(&id) {
            return true;
        }
        let Some(hash) = read(&self.users).hashes.get(user).cloned() else {
            return false;
        };
        let password = password.to_owned();
        let ok = match hash {
            Hash::Bcrypt(h) => {
                tokio::task::spawn_blocking(move || bcrypt::verify(password, &h).unwrap_or(false))
                    .await
                    .unwrap_or(false)
            }
            Hash::Apr1 { salt, encoded } => apr1(password.as_bytes(), salt.as_bytes())
                .as_bytes()
                .ct_eq(encoded.as_bytes())
                .into(),
            Hash::Sha1(expected) => {
                let actual: [u8; 20] = sha1::Sha1::digest(password.as_bytes()).into();
                actual.ct_eq(&expected).into()
            }
        };
        if ok {
            if self.verified.len() >= CACHE_LIMIT {
                self.verified.clear();
            }
            self.verified.insert(id);
        }
        ok
    }
}

/// Apache's APR1 variant of md5-crypt. No maintained crate implements it; it is short and
/// pinned by the test vectors below (made with `openssl passwd -apr1` and `htpasswd -m`).
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        ctx.update(&alt[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut push = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push(
            (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c]),
            4,
        );
    }
    push(u32::from(fin[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_openssl_and_htpasswd() {
        assert_eq!(apr1(b"p@ss word", b"abcdefgh"), "aJUuGLjz3OI4ylHF//t5U1");
        assert_eq!(apr1(b"secret", b"9fAQnLI1"), "naU6Z2i7GHOxFtKg.eAWk0");
    }

    #[test]
    fn a_missing_file_is_provisioned_with_user_docker_as_registry2_does() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth/htpasswd");
        let h = Htpasswd::load(&path).unwrap();
        assert!(h.has_user("docker"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("docker:$2"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // An existing file is never replaced.
        Htpasswd::load(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[tokio::test]
    async fn verifies_every_format_and_reloads() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            "# users\nbc:$2y$05$E7zaPJtDaYl7MAZdDkJUgun8uO3cOmZQLcb4meCJzc.awaLjjBHXm\n\
             apuser:$apr1$9fAQnLI1$naU6Z2i7GHOxFtKg.eAWk0\nshauser:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\nplain:secret\n",
        )
        .unwrap();
        let h = Htpasswd::load(f.path()).unwrap();
        for user in ["bc", "apuser", "shauser"] {
            assert!(h.verify(user, "secret").await, "{user}");
            assert!(h.verify(user, "secret").await, "{user} (cached)");
            assert!(!h.verify(user, "wrong").await, "{user}");
        }
        assert!(
            !h.verify("plain", "secret").await,
            "plaintext entries are not accepted"
        );
        assert!(!h.verify("nobody", "secret").await);

        // Remove a user: after the reload check interval the cached credential is gone too.
        std::fs::write(f.path(), "apuser:$apr1$9fAQnLI1$naU6Z2i7GHOxFtKg.eAWk0\n").unwrap();
        std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
        assert!(!h.verify("bc", "secret").await);
        assert!(h.verify("apuser", "secret").await);
    }
}
