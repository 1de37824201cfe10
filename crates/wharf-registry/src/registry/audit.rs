//! The audit log as a layer: every change a client makes through the service (pushes,
//! tag moves, deletes; pulls when `audit.pulls` asks) is recorded with who made it, from
//! where, and how it ended, whichever front end asked. What happens outside the service
//! (logins, tokens, users, jobs) is recorded by [`Audit::record`], through the door.
//!
//! Records go to the store's hash-chained log (`store::auditchain`). A record is durable
//! before the operation's answer is sent; appends from concurrent requests are grouped
//! into one write and one fsync (group commit), so the log costs a busy registry little.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use wharf_oci::{Reference, RepoName};

use super::events::Origin;
use super::service::{Layer, RepositoryDeleted, Served, Service};
use super::{Error, PutManifest, Result};
use crate::store::state::{AuditEntry, AuditLog};

/// How many records one append takes at most.
const BATCH: usize = 512;

type Job = (AuditEntry, oneshot::Sender<()>);

pub struct Audit {
    log: Arc<dyn AuditLog>,
    pulls: bool,
    file: Option<PathBuf>,
    /// The writer task, started on first use (inside a runtime).
    writer: OnceLock<mpsc::UnboundedSender<Job>>,
}

/// This machine's name, as registry:2 puts it in events' `source.addr`, and as audit
/// records name where a command or job ran.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A record of now.
pub fn entry(actor: &str, source: &str, action: &str, target: &str, outcome: &str) -> AuditEntry {
    AuditEntry {
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        actor: if actor.is_empty() { "-" } else { actor }.to_owned(),
        source: source.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        outcome: outcome.to_owned(),
    }
}

/// How an operation ended, in a record's words.
pub fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(Error::Refused { message, .. }) => format!("refused: {message}"),
        Err(e) => format!("failed: {e}"),
    }
}

impl Audit {
    pub fn new(log: Arc<dyn AuditLog>, pulls: bool, file: Option<PathBuf>) -> Audit {
        Audit {
            log,
            pulls,
            file,
            writer: OnceLock::new(),
        }
    }

    /// The audit log `audit:` asks for, in the store's records; None when it is off.
    pub fn from_config(
        config: &crate::config::AuditConfig,
        store: &crate::store::Store,
    ) -> Option<Arc<Audit>> {
        let log = store.identity.clone().filter(|_| config.enabled)?;
        Some(Arc::new(Audit::new(log, config.pulls, config.file.clone())))
    }

    pub fn log(&self) -> &Arc<dyn AuditLog> {
        &self.log
    }

    pub fn audits_pulls(&self) -> bool {
        self.pulls
    }

    /// Append `entry`; returns once it is durable (or its append failed, which is logged:
    /// the change it records has already happened).
    pub async fn record(&self, entry: AuditEntry) {
        let writer = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(write_batches(self.log.clone(), self.file.clone(), rx));
            tx
        });
        let (done, wait) = oneshot::channel();
        if writer.send((entry, done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Take every record waiting, append them in one go, answer their senders.
async fn write_batches(
    log: Arc<dyn AuditLog>,
    file: Option<PathBuf>,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let entries: Vec<AuditEntry> = jobs.iter().map(|(e, _)| e.clone()).collect();
        match log.append_audit(&entries).await {
            Ok(lines) => {
                if let Some(path) = &file {
                    if let Err(e) = append_file(path, &lines).await {
                        tracing::warn!(file = %path.display(), error = %e, "cannot write audit records to audit.file");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = entries.len(), "audit records could not be stored")
            }
        }
        for (_, done) in jobs {
            let _ = done.send(());
        }
    }
}

async fn append_file(path: &std::path::Path, lines: &[String]) -> std::io::Result<()> {
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let mut bytes = lines.join("\n");
    bytes.push('\n');
    f.write_all(bytes.as_bytes()).await?;
    f.sync_data().await
}

/// The layer that records client operations.
pub struct AuditLayer {
    inner: Arc<dyn Service>,
    audit: Arc<Audit>,
}

impl AuditLayer {
    pub fn new(inner: Arc<dyn Service>, audit: Arc<Audit>) -> AuditLayer {
        AuditLayer { inner, audit }
    }

    async fn note<T>(&self, o: &Origin, action: &str, target: String, result: &Result<T>) {
        let e = entry(
            &o.actor.name,
            &o.request.addr,
            action,
            &target,
            &outcome(result),
        );
        self.audit.record(e).await;
    }
}

fn target(repo: &RepoName, reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => format!("{repo}:{t}"),
        Reference::Digest(d) => format!("{repo}@{d}"),
    }
}

#[async_trait]
impl Layer for AuditLayer {
    fn inner(&self) -> &dyn Service {
        &*self.inner
    }

    async fn manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Served>> {
        let served = self.inner.manifest(o, repo, reference).await;
        if self.audit.pulls {
            let outcome = match &served {
                Ok(None) => "not found".to_owned(),
                other => outcome(other),
            };
            let e = entry(
                &o.actor.name,
                &o.request.addr,
                "pull",
                &target(repo, reference),
                &outcome,
            );
            self.audit.record(e).await;
        }
        served
    }

    async fn put_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest> {
        let put = self
            .inner
            .put_manifest(o, repo, reference, content_type, bytes)
            .await;
        let what = match (&put, reference) {
            (Ok(p), Reference::Tag(t)) => format!("{repo}:{t}@{}", p.digest),
            _ => target(repo, reference),
        };
        self.note(o, "push", what, &put).await;
        put
    }

    async fn delete_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<bool> {
        let deleted = self.inner.delete_manifest(o, repo, reference).await;
        let action = match reference {
            Reference::Tag(_) => "delete tag",
            Reference::Digest(_) => "delete manifest",
        };
        self.note(o, action, target(repo, reference), &deleted)
            .await;
        deleted
    }

    async fn delete_blob(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &wharf_oci::Digest,
    ) -> Result<bool> {
        let deleted = self.inner.delete_blob(o, repo, digest).await;
        self.note(o, "delete blob", format!("{repo}@{digest}"), &deleted)
            .await;
        deleted
    }

    async fn delete_repository(
        &self,
        o: &Origin,
        repo: &RepoName,
    ) -> Result<Option<RepositoryDeleted>> {
        let deleted = self.inner.delete_repository(o, repo).await;
        let what = match &deleted {
            Ok(Some(d)) => format!("{repo} ({} manifests)", d.manifests.len()),
            _ => repo.to_string(),
        };
        self.note(o, "delete repository", what, &deleted).await;
        deleted
    }
}
