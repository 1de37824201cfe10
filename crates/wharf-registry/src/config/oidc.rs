//! `auth.oidc` and `auth.workload` (wharf's own): the UI's sign-in through an OpenID
//! Connect provider, and CI jobs' ID tokens as docker passwords. Strict, as `auth.ldap`.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::auth::sso::OidcConfig;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Oidc {
    issuer: Option<String>,
    clientid: Option<String>,
    clientsecret: Option<String>,
    clientsecretfile: Option<PathBuf>,
    scopes: Option<Vec<String>>,
    usernameclaim: Option<String>,
    groupsclaim: Option<String>,
}

impl Oidc {
    pub(super) fn into_config(self, origin: &str) -> Result<OidcConfig, ConfigError> {
        let err = |key: &str, m: &str| ConfigError::value(origin, &format!("auth.oidc.{key}"), m);
        let issuer = self
            .issuer
            .ok_or_else(|| err("issuer", "is required (the provider's issuer URL)"))?;
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
            return Err(err("issuer", "must be an http(s) URL"));
        }
        let client_secret = match (self.clientsecret, self.clientsecretfile) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "clientsecret",
                    "give clientsecret or clientsecretfile, not both",
                ))
            }
            (Some(s), None) => Some(s),
            (None, Some(f)) => Some(
                std::fs::read_to_string(&f)
                    .map_err(|e| {
                        ConfigError::value(
                            origin,
                            "auth.oidc.clientsecretfile",
                            format!("cannot read {}: {e}", f.display()),
                        )
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let mut scopes = self
            .scopes
            .unwrap_or_else(|| ["openid", "profile", "email"].map(String::from).to_vec());
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        Ok(OidcConfig {
            issuer,
            client_id: self.clientid.ok_or_else(|| {
                err(
                    "clientid",
                    "is required (the client registered at the provider)",
                )
            })?,
            client_secret,
            scopes,
            username_claim: self
                .usernameclaim
                .unwrap_or_else(|| "preferred_username".into()),
            groups_claim: self.groupsclaim.unwrap_or_else(|| "groups".into()),
        })
    }
}
