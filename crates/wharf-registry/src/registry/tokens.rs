//! What the door offers beside client operations for accountability: robot tokens
//! (created, listed, revoked, each recorded), explicit audit records (logins, admin
//! changes, job runs), and reading and verifying the audit log.

use std::time::Duration;

use wharf_oci::ErrorCode;

use super::audit::{entry, hostname, outcome};
use super::{Error, Registry, Result};
use crate::auth::robots::{self, now_secs};
use crate::auth::Principal;
use crate::store::auditchain::{self, AuditRecord, Break};
use crate::store::state::{AuditEntry, IdentityState, TokenRecord};

/// Who asked for an administrative change, as the audit log names them.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub name: &'a str,
    /// The client's address, or the host a command ran on.
    pub source: &'a str,
}

/// Which records `wharf audit` lists.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// RFC 3339 times sort as text: records at or after this.
    pub since: Option<String>,
    pub actor: Option<String>,
}

impl Registry {
    fn identity(&self) -> Result<&std::sync::Arc<dyn IdentityState>> {
        self.core().store.identity.as_ref().ok_or_else(|| {
            Error::refused(
                ErrorCode::Unsupported,
                "this store keeps no tokens or audit log",
            )
        })
    }

    /// Append one record, if the audit log is on.
    pub async fn record(&self, entry: AuditEntry) {
        if let Some(a) = &self.audit {
            a.record(entry).await;
        }
    }

    /// Record an administrative action by `who` and how it ended.
    pub async fn record_as<T>(&self, who: Actor<'_>, action: &str, target: &str, r: &Result<T>) {
        self.record(entry(who.name, who.source, action, target, &outcome(r)))
            .await;
    }

    pub(super) async fn job_ran<T>(&self, job: &str, r: &Result<T>, done: impl Fn(&T) -> String) {
        let outcome = match r {
            Ok(report) => done(report),
            Err(_) => outcome(r),
        };
        let host = hostname();
        self.record(entry("wharf", &host, job, "registry", &outcome))
            .await;
    }

    /// Make a token; its record (without the secret) and the secret, shown once.
    pub async fn create_token(
        &self,
        who: Actor<'_>,
        name: &str,
        owner: Option<&Principal>,
        scopes: &[String],
        lifetime: Option<Duration>,
    ) -> Result<(TokenRecord, String)> {
        let made = self.mint(name, owner, scopes, lifetime).await;
        self.record_as(who, "token create", name, &made).await;
        made
    }

    async fn mint(
        &self,
        name: &str,
        owner: Option<&Principal>,
        scopes: &[String],
        lifetime: Option<Duration>,
    ) -> Result<(TokenRecord, String)> {
        let store = self.identity()?;
        let (record, secret) = robots::mint(name, owner, scopes, lifetime)
            .map_err(|m| Error::refused(ErrorCode::Unsupported, m))?;
        if !store.create_token(&record).await? {
            return Err(Error::refused(
                ErrorCode::Denied,
                format!("a token named {name:?} exists (revoked ones keep their names): choose another name"),
            ));
        }
        Ok((record, secret))
    }

    /// Every token, or those `owner` made for themselves.
    pub async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenRecord>> {
        let all = self.identity()?.list_tokens().await?;
        Ok(match owner {
            Some(o) => all
                .into_iter()
                .filter(|t| t.owner.as_deref() == Some(o))
                .collect(),
            None => all,
        })
    }

    /// Revoke `name`; with `owner`, only a token that user made.
    pub async fn revoke_token(
        &self,
        who: Actor<'_>,
        name: &str,
        owner: Option<&str>,
    ) -> Result<()> {
        let revoked = self.revoke(name, owner).await;
        self.record_as(who, "token revoke", name, &revoked).await;
        revoked
    }

    async fn revoke(&self, name: &str, owner: Option<&str>) -> Result<()> {
        let store = self.identity()?;
        let unknown = || {
            Error::refused(
                ErrorCode::NameUnknown,
                format!("there is no token named {name:?}"),
            )
        };
        let token = store.token(name).await?.ok_or_else(unknown)?;
        if owner.is_some() && token.owner.as_deref() != owner {
            return Err(unknown());
        }
        store.revoke_token(name, now_secs()).await?;
        Ok(())
    }

    /// The audit records `query` selects, oldest first.
    pub async fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let lines = self.identity()?.audit_lines().await?;
        let mut out = Vec::new();
        for line in &lines {
            let Ok(r) = auditchain::parse(line) else {
                continue; // `wharf audit verify` names it
            };
            let since = query
                .since
                .as_deref()
                .is_none_or(|s| r.entry.time.as_str() >= s);
            let actor = query.actor.as_deref().is_none_or(|a| r.entry.actor == a);
            if since && actor {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Check the whole chain: the number of records, or the first that breaks it.
    pub async fn verify_audit(&self) -> Result<std::result::Result<u64, Break>> {
        let store = self.identity()?;
        let lines = store.audit_lines().await?;
        let head = store.audit_head().await?;
        Ok(auditchain::verify(
            &lines,
            head.as_ref().map(|(s, h)| (*s, h.as_str())),
        ))
    }
}
