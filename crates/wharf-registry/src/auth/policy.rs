//! Access policies: which users, groups or anonymous callers may pull, push or delete in
//! which repositories. Rules grant; what no rule grants is refused.
//!
//! ```yaml
//! access:
//!   groups:
//!     ci: [alice, bob]
//!   rules:
//!     - { repositories: ["public/*"], anonymous: true, actions: [pull] }
//!     - { repositories: ["apps/*"], groups: [ci], actions: [pull, push] }
//!     - { repositories: ["*"], users: [admin], actions: ["*"] }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use serde::{Deserialize, Deserializer};

/// A set of actions on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    pub const ALL: Actions = Actions(7);

    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// From token-scope words (`pull`, `push`, `delete`, `*`); unknown words grant nothing.
    pub fn from_words<'a>(words: impl IntoIterator<Item = &'a str>) -> Actions {
        words.into_iter().fold(Actions::NONE, |acc, w| {
            acc | match w {
                "pull" => Actions::PULL,
                "push" => Actions::PUSH,
                "delete" => Actions::DELETE,
                "*" => Actions::ALL,
                _ => Actions::NONE,
            }
        })
    }

    pub fn words(self) -> Vec<&'static str> {
        [
            (Actions::PULL, "pull"),
            (Actions::PUSH, "push"),
            (Actions::DELETE, "delete"),
        ]
        .into_iter()
        .filter(|(a, _)| self.contains(*a))
        .map(|(_, w)| w)
        .collect()
    }
}

impl BitOr for Actions {
    type Output = Actions;
    fn bitor(self, rhs: Actions) -> Actions {
        Actions(self.0 | rhs.0)
    }
}

impl BitOrAssign for Actions {
    fn bitor_assign(&mut self, rhs: Actions) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.words().join(","))
    }
}

impl<'de> Deserialize<'de> for Actions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let words = Vec::<String>::deserialize(d)?;
        let mut actions = Actions::NONE;
        for w in &words {
            let a = Actions::from_words([w.as_str()]);
            if a.is_empty() {
                return Err(serde::de::Error::custom(format!(
                    "unknown action {w:?} (use pull, push, delete or *)"
                )));
            }
            actions |= a;
        }
        Ok(actions)
    }
}

/// A repository glob: `*` matches any characters, `/` included; `?` one character.
#[derive(Clone)]
pub struct RepoGlob(globset::GlobMatcher);

impl fmt::Debug for RepoGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.glob().glob())
    }
}

impl RepoGlob {
    /// Compile `glob` (`*` crosses `/`, as in `access:` rules).
    pub fn new(glob: &str) -> Result<RepoGlob, String> {
        globset::GlobBuilder::new(glob)
            .literal_separator(false)
            .build()
            .map(|g| RepoGlob(g.compile_matcher()))
            .map_err(|e| format!("bad repository glob {glob:?}: {e}"))
    }

    pub fn is_match(&self, repo: &str) -> bool {
        self.0.is_match(repo)
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        self.0.glob().glob()
    }
}

impl<'de> Deserialize<'de> for RepoGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RepoGlob::new(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub repositories: Vec<RepoGlob>,
    /// User names; `*` is any authenticated user.
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether callers without credentials get this rule.
    #[serde(default)]
    pub anonymous: bool,
    pub actions: Actions,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl AccessPolicy {
    /// What `user` (None: anonymous) may do in `repo`.
    pub fn allowed(&self, user: Option<&str>, repo: &str) -> Actions {
        self.allowed_in_groups(user, &[], repo)
    }

    /// What `user` may do in `repo` when a directory (LDAP, OIDC) also puts them in
    /// `groups`: a rule's `groups` match those as they match `access.groups`.
    pub fn allowed_in_groups(&self, user: Option<&str>, groups: &[String], repo: &str) -> Actions {
        self.rules
            .iter()
            .filter(|r| {
                self.applies(r, user, groups) && r.repositories.iter().any(|g| g.0.is_match(repo))
            })
            .fold(Actions::NONE, |acc, r| acc | r.actions)
    }

    fn applies(&self, rule: &Rule, user: Option<&str>, groups: &[String]) -> bool {
        match user {
            None => rule.anonymous,
            Some(u) => {
                rule.anonymous
                    || rule.users.iter().any(|x| x == "*" || x == u)
                    || rule.groups.iter().any(|g| {
                        groups.contains(g)
                            || self
                                .groups
                                .get(g)
                                .is_some_and(|members| members.iter().any(|m| m == u))
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AccessPolicy {
        serde_norway::from_str(
            r#"
groups:
  ci: [alice, bob]
rules:
  - { repositories: ["public/*"], anonymous: true, actions: [pull] }
  - { repositories: ["apps/*"], groups: [ci], actions: [pull, push] }
  - { repositories: ["*"], users: [admin], actions: ["*"] }
  - { repositories: ["team/?"], users: ["*"], actions: [pull] }
"#,
        )
        .unwrap()
    }

    #[test]
    fn rules_grant_by_user_group_and_anonymity() {
        let p = policy();
        assert_eq!(p.allowed(None, "public/busybox"), Actions::PULL);
        assert_eq!(p.allowed(None, "apps/web"), Actions::NONE);
        assert_eq!(
            p.allowed(Some("alice"), "apps/web/frontend"),
            Actions::PULL | Actions::PUSH
        );
        assert_eq!(
            p.allowed(Some("alice"), "public/x"),
            Actions::PULL,
            "anonymous grants reach users too"
        );
        assert_eq!(p.allowed(Some("carol"), "apps/web"), Actions::NONE);
        assert_eq!(p.allowed(Some("admin"), "anything/at/all"), Actions::ALL);
        assert_eq!(p.allowed(Some("carol"), "team/a"), Actions::PULL);
        assert_eq!(p.allowed(Some("carol"), "team/ab"), Actions::NONE);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(serde_norway::from_str::<AccessPolicy>(
            "rules: [{repositories: ['*'], actions: [fly]}]"
        )
        .is_err());
        assert!(serde_norway::from_str::<AccessPolicy>(
            "rules: [{repositories: ['[']  , actions: [pull]}]"
        )
        .is_err());
        assert!(serde_norway::from_str::<AccessPolicy>(
            "rules: [{repositories: ['*'], actions: [pull], user: [x]}]"
        )
        .is_err());
    }
}
