//! Workload identity (`auth.workload`): a CI job's OIDC ID token as its docker password,
//! as Quay's federated robot accounts and GitHub Actions' OIDC tokens work. A token from a
//! configured issuer, for the configured audience, is matched against the issuer's rules:
//! each rule names claim values (globs) and grants actions on repositories. What the
//! matching rules grant is all the token may do, whatever `access:` says.
//!
//! ```yaml
//! auth:
//!   workload:
//!     - issuer: https://token.actions.githubusercontent.com
//!       audience: https://registry.example.com
//!       rules:
//!         - claims: { repository: team/app, ref: "refs/heads/*" }
//!           repositories: ["team/app", "team/app/*"]
//!           actions: [pull, push]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::oidc::{claim_strings, claimed_issuer, Issuer, OidcError};
use super::policy::{Actions, RepoGlob};
use super::Principal;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRule {
    /// Claim name → glob its value (or one of its values) must match.
    pub claims: BTreeMap<String, RepoGlob>,
    pub repositories: Vec<RepoGlob>,
    pub actions: Actions,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    pub issuer: String,
    pub audience: String,
    pub rules: Vec<WorkloadRule>,
}

pub struct Workload {
    issuer: Issuer,
    audience: String,
    rules: Vec<WorkloadRule>,
}

impl Workload {
    pub fn new(config: WorkloadConfig) -> Result<Workload, String> {
        if config.rules.is_empty() {
            return Err(format!(
                "auth.workload issuer {}: give at least one rule (claims, repositories, actions)",
                config.issuer
            ));
        }
        // A rule that asks nothing of the token would admit every workload the issuer
        // serves (with GitHub's issuer: any repository's workflow on GitHub).
        if config.rules.iter().any(|r| r.claims.is_empty()) {
            return Err(format!(
                "auth.workload issuer {}: every rule needs claims to match (e.g. \
                 `claims: {{repository: team/app}}`); one with none admits any token the \
                 issuer signs",
                config.issuer
            ));
        }
        Ok(Workload {
            issuer: Issuer::new(&config.issuer)?,
            audience: config.audience,
            rules: config.rules,
        })
    }

    /// Whether this is the issuer `token` claims to come from.
    pub fn issues(&self, token: &str) -> bool {
        claimed_issuer(token).is_some_and(|iss| iss == self.issuer.url)
    }

    /// Verify the token; the principal is its `sub`, limited to what matching rules grant.
    pub async fn login(&self, token: &str) -> Result<Principal, OidcError> {
        let claims = self.issuer.verify(token, &self.audience).await?;
        let grants: Vec<(RepoGlob, Actions)> = self
            .rules
            .iter()
            .filter(|r| matches(r, &claims))
            .flat_map(|r| r.repositories.iter().map(|g| (g.clone(), r.actions)))
            .collect();
        if grants.is_empty() {
            return Err(OidcError::Rejected(format!(
                "its claims match no auth.workload rule of issuer {}",
                self.issuer.url
            )));
        }
        let sub = claim_strings(&claims, "sub")
            .into_iter()
            .next()
            .unwrap_or_default();
        Ok(Principal {
            name: sub,
            groups: Vec::new(),
            scopes: Some(grants),
        })
    }
}

fn matches(rule: &WorkloadRule, claims: &Map<String, Value>) -> bool {
    rule.claims
        .iter()
        .all(|(name, glob)| claim_strings(claims, name).iter().any(|v| glob.is_match(v)))
}
