//! Registry events: what was pushed, pulled, mounted and deleted, kept in an ordered log
//! in the store (`log`), sent to registry:2-style webhooks (`sink`) and streamed to
//! subscribers of `/v2/_events`. Any front end (API, UI, mirror) emits through [`Events`].

pub mod envelope;
mod layer;
mod log;
mod sink;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use envelope::{Event, Origin, Source};
pub use layer::EventsLayer;
use log::EventLog;

use crate::config::Endpoint;
use crate::metrics::Metrics;

/// How many events the log keeps for subscribers that resume, at least.
pub const RETAIN_EVENTS: usize = 5000;
/// And for how long, whatever their number.
pub const RETAIN_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often other processes' appends are looked for.
const POLL: Duration = Duration::from_millis(250);

pub struct Events {
    log: Arc<EventLog>,
    dir: PathBuf,
    source: Source,
    /// Pull events cost a write per pull: kept only when an endpoint wants them.
    record_pulls: bool,
    endpoints: Vec<Endpoint>,
    newest: watch::Sender<u64>,
    closing: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Events {
    /// The log under `dir` (`_wharf/events/` beside registry:2's layout).
    pub fn open(
        dir: &Path,
        endpoints: Vec<Endpoint>,
        source: Source,
        metrics: Arc<Metrics>,
    ) -> io::Result<Events> {
        let log = Arc::new(EventLog::open(dir.join("log"))?);
        let newest = log.newest();
        let record_pulls = endpoints
            .iter()
            .any(|e| !e.ignored_actions.iter().any(|a| a == envelope::PULL));
        Ok(Events {
            log,
            dir: dir.to_owned(),
            source,
            record_pulls,
            endpoints,
            newest: watch::channel(newest).0,
            closing: watch::channel(false).0,
            metrics,
        })
    }

    /// Whether events of `action` are recorded: lets callers skip building them.
    pub fn wants(&self, action: &str) -> bool {
        action != envelope::PULL || self.record_pulls
    }

    /// Append `events` durably, in order. A failure is logged, not returned: the
    /// operation they describe has happened and its client must hear so.
    pub async fn emit(&self, events: Vec<Event>) {
        let mut encoded = Vec::with_capacity(events.len());
        for mut e in events.into_iter().filter(|e| self.wants(&e.action)) {
            e.source = self.source.clone();
            let action = e.action.clone();
            match serde_json::to_vec(&e) {
                Ok(bytes) => encoded.push((action, bytes)),
                Err(err) => tracing::warn!(error = %err, "cannot encode an event"),
            }
        }
        if encoded.is_empty() {
            return;
        }
        let this = self.log.clone();
        let metrics = self.metrics.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut last = 0;
            for (action, bytes) in encoded {
                last = this.append(&bytes)?;
                metrics.event_recorded(&action);
            }
            Ok::<_, io::Error>(last)
        })
        .await;
        match result {
            Ok(Ok(seq)) => {
                self.newest.send_if_modified(|n| {
                    let changed = seq > *n;
                    *n = (*n).max(seq);
                    changed
                });
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot record an event: its notification is lost")
            }
            Err(e) => tracing::warn!(error = %e, "recording an event panicked"),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    pub fn newest(&self) -> u64 {
        self.log.newest()
    }

    /// See [`EventLog::first_from`].
    pub fn first_from(&self, seq: u64) -> io::Result<Option<u64>> {
        self.log.first_from(seq)
    }

    /// The event numbered `seq`, if retained (and readable).
    pub async fn read(&self, seq: u64) -> io::Result<Option<Event>> {
        let bytes = match self.log.read(seq)? {
            Some(b) => b,
            None => return Ok(None),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::other(format!("event {seq}: {e}")))
    }

    /// The event numbered `seq` as stored (one JSON object), if retained.
    pub async fn read_raw(&self, seq: u64) -> io::Result<Option<Vec<u8>>> {
        self.log.read(seq)
    }

    fn endpoint_dir(&self, name: &str) -> PathBuf {
        self.dir.join("endpoints").join(name)
    }

    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Stop deliveries and end event streams (at shutdown, so they do not hold up the drain).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Start delivering to every endpoint, noticing other processes' appends, and trimming.
    pub fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        for e in &self.endpoints {
            let d = sink::Delivery::new(e.clone(), self.clone(), self.metrics.clone())?;
            tokio::spawn(d.run());
        }
        tokio::spawn(self.clone().watch_store());
        Ok(())
    }

    /// Other processes append to the same log: look for their events, and trim now and then.
    async fn watch_store(self: Arc<Self>) {
        let mut closing = self.closing();
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = closing.wait_for(|c| *c) => return,
            }
            let newest = self.log.newest();
            self.newest.send_if_modified(|n| {
                let changed = newest > *n;
                *n = (*n).max(newest);
                changed
            });
            ticks += 1;
            if ticks.is_multiple_of(240) {
                let this = self.clone();
                let _ = tokio::task::spawn_blocking(move || this.trim()).await;
            }
        }
    }

    /// Keep what subscribers may resume from and what any endpoint has yet to receive.
    fn trim(&self) {
        let mut delivered = u64::MAX;
        for e in &self.endpoints {
            let cursor = std::fs::read_to_string(self.endpoint_dir(&e.name).join("cursor"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            delivered = delivered.min(cursor);
        }
        match self.log.trim(RETAIN_EVENTS, RETAIN_AGE, delivered) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "trimmed the event log"),
            Err(e) => tracing::warn!(error = %e, "cannot trim the event log"),
        }
    }
}
