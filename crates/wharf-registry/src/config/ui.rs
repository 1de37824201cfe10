//! `ui:` (wharf's own): the web UI, and who administers it.

use serde::Deserialize;
use serde_norway::Value;

use super::{lenient, ConfigError, UiConfig};

#[derive(Deserialize, Default)]
pub(super) struct Ui {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
    /// A list, or (from `REGISTRY_UI_ADMINS`) one comma-separated string.
    admins: Option<Value>,
    /// The registry's name in the UI's header (the host it is reached at, unset).
    title: Option<String>,
}

impl Ui {
    pub(super) fn into_config(self, origin: &str) -> Result<UiConfig, ConfigError> {
        let bad = |message: String| ConfigError::value(origin, "ui.admins", message);
        let admins = match self.admins {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s
                .split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            Some(Value::Sequence(list)) => list
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(bad(format!("{other:?} is not a user name"))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(bad(format!("{other:?} is not a list of user names"))),
        };
        Ok(UiConfig {
            enabled: self.enabled.unwrap_or(true),
            admins,
            title: self.title.filter(|t| !t.trim().is_empty()),
        })
    }
}
