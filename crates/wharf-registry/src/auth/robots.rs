//! Robot and personal tokens: machine credentials used as a docker password, scoped to
//! some repositories and actions, expiring and revocable.
//!
//! A secret is 32 random bytes (`wharf_rt_` and 43 base64url characters). Only its
//! SHA-256 is stored. A fast hash is the right one for a secret with 256 bits of entropy:
//! nobody can guess through that space, so bcrypt's slowness would buy nothing, and it
//! would cost ~100 ms of CPU on every Basic-authenticated request (docker sends the
//! password with each one). Hashes are compared in constant time.
//!
//! Records are read from the shared store (files, or PostgreSQL with a database) and
//! cached for [`FRESH`] at most, so that a revocation or an expiry made anywhere holds on
//! every replica within it. Last use is written at most once per [`USE_EVERY`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use wharf_oci::sync::lock;

use super::policy::{Actions, RepoGlob};
use super::Principal;
use crate::store::state::{TokenRecord, Tokens};

/// How every secret starts: a credential scanner (and a person) can tell what it is.
pub const SECRET_PREFIX: &str = "wharf_rt_";
/// How long a token's record is trusted before it is read again.
pub const FRESH: Duration = Duration::from_millis(500);
/// How often a token's last use is written.
pub const USE_EVERY: Duration = Duration::from_secs(60);

/// One `repository-glob:actions` scope.
#[derive(Debug, Clone)]
pub struct Scope {
    pub repositories: RepoGlob,
    pub actions: Actions,
}

/// Parse `team/*:pull,push` (actions: pull, push, delete, `*`).
pub fn parse_scope(text: &str) -> Result<Scope, String> {
    let (glob, actions) = text.trim().rsplit_once(':').ok_or_else(|| {
        format!("scope {text:?} is not `repositories:actions` (e.g. `team/*:pull,push`)")
    })?;
    let mut granted = Actions::NONE;
    for word in actions.split(',').map(str::trim) {
        let a = Actions::from_words([word]);
        if a.is_empty() {
            return Err(format!(
                "scope {text:?}: unknown action {word:?} (use pull, push, delete or *)"
            ));
        }
        granted |= a;
    }
    if glob.is_empty() {
        return Err(format!("scope {text:?} names no repositories"));
    }
    let repositories = RepoGlob::new(glob).map_err(|e| format!("scope {text:?}: {e}"))?;
    Ok(Scope {
        repositories,
        actions: granted,
    })
}

/// A token that checked out: what it may do.
#[derive(Debug, Clone)]
pub struct Robot {
    pub name: String,
    /// A personal token's user: it may never do more than they may.
    pub owner: Option<String>,
    /// The owner's directory groups when the token was made (see `TokenRecord`).
    pub owner_groups: Vec<String>,
    pub scopes: Vec<Scope>,
}

impl Robot {
    /// What the scopes allow in `repo` (the owner's own access is the caller's to apply).
    pub fn scoped(&self, repo: &str) -> Actions {
        self.scopes
            .iter()
            .filter(|s| s.repositories.is_match(repo))
            .fold(Actions::NONE, |acc, s| acc | s.actions)
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("randomness");
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!("{SECRET_PREFIX}{text}")
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Why a token is refused, for messages and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("token {0:?} was revoked")]
    Revoked(String),
    #[error("token {0:?} has expired")]
    Expired(String),
    #[error("wrong secret for token {0:?}")]
    WrongSecret(String),
    #[error("the token store is unavailable: {0}")]
    Unavailable(String),
}

/// Whether a record may be used now; the robot it describes when so.
pub fn usable(record: &TokenRecord, now: u64) -> Result<Robot, Refused> {
    if record.revoked.is_some() {
        return Err(Refused::Revoked(record.name.clone()));
    }
    if record.expires.is_some_and(|e| e <= now) {
        return Err(Refused::Expired(record.name.clone()));
    }
    let scopes = record
        .scopes
        .iter()
        .filter_map(|s| parse_scope(s).ok())
        .collect();
    Ok(Robot {
        name: record.name.clone(),
        owner: record.owner.clone(),
        owner_groups: record.owner_groups.clone(),
        scopes,
    })
}

/// Tokens as `Auth` checks them: from the store, briefly cached.
pub struct Robots {
    store: Arc<dyn Tokens>,
    cache: Mutex<HashMap<String, (Instant, Option<TokenRecord>)>>,
    used: Mutex<HashMap<String, Instant>>,
}

impl Robots {
    pub fn new(store: Arc<dyn Tokens>) -> Robots {
        Robots {
            store,
            cache: Mutex::default(),
            used: Mutex::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Tokens> {
        &self.store
    }

    async fn record(&self, name: &str) -> Result<Option<TokenRecord>, Refused> {
        if let Some((at, r)) = lock(&self.cache).get(name) {
            if at.elapsed() < FRESH {
                return Ok(r.clone());
            }
        }
        let r = self
            .store
            .token(name)
            .await
            .map_err(|e| Refused::Unavailable(e.to_string()))?;
        let mut cache = lock(&self.cache);
        // Bounded: names that are not tokens are cached too, so a flood of them is cut.
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(name.to_owned(), (Instant::now(), r.clone()));
        Ok(r)
    }

    /// `name` and `secret` as a docker login sends them. Ok(None) when `name` is no token
    /// (another identity source may know it); Err when it is one and is refused.
    pub async fn check(&self, name: &str, secret: &str) -> Result<Option<Robot>, Refused> {
        let Some(record) = self.record(name).await? else {
            return Ok(None);
        };
        let given = hash_secret(secret);
        if !bool::from(given.as_bytes().ct_eq(record.hash.as_bytes())) {
            return Err(Refused::WrongSecret(name.to_owned()));
        }
        let robot = usable(&record, now_secs())?;
        self.mark_used(name);
        Ok(Some(robot))
    }

    /// The robot `name` if its token is still usable: what a bearer token issued to it
    /// is checked against, so that revoking it ends its bearer tokens too.
    pub async fn active(&self, name: &str) -> Result<Robot, Refused> {
        match self.record(name).await? {
            Some(r) => usable(&r, now_secs()),
            None => Err(Refused::Revoked(name.to_owned())),
        }
    }

    fn mark_used(&self, name: &str) {
        {
            let mut used = lock(&self.used);
            if used.get(name).is_some_and(|t| t.elapsed() < USE_EVERY) {
                return;
            }
            used.insert(name.to_owned(), Instant::now());
        }
        let (store, name) = (self.store.clone(), name.to_owned());
        // Off the request's path: a lost stamp costs a less precise "last used".
        tokio::spawn(async move {
            if let Err(e) = store.token_used(&name, now_secs()).await {
                tracing::warn!(token = %name, error = %e, "cannot record the token's last use");
            }
        });
    }

    /// Forget what is cached about `name` (after this process revoked it).
    pub fn forget(&self, name: &str) {
        lock(&self.cache).remove(name);
    }
}

/// A new token's record and its secret, which is shown once and never stored.
pub fn mint(
    name: &str,
    owner: Option<&Principal>,
    scopes: &[String],
    lifetime: Option<Duration>,
) -> Result<(TokenRecord, String), String> {
    check_name(name)?;
    if scopes.is_empty() {
        return Err("a token needs at least one --scope (e.g. `team/*:pull,push`)".into());
    }
    for s in scopes {
        parse_scope(s)?;
    }
    let secret = new_secret();
    let created = now_secs();
    let record = TokenRecord {
        name: name.to_owned(),
        owner: owner.map(|o| o.name.clone()),
        owner_groups: owner.map(|o| o.groups.clone()).unwrap_or_default(),
        scopes: scopes.iter().map(|s| s.trim().to_owned()).collect(),
        hash: hash_secret(&secret),
        created,
        expires: lifetime.map(|l| created.saturating_add(l.as_secs())),
        revoked: None,
        last_used: None,
    };
    Ok((record, secret))
}

/// A name docker can send as a user name and a log can show: letters, digits, `.-_@+`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token name {name:?}: use 1 to 64 letters, digits and . _ - @ +"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_bound_what_a_token_does() {
        let s = parse_scope("team/*:pull,push").unwrap();
        assert!(s.repositories.is_match("team/app"));
        assert!(!s.repositories.is_match("other/x"));
        assert_eq!(s.actions, Actions::PULL | Actions::PUSH);
        assert!(parse_scope("team/*").is_err());
        assert!(parse_scope("team/*:fly").is_err());
        assert!(parse_scope(":pull").is_err());
        let (record, secret) = mint(
            "ci",
            None,
            &["team/*:pull,push".into()],
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        assert!(secret.starts_with(SECRET_PREFIX));
        assert!(!serde_json::to_string(&record).unwrap().contains(&secret));
        let robot = usable(&record, record.created).unwrap();
        assert_eq!(robot.scoped("team/app"), Actions::PULL | Actions::PUSH);
        assert_eq!(robot.scoped("other/x"), Actions::NONE);
        assert!(matches!(
            usable(&record, record.created + 61),
            Err(Refused::Expired(_))
        ));
        assert!(mint("a b", None, &["x:pull".into()], None).is_err());
        assert!(mint("ci", None, &[], None).is_err());
    }
}
