//! Many Docker hosts from one watcher: engines it reaches itself (`--host` repeated, or a
//! hosts file) and agents that dial in (`agents`). Every host runs the same session as a
//! lone watcher does, with its own engine, labels, scopes and rollbacks; the fleet runs
//! them side by side and merges their reports, each line naming its host. One host whose
//! engine is gone gives a failed "(engine)" line and holds up no other.

pub mod agent;
pub mod controller;
pub mod engines;
pub mod protocol;
mod tls;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use wharf_oci::sync::lock;

use crate::check::Registries;
use crate::events::Pushed;
use crate::report::SessionReport;
use crate::session::{Totals, Watcher};
use controller::Agents;
use protocol::{Command, ContainerInfo, Reply};

/// An engine the watcher reaches itself.
pub struct LocalHost {
    /// What reports and the dashboard call it.
    pub name: String,
    /// Its `DOCKER_HOST` URL.
    pub url: String,
    pub watcher: Arc<Watcher>,
}

/// What the dashboard shows of a host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostStatus {
    pub name: String,
    /// `engine` for a host reached directly, `agent` for one that dials in.
    pub kind: &'static str,
    pub url: String,
    /// The engine answered (a local host), or the agent is connected now.
    pub connected: bool,
    /// Why not, when known.
    pub detail: Option<String>,
    pub containers: Vec<ContainerInfo>,
}

pub struct HostSet {
    locals: Vec<LocalHost>,
    agents: Option<Arc<Agents>>,
    registries: Arc<Registries>,
    totals: Mutex<Totals>,
    /// The last report of each host, by host name: the dashboard's newest candidates.
    last: Mutex<std::collections::BTreeMap<String, SessionReport>>,
}

impl HostSet {
    pub fn new(
        locals: Vec<LocalHost>,
        agents: Option<Arc<Agents>>,
        registries: Arc<Registries>,
    ) -> HostSet {
        HostSet {
            locals,
            agents,
            registries,
            totals: Mutex::new(Totals::default()),
            last: Mutex::new(Default::default()),
        }
    }

    /// Whether report lines name their host: with more than one host, or any agent.
    pub fn is_many(&self) -> bool {
        self.locals.len() > 1 || self.agents.is_some()
    }

    pub fn locals(&self) -> &[LocalHost] {
        &self.locals
    }

    pub fn agents(&self) -> Option<&Arc<Agents>> {
        self.agents.as_ref()
    }

    pub fn registries(&self) -> Arc<Registries> {
        self.registries.clone()
    }

    pub fn totals(&self) -> Totals {
        lock(&self.totals).clone()
    }

    /// The last report of `host`, if it has had a session.
    pub fn last_report(&self, host: &str) -> Option<SessionReport> {
        lock(&self.last).get(host).cloned()
    }

    /// Put back what crashed updates left, on every local host (agents do it themselves).
    pub async fn recover(&self) {
        join_all(self.locals.iter().map(|h| h.watcher.recover())).await;
    }

    /// A session on every host (all, or only `host`), merged. `queue`: wait for a
    /// session under way on a host, else skip that host. `None` if no host ran one.
    pub async fn session(
        &self,
        only_images: Option<&[String]>,
        queue: bool,
        host: Option<&str>,
    ) -> Option<SessionReport> {
        let images = only_images.map(<[String]>::to_vec);
        let command = Command::Session { images, queue };
        self.everywhere(command, host).await
    }

    /// A session that changes nothing, on every host or one.
    pub async fn check_only(&self, host: Option<&str>) -> Option<SessionReport> {
        self.everywhere(Command::Check { images: None }, host).await
    }

    /// A push: on every host, the containers using the pushed images are checked now
    /// (after a session under way); hosts where none does cost no registry request.
    pub async fn pushed(&self, pushed: Vec<Pushed>) -> Option<SessionReport> {
        let wire = pushed.iter().map(protocol::PushedWire::from).collect();
        self.everywhere(Command::Pushed { pushed: wire }, None)
            .await
    }

    /// `command` on every host (or the one named), side by side; the replies merged.
    async fn everywhere(&self, command: Command, only: Option<&str>) -> Option<SessionReport> {
        let locals = self
            .locals
            .iter()
            .filter(|h| only.is_none_or(|n| n == h.name))
            .map(|h| {
                let command = command.clone();
                async move { (h.name.clone(), run_local(&h.watcher, command).await) }
            });
        let mut replies: Vec<(String, Option<SessionReport>)> = join_all(locals).await;
        if let Some(agents) = &self.agents {
            replies.extend(agents.everywhere(&command, only).await);
        }
        let mut merged: Option<SessionReport> = None;
        for (host, report) in replies {
            let Some(mut report) = report else { continue };
            if self.is_many() {
                for line in &mut report.containers {
                    line.host = Some(host.clone());
                }
            }
            if let Some(line) = report.containers.iter().find(|l| l.name == "(engine)") {
                tracing::warn!(%host, detail = line.detail.as_deref().unwrap_or(""), "this host's engine did not answer; the other hosts go on");
            }
            lock(&self.last).insert(host, report.clone());
            let m = merged.get_or_insert_with(|| SessionReport {
                started: report.started,
                ..Default::default()
            });
            m.started = m.started.min(report.started);
            m.finished = m.finished.max(report.finished);
            m.containers.extend(report.containers);
        }
        if let Some(report) = &merged {
            self.record(report);
        }
        merged
    }

    fn record(&self, report: &SessionReport) {
        let mut t = lock(&self.totals);
        t.sessions += 1;
        t.scanned += report.scanned() as u64;
        t.updated += report.count(crate::report::Outcome::Updated) as u64;
        t.failed += report.failed() as u64;
        t.last = Some(report.clone());
    }

    /// The registries the local hosts' watched containers use, each once.
    pub async fn watched_registries(&self) -> Vec<wharf_client::Registry> {
        let mut all: Vec<wharf_client::Registry> = Vec::new();
        for h in &self.locals {
            match h.watcher.watched_registries().await {
                Ok(list) => {
                    for r in list {
                        if !all.contains(&r) {
                            all.push(r);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(host = %h.name, error = %e, "cannot list the watched containers")
                }
            }
        }
        all
    }

    /// Every host with its containers, for the dashboard.
    pub async fn status(&self) -> Vec<HostStatus> {
        let locals = self.locals.iter().map(|h| async move {
            let listed = protocol::containers(&h.watcher).await;
            let (connected, detail, containers) = match listed {
                Ok(c) => (true, None, c),
                Err(e) => (false, Some(e), Vec::new()),
            };
            HostStatus {
                name: h.name.clone(),
                kind: "engine",
                url: h.url.clone(),
                connected,
                detail,
                containers,
            }
        });
        let mut all = join_all(locals).await;
        if let Some(agents) = &self.agents {
            all.extend(agents.status().await);
        }
        all
    }
}

impl HostSet {
    /// `command` on the host named `host`, wherever it is: the dashboard's one way in.
    pub async fn ask(&self, host: &str, command: Command) -> Result<Reply, String> {
        if let Some(local) = self.locals.iter().find(|h| h.name == host) {
            return Ok(protocol::execute(&local.watcher, command).await);
        }
        match &self.agents {
            Some(agents) if agents.knows(host) => agents.ask(host, command).await,
            _ => Err(format!("no host is named {host}")),
        }
    }

    /// Every host's view for the dashboard, side by side; an unreachable host's says why.
    pub async fn views(&self) -> Vec<(HostStatus, Result<protocol::HostView, String>)> {
        let statuses = self.status().await;
        let asks = statuses.into_iter().map(|status| async move {
            let view = match (status.connected, status.kind) {
                (false, _) => Err(status.detail.clone().unwrap_or_default()),
                _ => match self.ask(&status.name, Command::View).await {
                    Ok(Reply::View(v)) => Ok(v),
                    Ok(Reply::Error(e)) | Err(e) => Err(e),
                    Ok(_) => Err("unexpected answer".to_owned()),
                },
            };
            (status, view)
        });
        join_all(asks).await
    }
}

/// What one local host does for `command`.
pub(crate) async fn run_local(watcher: &Watcher, command: Command) -> Option<SessionReport> {
    match protocol::execute(watcher, command).await {
        Reply::Report(report) => Some(report),
        Reply::Error(detail) => {
            let now = now();
            Some(SessionReport {
                started: now,
                finished: now,
                containers: vec![crate::report::ContainerReport {
                    name: "(engine)".into(),
                    image: String::new(),
                    old_digest: None,
                    new_digest: None,
                    outcome: crate::report::Outcome::Failed,
                    detail: Some(detail),
                    host: None,
                }],
            })
        }
        Reply::Busy | Reply::Idle | Reply::Containers(_) | Reply::View(_) | Reply::Change(_) => {
            None
        }
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
