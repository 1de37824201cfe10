//! Replication (`replication:`): push replication of this registry's pushes and deletes
//! to other registries, driven by the event log, and pull sync of repositories from
//! upstream registries on a schedule. See docs/replication.md for the rules, the
//! conflict rule of active-active pairs, and the metrics.

mod driver;
pub mod push;
pub mod reconcile;
pub mod status;
pub mod sync;
pub mod target;

use std::sync::Arc;

use anyhow::Context;

pub use reconcile::{Difference, Plan};
pub use status::{Progress, Status};
pub use sync::SyncReport;
use target::Target;

use super::Registry;
use crate::config::replication::ReplicationConfig;

pub struct Replication {
    config: ReplicationConfig,
    targets: Vec<Arc<Target>>,
    pub status: Arc<Status>,
}

/// One target's place in the log, as the store keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Position {
    pub target: String,
    pub url: String,
    /// None before the target's first run.
    pub cursor: Option<u64>,
    pub newest: u64,
}

impl Replication {
    /// The targets the rules name, each with its client; None when nothing is configured.
    pub fn new(config: &ReplicationConfig) -> anyhow::Result<Option<Arc<Replication>>> {
        if config.rules.is_empty() && config.sync.is_empty() {
            return Ok(None);
        }
        let status = Arc::new(Status::default());
        let mut targets = Vec::new();
        for t in &config.targets {
            let rules: Vec<_> = config
                .rules
                .iter()
                .filter(|r| r.targets.contains(&t.name))
                .cloned()
                .collect();
            if rules.is_empty() {
                continue;
            }
            status.register(&t.name);
            targets.push(Arc::new(Target::new(t, rules)?));
        }
        for s in &config.sync {
            status.register_sync(&s.name);
        }
        Ok(Some(Arc::new(Replication {
            config: config.clone(),
            targets,
            status,
        })))
    }

    /// Start each target's replication and each sync entry's schedule.
    pub fn start(self: &Arc<Self>, registry: &Arc<Registry>) {
        for t in &self.targets {
            tokio::spawn(driver::run(self.clone(), registry.clone(), t.clone()));
        }
        for i in 0..self.config.sync.len() {
            tokio::spawn(self.clone().sync_every(registry.clone(), i));
        }
    }

    pub fn target_names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.name.clone()).collect()
    }

    fn target(&self, name: &str) -> anyhow::Result<&Arc<Target>> {
        self.targets
            .iter()
            .find(|t| t.name == name)
            .with_context(|| {
                format!(
                    "no replication target {name:?} with a rule: the targets are {:?}",
                    self.target_names()
                )
            })
    }

    /// Bring `target` up to date by comparing every covered tag (a new target, or events
    /// gone from the log).
    async fn catch_up(&self, registry: &Registry, target: &Target) -> anyhow::Result<()> {
        let plan = reconcile::reconcile(registry, target, true).await?;
        tracing::info!(target = %target.name, compared = plan.compared, converged = plan.converged.len(), failed = plan.failed.len(), "reconciled");
        if let Some(first) = plan.failed.first() {
            anyhow::bail!(
                "{} tags failed to reconcile, first {first}",
                plan.failed.len()
            );
        }
        Ok(())
    }

    /// Compare (and unless `dry_run`, converge) `only` the named target, or every one.
    pub async fn reconcile(
        &self,
        registry: &Registry,
        only: Option<&str>,
        dry_run: bool,
    ) -> anyhow::Result<Vec<Plan>> {
        let mut plans = Vec::new();
        for t in self.chosen(only)? {
            plans.push(reconcile::reconcile(registry, t, !dry_run).await?);
        }
        Ok(plans)
    }

    /// Replicate the events after each target's cursor up to the newest now, under the
    /// target's job lock (a serving process that holds it is skipped): `replicate run`.
    pub async fn run_once(
        &self,
        registry: &Registry,
        only: Option<&str>,
    ) -> anyhow::Result<Vec<Position>> {
        let events = registry
            .events()
            .context("this store keeps no event log to replicate from")?;
        for t in self.chosen(only)? {
            let name = driver::cursor_name(&t.name);
            let Some(_lock) = registry.core().store.locks.try_job(&name).await? else {
                tracing::warn!(target = %t.name, "a serving process is replicating to this target; skipped");
                continue;
            };
            driver::catch_up_events(self, registry, events, t).await?;
        }
        self.positions(registry).await
    }

    /// Each target's cursor and the log's newest event.
    pub async fn positions(&self, registry: &Registry) -> anyhow::Result<Vec<Position>> {
        let events = registry
            .events()
            .context("this store keeps no event log to replicate from")?;
        let newest = events.newest().await;
        let mut out = Vec::new();
        for t in &self.targets {
            out.push(Position {
                target: t.name.clone(),
                url: t.url.clone(),
                cursor: events.log().cursor(&driver::cursor_name(&t.name)).await?,
                newest,
            });
        }
        Ok(out)
    }

    fn chosen(&self, only: Option<&str>) -> anyhow::Result<Vec<&Arc<Target>>> {
        match only {
            Some(name) => Ok(vec![self.target(name)?]),
            None => Ok(self.targets.iter().collect()),
        }
    }

    /// Run every sync entry (or `only` the named one) once.
    pub async fn sync_once(
        &self,
        registry: &Registry,
        only: Option<&str>,
        dry_run: bool,
    ) -> anyhow::Result<Vec<SyncReport>> {
        let mut reports = Vec::new();
        for entry in &self.config.sync {
            if only.is_some_and(|n| n != entry.name) {
                continue;
            }
            reports.push(self.sync_entry(registry, entry, dry_run).await?);
        }
        Ok(reports)
    }

    async fn sync_entry(
        &self,
        registry: &Registry,
        entry: &crate::config::replication::Sync,
        dry_run: bool,
    ) -> anyhow::Result<SyncReport> {
        let client = target::client_for(
            &entry.url,
            entry.username.as_deref(),
            entry.password.as_deref(),
            target::SYNC_AGENT,
        )
        .with_context(|| format!("sync {}", entry.name))?;
        let report = sync::SyncRun::new(registry, entry, &client)
            .run(dry_run)
            .await?;
        self.status.update_sync(&entry.name, |p| {
            p.replicated += report.copied.len() as u64;
            p.last_success_at = Some(status::unix(std::time::SystemTime::now()));
            if let Some(f) = report.failed.first() {
                p.failures += report.failed.len() as u64;
                p.last_error = Some(f.clone());
                p.last_error_at = p.last_success_at;
            }
        });
        Ok(report)
    }

    /// One sync entry on its interval, under its job lock (once across replicas).
    async fn sync_every(self: Arc<Self>, registry: Arc<Registry>, index: usize) {
        let entry = self.config.sync[index].clone();
        // The first round waits one interval, as the other scheduled jobs do.
        let start = tokio::time::Instant::now() + entry.interval;
        let mut tick = tokio::time::interval_at(start, entry.interval);
        loop {
            tick.tick().await;
            let job = format!("sync-{index}");
            let Ok(Some(_lock)) = registry.core().store.locks.try_job(&job).await else {
                continue;
            };
            match self.sync_entry(&registry, &entry, false).await {
                Ok(r) => {
                    tracing::info!(sync = %entry.name, copied = r.copied.len(), unchanged = r.unchanged, failed = r.failed.len(), bytes = r.bytes, "synced")
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    self.status.update_sync(&entry.name, |p| {
                        p.failures += 1;
                        p.last_error = Some(message.clone());
                        p.last_error_at = Some(status::unix(std::time::SystemTime::now()));
                    });
                    tracing::warn!(sync = %entry.name, error = %message, "sync failed");
                }
            }
        }
    }
}
