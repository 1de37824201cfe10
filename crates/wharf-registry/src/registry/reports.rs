//! What garbage collection and scrub did, kept in the store (`_wharf/reports/<job>.json`):
//! these jobs run as commands in processes of their own as often as inside `wharf serve`,
//! so a server's metrics read their figures from the store, not from its own memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::{Deserialize, Serialize};

use super::Core;
use crate::store::fs::durable;

/// The jobs that report, and what each counts.
pub const JOBS: [(&str, &[&str]); 2] = [
    ("gc", &["blobs_deleted", "manifests_deleted", "bytes_freed"]),
    ("scrub", &["blobs_checked", "bytes_checked", "problems"]),
];

/// A job's runs: totals since the store began recording, and the last run alone.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Runs {
    pub runs: u64,
    pub totals: BTreeMap<String, u64>,
    pub last: BTreeMap<String, u64>,
    pub last_duration_seconds: f64,
    /// Unix time the last run finished.
    pub last_finished: f64,
}

fn path(dir: &Path, job: &str) -> PathBuf {
    dir.join("reports").join(format!("{job}.json"))
}

pub fn load(dir: &Path, job: &str) -> Option<Runs> {
    let bytes = std::fs::read(path(dir, job)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Core {
    /// Add a finished run to the store's figures. A failure is logged: the job itself
    /// succeeded. Two jobs of one kind do not run at once (each takes its lock), so the
    /// read-modify-write is not raced.
    pub(crate) fn record_run(&self, job: &str, took: Duration, figures: &[(&str, u64)]) {
        let Some(dir) = &self.store.state_dir else {
            return;
        };
        let mut runs = load(dir, job).unwrap_or_default();
        runs.runs += 1;
        runs.last.clear();
        for (name, n) in figures {
            *runs.totals.entry((*name).to_owned()).or_default() += n;
            runs.last.insert((*name).to_owned(), *n);
        }
        runs.last_duration_seconds = took.as_secs_f64();
        runs.last_finished = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let file = path(dir, job);
        let bytes = serde_json::to_vec_pretty(&runs).expect("serialisable");
        if let Err(e) = durable::write_atomic(&file, &bytes) {
            tracing::warn!(error = %e, job, "cannot record the run's figures");
        }
    }
}

/// Exposes the stored figures at each scrape: `registry_gc_runs_total`,
/// `registry_gc_bytes_freed_total`, `registry_gc_last_duration_seconds`, and so on.
#[derive(Debug)]
pub struct StoredRuns {
    pub dir: PathBuf,
}

impl Collector for StoredRuns {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (job, figures) in JOBS {
            let runs = load(&self.dir, job).unwrap_or_default();
            let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, n: u64| {
                let c = ConstCounter::new(n);
                let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
                c.encode(m)
            };
            counter(
                &mut encoder,
                &format!("{job}_runs"),
                &format!("Completed {job} runs on this store, by any process."),
                runs.runs,
            )?;
            for f in figures {
                let n = runs.totals.get(*f).copied().unwrap_or(0);
                counter(
                    &mut encoder,
                    &format!("{job}_{f}"),
                    &format!("{job}: {f}, over all runs on this store."),
                    n,
                )?;
            }
            for (name, help, v) in [
                (
                    "last_duration_seconds",
                    "How long the last run took.",
                    runs.last_duration_seconds,
                ),
                (
                    "last_run_timestamp_seconds",
                    "When the last run finished (Unix time; 0 if never).",
                    runs.last_finished,
                ),
            ] {
                let g = ConstGauge::new(v);
                let full = format!("{job}_{name}");
                let m = encoder.encode_descriptor(&full, help, None, g.metric_type())?;
                g.encode(m)?;
            }
        }
        Ok(())
    }
}
