//! The UI's sign-in through an OpenID Connect provider (`auth.oidc`): the authorization
//! code flow with PKCE (RFC 7636), `state` and `nonce`. The front end keeps the flow's
//! secrets in a signed, short-lived cookie; this side builds the provider URL and turns a
//! code into a [`Principal`] whose groups come from the groups claim.

use serde::Deserialize;

use super::oidc::{claim_strings, Issuer, OidcError};
use super::Principal;

/// `auth.oidc` as the loader hands it over.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    /// The claim that names the user; `sub` when the token lacks it.
    pub username_claim: String,
    pub groups_claim: String,
}

pub struct OidcLogin {
    config: OidcConfig,
    issuer: Issuer,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

/// What the front end remembers between the redirect and the callback.
pub struct Flow {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl OidcLogin {
    pub fn new(config: OidcConfig) -> Result<OidcLogin, String> {
        Ok(OidcLogin {
            issuer: Issuer::new(&config.issuer)?,
            config,
        })
    }

    /// A new flow and the provider URL that starts it.
    pub async fn start(&self, redirect_uri: &str) -> Result<(Flow, String), OidcError> {
        let d = self.issuer.discovery().await?;
        let (verifier, challenge) = super::oidc::pkce();
        let flow = Flow {
            state: super::oidc::random_token(),
            nonce: super::oidc::random_token(),
            verifier,
        };
        let scope = self.config.scopes.join(" ");
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scope)
            .append_pair("state", &flow.state)
            .append_pair("nonce", &flow.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let sep = if d.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok((flow, format!("{}{sep}{query}", d.authorization_endpoint)))
    }

    /// Trade the code for an ID token, check it (and that its nonce is this flow's), and
    /// name the user.
    pub async fn finish(
        &self,
        code: &str,
        redirect_uri: &str,
        flow: &Flow,
    ) -> Result<Principal, OidcError> {
        let d = self.issuer.discovery().await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &flow.verifier),
            ("client_id", &self.config.client_id),
        ];
        let mut req = self.issuer.http().post(&d.token_endpoint).form(&form);
        if let Some(secret) = &self.config.client_secret {
            req = req.basic_auth(&self.config.client_id, Some(secret));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("{}: {e}", d.token_endpoint)))?;
        if !resp.status().is_success() {
            return Err(OidcError::Rejected(format!(
                "the provider refused the code ({}): it is used once and expires quickly; sign in again",
                resp.status()
            )));
        }
        let answer: TokenAnswer = resp
            .json()
            .await
            .map_err(|e| OidcError::Unavailable(format!("{}: {e}", d.token_endpoint)))?;
        let token = answer.id_token.ok_or_else(|| {
            OidcError::Rejected(
                "the provider sent no id_token (is `openid` among auth.oidc.scopes?)".into(),
            )
        })?;
        let claims = self.issuer.verify(&token, &self.config.client_id).await?;
        let nonce = claims
            .get("nonce")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            nonce.as_bytes(),
            flow.nonce.as_bytes(),
        )) {
            return Err(OidcError::Rejected(
                "the ID token's nonce is not this sign-in's (a replayed token?)".into(),
            ));
        }
        let name = claim_strings(&claims, &self.config.username_claim)
            .into_iter()
            .next()
            .or_else(|| claim_strings(&claims, "sub").into_iter().next())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| OidcError::Rejected("the ID token names no user".into()))?;
        Ok(Principal::member(
            name,
            claim_strings(&claims, &self.config.groups_claim),
        ))
    }
}
