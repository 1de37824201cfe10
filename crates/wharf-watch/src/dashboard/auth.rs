//! Who may use the dashboard, and proof that a form came from it. As the registry UI
//! (wharf-registry's ui/session.rs, which this crate cannot depend on): a signed session
//! cookie (HMAC-SHA256 over the user and its expiry), and CSRF tokens that are the HMAC
//! of a random per-browser cookie and the session, so a token is bound to one browser
//! and one sign-in. Cookies are HttpOnly and SameSite=Strict. The key is random per
//! process: a restarted watcher signs everyone out, which its one process can afford.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const SESSION: &str = "wharf_watch_session";
pub const CSRF: &str = "wharf_watch_csrf";
const TTL: Duration = Duration::from_secs(12 * 3600);

type HmacSha256 = Hmac<Sha256>;

pub struct Keys {
    session: [u8; 32],
    csrf: [u8; 32],
}

fn random() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS has randomness");
    b
}

pub fn random_hex() -> String {
    hex::encode(random())
}

fn mac_hex(key: &[u8; 32], parts: &[&str]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p.as_bytes());
        mac.update(&[0]);
    }
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Default for Keys {
    fn default() -> Keys {
        Keys {
            session: random(),
            csrf: random(),
        }
    }
}

impl Keys {
    /// A session cookie's value for `user`: `hex(user).expires.mac`.
    pub fn seal(&self, user: &str) -> String {
        let name = hex::encode(user);
        let expires = (now() + TTL.as_secs()).to_string();
        let mac = mac_hex(&self.session, &[&name, &expires]);
        format!("{name}.{expires}.{mac}")
    }

    /// The user a session cookie names, if its MAC checks and it has not expired.
    pub fn open(&self, value: &str) -> Option<String> {
        let [name, expires, mac] = value.split('.').collect::<Vec<_>>()[..] else {
            return None;
        };
        let want = mac_hex(&self.session, &[name, expires]);
        if !bool::from(want.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        if expires.parse::<u64>().ok()? <= now() {
            return None;
        }
        String::from_utf8(hex::decode(name).ok()?).ok()
    }

    pub fn csrf_token(&self, csrf_cookie: &str, session: &str) -> String {
        mac_hex(&self.csrf, &[csrf_cookie, session])
    }

    pub fn csrf_ok(&self, sent: &str, csrf_cookie: &str, session: &str) -> bool {
        let want = self.csrf_token(csrf_cookie, session);
        !csrf_cookie.is_empty() && bool::from(want.as_bytes().ct_eq(sent.as_bytes()))
    }
}

/// People who may sign in: an htpasswd file of bcrypt hashes (`htpasswd -B`).
#[derive(Default)]
pub struct Users(HashMap<String, String>);

impl Users {
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --dashboard-users {}: {e}", path.display()))?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line.split_once(':').ok_or_else(|| {
                format!("{}:{}: expected user:bcrypt-hash", path.display(), i + 1)
            })?;
            if !hash.starts_with("$2") {
                return Err(format!(
                    "{}:{}: only bcrypt hashes are accepted (make them with `htpasswd -B`)",
                    path.display(),
                    i + 1
                ));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Users(users))
    }

    /// Whether `password` is `user`'s. An unknown user costs a bcrypt check too, so the
    /// answer's timing does not tell which users exist.
    pub fn check(&self, user: &str, password: &str) -> bool {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        match self.0.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let dummy = DUMMY.get_or_init(|| bcrypt::hash("-", 10).unwrap_or_default());
                let _ = bcrypt::verify(password, dummy);
                false
            }
        }
    }
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// HttpOnly, SameSite=Strict, scoped to the dashboard.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/dashboard; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).expect("cookie values are hex")
}

pub fn session_ttl() -> u64 {
    TTL.as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_signed_and_csrf_tokens_bound() {
        let k = Keys::default();
        let v = k.seal("ops");
        assert_eq!(k.open(&v).as_deref(), Some("ops"));
        assert!(Keys::default().open(&v).is_none(), "another key refuses it");
        let forged = v.replacen(&hex::encode("ops"), &hex::encode("admin"), 1);
        assert!(k.open(&forged).is_none());
        let t = k.csrf_token("c1", &v);
        assert!(k.csrf_ok(&t, "c1", &v));
        assert!(!k.csrf_ok(&t, "c2", &v));
        assert!(!k.csrf_ok("", "c1", &v));
        assert!(!k.csrf_ok(&t, "", &v));
    }

    #[test]
    fn users_are_bcrypt_lines_of_an_htpasswd_file() {
        let dir = std::env::temp_dir().join(format!("wharf-dash-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&file, format!("# people\nops:{hash}\n")).unwrap();
        let users = Users::load(&file).unwrap();
        assert!(users.check("ops", "s3cret"));
        assert!(!users.check("ops", "wrong"));
        assert!(!users.check("nobody", "s3cret"));
        std::fs::write(&file, "ops:{SHA}abc\n").unwrap();
        let Err(e) = Users::load(&file) else {
            panic!("a non-bcrypt line was accepted")
        };
        assert!(e.contains("htpasswd -B"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
