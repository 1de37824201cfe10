//! `log:`: level, format, and whether every request is logged.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_norway::Value;

use super::{lenient, LogConfig};

#[derive(Deserialize, Default)]
pub(super) struct Log {
    level: Option<String>,
    formatter: Option<String>,
    /// Extra fields registry:2 adds to each line; accepted, not added.
    #[serde(rename = "fields")]
    _fields: Option<BTreeMap<String, Value>>,
    accesslog: Option<AccessLog>,
}

#[derive(Deserialize, Default)]
struct AccessLog {
    #[serde(default, deserialize_with = "lenient::bool")]
    disabled: Option<bool>,
}

impl Log {
    pub(super) fn into_config(self) -> LogConfig {
        LogConfig {
            level: self.level,
            json: self.formatter.as_deref() == Some("json"),
            access_log: !self.accesslog.and_then(|a| a.disabled).unwrap_or(false),
        }
    }
}
