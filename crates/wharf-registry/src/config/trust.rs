//! `trust:` (wharf's own): which signatures a repository's images must carry to be pulled.
//!
//! ```yaml
//! trust:
//!   - repositories: ["prod/*"]      # the globs of `access:`
//!     name: prod                    # optional; `wharf watch --trust` names rules by it
//!     mode: enforce                 # or warn
//!     keys: [/etc/wharf/cosign.pub] # cosign public keys (PEM)
//!     roots: [/etc/wharf/ca.pem]    # X.509 roots for Notation (certificate-signed) images
//! ```
//!
//! The first rule whose glob matches a repository is the one that applies, as with
//! `access:`. Keys and roots are read when the server starts: a rule that names a file
//! wharf cannot read stops the start, since a rule that trusts nothing would refuse every
//! pull for a reason the operator would not see.

use std::path::PathBuf;

use serde::Deserialize;

use crate::auth::policy::RepoGlob;

/// What a rule does with a pull no trusted signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustMode {
    /// Refuse it: `403 DENIED`, saying which rule and why.
    Enforce,
    /// Serve it, with a log line, a metric and a `Wharf-Trust` response header.
    Warn,
}

impl TrustMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TrustMode::Enforce => "enforce",
            TrustMode::Warn => "warn",
        }
    }
}

/// One `trust:` rule, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRule {
    pub repositories: Vec<RepoGlob>,
    #[serde(default)]
    pub name: Option<String>,
    pub mode: TrustMode,
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    #[serde(default)]
    pub roots: Vec<PathBuf>,
}

impl TrustRule {
    pub fn matches(&self, repo: &str) -> bool {
        self.repositories.iter().any(|g| g.is_match(repo))
    }

    /// How messages name the rule: its name, else its globs (`trust rule "prod/*"`).
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self
                .repositories
                .iter()
                .map(RepoGlob::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// A rule that names neither keys nor roots would refuse everything it covers.
    pub(super) fn check(&self, origin: &str, index: usize) -> Result<(), super::ConfigError> {
        let key = format!("trust.{index}");
        if self.repositories.is_empty() {
            return Err(super::ConfigError::value(
                origin,
                &format!("{key}.repositories"),
                "a trust rule needs at least one repository glob",
            ));
        }
        if self.keys.is_empty() && self.roots.is_empty() {
            return Err(super::ConfigError::value(
                origin,
                &key,
                "a trust rule must name cosign public keys (keys:) or X.509 roots (roots:); one with neither would trust nothing",
            ));
        }
        Ok(())
    }
}
