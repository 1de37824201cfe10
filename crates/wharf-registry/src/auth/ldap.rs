//! `auth.ldap`: users and their groups from an LDAP directory.
//!
//! A login is the usual search-then-bind: wharf binds with its own account (`binddn`),
//! finds the user's entry with `userfilter` (the user name escaped per RFC 4515, so
//! `*)(uid=*` is a literal name, not a filter), binds as that entry with the password, and
//! reads the groups from the entry's `memberOf` (or searches `groupbasedn`). The directory
//! is only ever reached over TLS: `ldaps://`, or StartTLS on `ldap://`.
//!
//! Successful logins are remembered for `cachettl` under an HMAC of user and password (as
//! htpasswd checks are), so a push does not bind once per request, and users who logged in
//! recently keep working while the directory is down. A new login while it is down is
//! [`LdapError::Unavailable`], which the front ends answer with 503, never 401: the
//! password may well be right.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hmac::{Hmac, Mac};
use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use sha2::Sha256;

/// Bound on remembered logins; the cache starts over beyond it.
const CACHE_LIMIT: usize = 10_000;
/// User names longer than this are refused before the directory is asked.
const NAME_LIMIT: usize = 256;

/// `auth.ldap` as the loader hands it over.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// `ldap://host:port` (StartTLS) or `ldaps://host:port`.
    pub url: String,
    /// PEM certificates to trust for the directory instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// wharf's own account for searching; None searches anonymously.
    pub bind: Option<(String, String)>,
    pub basedn: String,
    /// With `{username}` where the escaped user name goes.
    pub userfilter: String,
    pub groups: GroupSource,
    pub cachettl: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum GroupSource {
    /// Group DNs in an attribute of the user's entry (`memberOf`).
    Attribute(String),
    /// Entries under `basedn` that match `filter` (`{dn}` is the user's escaped DN); a
    /// group's name is its `name` attribute.
    Search {
        basedn: String,
        filter: String,
        name: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("the LDAP directory is unavailable ({0}); try again later, or sign in with a local (htpasswd) account")]
    Unavailable(String),
}

pub struct Directory {
    config: LdapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// HMAC(user, password) → (the user's groups, when the entry expires).
    verified: DashMap<[u8; 32], (Vec<String>, Instant)>,
    /// User name → groups, for refresh tokens (no password to check then).
    known: DashMap<String, (Vec<String>, Instant)>,
    cache_key: [u8; 32],
}

fn unavailable(e: impl std::fmt::Display) -> LdapError {
    LdapError::Unavailable(e.to_string())
}

/// A group's name from its DN: the value of the first RDN (`cn=devs,ou=groups,...` → `devs`).
fn group_name(dn: &str) -> &str {
    let first = dn.split(',').next().unwrap_or(dn);
    first.split_once('=').map_or(first, |(_, v)| v).trim()
}

fn client_tls(ca: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read auth.ldap.ca {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("auth.ldap.ca {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("auth.ldap.ca {}: {e}", ca.display()))?;
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

impl Directory {
    pub fn new(config: LdapConfig) -> Result<Directory, String> {
        if !(config.url.starts_with("ldap://") || config.url.starts_with("ldaps://")) {
            return Err(format!(
                "auth.ldap.url {:?} must be ldap:// (with StartTLS) or ldaps://",
                config.url
            ));
        }
        if !config.userfilter.contains("{username}") {
            return Err(
                "auth.ldap.userfilter must contain {username}, e.g. (uid={username})".into(),
            );
        }
        let tls = config
            .ca
            .as_deref()
            .map(client_tls)
            .transpose()?
            .map(Arc::new);
        let mut cache_key = [0u8; 32];
        getrandom::fill(&mut cache_key)
            .map_err(|e| format!("no randomness for the LDAP cache: {e}"))?;
        Ok(Directory {
            config,
            tls,
            verified: DashMap::new(),
            known: DashMap::new(),
            cache_key,
        })
    }

    fn cache_id(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cache_key).expect("any key");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Check `user`'s password against the directory; Ok holds the user's groups.
    pub async fn login(&self, user: &str, password: &str) -> Result<Vec<String>, LdapError> {
        // An empty password is an "unauthenticated bind", which servers report as success.
        if password.is_empty()
            || user.is_empty()
            || user.len() > NAME_LIMIT
            || user.chars().any(char::is_control)
        {
            return Err(LdapError::BadCredentials);
        }
        let id = self.cache_id(user, password);
        if let Some(hit) = self.verified.get(&id) {
            if hit.1 > Instant::now() {
                return Ok(hit.0.clone());
            }
        }
        let groups = self.check(user, Some(password)).await?;
        let expires = Instant::now() + self.config.cachettl;
        if self.verified.len() >= CACHE_LIMIT {
            self.verified.clear();
        }
        self.verified.insert(id, (groups.clone(), expires));
        self.remember(user, &groups, expires);
        Ok(groups)
    }

    /// The groups of a user that exists in the directory (for a refresh token, which
    /// carries no password), or BadCredentials when it no longer does.
    pub async fn lookup(&self, user: &str) -> Result<Vec<String>, LdapError> {
        if let Some(hit) = self.known.get(user) {
            if hit.1 > Instant::now() {
                return Ok(hit.0.clone());
            }
        }
        let groups = self.check(user, None).await?;
        self.remember(user, &groups, Instant::now() + self.config.cachettl);
        Ok(groups)
    }

    fn remember(&self, user: &str, groups: &[String], expires: Instant) {
        if self.known.len() >= CACHE_LIMIT {
            self.known.clear();
        }
        self.known
            .insert(user.to_owned(), (groups.to_vec(), expires));
    }

    async fn connect(&self) -> Result<Ldap, LdapError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.timeout)
            .set_starttls(self.config.url.starts_with("ldap://"));
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(unavailable)?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// Find the user's entry, bind as it when a password is given, and read its groups.
    async fn check(&self, user: &str, password: Option<&str>) -> Result<Vec<String>, LdapError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.config.timeout * 3, async {
            let mut ldap = self.connect().await?;
            let outcome = self.find_and_bind(&mut ldap, user, password).await;
            let _ = ldap.unbind().await;
            outcome
        })
        .await
        .unwrap_or_else(|_| Err(unavailable("no answer in time")));
        match &result {
            Err(LdapError::Unavailable(e)) => {
                tracing::warn!(url = %self.config.url, error = %e, "LDAP directory unavailable")
            }
            Err(LdapError::BadCredentials) => tracing::info!(user, "LDAP login refused"),
            Ok(groups) => tracing::debug!(
                user,
                groups = groups.len(),
                ms = started.elapsed().as_millis() as u64,
                "LDAP login"
            ),
        }
        result
    }

    async fn find_and_bind(
        &self,
        ldap: &mut Ldap,
        user: &str,
        password: Option<&str>,
    ) -> Result<Vec<String>, LdapError> {
        if let Some((dn, pw)) = &self.config.bind {
            ldap.simple_bind(dn, pw)
                .await
                .map_err(unavailable)?
                .success()
                .map_err(|e| {
                    unavailable(format!("wharf's own bind (auth.ldap.binddn) failed: {e}"))
                })?;
        }
        let filter = self
            .config
            .userfilter
            .replace("{username}", &ldap_escape(user));
        let attribute = match &self.config.groups {
            GroupSource::Attribute(a) => a.as_str(),
            GroupSource::Search { .. } => "1.1",
        };
        let (entries, _) = ldap
            .search(
                &self.config.basedn,
                Scope::Subtree,
                &filter,
                vec![attribute],
            )
            .await
            .map_err(unavailable)?
            .success()
            .map_err(unavailable)?;
        // No entry, or an ambiguous filter: no login either way.
        let [entry] = <[_; 1]>::try_from(entries).map_err(|_| LdapError::BadCredentials)?;
        let entry = SearchEntry::construct(entry);
        if let Some(pw) = password {
            let bound = ldap.simple_bind(&entry.dn, pw).await.map_err(unavailable)?;
            match bound.rc {
                0 => {}
                // invalidCredentials, inappropriateAuthentication, unwillingToPerform
                49 | 48 | 53 => return Err(LdapError::BadCredentials),
                _ => return Err(unavailable(bound)),
            }
        }
        let mut groups: Vec<String> = match &self.config.groups {
            GroupSource::Attribute(a) => entry
                .attrs
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(a))
                .flat_map(|(_, v)| v.iter().map(|dn| group_name(dn).to_owned()))
                .collect(),
            GroupSource::Search {
                basedn,
                filter,
                name,
            } => {
                // Search groups with wharf's own account, not the user's.
                if let Some((dn, pw)) = &self.config.bind {
                    ldap.simple_bind(dn, pw).await.map_err(unavailable)?;
                }
                let filter = filter.replace("{dn}", &ldap_escape(entry.dn.as_str()));
                let (found, _) = ldap
                    .search(basedn, Scope::Subtree, &filter, vec![name.as_str()])
                    .await
                    .map_err(unavailable)?
                    .success()
                    .map_err(unavailable)?;
                found
                    .into_iter()
                    .map(SearchEntry::construct)
                    .flat_map(|e| e.attrs.into_values().flatten())
                    .collect()
            }
        };
        groups.sort();
        groups.dedup();
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_come_from_the_first_rdn() {
        assert_eq!(group_name("cn=devs,ou=groups,dc=example,dc=test"), "devs");
        assert_eq!(group_name("CN=Ops Team,OU=x"), "Ops Team");
        assert_eq!(group_name("plain"), "plain");
    }

    #[test]
    fn user_names_are_escaped_in_filters() {
        let f = "(uid={username})".replace("{username}", &ldap_escape("*)(uid=*"));
        assert_eq!(f, "(uid=\\2a\\29\\28uid=\\2a)");
    }
}
