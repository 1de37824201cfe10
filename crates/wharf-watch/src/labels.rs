//! watchtower's container labels, read as watchtower reads them so a switch changes
//! nothing on the containers, and which containers a session looks at.

use std::collections::HashMap;
use std::time::Duration;

pub const ENABLE: &str = "com.centurylinklabs.watchtower.enable";
pub const MONITOR_ONLY: &str = "com.centurylinklabs.watchtower.monitor-only";
pub const DEPENDS_ON: &str = "com.centurylinklabs.watchtower.depends-on";
pub const STOP_SIGNAL: &str = "com.centurylinklabs.watchtower.stop-signal";
pub const SCOPE: &str = "com.centurylinklabs.watchtower.scope";
pub const NO_PULL: &str = "com.centurylinklabs.watchtower.no-pull";
/// Set on watchtower's own container; wharf's image sets it too, so neither updates the
/// process that is doing the updating.
pub const IS_WATCHER: &str = "com.centurylinklabs.watchtower";
pub const COMPOSE_DEPENDS_ON: &str = "com.docker.compose.depends_on";
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// The lifecycle hooks, in the order a session can run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    PreCheck,
    PreUpdate,
    PostUpdate,
    PostCheck,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::PreCheck => "pre-check",
            Hook::PreUpdate => "pre-update",
            Hook::PostUpdate => "post-update",
            Hook::PostCheck => "post-check",
        }
    }

    /// The label holding the command: `…lifecycle.pre-update`.
    pub fn command_label(self) -> String {
        format!("com.centurylinklabs.watchtower.lifecycle.{}", self.name())
    }

    /// The label holding its timeout in minutes: `…lifecycle.pre-update-timeout`.
    pub fn timeout_label(self) -> String {
        format!("{}-timeout", self.command_label())
    }
}

/// A container's labels, with watchtower's typed readings.
pub struct Labels<'a>(pub &'a HashMap<String, String>);

impl Labels<'_> {
    fn flag(&self, key: &str) -> Option<bool> {
        self.0.get(key).and_then(|v| parse_bool(v.trim()))
    }

    /// `Some(false)` when explicitly disabled, `Some(true)` when enabled, `None` when unset.
    pub fn enabled(&self) -> Option<bool> {
        self.flag(ENABLE)
    }

    /// The monitor-only label against `--monitor-only`, by watchtower's rule (see `either`).
    pub fn monitor_only(&self, flag: bool, label_first: bool) -> bool {
        either(self.flag(MONITOR_ONLY), flag, label_first)
    }

    /// The no-pull label against `--no-pull`, by watchtower's rule (see `either`).
    pub fn no_pull(&self, flag: bool, label_first: bool) -> bool {
        either(self.flag(NO_PULL), flag, label_first)
    }

    pub fn is_watcher(&self) -> bool {
        self.flag(IS_WATCHER).unwrap_or(false)
    }

    pub fn scope(&self) -> Option<&str> {
        self.0
            .get(SCOPE)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn stop_signal(&self) -> Option<&str> {
        self.0
            .get(STOP_SIGNAL)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// Container names from the depends-on label, comma separated, `/` optional.
    pub fn depends_on(&self) -> Vec<String> {
        split_names(self.0.get(DEPENDS_ON).map(String::as_str).unwrap_or(""))
    }

    /// Compose services this one depends on: `db:service_started:false,cache:…`.
    pub fn compose_depends_on(&self) -> Vec<String> {
        self.0
            .get(COMPOSE_DEPENDS_ON)
            .map(|v| {
                v.split(',')
                    .filter_map(|entry| entry.split(':').next())
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn compose_service(&self) -> Option<(&str, &str)> {
        Some((
            self.0.get(COMPOSE_PROJECT)?.as_str(),
            self.0.get(COMPOSE_SERVICE)?.as_str(),
        ))
    }

    pub fn hook(&self, hook: Hook) -> Option<&str> {
        self.0
            .get(&hook.command_label())
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// The hook's timeout: its label in minutes (watchtower's unit), one minute by
    /// default, and `0` meaning no limit is capped at an hour rather than forever.
    pub fn hook_timeout(&self, hook: Hook) -> Duration {
        let minutes = self
            .0
            .get(&hook.timeout_label())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1);
        match minutes {
            0 => Duration::from_secs(3600),
            m => Duration::from_secs(m.min(60) * 60),
        }
    }
}

/// watchtower's `getContainerOrGlobalBool`: an unset label leaves the flag; a set one
/// wins outright with `--label-take-precedence`, else either being true is enough (a
/// `false` label does not undo `--monitor-only`).
fn either(label: Option<bool>, flag: bool, label_first: bool) -> bool {
    match label {
        None => flag,
        Some(label) if label_first => label,
        Some(label) => label || flag,
    }
}

/// Go's `strconv.ParseBool`, which watchtower reads labels with; what it cannot parse
/// counts as unset there, and so here.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

pub fn split_names(list: &str) -> Vec<String> {
    list.split(',')
        .map(|n| n.trim().trim_start_matches('/'))
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Which containers a session looks at: watchtower's rules.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Names given on the command line; empty means all.
    pub names: Vec<String>,
    /// `--label-enable`: only containers labelled `enable=true`.
    pub label_enable: bool,
    /// `--disable-containers`: names never looked at.
    pub disabled: Vec<String>,
    /// `--scope`: only containers whose scope label matches (`none` means unlabelled).
    pub scope: Option<String>,
    /// `--include-stopped`: created and exited containers too.
    pub include_stopped: bool,
    /// `--include-restarting`.
    pub include_restarting: bool,
}

impl Selection {
    /// Whether a container with this name, state and labels is watched.
    pub fn includes(&self, name: &str, state: &str, labels: &Labels) -> bool {
        let state_ok = match state {
            "running" => true,
            "restarting" => self.include_restarting,
            "created" | "exited" => self.include_stopped,
            _ => false,
        };
        let name_ok = self.names.is_empty() || self.names.iter().any(|n| n == name);
        let enable_ok = match labels.enabled() {
            Some(enabled) => enabled,
            None => !self.label_enable,
        };
        let scope_ok = match (self.scope.as_deref(), labels.scope()) {
            (None, _) => true,
            (Some("none"), None) => true,
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
        };
        state_ok
            && name_ok
            && enable_ok
            && scope_ok
            && !self.disabled.iter().any(|d| d == name)
            && !labels.is_watcher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_enable_needs_the_label_and_false_always_excludes() {
        let on = labels(&[(ENABLE, "true")]);
        let off = labels(&[(ENABLE, "false")]);
        let none = labels(&[]);
        let all = Selection::default();
        let only_labelled = Selection {
            label_enable: true,
            ..Default::default()
        };
        assert!(all.includes("a", "running", &Labels(&none)));
        assert!(!all.includes("a", "running", &Labels(&off)));
        assert!(only_labelled.includes("a", "running", &Labels(&on)));
        assert!(!only_labelled.includes("a", "running", &Labels(&none)));
    }

    #[test]
    fn flags_parse_as_go_parses_booleans() {
        let flag = |v: &str| Labels(&labels(&[(ENABLE, v)])).enabled();
        for yes in ["1", "t", "T", "TRUE", "true", "True", " true\n"] {
            assert_eq!(flag(yes), Some(true), "{yes:?}");
        }
        for no in ["0", "f", "F", "FALSE", "false", "False", " 0 "] {
            assert_eq!(flag(no), Some(false), "{no:?}");
        }
        for unset in ["", "yes", "on", "tRUE", "2"] {
            assert_eq!(flag(unset), None, "{unset:?}");
        }
        let only_labelled = Selection {
            label_enable: true,
            ..Default::default()
        };
        let typo = labels(&[(ENABLE, "ture")]);
        assert!(!only_labelled.includes("a", "running", &Labels(&typo)));
        assert!(Selection::default().includes("a", "running", &Labels(&typo)));
    }

    #[test]
    fn names_scope_state_and_the_watcher_itself() {
        let none = labels(&[]);
        let named = Selection {
            names: vec!["web".into()],
            ..Default::default()
        };
        assert!(named.includes("web", "running", &Labels(&none)));
        assert!(!named.includes("db", "running", &Labels(&none)));
        assert!(!Selection::default().includes("web", "exited", &Labels(&none)));
        let scoped = Selection {
            scope: Some("prod".into()),
            ..Default::default()
        };
        assert!(scoped.includes("a", "running", &Labels(&labels(&[(SCOPE, "prod")]))));
        assert!(!scoped.includes("a", "running", &Labels(&none)));
        let watcher = labels(&[(IS_WATCHER, "true")]);
        assert!(!Selection::default().includes("w", "running", &Labels(&watcher)));
    }

    #[test]
    fn dependencies_and_hooks_read_as_watchtower_writes_them() {
        let l = labels(&[
            (DEPENDS_ON, "/db, cache"),
            (
                COMPOSE_DEPENDS_ON,
                "db:service_started:false,queue:service_healthy:true",
            ),
            (
                "com.centurylinklabs.watchtower.lifecycle.pre-update",
                "/stop.sh",
            ),
            (
                "com.centurylinklabs.watchtower.lifecycle.pre-update-timeout",
                "2",
            ),
        ]);
        let l = Labels(&l);
        assert_eq!(l.depends_on(), vec!["db", "cache"]);
        assert_eq!(l.compose_depends_on(), vec!["db", "queue"]);
        assert_eq!(l.hook(Hook::PreUpdate), Some("/stop.sh"));
        assert_eq!(l.hook_timeout(Hook::PreUpdate), Duration::from_secs(120));
        assert_eq!(l.hook_timeout(Hook::PostUpdate), Duration::from_secs(60));
    }
}
