//! OpenID Connect: an issuer's discovery document and signing keys, and ID-token checks.
//!
//! Two users of it: the UI's sign-in (authorization code flow with PKCE, `auth.oidc`) and
//! workload identity (`auth.workload`: CI jobs whose ID token is their docker password).
//!
//! Built on `jsonwebtoken` (which wharf already uses for its own tokens) and `reqwest`
//! rather than the `openidconnect` crate: the provider side is only discovery, JWKS and one
//! token request, and openidconnect would add oauth2 and a second HTTP stack to a build
//! already shared by many.
//!
//! Keys rotate: a token signed with a key id the cached set lacks makes wharf fetch the
//! set again, at most once per [`REFETCH_MIN`], so forged key ids cannot make wharf hammer
//! the provider. Only asymmetric algorithms are accepted: `none` and the HMAC family
//! (whose "key" would be public) are refused before any key is looked at.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use wharf_oci::sync::lock;

/// The least time between two fetches of an issuer's keys.
const REFETCH_MIN: Duration = Duration::from_secs(10);
/// How long fetched keys are trusted before they are fetched again anyway.
const KEYS_TTL: Duration = Duration::from_secs(3600);
/// Bound on a discovery document or key set.
const DOC_LIMIT: usize = 256 * 1024;
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the OIDC provider is unavailable ({0}); try again later")]
    Unavailable(String),
    #[error("the ID token is not accepted: {0}")]
    Rejected(String),
}

fn rejected(e: impl std::fmt::Display) -> OidcError {
    OidcError::Rejected(e.to_string())
}

#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// One issuer: its discovery document and keys, fetched when first needed.
pub struct Issuer {
    pub url: String,
    http: reqwest::Client,
    discovery: tokio::sync::OnceCell<Discovery>,
    keys: Mutex<Option<Keys>>,
    /// Serialises fetches, so a burst of unknown key ids makes one request.
    fetching: tokio::sync::Mutex<()>,
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, OidcError> {
    let unavailable = |e: String| OidcError::Unavailable(format!("{url}: {e}"));
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(unavailable(format!("answered {}", resp.status())));
    }
    let body = resp.bytes().await.map_err(|e| unavailable(e.to_string()))?;
    if body.len() > DOC_LIMIT {
        return Err(unavailable("document too large".into()));
    }
    serde_json::from_slice(&body).map_err(|e| unavailable(format!("not the JSON expected: {e}")))
}

impl Issuer {
    pub fn new(url: &str) -> Result<Issuer, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Issuer {
            url: url.trim_end_matches('/').to_owned(),
            http,
            discovery: tokio::sync::OnceCell::new(),
            keys: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The discovery document; its `issuer` must be the configured one (OIDC Discovery §4.3).
    pub async fn discovery(&self) -> Result<&Discovery, OidcError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.url);
                let d: Discovery = get_json(&self.http, &url).await?;
                if d.issuer.trim_end_matches('/') != self.url {
                    return Err(OidcError::Unavailable(format!(
                        "{url} names issuer {:?}, not the configured {:?}",
                        d.issuer, self.url
                    )));
                }
                Ok(d)
            })
            .await
    }

    fn cached_key(&self, kid: Option<&str>) -> Option<jsonwebtoken::jwk::Jwk> {
        let keys = lock(&self.keys);
        let keys = keys.as_ref().filter(|k| k.fetched.elapsed() < KEYS_TTL)?;
        match kid {
            Some(kid) => keys.set.find(kid).cloned(),
            // Without a key id, only an unambiguous set will do.
            None if keys.set.keys.len() == 1 => keys.set.keys.first().cloned(),
            None => None,
        }
    }

    /// The key that signed a token: from the cache, else (or when `stale`, because the
    /// cached key did not verify) from a fresh fetch of the set, at most once per
    /// REFETCH_MIN.
    async fn key(&self, kid: Option<&str>, stale: bool) -> Result<DecodingKey, OidcError> {
        if !stale {
            if let Some(k) = self.cached_key(kid) {
                return DecodingKey::from_jwk(&k).map_err(rejected);
            }
        }
        let _one = self.fetching.lock().await;
        if !stale {
            if let Some(k) = self.cached_key(kid) {
                return DecodingKey::from_jwk(&k).map_err(rejected);
            }
        }
        let recent = lock(&self.keys)
            .as_ref()
            .is_some_and(|k| k.fetched.elapsed() < REFETCH_MIN);
        if !recent {
            let uri = self.discovery().await?.jwks_uri.clone();
            let set: JwkSet = get_json(&self.http, &uri).await?;
            tracing::info!(issuer = %self.url, keys = set.keys.len(), "OIDC signing keys fetched");
            *lock(&self.keys) = Some(Keys {
                set,
                fetched: Instant::now(),
            });
        }
        let k = self.cached_key(kid).ok_or_else(|| {
            rejected(format!(
                "no signing key {kid:?} at issuer {} (keys are refetched at most every {}s)",
                self.url,
                REFETCH_MIN.as_secs()
            ))
        })?;
        DecodingKey::from_jwk(&k).map_err(rejected)
    }

    /// Check an ID token's signature, issuer, audience and times; its claims if good.
    pub async fn verify(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| rejected(format!("malformed or unsigned (alg none is refused): {e}")))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(rejected(format!(
                "{:?} is a shared-secret algorithm; only the issuer's public keys are trusted",
                header.alg
            )));
        }
        let kid = header.kid.as_deref();
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.url, &format!("{}/", self.url)]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = LEEWAY;
        v.validate_nbf = true;
        let key = self.key(kid, false).await?;
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v) {
            Ok(d) => Ok(d.claims),
            // Providers that name no key id rotate under the same "id": a signature the
            // cached key cannot verify may be a new key's, so look once more (bounded).
            Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                let key = self.key(kid, true).await?;
                jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
                    .map(|d| d.claims)
                    .map_err(rejected)
            }
            Err(e) => Err(rejected(e)),
        }
    }
}

/// The issuer a token claims, read without trusting it, to pick the issuer to check it with.
pub fn claimed_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("iss")?
        .as_str()
        .map(|s| s.trim_end_matches('/').to_owned())
}

/// A claim as strings: a string is one, an array of strings is each.
pub fn claim_strings(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::Bool(b)) => vec![b.to_string()],
        Some(Value::Number(n)) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

/// PKCE (RFC 7636): a random verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = random_token();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// 32 random bytes, base64url: states, nonces, verifiers.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS has randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        let (v, c) = pkce();
        assert_eq!(v.len(), 43);
        let want = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&v));
        assert_eq!(c, want);
    }

    #[tokio::test]
    async fn alg_none_and_hmac_are_refused_before_any_key_is_fetched() {
        let issuer = Issuer::new("http://127.0.0.1:9").unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let claims = b64(r#"{"iss":"http://127.0.0.1:9","sub":"x","aud":"a","exp":9999999999}"#);
        let none = format!("{}.{claims}.", b64(r#"{"alg":"none"}"#));
        let hmac = format!("{}.{claims}.c2ln", b64(r#"{"alg":"HS256"}"#));
        for token in [none, hmac] {
            match issuer.verify(&token, "a").await {
                Err(OidcError::Rejected(_)) => {}
                other => panic!("{token}: {other:?}"),
            }
        }
    }
}
