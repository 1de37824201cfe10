//! Registry events: what was pushed, pulled, mounted and deleted, kept in the store's
//! ordered log ([`EventLog`]), sent to registry:2-style webhooks (`sink`) and streamed to
//! subscribers of `/v2/_events`. Any front end (API, UI, mirror) emits through [`Events`].

pub mod envelope;
mod layer;
mod sink;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use envelope::{Event, Origin, Source};
pub use layer::EventsLayer;

use crate::config::Endpoint;
use crate::metrics::Metrics;
use crate::store::state::EventLog;
use crate::store::{StoreError, StoreResult};

/// How many events the log keeps for subscribers that resume, at least.
pub const RETAIN_EVENTS: usize = 5000;
/// And for how long, whatever their number.
pub const RETAIN_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often other processes' appends are looked for.
const POLL: Duration = Duration::from_millis(250);

pub struct Events {
    log: Arc<dyn EventLog>,
    source: Source,
    /// Pull events cost a write per pull: kept only when an endpoint wants them.
    record_pulls: bool,
    endpoints: Vec<Endpoint>,
    newest: watch::Sender<u64>,
    closing: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Events {
    /// Events in `log`, the store's (`_wharf/events/` beside registry:2's layout on a
    /// filesystem). Fails when the log cannot be read.
    pub async fn open(
        log: Arc<dyn EventLog>,
        endpoints: Vec<Endpoint>,
        source: Source,
        metrics: Arc<Metrics>,
    ) -> StoreResult<Events> {
        let newest = log.newest().await?;
        let record_pulls = endpoints
            .iter()
            .any(|e| !e.ignored_actions.iter().any(|a| a == envelope::PULL));
        Ok(Events {
            log,
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
        let mut last = None;
        for mut e in events.into_iter().filter(|e| self.wants(&e.action)) {
            e.source = self.source.clone();
            let bytes = match serde_json::to_vec(&e) {
                Ok(bytes) => bytes,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot encode an event");
                    continue;
                }
            };
            match self.log.append(bytes).await {
                Ok(seq) => {
                    self.metrics.event_recorded(&e.action);
                    last = Some(seq);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot record an event: its notification is lost");
                    break;
                }
            }
        }
        if let Some(seq) = last {
            self.newest.send_if_modified(|n| {
                let changed = seq > *n;
                *n = (*n).max(seq);
                changed
            });
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// The newest event, other processes' appends included; the last one seen if the log
    /// cannot be read now.
    pub async fn newest(&self) -> u64 {
        match self.log.newest().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event log");
                *self.newest.borrow()
            }
        }
    }

    /// See [`EventLog::first_from`].
    pub async fn first_from(&self, seq: u64) -> StoreResult<Option<u64>> {
        self.log.first_from(seq).await
    }

    /// The event numbered `seq`, if retained (and readable).
    pub async fn read(&self, seq: u64) -> StoreResult<Option<Event>> {
        let Some(bytes) = self.log.read(seq).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: format!("event {seq}"),
                why: e.to_string(),
            })
    }

    /// The event numbered `seq` as stored (one JSON object), if retained.
    pub async fn read_raw(&self, seq: u64) -> StoreResult<Option<Vec<u8>>> {
        self.log.read(seq).await
    }

    /// The log itself, for readers that keep cursors and leases of their own (replication).
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
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
            if let Ok(newest) = self.log.newest().await {
                self.newest.send_if_modified(|n| {
                    let changed = newest > *n;
                    *n = (*n).max(newest);
                    changed
                });
            }
            ticks += 1;
            if ticks.is_multiple_of(240) {
                self.trim().await;
            }
        }
    }

    /// Keep what subscribers may resume from and what any endpoint has yet to receive.
    async fn trim(&self) {
        let mut delivered = u64::MAX;
        for e in &self.endpoints {
            let cursor = self.log.cursor(&e.name).await.ok().flatten().unwrap_or(0);
            delivered = delivered.min(cursor);
        }
        match self.log.trim(RETAIN_EVENTS, RETAIN_AGE, delivered).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "trimmed the event log"),
            Err(e) => tracing::warn!(error = %e, "cannot trim the event log"),
        }
    }
}
