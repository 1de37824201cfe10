//! What garbage collection and scrub did, kept in the store's records (on a filesystem,
//! `_wharf/reports/<job>.json`): these jobs run as commands in processes of their own as
//! often as inside `wharf serve`, so a server's metrics read their figures from the store,
//! not from its own memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::{Deserialize, Serialize};

use super::Core;
use crate::store::state::{Record, Records};

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

/// The job's runs so far; None if none was recorded (or the record cannot be read).
pub async fn load(records: &dyn Records, job: &str) -> Option<Runs> {
    let bytes = records.get(Record::Report(job)).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

impl Core {
    /// Add a finished run to the store's figures. A failure is logged: the job itself
    /// succeeded. Two jobs of one kind do not run at once (each takes its lock), so the
    /// read-modify-write is not raced.
    pub(crate) async fn record_run(&self, job: &str, took: Duration, figures: &[(&str, u64)]) {
        let Some(state) = &self.store.state else {
            return;
        };
        let mut runs = load(&**state, job).await.unwrap_or_default();
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
        let bytes = serde_json::to_vec_pretty(&runs).expect("serialisable");
        if let Err(e) = state.put(Record::Report(job), bytes).await {
            tracing::warn!(error = %e, job, "cannot record the run's figures");
        }
    }
}

/// A collector is synchronous. The filesystem's records answer without waiting; a
/// database's are awaited on the runtime, with this worker handed over to the others
/// meanwhile (a scrape is rare, and its reads are small).
fn read_now<F: std::future::Future>(f: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        _ => futures::executor::block_on(f),
    }
}

/// Exposes the stored figures at each scrape: `registry_gc_runs_total`,
/// `registry_gc_bytes_freed_total`, `registry_gc_last_duration_seconds`, and so on.
pub struct StoredRuns {
    pub records: Arc<dyn Records>,
}

impl std::fmt::Debug for StoredRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredRuns")
    }
}

impl Collector for StoredRuns {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (job, figures) in JOBS {
            let runs = read_now(load(&*self.records, job)).unwrap_or_default();
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
