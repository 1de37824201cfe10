//! Delivering the log to one webhook endpoint, in order, each event once it is accepted.
//!
//! Where an endpoint has got to is a cursor in the store, advanced (durably) only past
//! events the receiver answered 2xx, so a restart resumes where delivery stopped (or up to
//! a second before: see `CURSOR_EVERY`). Of the processes sharing a store, the one holding
//! the endpoint's lease (on a filesystem an `flock`, dropped by the kernel if its holder
//! dies) delivers; the others wait to take over.
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
/// whenever delivery catches up: a crash re-sends at most that much (at least once), and
/// delivery does not pay an fsync per event.
const CURSOR_EVERY_EVENTS: u64 = 256;
const CURSOR_EVERY: Duration = Duration::from_secs(1);
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
                    tracing::debug!(endpoint = %name, "delivering events");
                    if let Err(e) = self.deliver().await {
                        tracing::warn!(endpoint = %name, error = %e, "event delivery stopped; retrying");
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

    /// Ok when the registry is closing; Err when the store fails.
    async fn deliver(&self) -> StoreResult<()> {
        let mut cursor = self.load_cursor().await?;
        // The cursor as last saved, and when: saving it is an fsync, so under a stream of
        // events it is saved every so often rather than after each (see CURSOR_EVERY).
        let mut saved = (cursor, Instant::now());
        let mut newer = self.events.subscribe();
        let mut closing = self.events.closing();
        let mut failures: u64 = 0;
        let labels = self.endpoint.name.clone();
        loop {
            if *closing.borrow() {
                break;
            }
            // In-process appends update this at once, others' within the poll interval:
            // no stat per event.
            let newest = *newer.borrow_and_update();
            self.metrics
                .notification_pending(&labels, newest.saturating_sub(cursor));
            let next = cursor + 1;
            let Some(event) = self.events.read_raw(next).await? else {
                if next <= newest {
                    let skipped = self.skip_trimmed(next).await?;
                    if skipped != cursor {
                        cursor = skipped;
                        continue;
                    }
                }
                tokio::select! {
                    _ = newer.changed() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = closing.wait_for(|c| *c) => break,
                }
                continue;
            };
            let keep = match serde_json::from_slice::<Filtered>(&event) {
                Ok(f) => !self.ignores(&f),
                Err(e) => {
                    tracing::warn!(endpoint = %labels, seq = next, error = %e, "skipping an unreadable event");
                    false
                }
            };
            if keep {
                match self.post(event).await {
                    Ok(()) => {
                        failures = 0;
                        self.metrics.notification_delivered(&labels);
                    }
                    Err(e) => {
                        failures += 1;
                        self.metrics.notification_failed(&labels);
                        tracing::warn!(endpoint = %labels, seq = next, failures, error = %e, "event not accepted; retrying");
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
            cursor = next;
            let behind = cursor >= newest || cursor - saved.0 >= CURSOR_EVERY_EVENTS;
            if behind || saved.1.elapsed() >= CURSOR_EVERY {
                self.save_cursor(cursor).await?;
                saved = (cursor, Instant::now());
            }
        }
        if cursor != saved.0 {
            self.save_cursor(cursor).await?;
        }
        Ok(())
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

    /// One envelope per event, as Distribution's bridge sends them. The stored event is
    /// the envelope's element as it is: no decoding and encoding again.
    async fn post(&self, event: Vec<u8>) -> Result<(), String> {
        let mut body = Vec::with_capacity(event.len() + 16);
        body.extend_from_slice(b"{\"events\":[");
        body.extend_from_slice(&event);
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
