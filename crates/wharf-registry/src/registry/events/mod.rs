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
/// With a log that pushes wake-ups (PostgreSQL's `LISTEN/NOTIFY`), the poll only covers a
/// listening connection that was lost: the bound on a subscriber's latency then.
const POLL_LISTENING: Duration = Duration::from_secs(1);

pub struct Events {
    log: Arc<dyn EventLog>,
    source: Source,
    /// Pull events cost a write per pull: kept only when an endpoint wants them.
    record_pulls: bool,
    endpoints: Vec<Endpoint>,
    newest: watch::Sender<u64>,
    closing: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    /// The log is the metadata store's: the core hands each change its events, recorded
    /// in the change's transaction (see [`Events::in_transaction`]).
    in_transaction: bool,
    /// `notifications.events.includereferences`.
    pub(crate) include_references: bool,
}

/// How often the log is trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// The next wake-up; false when the stream ended (never, without one).
async fn next_wake(wakes: &mut Option<futures::stream::BoxStream<'static, ()>>) -> bool {
    use futures::StreamExt;
    match wakes {
        Some(w) => w.next().await.is_some(),
        None => std::future::pending().await,
    }
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
        // A database may be down at the start (requests get 503 until it is up): the
        // stream's position is read again as it runs.
        let newest = match log.newest().await {
            Ok(n) => n,
            Err(StoreError::Unavailable(why)) => {
                tracing::warn!(%why, "cannot read the event log yet");
                0
            }
            Err(e) => return Err(e),
        };
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
            in_transaction: false,
            include_references: false,
        })
    }

    /// The log is the metadata store's own (`Store::events`): manifest puts and deletes
    /// record their events in their transactions, and the events layer leaves them out.
    pub fn recorded_in_transaction(mut self, yes: bool) -> Self {
        self.in_transaction = yes;
        self
    }

    /// Manifest push and pull events carry the manifest's references
    /// (`notifications.events.includereferences`).
    pub fn include_references(mut self, yes: bool) -> Self {
        self.include_references = yes;
        self
    }

    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// `events` as the log stores them, for a change to record in its own transaction:
    /// the ones recorded, with this node as their source.
    pub fn encode(&self, events: Vec<Event>) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(events.len());
        for mut e in events.into_iter().filter(|e| self.wants(&e.action)) {
            e.source = self.source.clone();
            match serde_json::to_vec(&e) {
                Ok(bytes) => {
                    self.metrics.event_recorded(&e.action);
                    out.push(bytes);
                }
                Err(err) => tracing::warn!(error = %err, "cannot encode an event"),
            }
        }
        out
    }

    /// Whether events of `action` are recorded: lets callers skip building them.
    pub fn wants(&self, action: &str) -> bool {
        action != envelope::PULL || self.record_pulls
    }

    /// Append `events` durably, in order. A failure is logged, not returned: the
    /// operation they describe has happened and its client must hear so.
    pub async fn emit(&self, events: Vec<Event>) {
        let encoded = self.encode(events);
        if !encoded.is_empty() {
            self.append(encoded).await;
        }
    }

    async fn append(&self, encoded: Vec<Vec<u8>>) {
        match self.log.append_batch(encoded).await {
            Ok(seqs) => self.appended(&seqs),
            Err(err) => {
                tracing::warn!(error = %err, "cannot record an event: its notification is lost")
            }
        }
    }

    /// Wake subscribers and deliveries for events this process appended.
    fn appended(&self, seqs: &[u64]) {
        if let Some(&seq) = seqs.iter().max() {
            self.newest.send_if_modified(|n| {
                let changed = seq > *n;
                *n = (*n).max(seq);
                changed
            });
        }
    }

    /// Queue `events` without waiting for them to be durable, where the log keeps a
    /// first-in first-out queue (a filesystem's group commit): what is emitted after them
    /// is durable only once they are. A blob's push event is made durable by the manifest
    /// push that follows it, whose event waits, so an image push pays for one batch, not
    /// two. Elsewhere this is [`Events::emit`].
    pub async fn emit_queued(self: &Arc<Self>, events: Vec<Event>) {
        let encoded = self.encode(events);
        if encoded.is_empty() {
            return;
        }
        let Some(durable) = self.log.append_queued(encoded.clone()) else {
            return self.append(encoded).await;
        };
        let me = self.clone();
        tokio::spawn(async move {
            match durable.await {
                Ok(seqs) => me.appended(&seqs),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot record an event: its notification is lost")
                }
            }
        });
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

    /// Other processes append to the same log: look for their events (woken by the log
    /// where it can push, else polling), and trim now and then.
    async fn watch_store(self: Arc<Self>) {
        let mut closing = self.closing();
        let mut last_trim = tokio::time::Instant::now();
        let mut wakes = None;
        loop {
            if wakes.is_none() {
                wakes = match self.log.listen().await {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for events; polling");
                        None
                    }
                };
            }
            let poll = if wakes.is_some() {
                POLL_LISTENING
            } else {
                POLL
            };
            tokio::select! {
                woke = next_wake(&mut wakes) => if !woke { wakes = None },
                () = tokio::time::sleep(poll) => {}
                _ = closing.wait_for(|c| *c) => return,
            }
            if let Ok(newest) = self.log.newest().await {
                self.newest.send_if_modified(|n| {
                    let changed = newest > *n;
                    *n = (*n).max(newest);
                    changed
                });
            }
            if last_trim.elapsed() >= TRIM_EVERY {
                last_trim = tokio::time::Instant::now();
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
