//! Pull counts: a layer that counts each image pulled, and the counter that adds the
//! counts up in memory and flushes them to the store's [`PullCounts`] in batches (every
//! [`FLUSH_EVERY`], and when the server stops), so that a pull never waits for a write.
//!
//! A pull is a `GET` of an image manifest, by tag or digest, as Docker Hub counts: a
//! `HEAD` only asks whether something changed, and an index's `GET` is followed by the
//! `GET` of the one image the client runs, which is the pull. A process that dies without
//! stopping loses at most the last interval's counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use wharf_oci::media_type::{DOCKER_MANIFEST_LIST, OCI_INDEX};
use wharf_oci::{Reference, RepoName};

use super::events::Origin;
use super::service::{Layer, Served, Service};
use super::{Registry, Result};
use crate::store::state::PullCounts;

/// How often counted pulls are added to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

pub struct PullCounter {
    pending: Mutex<HashMap<String, u64>>,
    sink: Arc<dyn PullCounts>,
    /// One flush at a time, so that a failed batch put back is not raced by the next.
    flushing: tokio::sync::Mutex<()>,
}

impl PullCounter {
    pub fn new(sink: Arc<dyn PullCounts>) -> PullCounter {
        PullCounter {
            pending: Mutex::default(),
            sink,
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn count(&self, repo: &RepoName) {
        let mut pending = wharf_oci::sync::lock(&self.pending);
        match pending.get_mut(repo.as_str()) {
            Some(n) => *n += 1,
            None => {
                pending.insert(repo.as_str().to_owned(), 1);
            }
        }
    }

    /// Add what was counted since the last flush to the store. On failure the counts stay
    /// pending for the next flush.
    pub async fn flush(&self) {
        let _one = self.flushing.lock().await;
        let batch: Vec<(String, u64)> = std::mem::take(&mut *wharf_oci::sync::lock(&self.pending))
            .into_iter()
            .collect();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.sink.add_pulls(&batch).await {
            tracing::warn!(error = %e, repositories = batch.len(), "cannot store pull counts; keeping them for the next try");
            let mut pending = wharf_oci::sync::lock(&self.pending);
            for (repo, n) in batch {
                *pending.entry(repo).or_default() += n;
            }
        }
    }

    /// Stored counts plus this process's pending ones.
    async fn counts(&self, repos: &[String]) -> Result<Vec<u64>> {
        let stored = self.sink.pulls(repos).await?;
        let pending = wharf_oci::sync::lock(&self.pending);
        Ok(repos
            .iter()
            .zip(stored)
            .map(|(r, n)| n + pending.get(r).copied().unwrap_or(0))
            .collect())
    }
}

/// Counts the pulls the service inside serves.
pub struct PullsLayer {
    inner: Arc<dyn Service>,
    counter: Arc<PullCounter>,
}

impl PullsLayer {
    pub fn new(inner: Arc<dyn Service>, counter: Arc<PullCounter>) -> PullsLayer {
        PullsLayer { inner, counter }
    }
}

#[async_trait]
impl Layer for PullsLayer {
    fn inner(&self) -> &dyn Service {
        &*self.inner
    }

    async fn manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Served>> {
        let served = self.inner.manifest(o, repo, reference).await?;
        if let Some(s) = &served {
            let index = matches!(&*s.content.media_type, OCI_INDEX | DOCKER_MANIFEST_LIST);
            if o.request.method == "GET" && !index {
                self.counter.count(repo);
            }
        }
        Ok(served)
    }
}

impl Registry {
    /// How many times each of `repos` was pulled; None where the store keeps no counts
    /// (a bucket without a database).
    pub async fn pull_counts(&self, repos: &[String]) -> Result<Option<Vec<u64>>> {
        match self.pull_counter() {
            Some(c) => Ok(Some(c.counts(repos).await?)),
            None => Ok(None),
        }
    }

    /// Store the pulls counted so far (the server calls it as it stops).
    pub async fn flush_pulls(&self) {
        if let Some(c) = self.pull_counter() {
            c.flush().await;
        }
    }
}

/// The background job: flush every [`FLUSH_EVERY`].
pub async fn flush_every(counter: Arc<PullCounter>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tick.tick().await;
        counter.flush().await;
    }
}
