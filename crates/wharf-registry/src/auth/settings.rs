//! `auth:` as the loader hands it over: what [`super::Auth::new`] builds from.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// `auth.htpasswd`: users from an htpasswd file, by Basic auth or (with `tokens`) by
    /// tokens wharf issues itself.
    Htpasswd {
        realm: String,
        path: PathBuf,
        tokens: Option<BuiltinTokens>,
    },
    /// `auth.token`: bearer tokens from an external token server.
    Token {
        realm: String,
        service: String,
        issuer: String,
        rootcertbundle: PathBuf,
    },
}

/// The built-in token endpoint (`/auth/token`).
#[derive(Debug, Clone)]
pub struct BuiltinTokens {
    pub service: String,
    pub issuer: String,
    pub expiration: Duration,
    /// `certificate` and `key`: sign with them instead of an HMAC secret.
    pub signing: Option<CertifiedKey>,
}

/// A certificate and its private key, both PEM files.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    pub certificate: PathBuf,
    pub key: PathBuf,
}
