//! Replicating the event log to one target, event by event, under a cursor kept in the
//! store (`replication-<target>`: a file written aside, fsynced and renamed on a
//! filesystem, a row with PostgreSQL). Of the processes sharing a store, the one holding
//! the target's job lock replicates; a restart, or another replica taking over, resumes
//! at the cursor, so a target that is down or a process that dies loses nothing.
//!
//! An event is retried with backoff until it goes; only a target's refusal that no retry
//! can change (a 4xx other than 429) is given up after `PERMANENT_TRIES`, logged and
//! counted, so one bad manifest does not stop a target for good. Events missing from the
//! log (trimmed while the target was away longer than the log keeps them) and a target's
//! first start are caught up by a reconcile: every covered tag compared and converged.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wharf_oci::{Digest, RepoName, Tag};

use super::push::{is_referrer_tag, Outcome, Push};
use super::target::{Target, REPLICATOR_PRODUCT};
use super::Replication;
use crate::registry::events::{envelope, Event, Events};
use crate::registry::Registry;
use crate::store::StoreResult;

/// How often a process that does not hold a target's lock checks whether its holder went.
const LOCK_RETRY: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const PERMANENT_TRIES: u32 = 5;

/// The cursor's name in the event log's cursor store.
pub fn cursor_name(target: &str) -> String {
    format!("replication-{target}")
}

/// What the log holds after the cursor. The one place replication reads the event log.
pub enum Next {
    Event(Box<Event>),
    /// Events up to this one are gone from the log: catch up with a reconcile.
    Gap(u64),
    /// Nothing newer yet.
    Wait,
}

pub async fn next_event(events: &Events, cursor: u64, newest: u64) -> StoreResult<Next> {
    let seq = cursor + 1;
    if let Some(e) = events.read(seq).await? {
        return Ok(Next::Event(Box::new(e)));
    }
    if seq > newest {
        return Ok(Next::Wait);
    }
    Ok(match events.first_from(seq).await? {
        Some(found) => Next::Gap(found - 1),
        None => Next::Wait,
    })
}

/// Replicate to `target` until the registry shuts down.
pub async fn run(replication: Arc<Replication>, registry: Arc<Registry>, target: Arc<Target>) {
    let Some(events) = registry.events().cloned() else {
        let why = "replication needs the event log, which this store cannot keep (see the start-up warnings)";
        replication.status.failed(&target.name, why);
        tracing::error!(target = %target.name, "{why}");
        return;
    };
    let mut closing = events.closing();
    let job = cursor_name(&target.name);
    loop {
        // The event log's delivery lease, as a webhook endpoint's: with a database the
        // cursor can only be saved by its holder, and it passes on if this process dies.
        match events.log().try_lease(&job).await {
            Ok(Some(_lock)) => {
                replication
                    .status
                    .update(&target.name, |p| p.running_here = true);
                let driven = drive(&replication, &registry, &events, &target, true).await;
                replication
                    .status
                    .update(&target.name, |p| p.running_here = false);
                match driven {
                    Ok(()) => return,
                    Err(e) => {
                        replication.status.failed(&target.name, &format!("{e:#}"));
                        tracing::warn!(target = %target.name, error = %format!("{e:#}"), "replication stopped; retrying");
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target = %target.name, error = %e, "cannot take the replication lock")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LOCK_RETRY) => {}
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}

/// Replicate what the log holds now, then return (`wharf replicate run`).
pub async fn catch_up_events(
    replication: &Replication,
    registry: &Registry,
    events: &Events,
    target: &Target,
) -> anyhow::Result<()> {
    let name = cursor_name(&target.name);
    let Some(_lease) = events.log().try_lease(&name).await? else {
        anyhow::bail!(
            "another process is replicating to {} now (it holds the lease {name}); try again when it stops",
            target.name
        );
    };
    drive(replication, registry, events, target, false).await
}

/// Ok when the registry is closing (or, unless `follow`, when the log is done).
async fn drive(
    replication: &Replication,
    registry: &Registry,
    events: &Events,
    target: &Target,
    follow: bool,
) -> anyhow::Result<()> {
    let log = events.log();
    let name = cursor_name(&target.name);
    let mut cursor = match log.cursor(&name).await? {
        Some(c) => c,
        None => {
            // A new target: bring it up to date, then follow the log from here.
            let newest = events.newest().await;
            replication.catch_up(registry, target).await?;
            log.save_cursor(&name, newest).await?;
            newest
        }
    };
    let mut newer = events.subscribe();
    let mut closing = events.closing();
    while !*closing.borrow() {
        let newest = events.newest().await.max(*newer.borrow_and_update());
        replication.status.update(&target.name, |p| {
            p.cursor = cursor;
            p.queue = newest.saturating_sub(cursor);
            if p.queue == 0 {
                p.lag_seconds = 0.0;
            }
        });
        match next_event(events, cursor, newest).await? {
            Next::Event(event) => {
                let done = retry(replication, registry, target, &event, &mut closing).await;
                if !done {
                    break; // closing
                }
                cursor += 1;
                log.save_cursor(&name, cursor).await?;
            }
            Next::Gap(to) => {
                tracing::warn!(target = %target.name, from = cursor + 1, to, "events gone from the log before they were replicated; reconciling");
                replication.catch_up(registry, target).await?;
                cursor = to;
                log.save_cursor(&name, cursor).await?;
            }
            Next::Wait if !follow => break,
            Next::Wait => {
                tokio::select! {
                    _ = newer.changed() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = closing.wait_for(|c| *c) => break,
                }
            }
        }
    }
    Ok(())
}

/// Replicate `event` until it goes; false if the registry began closing first.
async fn retry(
    replication: &Replication,
    registry: &Registry,
    target: &Target,
    event: &Event,
    closing: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let mut wait = FIRST_BACKOFF;
    let mut refused = 0;
    let lag = event_age(event);
    replication
        .status
        .update(&target.name, |p| p.lag_seconds = lag);
    loop {
        match replicate(registry, target, event).await {
            Ok(sent) => {
                replication.status.update(&target.name, |p| {
                    if sent {
                        p.replicated += 1;
                    }
                    p.last_success_at = Some(super::status::unix(SystemTime::now()));
                });
                return true;
            }
            Err(e) => {
                let message = format!("{e:#}");
                replication.status.failed(&target.name, &message);
                let permanent = e
                    .downcast_ref::<wharf_client::ClientError>()
                    .is_some_and(|c| !c.is_transient());
                refused += u32::from(permanent);
                if refused >= PERMANENT_TRIES {
                    tracing::error!(target = %target.name, event = %event.id, error = %message, "the target keeps refusing this event; skipping it (`wharf replicate reconcile` retries it)");
                    return true;
                }
                tracing::warn!(target = %target.name, event = %event.id, error = %message, retry_in = ?wait, "replication failed; retrying");
                let hinted = e
                    .downcast_ref::<wharf_client::ClientError>()
                    .and_then(|c| c.retry_after());
                tokio::select! {
                    () = tokio::time::sleep(hinted.unwrap_or(wait)) => {}
                    _ = closing.wait_for(|c| *c) => return false,
                }
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn event_age(event: &Event) -> f64 {
    humantime::parse_rfc3339_weak(&event.timestamp)
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whether replication acts on `event` at all: not on what a replicating registry pushed
/// (no loops between peers), not on pulls and blob events (blobs go with manifests).
pub fn wanted(event: &Event) -> bool {
    !event.request.useragent.starts_with(REPLICATOR_PRODUCT)
        && matches!(event.action.as_str(), envelope::PUSH | envelope::DELETE)
        && event.target.media_type != envelope::BLOB_MEDIA_TYPE
}

/// Replicate one event; true when something was sent.
pub async fn replicate(
    registry: &Registry,
    target: &Target,
    event: &Event,
) -> anyhow::Result<bool> {
    if !wanted(event) {
        return Ok(false);
    }
    let Ok(repo) = event.target.repository.parse::<RepoName>() else {
        return Ok(false);
    };
    let Some(rule) = target.rule_for(repo.as_str()) else {
        return Ok(false);
    };
    let push = Push { registry, target };
    let digest: Option<Digest> = event.target.digest.parse().ok();
    let tag: Option<Tag> = (!event.target.tag.is_empty())
        .then(|| event.target.tag.parse().ok())
        .flatten();
    if event.action == envelope::DELETE {
        if !rule.deletes {
            return Ok(false);
        }
        return match (tag, digest) {
            (Some(t), _) if rule.takes_tag(t.as_str()) => push.delete_tag(&repo, &t).await,
            (None, Some(d)) => push.delete_manifest(&repo, &d).await,
            _ => Ok(false),
        };
    }
    match (tag, digest) {
        (Some(t), d) if rule.takes_tag(t.as_str()) || is_referrer_tag(t.as_str()) => {
            let outcome = push.tag(&repo, &t, d.as_ref(), false).await?;
            if let Outcome::Kept(theirs) = &outcome {
                tracing::info!(target = %target.name, %repo, tag = %t, kept = %theirs, "concurrent push on the peer wins by the conflict rule (higher digest); adopting it here");
                super::sync::adopt(registry, target, &repo, &t).await?;
            }
            Ok(outcome == Outcome::Sent)
        }
        (None, Some(d)) => push.by_digest(&repo, &d).await,
        _ => Ok(false),
    }
}
