//! Client errors: each says what went wrong and what to do about it, never a secret.

use std::path::PathBuf;

use super::tls::CaError;
use crate::challenge::ChallengeError;
use crate::credentials::CredentialError;
use crate::token_cache::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("x509: certificate signed by unknown authority for {host} — pass --registry-ca FILE (a PEM bundle) or put it in {certs_dir}/{host}/ca.crt")]
    UnknownAuthority { host: String, certs_dir: PathBuf },
    #[error(
        "TLS handshake with {host} failed ({detail}); if {host} serves plain http, pass --insecure"
    )]
    Tls { host: String, detail: String },
    #[error("{host} answered in plain http: add it to insecure-registries in daemon.json, or pass --insecure-registry {host}")]
    PlainHttp { host: String },
    #[error("cannot resolve host {host} ({detail}); check the registry's name, and that this machine's DNS knows it")]
    Resolve { host: String, detail: String },
    #[error("cannot connect to {url}: connection refused or unreachable ({detail}); check that the registry runs there and the host and port are right")]
    Connect { url: String, detail: String },
    #[error("request to {url} failed: {detail}")]
    Request { url: String, detail: String },
    #[error("unauthorized: {registry} requires credentials — run `wharf login {registry}` (or set REPO_USER/REPO_PASS)")]
    NoCredentials { registry: String },
    #[error("unauthorized: {registry} rejected the credentials from {origin} — run `wharf login {registry}`")]
    Unauthorized { registry: String, origin: String },
    #[error("unauthorized: {registry} refused the password for {username}; nothing was stored")]
    PasswordRefused { registry: String, username: String },
    #[error("unauthorized: {registry} rejected the credentials in REPO_USER/REPO_PASS; they take precedence over config.json, so `wharf login` cannot help: correct them, or unset both to use config.json")]
    EnvironmentRefused { registry: String },
    /// A 403. `message` is the registry's own `errors[].message` (a quota, an immutable
    /// tag, a missing permission): it names the real cause, so it is always shown.
    #[error("denied: {registry} refused {what} ({status}){}", denied_reason(message.as_deref()))]
    Denied {
        registry: String,
        what: String,
        status: u16,
        message: Option<String>,
    },
    #[error("not found: {what} on {registry}; check the repository name and tag (`wharf tags {registry}/REPO`)")]
    NotFound { registry: String, what: String },
    #[error("{registry} is rate limiting {what} (429 Too Many Requests{}); wait, or authenticate to get a higher limit", retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default())]
    TooManyRequests {
        registry: String,
        what: String,
        retry_after: Option<std::time::Duration>,
    },
    #[error("{registry} answered {status} to {what}: {detail}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{registry} sent a bad WWW-Authenticate challenge: {source}")]
    Challenge {
        registry: String,
        source: ChallengeError,
    },
    #[error("{registry} asks for {scheme} authentication, which wharf does not speak (only Basic and Bearer)")]
    UnsupportedScheme { registry: String, scheme: String },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("{registry} sent an invalid {what}: {detail}")]
    BadResponse {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// The registry's reason, then wharf's hint when it fits that reason: a quota or an
/// immutable tag is not fixed by asking for access.
fn denied_reason(message: Option<&str>) -> String {
    let generic = "ask its administrator for access";
    let Some(m) = message.map(str::trim).filter(|m| !m.is_empty()) else {
        return format!(" for these credentials; {generic}");
    };
    let lower = m.to_ascii_lowercase();
    let hint = if lower.starts_with("quota") || lower.contains(" quota ") {
        "; delete tags and garbage-collect, or ask its administrator to raise the quota"
    } else if lower.contains("immutable") {
        "; push under a new tag instead"
    } else if lower.contains("not allowed")
        || lower.contains("access to the resource is denied")
        || lower.contains("permission")
    {
        "; ask its administrator for access"
    } else {
        ""
    };
    format!(": {m}{hint}")
}

impl ClientError {
    /// Whether trying again later may succeed: rate limits, server errors and network
    /// trouble. Credentials, permissions and missing images are not: retrying those only
    /// hammers the registry (and can lock an account).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::TooManyRequests { .. }
            | ClientError::Connect { .. }
            | ClientError::Resolve { .. }
            | ClientError::Request { .. } => true,
            ClientError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// How long the registry asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::TooManyRequests { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
