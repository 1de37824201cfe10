//! Bearer tokens from a registry's token server (the Docker token protocol), and a cache
//! of them so that checking a hundred images does not ask for a hundred tokens.
//!
//! A token is kept for `expires_in` seconds (60 when the server does not say, as the spec
//! prescribes) less a safety margin, counted from when we sent the request — not from the
//! server's `issued_at`, which would make a skewed clock hand us expired tokens. The cache
//! is keyed by realm, service, scope and the user asking, and fetches at most once per key
//! at a time: concurrent callers wait for the one request in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use wharf_oci::sync::lock;

use crate::challenge::BearerChallenge;
use crate::credentials::{Credential, Secret};

/// The lifetime the spec gives a token whose response has no `expires_in`.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(60);
/// The most we shave off a lifetime; short lifetimes lose 10% instead.
pub const MAX_SAFETY_MARGIN: Duration = Duration::from_secs(5);
/// `client_id` for the OAuth2 refresh-token grant; servers use it only for logging.
const CLIENT_ID: &str = "wharf";
/// How much of a token server's error body goes into an error.
const MAX_DETAIL: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token realm {realm:?} is not an http(s) URL; the registry's WWW-Authenticate challenge is wrong, or a proxy rewrote it")]
    BadRealm { realm: String },
    #[error(
        "cannot reach token server {realm}: {source}; check the network path and TLS trust to it"
    )]
    Request {
        realm: String,
        source: reqwest::Error,
    },
    #[error("token server {realm} refused the request ({status}): {detail}; check the credentials for this registry (REPO_USER/REPO_PASS or docker login)")]
    Refused {
        realm: String,
        status: u16,
        detail: String,
    },
    #[error("token server {realm} answered {status} without a usable token ({detail}); it does not speak the Docker token protocol")]
    BadResponse {
        realm: String,
        status: u16,
        detail: String,
    },
}

/// A token server's answer.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub token: Secret,
    /// Seconds from issue, as sent; `None` when absent (or not a positive number).
    pub expires_in: Option<u64>,
    /// RFC 3339, as sent; informational (see the module docs for why we do not use it).
    pub issued_at: Option<String>,
    /// A new refresh token, when the server rotates them or `access_type=offline` was asked.
    pub refresh_token: Option<Secret>,
}

impl TokenResponse {
    /// How long the token may be used, counted from the request: `expires_in` (or 60 s)
    /// less 10% of it, at most 5 s, so a token is never sent in its last moments.
    pub fn usable_for(&self) -> Duration {
        usable_for(self.expires_in)
    }
}

pub fn usable_for(expires_in: Option<u64>) -> Duration {
    let lifetime = match expires_in {
        Some(s) if s > 0 => Duration::from_secs(s),
        _ => DEFAULT_EXPIRES_IN,
    };
    lifetime - (lifetime / 10).min(MAX_SAFETY_MARGIN)
}

#[derive(Deserialize)]
struct RawResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<serde_json::Number>,
    issued_at: Option<String>,
    refresh_token: Option<String>,
}

/// Ask `realm` for a token for `scopes` of `service`:
/// - anonymous or `Basic` credentials: `GET realm?service=..&scope=..&scope=..`;
/// - an identity token: OAuth2 `POST realm` with `grant_type=refresh_token`, as docker does.
pub async fn fetch_token(
    client: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scopes: &[&str],
    credential: Option<&Credential>,
) -> Result<TokenResponse, TokenError> {
    let url = reqwest::Url::parse(realm)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| TokenError::BadRealm {
            realm: realm.to_owned(),
        })?;
    let request = match credential {
        Some(Credential::IdentityToken { token, .. }) => {
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token.expose()),
                ("client_id", CLIENT_ID),
            ];
            if let Some(s) = service {
                form.push(("service", s));
            }
            // OAuth2 joins scopes with spaces in one parameter.
            let scope = scopes.join(" ");
            if !scope.is_empty() {
                form.push(("scope", &scope));
            }
            client.post(url).form(&form)
        }
        other => {
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = service {
                query.push(("service", s));
            }
            query.extend(scopes.iter().map(|s| ("scope", *s)));
            let request = client.get(url).query(&query);
            match other {
                Some(Credential::Basic { username, password }) => {
                    request.basic_auth(username, Some(password.expose()))
                }
                _ => request,
            }
        }
    };
    let request_error = |source: reqwest::Error| TokenError::Request {
        realm: realm.to_owned(),
        // The URL holds only service and scope, but keep errors free of it anyway.
        source: source.without_url(),
    };
    let response = request.send().await.map_err(request_error)?;
    let status = response.status();
    let body = response.bytes().await.map_err(request_error)?;
    if !status.is_success() {
        return Err(TokenError::Refused {
            realm: realm.to_owned(),
            status: status.as_u16(),
            detail: error_detail(&body),
        });
    }
    let bad = |detail: String| TokenError::BadResponse {
        realm: realm.to_owned(),
        status: status.as_u16(),
        detail,
    };
    // serde_json's message names a position, never the content, so no token can leak.
    let raw: RawResponse = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let token = raw
        .token
        .filter(|t| !t.is_empty())
        .or(raw.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| bad("no token or access_token field".into()))?;
    Ok(TokenResponse {
        token: Secret::new(token),
        expires_in: raw.expires_in.and_then(|n| {
            n.as_u64()
                .or_else(|| n.as_f64().filter(|f| *f > 0.0).map(|f| f as u64))
        }),
        issued_at: raw.issued_at,
        refresh_token: raw.refresh_token.map(Secret::new),
    })
}

/// The spec's `{"errors":[{"code","message"}]}` or OAuth2's `{"error","error_description"}`,
/// else the start of the body.
fn error_detail(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(errors) = v["errors"].as_array() {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["code"].as_str().unwrap_or("ERROR"),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
        if let Some(e) = v["error"].as_str() {
            return match v["error_description"].as_str() {
                Some(d) => format!("{e}: {d}"),
                None => e.to_owned(),
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(MAX_DETAIL) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "empty body".into(),
        None => text.to_owned(),
    }
}

/// What a cached token is for. The user is part of the key because two users (or a user
/// and an anonymous caller) get different grants for the same scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub realm: String,
    pub service: String,
    /// Scopes, space-separated, in the order asked.
    pub scope: String,
    /// The user name the token was asked for as (`""` when anonymous).
    pub principal: String,
}

impl TokenKey {
    pub fn new(
        challenge: &BearerChallenge,
        scopes: &[&str],
        credential: Option<&Credential>,
    ) -> TokenKey {
        let principal = match credential {
            None => String::new(),
            Some(Credential::Basic { username, .. }) => format!("basic:{username}"),
            Some(Credential::IdentityToken { username, .. }) => format!("token:{username}"),
        };
        TokenKey {
            realm: challenge.realm.clone(),
            service: challenge.service.clone().unwrap_or_default(),
            scope: scopes.join(" "),
            principal,
        }
    }
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    valid_until: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Bearer tokens by [`TokenKey`], shared by every request of a client.
pub struct TokenCache {
    client: reqwest::Client,
    slots: Mutex<HashMap<TokenKey, Slot>>,
    fetches: AtomicU64,
}

impl TokenCache {
    pub fn new(client: reqwest::Client) -> TokenCache {
        TokenCache {
            client,
            slots: Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many requests went to token servers: lets tests prove a cache hit.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A token answering `challenge` for `scopes` (the challenge's own scope when empty),
    /// from the cache while it is usable, else fetched.
    pub async fn token(
        &self,
        challenge: &BearerChallenge,
        scopes: &[&str],
        credential: Option<&Credential>,
    ) -> Result<Secret, TokenError> {
        let challenge_scopes: Vec<&str> = challenge.scopes().collect();
        let scopes = if scopes.is_empty() {
            &challenge_scopes[..]
        } else {
            scopes
        };
        let key = TokenKey::new(challenge, scopes, credential);
        let slot = self.slot(&key);
        // Held across the fetch: concurrent callers for this key wait and then hit.
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.valid_until) {
            return Ok(c.token.clone());
        }
        let asked_at = Instant::now();
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let response = fetch_token(
            &self.client,
            &challenge.realm,
            challenge.service.as_deref(),
            scopes,
            credential,
        )
        .await?;
        tracing::debug!(realm = %key.realm, scope = %key.scope, expires_in = ?response.expires_in, "fetched a registry token");
        let entry = Cached {
            token: response.token.clone(),
            valid_until: asked_at + response.usable_for(),
        };
        *cached = Some(entry);
        Ok(response.token)
    }

    /// The registry refused `rejected` (401): drop it so the next `token` call fetches a
    /// new one. A token another caller already replaced it with is kept.
    pub async fn invalidate(&self, key: &TokenKey, rejected: &Secret) {
        let slot = self.slot(key);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == rejected) {
            *cached = None;
        }
    }

    /// Drop every token that can no longer be used, so long-running processes that touch
    /// many repositories do not grow the map forever.
    pub fn purge_expired(&self) {
        let now = Instant::now();
        let mut slots = lock(&self.slots);
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(c) => c.as_ref().is_some_and(|c| now < c.valid_until),
            // In use right now: keep it.
            Err(_) => true,
        });
    }

    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, key: &TokenKey) -> Slot {
        // A poisoned map is still a valid map: a panic elsewhere must not disable auth.
        let mut slots = lock(&self.slots);
        slots.entry(key.clone()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_default_to_sixty_seconds_less_a_margin() {
        assert_eq!(usable_for(None), Duration::from_secs(55));
        assert_eq!(usable_for(Some(0)), Duration::from_secs(55));
        assert_eq!(usable_for(Some(300)), Duration::from_secs(295));
        assert_eq!(usable_for(Some(2)), Duration::from_millis(1800));
        assert_eq!(usable_for(Some(30)), Duration::from_secs(27));
    }

    #[test]
    fn error_details_from_spec_and_oauth_bodies() {
        assert_eq!(
            error_detail(br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad password"}]}"#),
            "UNAUTHORIZED: bad password"
        );
        assert_eq!(
            error_detail(br#"{"error":"invalid_grant","error_description":"expired"}"#),
            "invalid_grant: expired"
        );
        assert_eq!(error_detail(b""), "empty body");
        assert_eq!(error_detail(&[b'x'; 400]).chars().count(), MAX_DETAIL + 1);
    }

    #[test]
    fn keys_separate_users_and_scopes() {
        let c = BearerChallenge {
            realm: "https://t/token".into(),
            service: Some("s".into()),
            scope: Some("repository:a:pull".into()),
            error: None,
            error_description: None,
        };
        let alice = Credential::Basic {
            username: "alice".into(),
            password: Secret::new("pw"),
        };
        let anon = TokenKey::new(&c, &["repository:a:pull"], None);
        assert_ne!(
            anon,
            TokenKey::new(&c, &["repository:a:pull"], Some(&alice))
        );
        assert_ne!(anon, TokenKey::new(&c, &["repository:a:push"], None));
        assert_eq!(anon, TokenKey::new(&c, &["repository:a:pull"], None));
    }

    #[tokio::test]
    async fn a_realm_must_be_an_http_url() {
        let client = reqwest::Client::new();
        for realm in ["", "ftp://x/token", "not a url"] {
            let err = fetch_token(&client, realm, None, &[], None)
                .await
                .expect_err(realm);
            assert!(matches!(err, TokenError::BadRealm { .. }), "{err}");
        }
    }
}
