//! A client for one registry: TLS trust as docker has it, the 401 → challenge → credentials
//! or token → retry flow, the read/delete operations, and streamed transfers.
//!
//! One `RegistryClient` talks to one registry, so the scheme it settled on, the challenge
//! the registry sent and the credential it found are learned once and reused by every call.

mod chunked;
mod error;
pub mod insecure;
mod ops;
mod referrers;
mod response;
pub mod tls;
mod transfer;

use std::path::PathBuf;
use std::sync::Mutex;

use reqwest::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use wharf_oci::sync::lock;

pub use error::ClientError;
pub use ops::{Manifest, MANIFEST_ACCEPT};
pub use transfer::{verified_stream, BlobStream, Mount};

use crate::challenge::Challenge;
use crate::credentials::{Credential, CredentialSource, Found, Origin, Secret};
use crate::reference::Registry;
use crate::token_cache::{TokenCache, TokenError, TokenKey};

/// How to reach registries: trust and plain-http policy.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `--registry-ca`: an extra PEM bundle trusted for every registry.
    pub ca_bundle: Option<PathBuf>,
    /// docker's per-registry CA directory; a temp dir in tests.
    pub certs_dir: PathBuf,
    /// `--insecure`: accept any certificate and fall back to plain http.
    pub insecure: bool,
    /// Registries treated as `--insecure`: `host[:port]` names or CIDRs, as in
    /// daemon.json's `insecure-registries`.
    pub insecure_registries: Vec<String>,
    /// Registries to reach over plain http only (`wharf catalog http://host:port`).
    pub plain_http: Vec<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_bundle: None,
            certs_dir: PathBuf::from(tls::DOCKER_CERTS_DIR),
            insecure: false,
            insecure_registries: Vec::new(),
            plain_http: Vec::new(),
        }
    }
}

/// What we showed the registry on a request, to know what a 401 means.
enum Sent {
    Nothing,
    Basic,
    Bearer { key: TokenKey, token: Secret },
}

pub struct RegistryClient {
    registry: Registry,
    http: reqwest::Client,
    tokens: TokenCache,
    insecure: bool,
    /// Asked for plain http by scheme: no https attempt at all.
    plain_http: bool,
    certs_dir: PathBuf,
    /// `https://host` or, once an insecure registry refused TLS, `http://host`.
    base: Mutex<Option<Url>>,
    /// The last challenge the registry sent, so later requests authenticate up front.
    challenge: Mutex<Option<Challenge>>,
    credentials: Credentials,
}

enum Credentials {
    /// Looked up on first need (a helper is a process to run), then kept.
    Lookup {
        source: CredentialSource,
        found: Mutex<Option<Option<Found>>>,
    },
    /// Given by the caller: `wharf login` checks a credential before storing it.
    Fixed(Option<Found>),
}

impl RegistryClient {
    /// A client for `registry` using the credentials `source` finds for it.
    pub fn new(
        registry: Registry,
        options: &ClientOptions,
        source: CredentialSource,
    ) -> Result<RegistryClient, ClientError> {
        Self::build(
            registry,
            options,
            Credentials::Lookup {
                source,
                found: Mutex::new(None),
            },
        )
    }

    /// A client that shows `credential` (for `wharf login`), or nothing when `None`.
    pub fn with_credential(
        registry: Registry,
        options: &ClientOptions,
        credential: Option<Credential>,
    ) -> Result<RegistryClient, ClientError> {
        let found = credential.map(|credential| Found {
            credential,
            origin: Origin::Environment,
        });
        Self::build(registry, options, Credentials::Fixed(found))
    }

    fn build(
        registry: Registry,
        options: &ClientOptions,
        credentials: Credentials,
    ) -> Result<RegistryClient, ClientError> {
        let host = registry.api_host().to_owned();
        let plain_http = options
            .plain_http
            .iter()
            .any(|r| r == &host || r == registry.as_str());
        let listed = insecure::InsecureList::new(&options.insecure_registries);
        let insecure = options.insecure
            || plain_http
            || listed.contains(&host)
            || listed.contains(registry.as_str());
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(15));
        if let Some(path) = &options.ca_bundle {
            for cert in tls::load_ca(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        for cert in tls::docker_certs(&options.certs_dir, &host) {
            builder = builder.add_root_certificate(cert);
        }
        if insecure {
            // Docker's meaning of an insecure registry: TLS without verification, or http.
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(RegistryClient {
            registry,
            tokens: TokenCache::new(http.clone()),
            http,
            insecure,
            plain_http,
            certs_dir: options.certs_dir.clone(),
            base: Mutex::new(None),
            challenge: Mutex::new(None),
            credentials,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The token cache, shared by every request: lets tests count token fetches.
    pub fn token_cache(&self) -> &TokenCache {
        &self.tokens
    }

    /// Look credentials up again on the next request: a long-running watcher calls this
    /// before each check so an edited config.json or a rotated helper secret applies
    /// without a restart. Cached tokens stay valid: their key names the user.
    pub fn forget_credentials(&self) {
        if let Credentials::Lookup { found, .. } = &self.credentials {
            *lock(found) = None;
        }
    }

    /// `GET /v2/` without credentials, as docker starts: the 401's challenge is remembered,
    /// so the first real request goes out already authenticated (one request, not a 401
    /// and a retry). Registries that answer 200 need no auth.
    pub async fn discover(&self) -> Result<(), ClientError> {
        let url = self.url("/v2/").await?;
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| self.transport(&url, e))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.learn_challenge(&response)?;
        }
        Ok(())
    }

    /// Learn the registry's challenge before a request whose answer depends on who asks
    /// but that anonymous callers may also make (the catalog, where anonymous pull is
    /// allowed): otherwise no 401 ever comes, and the credentials held are never sent.
    /// Nothing to do without credentials, or once the challenge is known.
    pub(crate) async fn authenticate_up_front(&self) -> Result<(), ClientError> {
        if lock(&self.challenge).is_some() || self.credential()?.is_none() {
            return Ok(());
        }
        self.discover().await
    }

    /// Remember the challenge a 401 carries, so later requests authenticate up front.
    fn learn_challenge(&self, response: &Response) -> Result<(), ClientError> {
        let header = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let parsed = Challenge::parse(header).map_err(|source| ClientError::Challenge {
            registry: self.registry.to_string(),
            source,
        })?;
        *lock(&self.challenge) = Some(parsed);
        Ok(())
    }

    /// `GET /v2/` through the auth flow: proves the registry is there and, with
    /// credentials, that it accepts them.
    pub async fn ping(&self) -> Result<(), ClientError> {
        let response = self
            .send(Method::GET, "/v2/", &[], &[], "the API base /v2/")
            .await?;
        self.expect_success(response, "the API base /v2/")
            .await
            .map(drop)
    }

    /// The scheme and host, found on first use: https; for an insecure registry whichever
    /// of https and http answers; for a loopback one, as docker does, http when https was
    /// answered in plain http (a loopback certificate is still verified).
    async fn base(&self) -> Result<Url, ClientError> {
        if let Some(base) = lock(&self.base).clone() {
            return Ok(base);
        }
        let host = self.registry.api_host();
        let https = parse_base("https", host)?;
        let chosen = if self.plain_http {
            parse_base("http", host)?
        } else if self.insecure {
            match self.probe(&https).await {
                Ok(()) => https,
                Err(e) => {
                    tracing::debug!(%host, error = %e, "https failed on an insecure registry; trying http");
                    parse_base("http", host)?
                }
            }
        } else {
            match self.probe(&https).await {
                Err(e) if answered_plain_http(&e) && insecure::is_loopback(host) => {
                    tracing::debug!(%host, "loopback registry answered https in plain http; using http");
                    parse_base("http", host)?
                }
                _ => https,
            }
        };
        *lock(&self.base) = Some(chosen.clone());
        Ok(chosen)
    }

    async fn probe(&self, https: &Url) -> Result<(), reqwest::Error> {
        let url = https.join("/v2/").unwrap_or(https.clone());
        self.http.get(url).send().await.map(drop)
    }

    pub(crate) async fn url(&self, path_and_query: &str) -> Result<Url, ClientError> {
        let base = self.base().await?;
        base.join(path_and_query).map_err(|e| ClientError::Request {
            url: format!("{base}{path_and_query}"),
            detail: e.to_string(),
        })
    }

    /// Send a request through the auth flow. `actions` are the repository actions the
    /// token needs (`scope` is the repository, empty for /v2/ and the catalog).
    pub(crate) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        scopes: &[String],
        headers: &[(reqwest::header::HeaderName, &str)],
        what: &str,
    ) -> Result<Response, ClientError> {
        let url = self.url(path_and_query).await?;
        self.send_url(method, url, scopes, headers, what).await
    }

    pub(crate) async fn send_url(
        &self,
        method: Method,
        url: Url,
        scopes: &[String],
        headers: &[(reqwest::header::HeaderName, &str)],
        what: &str,
    ) -> Result<Response, ClientError> {
        self.send_body(method, url, scopes, headers, None, what)
            .await
    }

    /// As `send_url`, with a body that can be sent once: a streamed body cannot be
    /// replayed, so callers first make a bodiless request with the same scopes (which
    /// learns the challenge and caches the token) and this one then succeeds first try.
    pub(crate) async fn send_body(
        &self,
        method: Method,
        url: Url,
        scopes: &[String],
        headers: &[(reqwest::header::HeaderName, &str)],
        mut body: Option<reqwest::Body>,
        what: &str,
    ) -> Result<Response, ClientError> {
        let had_body = body.is_some();
        let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let mut retried_token = false;
        let mut answered_challenge = false;
        // Bounded: at most anonymous, then authenticated, then one fresh token.
        for _ in 0..3 {
            let challenge = lock(&self.challenge).clone();
            let mut request = self.http.request(method.clone(), url.clone());
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            if let Some(b) = body.take() {
                request = request.body(b);
            } else if had_body {
                // The body went with a request the registry refused; it cannot be resent.
                return Err(self.unauthorized());
            }
            let (request, sent) = self.authorize(request, challenge.as_ref(), &scopes).await?;
            let response = request.send().await.map_err(|e| self.transport(&url, e))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            self.learn_challenge(&response)?;
            tracing::debug!(registry = %self.registry, %what, "401: answering the registry's challenge");
            match sent {
                Sent::Nothing if !answered_challenge && challenge.is_none() => {
                    answered_challenge = true;
                }
                Sent::Bearer { key, token } if !retried_token => {
                    // Expired or revoked early, or our scope was short: one fresh token.
                    self.tokens.invalidate(&key, &token).await;
                    retried_token = true;
                }
                _ => return Err(self.unauthorized()),
            }
        }
        Err(self.unauthorized())
    }

    async fn authorize(
        &self,
        request: RequestBuilder,
        challenge: Option<&Challenge>,
        scopes: &[&str],
    ) -> Result<(RequestBuilder, Sent), ClientError> {
        let found = self.credential()?;
        let credential = found.as_ref().map(|f| &f.credential);
        match challenge {
            None => Ok((request, Sent::Nothing)),
            Some(Challenge::Basic { .. }) => match credential {
                Some(Credential::Basic { username, password }) => Ok((
                    request.basic_auth(username, Some(password.expose())),
                    Sent::Basic,
                )),
                // A refresh token means nothing to a Basic realm.
                _ => Ok((request, Sent::Nothing)),
            },
            Some(Challenge::Bearer(bearer)) => {
                let token = match self.tokens.token(bearer, scopes, credential).await {
                    Ok(t) => t,
                    Err(TokenError::Refused { status: 401, .. }) => return Err(self.unauthorized()),
                    Err(e) => return Err(e.into()),
                };
                let challenge_scopes: Vec<&str> = bearer.scopes().collect();
                let used = if scopes.is_empty() {
                    &challenge_scopes[..]
                } else {
                    scopes
                };
                let key = TokenKey::new(bearer, used, credential);
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| ClientError::BadResponse {
                        registry: self.registry.to_string(),
                        what: "token".into(),
                        detail: "the token server sent a token that is not a valid header value"
                            .into(),
                    })?;
                value.set_sensitive(true);
                Ok((
                    request.header(AUTHORIZATION, value),
                    Sent::Bearer { key, token },
                ))
            }
            Some(Challenge::Other { scheme, .. }) => Err(ClientError::UnsupportedScheme {
                registry: self.registry.to_string(),
                scheme: scheme.clone(),
            }),
        }
    }

    fn credential(&self) -> Result<Option<Found>, ClientError> {
        match &self.credentials {
            Credentials::Fixed(found) => Ok(found.clone()),
            Credentials::Lookup { source, found } => {
                let mut cached = lock(found);
                if let Some(f) = cached.as_ref() {
                    return Ok(f.clone());
                }
                let looked = source.lookup(&self.registry)?;
                *cached = Some(looked.clone());
                Ok(looked)
            }
        }
    }

    fn unauthorized(&self) -> ClientError {
        let registry = self.registry.to_string();
        match (self.credential(), &self.credentials) {
            (Ok(Some(found)), Credentials::Fixed(_)) => match found.credential {
                Credential::Basic { username, .. } => {
                    ClientError::PasswordRefused { registry, username }
                }
                Credential::IdentityToken { .. } => ClientError::Unauthorized {
                    registry,
                    origin: "the command line".to_owned(),
                },
            },
            (Ok(Some(found)), _) => match found.origin {
                Origin::Environment => ClientError::EnvironmentRefused { registry },
                origin => ClientError::Unauthorized {
                    registry,
                    origin: origin.to_string(),
                },
            },
            _ => ClientError::NoCredentials { registry },
        }
    }

    /// A transport error, classified so the message says what to do.
    fn transport(&self, url: &Url, e: reqwest::Error) -> ClientError {
        let host = self.registry.api_host().to_owned();
        let mut chain = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = source {
            chain.push_str(&s.to_string());
            chain.push_str(": ");
            source = s.source();
        }
        let lower = chain.to_ascii_lowercase();
        if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
            return ClientError::UnknownAuthority {
                host,
                certs_dir: self.certs_dir.clone(),
            };
        }
        let url = strip_query(url);
        if answered_plain_http(&e) {
            return ClientError::PlainHttp { host };
        }
        if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            return ClientError::Tls {
                host,
                detail: last_cause(&e),
            };
        }
        if lower.contains("dns error") || lower.contains("failed to lookup address") {
            return ClientError::Resolve {
                host: host_only(&host),
                detail: last_cause(&e),
            };
        }
        if e.is_connect() || e.is_timeout() {
            return ClientError::Connect {
                url,
                detail: last_cause(&e),
            };
        }
        ClientError::Request {
            url,
            detail: last_cause(&e),
        }
    }
}

/// rustls meeting an HTTP response where a TLS record should be: the server speaks plain
/// http on that port.
fn answered_plain_http(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        if text.contains("InvalidContentType") || text.contains("corrupt message") {
            return true;
        }
        source = s.source();
    }
    false
}

fn parse_base(scheme: &str, host: &str) -> Result<Url, ClientError> {
    let text = format!("{scheme}://{host}/");
    Url::parse(&text).map_err(|e| ClientError::Request {
        url: text,
        detail: e.to_string(),
    })
}

/// `host:port` without the port: a name that does not resolve has no port to blame.
fn host_only(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_owned(),
        _ => host.to_owned(),
    }
}

/// URLs in errors lose their query: a `last=` cursor is noise, and a redirect to blob
/// storage carries its signature there.
fn strip_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

fn last_cause(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}
