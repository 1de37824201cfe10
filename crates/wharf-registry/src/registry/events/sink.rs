//! Delivering the log to one webhook endpoint, in order, each event once it is accepted.
//!
//! Where an endpoint has got to is a cursor in the store, advanced (durably) only past
//! events the receiver answered 2xx, so a restart resumes where delivery stopped (or up to
//! a second before: see `CURSOR_EVERY`). Of the processes sharing a store, the one holding
//! the endpoint's lease delivers; the others wait to take over. On a filesystem the lease
//! is an `flock`, dropped by the kernel if its holder dies; with a database it is a row
//! with an expiry the holder renews, taken over once it expires (`store::postgres::events`).
//! Around a takeover the new holder re-sends what the old one delivered after its last
//! saved cursor: the only duplicates.
//!
//! Retries follow registry:2's circuit breaker: failures are retried at once until
//! `threshold` of them in a row, then once per `backoff`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::envelope::EVENTS_MEDIA_TYPE;
use super::Events;
use crate::config::Endpoint;
use crate::metrics::Metrics;
use crate::store::StoreResult;

/// How often a waiting process checks whether the lease holder has gone.
const LEASE_RETRY: Duration = Duration::from_secs(1);
/// Under a steady stream the cursor is saved after this many deliveries or this long, and
/// once delivery has been idle that long: a crash (or a takeover) re-sends at most that
/// much (at least once), and delivery does not pay a write per event.
const CURSOR_EVERY_EVENTS: u64 = 256;
const CURSOR_EVERY: Duration = Duration::from_secs(1);
/// At most this many events in one envelope.
const BATCH_EVENTS: u64 = 100;
/// The pause between retries below the threshold, so a refused connection does not spin.
const QUICK_RETRY: Duration = Duration::from_millis(50);

pub struct Delivery {
    endpoint: Endpoint,
    events: Arc<Events>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Delivery {
    pub fn new(
        endpoint: Endpoint,
        events: Arc<Events>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Delivery> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &endpoint.headers {
            headers.append(
                reqwest::header::HeaderName::from_bytes(k.as_bytes())?,
                reqwest::header::HeaderValue::from_str(v)?,
            );
        }
        let client = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .default_headers(headers)
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            // A redirected POST can turn into a GET that "succeeds" without the event:
            // a 3xx is a failure, retried, so a wrong URL shows in the failure metrics.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Delivery {
            endpoint,
            events,
            client,
            metrics,
        })
    }

    /// The last event delivered; a new endpoint starts at the log's end, as registry:2,
    /// which keeps no history, would.
    async fn load_cursor(&self) -> StoreResult<u64> {
        if let Some(cursor) = self.events.log.cursor(&self.endpoint.name).await? {
            return Ok(cursor);
        }
        let newest = self.events.newest().await;
        self.save_cursor(newest).await?;
        Ok(newest)
    }

    async fn save_cursor(&self, seq: u64) -> StoreResult<()> {
        self.events.log.save_cursor(&self.endpoint.name, seq).await
    }

    /// Deliver until the registry shuts down.
    pub async fn run(self) {
        let mut closing = self.events.closing();
        let name = self.endpoint.name.clone();
        loop {
            match self.events.log.try_lease(&name).await {
                Ok(Some(_lease)) => {
                    tracing::info!(endpoint = %name, "this process holds the delivery lease: delivering events");
                    if let Err(e) = self.deliver().await {
                        tracing::warn!(endpoint = %name, error = %e, "event delivery stopped (the delivery lease is given up); retrying");
                    } else {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(endpoint = %name, error = %e, "cannot take the delivery lease")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(LEASE_RETRY) => {}
                _ = closing.wait_for(|c| *c) => return,
            }
        }
    }

    /// Ok when the registry is closing; Err when the store fails (or, on a shared
    /// database, the lease passed to another replica).
    async fn deliver(&self) -> StoreResult<()> {
        let mut cursor = self.load_cursor().await?;
        // The cursor as last saved, and when: saved every so often under a stream of
        // events, and once delivery has been idle for a moment (see CURSOR_EVERY).
        let mut saved = (cursor, Instant::now());
        let mut newer = self.events.subscribe();
        let mut closing = self.events.closing();
        let mut failures: u64 = 0;
        let labels = self.endpoint.name.clone();
        loop {
            if *closing.borrow() {
                break;
            }
            // In-process appends update this at once, others' within the poll interval.
            let newest = *newer.borrow_and_update();
            self.metrics
                .notification_pending(&labels, newest.saturating_sub(cursor));
            let (batch, last) = self.next_batch(cursor, newest).await?;
            if last == cursor {
                if cursor < newest {
                    let skipped = self.skip_trimmed(cursor + 1).await?;
                    if skipped != cursor {
                        cursor = skipped;
                        continue;
                    }
                }
                // Idle: save what was delivered once things have been quiet a moment.
                let unsaved = cursor != saved.0;
                let wait = match unsaved {
                    true => CURSOR_EVERY.saturating_sub(saved.1.elapsed()),
                    false => Duration::from_secs(1),
                };
                let quiet = tokio::select! {
                    _ = newer.changed() => false,
                    () = tokio::time::sleep(wait) => true,
                    _ = closing.wait_for(|c| *c) => break,
                };
                if quiet && unsaved {
                    self.save_cursor(cursor).await?;
                    saved = (cursor, Instant::now());
                }
                continue;
            }
            if !batch.is_empty() {
                let n = batch.len() as u64;
                match self.post(&batch).await {
                    Ok(()) => {
                        failures = 0;
                        for _ in 0..n {
                            self.metrics.notification_delivered(&labels);
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        self.metrics.notification_failed(&labels);
                        tracing::warn!(endpoint = %labels, from = cursor + 1, failures, error = %e, "events not accepted; retrying");
                        let wait = if failures >= self.endpoint.threshold {
                            self.endpoint.backoff
                        } else {
                            QUICK_RETRY
                        };
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            _ = closing.wait_for(|c| *c) => break,
                        }
                        continue;
                    }
                }
            }
            cursor = last;
            if cursor - saved.0 >= CURSOR_EVERY_EVENTS || saved.1.elapsed() >= CURSOR_EVERY {
                self.save_cursor(cursor).await?;
                saved = (cursor, Instant::now());
            }
        }
        if cursor != saved.0 {
            self.save_cursor(cursor).await?;
        }
        Ok(())
    }

    /// The events after `cursor` that are ready, up to a batch: the ones this endpoint
    /// wants, and the number of the last one read. One event when delivery keeps up; as
    /// many as have piled up when it lags, so a slow receiver costs fewer requests.
    async fn next_batch(&self, cursor: u64, newest: u64) -> StoreResult<(Vec<Vec<u8>>, u64)> {
        let mut batch = Vec::new();
        let mut last = cursor;
        while last < newest.max(cursor + 1) && (last - cursor) < BATCH_EVENTS {
            let Some(event) = self.events.read_raw(last + 1).await? else {
                break;
            };
            last += 1;
            match serde_json::from_slice::<Filtered>(&event) {
                Ok(f) if !self.ignores(&f) => batch.push(event),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoint.name, seq = last, error = %e, "skipping an unreadable event")
                }
            }
        }
        Ok((batch, last))
    }

    /// Events missing before the newest: trimmed before this endpoint got them (it was
    /// gone longer than the log keeps), or lost to a crash before their fsync.
    async fn skip_trimmed(&self, next: u64) -> StoreResult<u64> {
        let Some(found) = self.events.first_from(next).await? else {
            return Ok(next - 1); // nothing beyond: wait for it
        };
        let cursor = found - 1;
        tracing::warn!(endpoint = %self.endpoint.name, from = next, to = cursor, "events missing from the log; skipping them");
        self.save_cursor(cursor).await?;
        Ok(cursor)
    }

    /// `ignoredmediatypes`, `ignore.mediatypes` and `ignore.actions`.
    fn ignores(&self, e: &Filtered) -> bool {
        self.endpoint
            .ignored_media_types
            .contains(&e.target.media_type)
            || self.endpoint.ignored_actions.contains(&e.action)
    }

    /// One envelope for the batch: registry:2's envelope holds an array. Stored events
    /// are the envelope's elements as they are: no decoding and encoding again.
    async fn post(&self, events: &[Vec<u8>]) -> Result<(), String> {
        let len: usize = events.iter().map(|e| e.len() + 1).sum();
        let mut body = Vec::with_capacity(len + 16);
        body.extend_from_slice(b"{\"events\":[");
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.extend_from_slice(b"]}");
        let resp = self
            .client
            .post(&self.endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, EVENTS_MEDIA_TYPE)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("posting to {}: {e}", self.endpoint.url))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{} answered {status}", self.endpoint.url))
        }
    }
}

/// What the ignore rules look at, read without decoding the rest of the event.
#[derive(serde::Deserialize)]
struct Filtered {
    action: String,
    #[serde(default)]
    target: FilteredTarget,
}

#[derive(serde::Deserialize, Default)]
struct FilteredTarget {
    #[serde(rename = "mediaType", default)]
    media_type: String,
}
