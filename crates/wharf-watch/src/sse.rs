//! The subscriber to a wharf registry's event stream (`GET /v2/_events`, server-sent
//! events), with the watcher's own credentials for that registry. It reconnects with
//! backoff and resumes with `Last-Event-ID`; while it is down, the scheduled checks are
//! what finds new images, and the log says so.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use wharf_client::{ClientError, Registry};

use crate::check::Registries;
use crate::events::{self, Dispatcher};
use crate::resume::Resume;

/// The registry sends a keep-alive comment every 15 s: three missed means it is gone.
const IDLE: Duration = Duration::from_secs(45);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A message larger than this is not an event envelope; the stream is dropped and opened again.
const MAX_MESSAGE: usize = 1 << 20;

/// Follows `registry`'s events for the life of the process, from the id `resume` kept
/// (keeping each new one there), or from the newest event without one.
pub async fn subscribe(
    registries: Arc<Registries>,
    registry: Registry,
    dispatcher: Dispatcher,
    resume: Option<Resume>,
) {
    let mut last_id: Option<String> = resume.as_ref().and_then(Resume::load);
    let resume = resume.as_ref();
    let mut retry = FIRST_RETRY;
    let mut up = false;
    let mut told = false;
    loop {
        let stream = Stream {
            registry: &registry,
            dispatcher: &dispatcher,
            resume,
        };
        let result = follow(&registries, &stream, &mut last_id, &mut up).await;
        let why = match result {
            Ok(()) => "the registry closed it".to_owned(),
            Err(e) => e,
        };
        if up {
            tracing::warn!(%registry, error = %why, "event stream lost: checks fall back to the schedule until it is back");
            up = false;
            told = true;
            retry = FIRST_RETRY;
        } else if !told {
            // Once per outage, so a registry without the stream does not fill the log.
            tracing::warn!(%registry, error = %why, "cannot subscribe to the registry's events: checks run on the schedule until it can (retrying with backoff)");
            told = true;
        } else {
            tracing::debug!(%registry, error = %why, "event stream still down; retrying in {} s", retry.as_secs());
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// One connection: open, then dispatch each message until the stream ends or idles.
/// What one subscription hands each message to.
struct Stream<'a> {
    registry: &'a Registry,
    dispatcher: &'a Dispatcher,
    resume: Option<&'a Resume>,
}

async fn follow(
    registries: &Registries,
    stream: &Stream<'_>,
    last_id: &mut Option<String>,
    up: &mut bool,
) -> Result<(), String> {
    let registry = stream.registry;
    let client = registries
        .client(registry)
        .await
        .map_err(|e| e.to_string())?;
    // As before each check: a credential rotated while the stream was down (a new
    // `docker login`, a re-mounted config.json) applies to the reconnect.
    client.forget_credentials();
    let response = tokio::time::timeout(IDLE, client.event_stream(last_id.as_deref()))
        .await
        .map_err(|_| format!("no answer within {} s", IDLE.as_secs()))?
        .map_err(|e| match e {
            ClientError::NotFound { .. } => {
                "it serves no /v2/_events: is it a wharf registry? (--http-api-events takes any registry's notifications instead)".to_owned()
            }
            e => e.to_string(),
        })?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("text/event-stream") {
        return Err(format!(
            "/v2/_events answered {content_type:?}, not text/event-stream: is this a wharf registry?"
        ));
    }
    tracing::info!(%registry, resumed_after = last_id.as_deref().unwrap_or("-"), "subscribed to registry events");
    *up = true;
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(IDLE, body.next()).await {
            Err(_) => return Err(format!("nothing received for {} s", IDLE.as_secs())),
            Ok(None) => return Ok(()),
            Ok(Some(chunk)) => chunk.map_err(|e| format!("the connection broke: {e}"))?,
        };
        buffer.extend_from_slice(&chunk);
        while let Some((message, rest)) = split_message(&buffer) {
            let parsed = Message::parse(&String::from_utf8_lossy(message));
            buffer = rest.to_vec();
            handle(stream, parsed, last_id);
        }
        if buffer.len() > MAX_MESSAGE {
            return Err(format!("a message over {MAX_MESSAGE} bytes"));
        }
    }
}

fn handle(stream: &Stream<'_>, message: Message, last_id: &mut Option<String>) {
    let (registry, dispatcher) = (stream.registry, stream.dispatcher);
    if let Some(data) = &message.data {
        match events::parse(data.as_bytes()) {
            Ok(events) => dispatcher.send(events::pushed(&events, Some(registry.as_str()))),
            Err(e) => {
                tracing::warn!(%registry, id = ?message.id, error = %e, "malformed event ignored")
            }
        }
    }
    if let Some(id) = message.id {
        if let Some(r) = stream.resume {
            r.save(&id);
        }
        *last_id = Some(id);
    }
}

/// One server-sent event: its id and its data lines joined; comments are dropped.
#[derive(Debug, Default, PartialEq)]
struct Message {
    id: Option<String>,
    data: Option<String>,
}

impl Message {
    fn parse(text: &str) -> Message {
        let mut m = Message::default();
        for line in text.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => m.id = Some(value.to_owned()),
                "data" => match &mut m.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => m.data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        m
    }
}

/// The first complete message (ended by a blank line, `\n\n` or `\r\n\r\n`) and the rest.
fn split_message(buffer: &[u8]) -> Option<(&[u8], &[u8])> {
    let lf = find(buffer, b"\n\n").map(|i| (i, 2));
    let crlf = find(buffer, b"\r\n\r\n").map(|i| (i, 4));
    let (at, len) = match (lf, crlf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some((&buffer[..at], &buffer[at + len..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_on_blank_lines_and_keep_id_and_data() {
        let stream = b": keep-alive\n\nid: 7\nevent: push\ndata: {\"events\":[]}\n\nid: 8\r\ndata: a\r\ndata: b\r\n\r\npartial";
        let (first, rest) = split_message(stream).unwrap();
        assert_eq!(
            Message::parse(std::str::from_utf8(first).unwrap()),
            Message::default()
        );
        let (second, rest) = split_message(rest).unwrap();
        assert_eq!(
            Message::parse(std::str::from_utf8(second).unwrap()),
            Message {
                id: Some("7".into()),
                data: Some("{\"events\":[]}".into())
            }
        );
        let (third, rest) = split_message(rest).unwrap();
        let third = Message::parse(std::str::from_utf8(third).unwrap());
        assert_eq!(third.data.as_deref(), Some("a\nb"));
        assert_eq!(rest, b"partial");
        assert!(split_message(rest).is_none());
    }
}
