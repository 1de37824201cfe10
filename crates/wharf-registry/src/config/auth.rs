//! `auth:`: htpasswd (with wharf's own token endpoint) or an external token server.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{lenient, AuthConfig, BuiltinTokens, CertifiedKey, ConfigError};

#[derive(Deserialize, Default)]
pub(super) struct Auth {
    htpasswd: Option<Htpasswd>,
    token: Option<Token>,
    /// wharf's own: an LDAP directory, alone or beside htpasswd.
    ldap: Option<super::ldap::Ldap>,
    /// wharf's own: the UI's sign-in through an OpenID Connect provider.
    oidc: Option<super::oidc::Oidc>,
    /// wharf's own: issuers whose ID tokens are docker passwords.
    workload: Option<Vec<crate::auth::workload::WorkloadConfig>>,
}

/// `auth:` as a whole: the method registry:2 knows, and wharf's own directories.
pub(super) struct Sections {
    pub method: Option<AuthConfig>,
    pub ldap: Option<(crate::auth::ldap::LdapConfig, String)>,
    pub oidc: Option<crate::auth::sso::OidcConfig>,
    pub workload: Vec<crate::auth::workload::WorkloadConfig>,
}

#[derive(Deserialize, Default)]
struct Htpasswd {
    realm: Option<String>,
    path: Option<PathBuf>,
    /// wharf's own: issue Docker registry tokens from these users at `/auth/token`.
    token: Option<BuiltinToken>,
}

#[derive(Deserialize, Default)]
struct BuiltinToken {
    service: Option<String>,
    issuer: Option<String>,
    #[serde(default, deserialize_with = "lenient::duration")]
    expiration: Option<Duration>,
    /// Sign with this certificate's key (`key`) instead of an HMAC secret, so other
    /// registries can trust the tokens.
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
struct Token {
    realm: Option<String>,
    service: Option<String>,
    issuer: Option<String>,
    rootcertbundle: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient::bool")]
    autoredirect: Option<bool>,
}

impl Auth {
    pub(super) fn into_sections(
        mut self,
        origin: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Sections, ConfigError> {
        let ldap = match self.ldap.take() {
            Some(l) => Some(l.into_config(origin)?),
            None => None,
        };
        if ldap.is_some() && self.token.is_some() {
            return Err(ConfigError::value(
                origin,
                "auth.ldap",
                "cannot be combined with auth.token (the external token server decides who is who)",
            ));
        }
        let oidc = match self.oidc.take() {
            Some(o) => Some(o.into_config(origin)?),
            None => None,
        };
        let workload = self.workload.take().unwrap_or_default();
        let own = ldap.is_some() || oidc.is_some() || !workload.is_empty();
        let method = match (&self.htpasswd, &self.token) {
            (None, None) if own => None,
            _ => Some(self.into_config(origin, warnings)?),
        };
        Ok(Sections {
            method,
            ldap,
            oidc,
            workload,
        })
    }

    fn into_config(
        self,
        origin: &str,
        warnings: &mut Vec<String>,
    ) -> Result<AuthConfig, ConfigError> {
        match self {
            Auth {
                htpasswd: Some(_),
                token: Some(_),
                ..
            } => Err(ConfigError::value(
                origin,
                "auth",
                "choose one of htpasswd and token",
            )),
            Auth {
                htpasswd: Some(h), ..
            } => h.into_config(origin),
            Auth { token: Some(t), .. } => t.into_config(origin, warnings),
            Auth {
                htpasswd: None,
                token: None,
                ..
            } => Err(ConfigError::value(
                origin,
                "auth",
                "names no supported method (htpasswd, token or ldap)",
            )),
        }
    }
}

impl Htpasswd {
    fn into_config(self, origin: &str) -> Result<AuthConfig, ConfigError> {
        Ok(AuthConfig::Htpasswd {
            realm: self.realm.unwrap_or_else(|| "Registry Realm".into()),
            path: self
                .path
                .ok_or_else(|| missing(origin, "auth.htpasswd.path", "the htpasswd file"))?,
            tokens: self.token.map(|t| t.into_config(origin)).transpose()?,
        })
    }
}

impl BuiltinToken {
    fn into_config(self, origin: &str) -> Result<BuiltinTokens, ConfigError> {
        let signing = match (self.certificate, self.key) {
            (Some(certificate), Some(key)) => Some(CertifiedKey { certificate, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(missing(
                    origin,
                    "auth.htpasswd.token.key",
                    "the private key of auth.htpasswd.token.certificate",
                ))
            }
            (None, Some(_)) => {
                return Err(missing(
                    origin,
                    "auth.htpasswd.token.certificate",
                    "the certificate of auth.htpasswd.token.key",
                ))
            }
        };
        Ok(BuiltinTokens {
            service: self.service.unwrap_or_else(|| "wharf".into()),
            issuer: self.issuer.unwrap_or_else(|| "wharf".into()),
            expiration: self.expiration.unwrap_or(Duration::from_secs(300)),
            signing,
        })
    }
}

impl Token {
    fn into_config(
        self,
        origin: &str,
        warnings: &mut Vec<String>,
    ) -> Result<AuthConfig, ConfigError> {
        if self.autoredirect == Some(true) {
            warnings.push(format!(
                "{origin}: `auth.token.autoredirect` is not supported; the realm is used as given"
            ));
        }
        let required =
            |v: Option<String>, key: &str, hint: &str| v.ok_or_else(|| missing(origin, key, hint));
        Ok(AuthConfig::Token {
            realm: required(self.realm, "auth.token.realm", "the token server's URL")?,
            service: required(
                self.service,
                "auth.token.service",
                "the audience tokens are issued for",
            )?,
            issuer: required(
                self.issuer,
                "auth.token.issuer",
                "the token server's issuer name",
            )?,
            rootcertbundle: self.rootcertbundle.ok_or_else(|| {
                missing(
                    origin,
                    "auth.token.rootcertbundle",
                    "PEM certificates that sign tokens",
                )
            })?,
        })
    }
}

fn missing(origin: &str, key: &str, hint: &str) -> ConfigError {
    ConfigError::value(origin, key, format!("is required ({hint})"))
}
