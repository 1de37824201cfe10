//! `GET /v2/_events`: the event log as Server-Sent Events, for subscribers such as
//! `wharf watch`. Each message is `id: <sequence>`, `event: <action>` and `data:` one
//! registry:2 envelope holding that event. `Last-Event-ID` (or `?since=`) resumes after a
//! sequence number; without it the stream starts with the next event. Only events for
//! repositories the caller may pull are sent.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use tokio::sync::watch;
use wharf_oci::ErrorCode;

use super::error::{ApiError, ApiResult};
use super::response::{header_value, streaming};
use super::{AppState, Req};
use crate::auth::policy::Actions;
use crate::auth::Identity;
use crate::registry::events::envelope::Envelope;
use crate::registry::events::{Event, Events};

/// Proxies and clients drop idle connections; a comment every so often keeps it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn get(state: &Arc<AppState>, req: &Req) -> ApiResult {
    let events = state.registry.events().cloned().ok_or_else(|| {
        ApiError::new(ErrorCode::Unsupported)
            .message("this registry keeps no event log")
            .status(StatusCode::NOT_FOUND)
    })?;
    let after = match req.header("last-event-id").or_else(|| req.query("since")) {
        Some(n) => n.trim().parse::<u64>().map_err(|_| {
            ApiError::new(ErrorCode::Unsupported)
                .message(format!(
                    "Last-Event-ID / since {n:?} is not an event number"
                ))
                .status(StatusCode::BAD_REQUEST)
        })?,
        None => events.newest().await,
    };
    let sub = Subscriber {
        state: state.clone(),
        identity: clone_identity(&req.identity),
        newer: events.subscribe(),
        closing: events.closing(),
        events,
        next: after + 1,
        keep_alive: tokio::time::Instant::now() + KEEP_ALIVE,
    };
    let body = stream::unfold(sub, |mut sub| async move {
        let chunk = sub.next_chunk().await?;
        Some((Ok(chunk), sub))
    });
    let mut resp = Response::new(streaming(Box::pin(body)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, header_value("text/event-stream"));
    h.insert(CACHE_CONTROL, header_value("no-cache"));
    // nginx would otherwise hold the stream back in its buffers.
    h.insert("x-accel-buffering", header_value("no"));
    Ok(resp)
}

fn clone_identity(who: &Identity) -> Identity {
    match who {
        Identity::Anonymous => Identity::Anonymous,
        Identity::User(u) => Identity::User(u.clone()),
        Identity::Robot(r) => Identity::Robot(r.clone()),
        Identity::Token(c) => Identity::Token(c.clone()),
    }
}

struct Subscriber {
    state: Arc<AppState>,
    identity: Identity,
    events: Arc<Events>,
    newer: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    next: u64,
    keep_alive: tokio::time::Instant,
}

impl Subscriber {
    /// The next message, a keep-alive, or None when the registry shuts down or the log
    /// cannot be read.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if *self.closing.borrow() {
                return None;
            }
            match self.events.read(self.next).await {
                Ok(Some(event)) => {
                    let seq = self.next;
                    self.next += 1;
                    if self.may_see(&event) {
                        self.keep_alive = tokio::time::Instant::now() + KEEP_ALIVE;
                        return Some(message(seq, event));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, seq = self.next, "cannot read the event log; ending a stream");
                    return None;
                }
            }
            if self.next <= self.events.newest().await {
                // Trimmed away (or lost to a crash): go on from the next event kept.
                if let Ok(Some(found)) = self.events.first_from(self.next).await {
                    self.next = found;
                    continue;
                }
            }
            tokio::select! {
                _ = self.newer.changed() => {}
                () = tokio::time::sleep_until(self.keep_alive) => {
                    self.keep_alive = tokio::time::Instant::now() + KEEP_ALIVE;
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
                _ = self.closing.wait_for(|c| *c) => return None,
            }
        }
    }

    /// The catalog's rule: with auth on, only repositories the caller may pull.
    fn may_see(&self, event: &Event) -> bool {
        let auth = &self.state.auth;
        if !auth.enabled() {
            return true;
        }
        let repo = event.target.repository.as_str();
        auth.listable(&self.identity, repo).contains(Actions::PULL)
    }
}

fn message(seq: u64, event: Event) -> Bytes {
    let action = event.action.clone();
    let envelope = Envelope {
        events: vec![event],
    };
    let data = serde_json::to_string(&envelope).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("id: {seq}\nevent: {action}\ndata: {data}\n\n"))
}
