//! How far each target and sync entry has got, for `/metrics` and the UI page. Kept by the
//! process that runs the target (the holder of its job lock); the cursor itself is in the
//! store, so another replica that takes over starts where this one stopped.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use wharf_oci::sync::lock;

/// One target's figures, or one sync entry's.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Progress {
    /// The last event replicated (or skipped as not covered).
    pub cursor: u64,
    /// Events after the cursor: what is still to go.
    pub queue: u64,
    /// Seconds from the oldest event not yet replicated to now; 0 when caught up.
    pub lag_seconds: f64,
    /// Tags, manifests and deletes sent (sync: tags copied).
    pub replicated: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Unix seconds.
    pub last_error_at: Option<f64>,
    pub last_success_at: Option<f64>,
    /// Whether this process is the one running it (holds its job lock).
    pub running_here: bool,
}

#[derive(Default)]
pub struct Status {
    targets: Mutex<BTreeMap<String, Progress>>,
    syncs: Mutex<BTreeMap<String, Progress>>,
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Status {
    pub fn register(&self, target: &str) {
        lock(&self.targets).entry(target.to_owned()).or_default();
    }

    pub fn register_sync(&self, name: &str) {
        lock(&self.syncs).entry(name.to_owned()).or_default();
    }

    pub fn update(&self, target: &str, f: impl FnOnce(&mut Progress)) {
        f(lock(&self.targets).entry(target.to_owned()).or_default());
    }

    pub fn update_sync(&self, name: &str, f: impl FnOnce(&mut Progress)) {
        f(lock(&self.syncs).entry(name.to_owned()).or_default());
    }

    pub fn failed(&self, target: &str, error: &str) {
        self.update(target, |p| {
            p.failures += 1;
            p.last_error = Some(error.to_owned());
            p.last_error_at = Some(unix(SystemTime::now()));
        });
    }

    pub fn targets(&self) -> BTreeMap<String, Progress> {
        lock(&self.targets).clone()
    }

    pub fn syncs(&self) -> BTreeMap<String, Progress> {
        lock(&self.syncs).clone()
    }
}

type Figure = (&'static str, &'static str, fn(&Progress) -> f64);

const GAUGES: [Figure; 3] = [
    (
        "replication_queue_length",
        "Events in the log not yet replicated to the target.",
        |p| p.queue as f64,
    ),
    (
        "replication_lag_seconds",
        "Age of the oldest event not yet replicated to the target; 0 when caught up.",
        |p| p.lag_seconds,
    ),
    (
        "replication_last_error_timestamp_seconds",
        "When the target last failed (Unix time); 0 if never.",
        |p| p.last_error_at.unwrap_or(0.0),
    ),
];

type Count = (&'static str, &'static str, fn(&Progress) -> u64);

const COUNTERS: [Count; 2] = [
    (
        "replication_replicated",
        "Tags, manifests and deletes replicated to the target (sync: tags copied in).",
        |p| p.replicated,
    ),
    (
        "replication_failures",
        "Failed attempts to replicate to the target (each retried).",
        |p| p.failures,
    ),
];

impl Collector for Status {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let mut rows: Vec<(&str, String, Progress)> = Vec::new();
        for (name, p) in self.targets() {
            rows.push(("target", name, p));
        }
        for (name, p) in self.syncs() {
            rows.push(("sync", name, p));
        }
        if rows.is_empty() {
            return Ok(());
        }
        for (name, help, f) in GAUGES {
            let probe = ConstGauge::new(0.0);
            let mut m = e.encode_descriptor(name, help, None, probe.metric_type())?;
            for (kind, target, p) in &rows {
                let labels = vec![("kind", *kind), ("target", target.as_str())];
                ConstGauge::new(f(p)).encode(m.encode_family(&labels)?)?;
            }
        }
        for (name, help, f) in COUNTERS {
            let probe = ConstCounter::new(0u64);
            let mut m = e.encode_descriptor(name, help, None, probe.metric_type())?;
            for (kind, target, p) in &rows {
                let labels = vec![("kind", *kind), ("target", target.as_str())];
                ConstCounter::new(f(p)).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status").finish_non_exhaustive()
    }
}
