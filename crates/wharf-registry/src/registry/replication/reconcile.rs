//! Comparing this registry with a target, tag by tag, and converging the target: how a
//! new or restored target is brought up to date (`wharf replicate reconcile`), and what
//! replication falls back on when events it needed are gone from the log.

use wharf_oci::{Digest, Reference, RepoName, Tag};

use super::push::{is_referrer_tag, Outcome, Push};
use super::target::Target;
use crate::registry::events::Origin;
use crate::registry::Registry;

const PAGE: usize = 1000;

/// One tag that differs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Difference {
    pub repository: String,
    pub tag: String,
    /// Here.
    pub source: String,
    /// There; None when the target lacks the tag.
    pub target: Option<String>,
}

/// What a target lacks or holds differently, and (after a run) what was done about it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Plan {
    pub target: String,
    /// Tags compared.
    pub compared: usize,
    pub differences: Vec<Difference>,
    /// Tags converged (empty on a dry run).
    pub converged: Vec<String>,
    /// Tags that failed, with why.
    pub failed: Vec<String>,
}

/// Every repository here, in order.
pub async fn repositories(registry: &Registry) -> anyhow::Result<Vec<String>> {
    let origin = Origin::method("GET");
    let mut all = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = registry
            .catalog(&origin, last.as_deref(), Some(PAGE), None)
            .await
            .map_err(|e| anyhow::anyhow!("listing repositories: {e}"))?;
        let more = page.more && !page.items.is_empty();
        last = page.items.last().cloned();
        all.extend(page.items);
        if !more {
            return Ok(all);
        }
    }
}

/// Every tag of `repo` here.
pub async fn tags(registry: &Registry, repo: &RepoName) -> anyhow::Result<Vec<String>> {
    let mut all = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let Some(page) = registry
            .stored_tags(repo, last.as_deref(), Some(PAGE))
            .await
            .map_err(|e| anyhow::anyhow!("listing the tags of {repo}: {e}"))?
        else {
            return Ok(all);
        };
        let more = page.more && !page.items.is_empty();
        last = page.items.last().cloned();
        all.extend(page.items);
        if !more {
            return Ok(all);
        }
    }
}

/// Compare every tag the target's rules cover; with `apply`, converge each difference.
pub async fn reconcile(registry: &Registry, target: &Target, apply: bool) -> anyhow::Result<Plan> {
    let mut plan = Plan {
        target: target.name.clone(),
        ..Plan::default()
    };
    let push = Push { registry, target };
    for name in repositories(registry).await? {
        let Some(rule) = target.rule_for(&name) else {
            continue;
        };
        let Ok(repo) = name.parse::<RepoName>() else {
            continue;
        };
        for t in tags(registry, &repo).await? {
            if !rule.takes_tag(&t) && !is_referrer_tag(&t) {
                continue;
            }
            let Ok(tag) = t.parse::<Tag>() else { continue };
            let Some(here) = source_digest(registry, &repo, &tag).await? else {
                continue;
            };
            plan.compared += 1;
            let there = push.target_tag(&repo, &tag).await?;
            if there.as_ref() == Some(&here) {
                continue;
            }
            plan.differences.push(Difference {
                repository: name.clone(),
                tag: t.clone(),
                source: here.to_string(),
                target: there.map(|d| d.to_string()),
            });
            if !apply {
                continue;
            }
            match push.tag(&repo, &tag, Some(&here), true).await {
                Ok(Outcome::Sent | Outcome::Same) => plan.converged.push(format!("{name}:{t}")),
                Ok(_) => {}
                Err(e) => plan.failed.push(format!("{name}:{t}: {e:#}")),
            }
        }
    }
    Ok(plan)
}

async fn source_digest(
    registry: &Registry,
    repo: &RepoName,
    tag: &Tag,
) -> anyhow::Result<Option<Digest>> {
    Ok(registry
        .stored_manifest(repo, &Reference::Tag(tag.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("reading {repo}:{tag} here: {e}"))?
        .map(|c| c.digest))
}
