//! `replication:` (wharf's own): push replication to other registries, driven by the event
//! log, and pull sync of whole repositories or namespaces from upstream registries.
//!
//! ```yaml
//! replication:
//!   targets:
//!     - {name: dr, url: https://dr.example.com, username: robot, password: secret}
//!   rules:
//!     - {repositories: ["team/*"], targets: [dr], tags: "^v", deletes: false}
//!   sync:
//!     - {url: http://upstream:5000, repositories: ["lib/*"], tags: "^1\\.", interval: 1h}
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{lenient, ConfigError};
use crate::auth::policy::RepoGlob;

/// How often a sync entry runs when it names no `interval`.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Default)]
pub struct ReplicationConfig {
    pub targets: Vec<Target>,
    pub rules: Vec<Rule>,
    pub sync: Vec<Sync>,
}

/// A registry pushed to.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// `https://host[:port]`, or `http://` for plain http.
    pub url: String,
    /// Without them, docker's `config.json` (and its helpers) for the target's host.
    pub username: Option<String>,
    pub password: Option<String>,
    /// The target replicates back to this registry (active-active): a tag that differs
    /// there and that this registry never held is a concurrent push, settled by the
    /// conflict rule (see docs/replication.md) rather than overwritten.
    pub peer: bool,
}

/// Which repositories go to which targets.
#[derive(Debug, Clone)]
pub struct Rule {
    pub repositories: Vec<RepoGlob>,
    pub targets: Vec<String>,
    /// Only tags matching this go (manifests pushed by digest go with their tag, or not).
    pub tags: Option<regex::Regex>,
    /// Tag and manifest deletes replicate too.
    pub deletes: bool,
}

/// A scheduled copy from an upstream registry into this one.
#[derive(Debug, Clone)]
pub struct Sync {
    /// Names the entry in logs, metrics and the UI; the upstream's host when not given.
    pub name: String,
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Upstream repositories (globs: `library/*`, `team/**`), matched against its catalog;
    /// a name without a wildcard is copied without reading the catalog.
    pub repositories: Vec<RepoGlob>,
    pub tags: Option<regex::Regex>,
    /// `os/arch[/variant]`: from an index, only these platforms are copied (the index is
    /// stored with the children it lists that are copied). Empty: every platform.
    pub platforms: Vec<String>,
    /// Prepended to each repository's name here (`mirror/` puts `lib/x` at `mirror/lib/x`).
    pub destination: String,
    pub interval: Duration,
}

impl Rule {
    pub fn covers(&self, repo: &str) -> bool {
        self.repositories.iter().any(|g| g.is_match(repo))
    }

    pub fn takes_tag(&self, tag: &str) -> bool {
        self.tags.as_ref().is_none_or(|r| r.is_match(tag))
    }
}

impl Sync {
    pub fn takes_tag(&self, tag: &str) -> bool {
        self.tags.as_ref().is_none_or(|r| r.is_match(tag))
    }
}

// The YAML model.

#[derive(Deserialize, Default)]
pub(super) struct ReplicationFile {
    #[serde(default)]
    targets: Vec<TargetFile>,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    sync: Vec<SyncFile>,
}

#[derive(Deserialize)]
struct TargetFile {
    name: String,
    url: String,
    username: Option<String>,
    password: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    peer: Option<bool>,
}

#[derive(Deserialize)]
struct RuleFile {
    repositories: Vec<RepoGlob>,
    targets: Vec<String>,
    tags: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    deletes: Option<bool>,
}

#[derive(Deserialize)]
struct SyncFile {
    name: Option<String>,
    url: String,
    username: Option<String>,
    password: Option<String>,
    repositories: Vec<RepoGlob>,
    tags: Option<String>,
    #[serde(default)]
    platforms: Vec<String>,
    #[serde(default)]
    destination: String,
    #[serde(default, deserialize_with = "lenient::duration")]
    interval: Option<Duration>,
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(format!(
            "{url:?} is not a URL: write https://host[:port] (or http:// for plain http)"
        ))
    }
}

fn regex(tags: Option<String>) -> Result<Option<regex::Regex>, String> {
    tags.map(|t| {
        regex::Regex::new(&t).map_err(|e| format!("{t:?} is not a regular expression: {e}"))
    })
    .transpose()
}

impl ReplicationFile {
    pub(super) fn into_config(self, origin: &str) -> Result<ReplicationConfig, ConfigError> {
        let bad = |key: String, message: String| ConfigError::Value {
            origin: origin.to_owned(),
            key,
            message,
        };
        let mut targets: Vec<Target> = Vec::new();
        for (i, t) in self.targets.into_iter().enumerate() {
            let key = format!("replication.targets.{i}");
            check_url(&t.url).map_err(|m| bad(format!("{key}.url"), m))?;
            let valid = !t.name.is_empty()
                && t.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid || targets.iter().any(|o| o.name == t.name) {
                return Err(bad(
                    format!("{key}.name"),
                    format!("{:?} must be unique and made of letters, digits, '-', '_' or '.' (it names the target's cursor)", t.name),
                ));
            }
            if t.username.is_some() != t.password.is_some() {
                return Err(bad(key, "give username and password together, or neither (then docker's config.json is used)".into()));
            }
            targets.push(Target {
                name: t.name,
                url: t.url.trim_end_matches('/').to_owned(),
                username: t.username,
                password: t.password,
                peer: t.peer.unwrap_or(false),
            });
        }
        let mut rules = Vec::new();
        for (i, r) in self.rules.into_iter().enumerate() {
            let key = format!("replication.rules.{i}");
            if let Some(unknown) = r
                .targets
                .iter()
                .find(|n| !targets.iter().any(|t| &t.name == *n))
            {
                return Err(bad(
                    format!("{key}.targets"),
                    format!("no target is named {unknown:?}: name one of replication.targets"),
                ));
            }
            rules.push(Rule {
                repositories: r.repositories,
                targets: r.targets,
                tags: regex(r.tags).map_err(|m| bad(format!("{key}.tags"), m))?,
                deletes: r.deletes.unwrap_or(false),
            });
        }
        let mut sync = Vec::new();
        for (i, s) in self.sync.into_iter().enumerate() {
            let key = format!("replication.sync.{i}");
            check_url(&s.url).map_err(|m| bad(format!("{key}.url"), m))?;
            let url = s.url.trim_end_matches('/').to_owned();
            let host = url.split("://").nth(1).unwrap_or_default().to_owned();
            sync.push(Sync {
                name: s.name.unwrap_or(host),
                url,
                username: s.username,
                password: s.password,
                repositories: s.repositories,
                tags: regex(s.tags).map_err(|m| bad(format!("{key}.tags"), m))?,
                platforms: s.platforms,
                destination: s.destination,
                interval: s.interval.unwrap_or(DEFAULT_SYNC_INTERVAL),
            });
        }
        Ok(ReplicationConfig {
            targets,
            rules,
            sync,
        })
    }
}

#[cfg(test)]
mod tests {
    fn load(yaml: &str) -> Result<super::ReplicationConfig, String> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        super::super::load(Some(f.path()), std::iter::empty())
            .map(|(c, _)| c.replication)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn targets_rules_and_sync_are_read() {
        let c = load("replication:\n  targets:\n    - {name: dr, url: https://dr.example.com/, username: robot, password: s}\n  rules:\n    - {repositories: [\"team/*\"], targets: [dr], tags: \"^v\", deletes: true}\n  sync:\n    - {url: http://up:5000, repositories: [\"lib/*\"], platforms: [linux/amd64], interval: 30m}\n").unwrap();
        assert_eq!(c.targets[0].url, "https://dr.example.com");
        assert!(!c.targets[0].peer);
        let rule = &c.rules[0];
        assert!(rule.covers("team/app") && !rule.covers("other/app"));
        assert!(rule.takes_tag("v1") && !rule.takes_tag("dev"));
        assert!(rule.deletes);
        assert_eq!(c.sync[0].name, "up:5000");
        assert_eq!(c.sync[0].interval.as_secs(), 1800);
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        let e = load("replication:\n  targets: [{name: a, url: https://a}]\n  rules: [{repositories: [x], targets: [b]}]\n").unwrap_err();
        assert!(
            e.contains("replication.rules.0.targets") && e.contains("\"b\""),
            "{e}"
        );
        let e = load("replication:\n  targets: [{name: a, url: a.example.com}]\n").unwrap_err();
        assert!(
            e.contains("replication.targets.0.url") && e.contains("https://"),
            "{e}"
        );
        let e =
            load("replication:\n  targets: [{name: a, url: https://a, pasword: x}]\n").unwrap_err();
        assert!(e.contains("pasword"), "{e}");
        let e = load("replication:\n  rules: [{repositories: [x], targets: [], tags: \"(\"}]\n")
            .unwrap_err();
        assert!(e.contains("replication.rules.0.tags"), "{e}");
    }
}
