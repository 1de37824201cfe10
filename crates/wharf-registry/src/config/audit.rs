//! `audit:` (wharf's own): the tamper-evident audit log.
//!
//! ```yaml
//! audit:
//!   enabled: true            # the default
//!   pulls: false             # pulls are many; record them only when asked
//!   file: /var/log/wharf/audit.jsonl   # also append each record here, for a log shipper
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::{lenient, AuditConfig};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Audit {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pulls: Option<bool>,
    file: Option<PathBuf>,
}

impl Audit {
    pub(super) fn into_config(self) -> AuditConfig {
        AuditConfig {
            enabled: self.enabled.unwrap_or(true),
            pulls: self.pulls.unwrap_or(false),
            file: self.file,
        }
    }
}
