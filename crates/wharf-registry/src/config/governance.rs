//! wharf's own governance keys: `retention:`, `immutable:` and `quotas:`, each per
//! repository glob (the globs of `access:`). Lists come from the file, or as YAML text in
//! `REGISTRY_IMMUTABLE`, `REGISTRY_QUOTAS` and `REGISTRY_RETENTION_RULES`.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer};

use super::lenient;
use crate::auth::policy::RepoGlob;

/// Everything the three keys configure; empty means no rules.
#[derive(Debug, Clone, Default)]
pub struct Governance {
    pub retention: Option<Retention>,
    pub immutable: Vec<ImmutableRule>,
    pub quotas: Vec<QuotaRule>,
}

/// `retention:`: rules, and how often `wharf serve` applies them (None: only by command).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, deserialize_with = "lenient::duration")]
    pub schedule: Option<Duration>,
    #[serde(default)]
    pub rules: Vec<RetentionRule>,
}

/// A repository's tags are kept if any keep rule keeps them; a rule with no keep rule at
/// all keeps every tag (it only prunes untagged manifests).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub repositories: Vec<RepoGlob>,
    /// The last N tags by push time.
    #[serde(default, deserialize_with = "lenient::u64")]
    pub keeplast: Option<u64>,
    /// The highest N tags by semver (a leading `v` is allowed).
    #[serde(default, deserialize_with = "lenient::u64")]
    pub keepsemver: Option<u64>,
    /// Tags matching this regex.
    #[serde(default)]
    pub keepmatching: Option<Pattern>,
    /// Delete manifests no tag reaches once they are older than this.
    #[serde(default, deserialize_with = "lenient::duration")]
    pub untaggedolderthan: Option<Duration>,
}

impl RetentionRule {
    /// Whether the rule says anything about tags (else all tags stay).
    pub fn prunes_tags(&self) -> bool {
        self.keeplast.is_some() || self.keepsemver.is_some() || self.keepmatching.is_some()
    }
}

/// `immutable:`: tags matching `tags` in these repositories are never overwritten or deleted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableRule {
    pub repositories: Vec<RepoGlob>,
    pub tags: Pattern,
}

/// `quotas:`: the distinct blobs linked in every repository a glob matches, counted once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    pub repositories: Vec<RepoGlob>,
    #[serde(deserialize_with = "byte_size")]
    pub bytes: u64,
}

impl QuotaRule {
    pub fn matches(&self, repo: &str) -> bool {
        self.repositories.iter().any(|g| g.is_match(repo))
    }
}

impl ImmutableRule {
    pub fn matches(&self, repo: &str, tag: &str) -> bool {
        self.repositories.iter().any(|g| g.is_match(repo)) && self.tags.0.is_match(tag)
    }
}

/// Globs as written, comma-separated, for messages.
pub fn globs(g: &[RepoGlob]) -> String {
    g.iter().map(RepoGlob::as_str).collect::<Vec<_>>().join(",")
}

/// A regex, checked when the config loads.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl Pattern {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        regex::Regex::new(&s)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("bad regex {s:?}: {e}")))
    }
}

fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(n),
        Raw::Str(s) => parse_bytes(&s).map_err(de::Error::custom),
    }
}

pub use wharf_oci::units::parse_bytes;

#[cfg(test)]
mod tests {
    use wharf_oci::units::human_bytes;

    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Governance, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        std::fs::write(&path, yaml).unwrap();
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        crate::config::load(Some(&path), env)
            .map(|(c, warnings)| {
                assert!(warnings.is_empty(), "{warnings:?}");
                c.governance
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn governance_from_the_file_or_the_environment() {
        let yaml = "version: 0.1\nretention:\n  schedule: 24h\n  rules:\n    - repositories: ['team/*']\n      keeplast: 10\n      keepmatching: '^(latest|stable)$'\n      untaggedolderthan: 168h\nimmutable:\n  - repositories: ['prod/*']\n    tags: '^v[0-9]+'\nquotas:\n  - repositories: ['team/*']\n    bytes: 10GiB\n";
        let g = load(yaml, &[]).unwrap();
        let r = g.retention.unwrap();
        assert_eq!(r.schedule, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(r.rules[0].keeplast, Some(10));
        assert!(g.immutable[0].matches("prod/app", "v1.2"));
        assert!(!g.immutable[0].matches("prod/app", "latest"));
        assert!(!g.immutable[0].matches("dev/app", "v1.2"));
        assert_eq!(g.quotas[0].bytes, 10 << 30);
        let env = [
            ("REGISTRY_QUOTAS", "[{repositories: ['a/*'], bytes: 1MiB}]"),
            ("REGISTRY_RETENTION_SCHEDULE", "1h"),
            (
                "REGISTRY_RETENTION_RULES",
                "[{repositories: ['a/*'], keepsemver: 3}]",
            ),
            (
                "REGISTRY_IMMUTABLE",
                "[{repositories: ['a/*'], tags: '^v'}]",
            ),
        ];
        let g = load("version: 0.1\n", &env).unwrap();
        assert_eq!(g.quotas[0].bytes, 1 << 20);
        assert_eq!(g.retention.unwrap().rules[0].keepsemver, Some(3));
        assert!(g.immutable[0].matches("a/b", "v2"));
        let bad = load("immutable:\n  - repositories: ['a']\n    tags: '('\n", &[]).unwrap_err();
        assert!(
            bad.contains("immutable") && bad.contains("bad regex"),
            "{bad}"
        );
        let bad = load("quotas:\n  - repositories: ['a']\n    bytes: lots\n", &[]).unwrap_err();
        assert!(bad.contains("quotas"), "{bad}");
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_bytes("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("1.5 KiB").unwrap(), 1536);
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
        assert_eq!(human_bytes(10 << 30), "10.0 GiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
