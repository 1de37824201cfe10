//! Push-driven checks. registry:2's notification envelope
//! (`application/vnd.docker.distribution.events.v1+json`), whether it arrives at the
//! webhook `POST /v1/events` or from a wharf registry's `/v2/_events` stream, becomes the
//! image references that were pushed; a single worker checks the containers using them at
//! once, through the same session as a scheduled check.
//!
//! Why both shapes: a webhook lets any registry:2-compatible registry (Distribution,
//! wharf, Harbor's notifier) drive the watcher with no code on its side, but the registry
//! must reach the watcher and the watcher needs a token in the registry's config. The
//! stream goes the other way, outbound from the watcher with the credentials it already
//! has, so a watcher behind NAT needs nothing configured on the registry, and a
//! reconnect resumes where it stopped (`Last-Event-ID`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use wharf_client::ImageRef;
use wharf_oci::Digest;

/// Bursts beyond this many pending event batches are dropped (and logged): the
/// scheduled check still catches them, and a flood cannot grow memory without bound.
const QUEUE: usize = 1024;

/// The registry:2 envelope: `{"events": [...]}`.
#[derive(Debug, Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

/// One registry:2 event, the fields the watcher reads.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub action: String,
    pub target: EventTarget,
    #[serde(default)]
    pub request: RequestInfo,
}

#[derive(Debug, Deserialize)]
pub struct EventTarget {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub repository: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub digest: String,
}

/// A tag push: `host/repository:tag`, and the manifest digest pushed, when the event
/// names one. registry:2 announces a manifest before it moves the tag to it, so a check
/// right after the event may still see the old digest: the check waits briefly for this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub image: String,
    pub digest: Option<Digest>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RequestInfo {
    #[serde(default)]
    pub host: String,
}

/// The events in a notification body; an error says what is wrong with it.
pub fn parse(body: &[u8]) -> Result<Vec<Event>, String> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        format!("not a registry:2 notification envelope ({{\"events\": [...]}}): {e}")
    })?;
    for (i, e) in envelope.events.iter().enumerate() {
        if e.action.is_empty() || e.target.repository.is_empty() {
            return Err(format!("event {i} has no action or no target.repository"));
        }
    }
    Ok(envelope.events)
}

/// The tagged references pushed in `events`, as `host/repository:tag`. The host is
/// `registry` when the events came from that registry's stream; from a webhook it is the
/// host of `target.url` and the `request.host` the pusher used (both, if they differ:
/// only one that a watched container names will match). Pulls, deletes, blob pushes and
/// pushes by digest alone are left out: they never make a tag point elsewhere.
pub fn pushed(events: &[Event], registry: Option<&str>) -> Vec<Pushed> {
    let mut images: Vec<Pushed> = Vec::new();
    for e in events {
        if e.action != "push" || e.target.tag.is_empty() {
            tracing::debug!(action = %e.action, repository = %e.target.repository, media_type = %e.target.media_type, "event ignored: not a tag push");
            continue;
        }
        // From a registry's own stream, every host the event names is that registry:
        // the one subscribed to, its configured name (`http.host`, in `target.url`) and
        // the one the pusher used.
        let named = [url_host(&e.target.url), Some(e.request.host.clone())];
        let hosts: Vec<String> = registry
            .map(str::to_owned)
            .into_iter()
            .chain(named.into_iter().flatten())
            .filter(|h| !h.is_empty())
            .collect();
        for host in distinct_registries(hosts) {
            let image = format!("{host}/{}:{}", e.target.repository, e.target.tag);
            if image.parse::<ImageRef>().is_err() {
                tracing::info!(%image, "event ignored: not an image reference");
                continue;
            }
            let digest = e.target.digest.parse().ok();
            match images.iter_mut().find(|p| p.image == image) {
                // A later push of the same tag wins.
                Some(p) => p.digest = digest,
                None => images.push(Pushed { image, digest }),
            }
        }
    }
    images
}

/// One spelling of each registry among `hosts` (loopback aliases are one), first kept;
/// what is not a registry host is dropped here and logged where it is used.
fn distinct_registries(hosts: Vec<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for host in hosts {
        let key = match host.parse::<wharf_client::Registry>() {
            Ok(r) => crate::identity::canonical(&r),
            Err(_) => host.clone(),
        };
        if !seen.contains(&key) {
            seen.push(key);
            out.push(host);
        }
    }
    out
}

/// `host[:port]` of an absolute URL.
fn url_host(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// Checks the containers using some of these images now; the caller logs the outcome.
pub type RunChecks =
    Arc<dyn Fn(Vec<Pushed>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How long the worker gathers events before a check: a docker push of several tags, or
/// several registries announcing one push, arrives as a burst that should cost one check.
const GATHER: Duration = Duration::from_millis(250);

/// Hands pushed images to the one worker that checks them, so that event sources never
/// wait for a check and checks never overlap.
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<Vec<Pushed>>,
}

impl Dispatcher {
    /// The worker runs until every `Dispatcher` clone is dropped. Batches that arrived
    /// while a check ran are merged into one check: a push of several tags, or several
    /// registries announcing one push, costs one session.
    pub fn spawn(run: RunChecks) -> Dispatcher {
        let (tx, mut rx) = mpsc::channel::<Vec<Pushed>>(QUEUE);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                tokio::time::sleep(GATHER).await;
                let mut latest: BTreeMap<String, Option<Digest>> = BTreeMap::new();
                let mut batch = first;
                while let Ok(more) = rx.try_recv() {
                    batch.extend(more);
                }
                for p in batch {
                    latest.insert(p.image, p.digest);
                }
                let images = latest
                    .into_iter()
                    .map(|(image, digest)| Pushed { image, digest })
                    .collect();
                run(images).await;
            }
        });
        Dispatcher { tx }
    }

    /// Queue a check of `images`; never waits.
    pub fn send(&self, images: Vec<Pushed>) {
        if images.is_empty() {
            return;
        }
        if let Err(e) = self.tx.try_send(images) {
            tracing::warn!(error = %e, "too many pending push events; this one is left to the scheduled check");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISTRIBUTION: &str = r#"{"events":[
      {"id":"1","timestamp":"2026-01-01T00:00:00Z","action":"push",
       "target":{"mediaType":"application/octet-stream","size":10,"digest":"sha256:aa","length":10,
                 "repository":"apps/web","url":"http://127.0.0.1:5000/v2/apps/web/blobs/sha256:aa"},
       "request":{"id":"r","addr":"127.0.0.1:1","host":"127.0.0.1:5000","method":"PUT","useragent":"docker"},
       "actor":{},"source":{"addr":"h:5000","instanceID":"i"}},
      {"id":"2","timestamp":"2026-01-01T00:00:00Z","action":"push",
       "target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":10,
                 "digest":"sha256:bb","length":10,"repository":"apps/web",
                 "url":"http://localhost:5000/v2/apps/web/manifests/sha256:bb","tag":"latest"},
       "request":{"host":"127.0.0.1:5000"}},
      {"id":"3","action":"pull","target":{"repository":"apps/web","tag":"1"}}
    ]}"#;

    #[test]
    fn tag_pushes_name_the_image_once_per_registry() {
        let events = parse(DISTRIBUTION.as_bytes()).unwrap();
        assert_eq!(events.len(), 3);
        let images = |p: Vec<Pushed>| p.into_iter().map(|p| p.image).collect::<Vec<_>>();
        // localhost:5000 and 127.0.0.1:5000 are one registry; matching treats them so.
        assert_eq!(
            images(pushed(&events, None)),
            vec!["localhost:5000/apps/web:latest".to_owned()]
        );
        // From the stream, the registry's other names count too (one per loopback port).
        let from_stream = pushed(&events, Some("reg.example:443"));
        assert_eq!(
            images(from_stream.clone()),
            vec![
                "reg.example:443/apps/web:latest".to_owned(),
                "localhost:5000/apps/web:latest".to_owned()
            ]
        );
        // Not a real digest in this sample, so none is expected.
        assert_eq!(from_stream[0].digest, None);
    }

    #[test]
    fn malformed_envelopes_are_refused_with_a_reason() {
        for bad in [
            "",
            "{}",
            "[]",
            r#"{"events":{}}"#,
            r#"{"events":[{"action":"push"}]}"#,
            r#"{"events":[{"action":"","target":{"repository":"a"}}]}"#,
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} was accepted");
        }
        assert!(parse(br#"{"events":[]}"#).unwrap().is_empty());
    }
}
