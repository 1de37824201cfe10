//! The operator-facing outputs of registry:2's config: `notifications`, `health` and
//! `http.debug`, in its key names, with its defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::lenient;
use super::{ConfigError, DebugConfig, Endpoint, HealthCheck};

#[derive(Deserialize, Default)]
pub(super) struct Notifications {
    #[serde(default)]
    endpoints: Vec<EndpointFile>,
    #[serde(default)]
    events: NotificationEvents,
    /// wharf's own: `false` keeps no event log (no `/v2/_events`, no webhooks).
    #[serde(default, deserialize_with = "lenient::bool")]
    eventlog: Option<bool>,
}

#[derive(Deserialize, Default)]
struct NotificationEvents {
    #[serde(default, deserialize_with = "lenient::bool")]
    includereferences: Option<bool>,
}

#[derive(Deserialize, Default)]
struct EndpointFile {
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    disabled: Option<bool>,
    url: Option<String>,
    /// `http.Header` in registry:2: each name takes a list of values.
    #[serde(default)]
    headers: BTreeMap<String, Vec<String>>,
    #[serde(default, deserialize_with = "lenient::duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::u64")]
    threshold: Option<u64>,
    #[serde(default, deserialize_with = "lenient::duration")]
    backoff: Option<Duration>,
    #[serde(default)]
    ignoredmediatypes: Vec<String>,
    #[serde(default)]
    ignore: Ignore,
}

#[derive(Deserialize, Default)]
struct Ignore {
    #[serde(default)]
    mediatypes: Vec<String>,
    #[serde(default)]
    actions: Vec<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct Health {
    storagedriver: Option<StorageDriverHealth>,
}

#[derive(Deserialize, Default)]
struct StorageDriverHealth {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::u64")]
    threshold: Option<u64>,
}

#[derive(Deserialize, Default)]
pub(super) struct Debug {
    addr: Option<String>,
    prometheus: Option<Prometheus>,
}

#[derive(Deserialize, Default)]
struct Prometheus {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
    path: Option<String>,
}

/// Only name characters: the name becomes a directory of the event outbox.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

impl Notifications {
    /// `notifications.events.includereferences`: manifest events list what the manifest
    /// references (its config, layers, or child manifests).
    pub(super) fn include_references(&self) -> bool {
        self.events.includereferences == Some(true)
    }

    /// `notifications.eventlog` (wharf's own), on unless `false`.
    pub(super) fn event_log(&self) -> bool {
        self.eventlog != Some(false)
    }

    /// The enabled endpoints, with registry:2's defaults (1 s timeout, threshold 10, 1 s backoff).
    pub(super) fn into_config(self, origin: &str) -> Result<Vec<Endpoint>, ConfigError> {
        let mut out: Vec<Endpoint> = Vec::new();
        for (i, e) in self.endpoints.into_iter().enumerate() {
            let key = |k: &str| format!("notifications.endpoints[{i}].{k}");
            let bad = |k: &str, message: String| ConfigError::Value {
                origin: origin.to_owned(),
                key: key(k),
                message,
            };
            if e.disabled == Some(true) {
                continue;
            }
            let name = e.name.ok_or_else(|| bad("name", "is required".into()))?;
            if !valid_name(&name) {
                return Err(bad(
                    "name",
                    format!("{name:?}: use letters, digits, '-', '_' and '.' only"),
                ));
            }
            if out.iter().any(|o| o.name == name) {
                return Err(bad("name", format!("{name:?} is used twice")));
            }
            let url = e.url.ok_or_else(|| bad("url", "is required".into()))?;
            let parsed =
                reqwest::Url::parse(&url).map_err(|err| bad("url", format!("{url:?}: {err}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad("url", format!("{url:?} is not an http(s) URL")));
            }
            let headers = e
                .headers
                .into_iter()
                .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
                .collect();
            let mut ignored_media_types = e.ignore.mediatypes;
            ignored_media_types.extend(e.ignoredmediatypes);
            out.push(Endpoint {
                name,
                url,
                headers,
                timeout: e
                    .timeout
                    .filter(|d| !d.is_zero())
                    .unwrap_or(Duration::from_secs(1)),
                threshold: e.threshold.filter(|t| *t > 0).unwrap_or(10),
                backoff: e
                    .backoff
                    .filter(|d| !d.is_zero())
                    .unwrap_or(Duration::from_secs(1)),
                ignored_media_types,
                ignored_actions: e.ignore.actions,
            });
        }
        Ok(out)
    }
}

impl Health {
    /// `health.storagedriver` when enabled. registry:2 checks every 10 s by default and
    /// turns unhealthy on the first failure when no threshold is given.
    pub(super) fn into_config(self) -> Option<HealthCheck> {
        let s = self.storagedriver?;
        if s.enabled != Some(true) {
            return None;
        }
        Some(HealthCheck {
            interval: s
                .interval
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(10)),
            threshold: s.threshold.filter(|t| *t > 0).unwrap_or(1),
        })
    }
}

impl Debug {
    pub(super) fn into_config(self, origin: &str) -> Result<Option<DebugConfig>, ConfigError> {
        let Some(addr) = self.addr.filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        // registry:2's documented example is `localhost:5001`: names resolve.
        let resolved = super::parse_addr(&addr).or_else(|e| {
            use std::net::ToSocketAddrs;
            addr.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(e)
        });
        let addr = resolved.map_err(|message| ConfigError::Value {
            origin: origin.to_owned(),
            key: "http.debug.addr".into(),
            message,
        })?;
        let prometheus = self
            .prometheus
            .filter(|p| p.enabled == Some(true))
            .map(|p| {
                p.path
                    .filter(|p| p.starts_with('/'))
                    .unwrap_or_else(|| "/metrics".into())
            });
        Ok(Some(DebugConfig { addr, prometheus }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    fn load(yaml: &str, env: &[(&str, &str)]) -> (super::super::Config, Vec<String>) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        super::super::load(
            Some(f.path()),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
    }

    const YAML: &str = "version: 0.1
notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      disabled: false
      url: https://my.listener.com/event
      headers:
        Authorization: [Bearer s3cret]
      timeout: 500ms
      threshold: 5
      backoff: 1s
      ignoredmediatypes:
        - application/octet-stream
      ignore:
        mediatypes:
           - application/octet-stream
        actions:
           - pull
    - name: off
      disabled: true
      url: http://nowhere
http:
  debug:
    addr: localhost:5001
    prometheus:
      enabled: true
      path: /metrics
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";

    #[test]
    fn registry2_documented_example_loads() {
        let (c, warnings) = load(YAML, &[]);
        let e = &c.notifications[0];
        assert_eq!(c.notifications.len(), 1, "the disabled endpoint is dropped");
        assert_eq!((e.name.as_str(), e.threshold), ("alistener", 5));
        assert_eq!(e.timeout, Duration::from_millis(500));
        assert_eq!(
            e.headers,
            [("Authorization".into(), "Bearer s3cret".into())]
        );
        assert_eq!(e.ignored_actions, ["pull"]);
        assert_eq!(e.ignored_media_types.len(), 2);
        let d = c.http.debug.unwrap();
        assert_eq!(d.addr.port(), 5001);
        assert_eq!(d.prometheus.as_deref(), Some("/metrics"));
        let h = c.health.unwrap();
        assert_eq!((h.interval, h.threshold), (Duration::from_secs(10), 3));
        assert!(c.include_references);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn endpoints_from_the_environment_as_registry2_reads_them() {
        // registry:2 parses an environment value as YAML into the field it names.
        let (c, _) = load(
            "version: 0.1\n",
            &[
                (
                    "REGISTRY_NOTIFICATIONS_ENDPOINTS",
                    "- name: hook\n  url: http://127.0.0.1:9/e\n  backoff: 2s\n",
                ),
                ("REGISTRY_HTTP_DEBUG_ADDR", ":5001"),
                ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true"),
                ("REGISTRY_HEALTH_STORAGEDRIVER_ENABLED", "true"),
            ],
        );
        assert_eq!(c.notifications[0].name, "hook");
        assert_eq!(c.notifications[0].backoff, Duration::from_secs(2));
        assert_eq!(c.notifications[0].threshold, 10);
        let d = c.http.debug.unwrap();
        assert_eq!(d.prometheus.as_deref(), Some("/metrics"));
        assert_eq!(c.health.unwrap().threshold, 1);
    }
}
