//! One check of every watched container ("a session"), and the watcher that runs them
//! one at a time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wharf_client::ImageRef;
use wharf_oci::sync::lock;
use wharf_oci::Digest;

use crate::check::{recorded_digests, Registries};
use crate::dependants::Dependants;
use crate::engine::{is_running, Engine};
use crate::events::Pushed;
use crate::labels::{Hook, Selection};
use crate::order::Dependencies;
use crate::policy::{self, Policy, PolicyDefaults};
use crate::rejected::{Rejection, Rejections};
use crate::report::{ContainerReport, Outcome, SessionReport};
use crate::spec;
use crate::target::{filter_images, own_container_id, parse_reference, Target};
use crate::update::{self, NotReplaced, Replaced, Timing, Unconfirmed};

mod checking;
mod fleet;
mod updating;

pub use fleet::{HistoryView, RollbackError};

/// What a watcher does, beyond which containers it looks at.
#[derive(Debug, Clone)]
pub struct Settings {
    pub selection: Selection,
    /// Report newer images, change nothing.
    pub monitor_only: bool,
    /// Ask no registry: recreate a container when its reference names another image
    /// locally (built or pulled by hand), as watchtower's `--no-pull`.
    pub no_pull: bool,
    /// Remove an old image once nothing uses it.
    pub cleanup: bool,
    /// Wait for each replacement to prove healthy before the next; otherwise replace all,
    /// then watch them together.
    pub rolling_restart: bool,
    /// watchtower's `--no-restart`: pull the new image, leave the container as it is.
    pub no_restart: bool,
    pub timing: Timing,
    /// Tag-following defaults (`--tag-semver`…), under each container's labels.
    pub policy: PolicyDefaults,
    /// watchtower's `--label-take-precedence`: a monitor-only or no-pull label set on a
    /// container beats the flag; otherwise either one set to true holds.
    pub label_take_precedence: bool,
}

/// Counters since start, for `/v1/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub sessions: u64,
    pub scanned: u64,
    pub updated: u64,
    pub failed: u64,
    pub last: Option<SessionReport>,
}

pub struct Watcher {
    engine: Engine,
    registries: Arc<Registries>,
    settings: Settings,
    /// One session at a time: the schedule and the HTTP API share it.
    running: tokio::sync::Mutex<()>,
    totals: Mutex<Totals>,
    /// Images whose update was rolled back, per container: not retried until the tag
    /// moves, even after a restart.
    rejections: Rejections,
    /// When tags first appeared, for policies' `min-age`.
    sightings: policy::Sightings,
    /// Digests just announced by push events, by image reference: the next check of that
    /// reference waits briefly for the tag to reach it (see `settled_digest`).
    expected: Mutex<HashMap<String, Digest>>,
    /// The container this process runs in, if any: never stopped by itself mid-update.
    own_id: Option<String>,
    /// Set for the length of a check-only session (the dashboard's "check now"): every
    /// container is then monitor-only. Read and written under `running`.
    checking_only: std::sync::atomic::AtomicBool,
    /// History, kept images, held updates, windows (see `with_fleet`).
    fleet: crate::fleet::Fleet,
    /// Signatures new images must carry (`--verify`, `--trust`, `wharf.watch.verify`).
    verification: crate::verify::Verification,
}

/// A watched container and what the check found for it.
struct Checked {
    target: Target,
    reference: String,
    image: Result<ImageRef, String>,
    old_digest: Option<Digest>,
    latest: Option<Result<Digest, String>>,
    /// For a no-pull container: the id of the image its reference names locally now.
    local: Option<Result<String, String>>,
    /// What its tag-following policy found (a move, a held-back tag), for the report.
    note: Option<String>,
}

impl Watcher {
    pub fn new(
        engine: Engine,
        registries: Registries,
        settings: Settings,
        rejections: Rejections,
    ) -> Watcher {
        Watcher::shared(engine, Arc::new(registries), settings, rejections)
    }

    /// As `new`, with registry clients (credentials, token cache) shared with the
    /// watchers of other engines: one fleet asks each registry once per token.
    pub fn shared(
        engine: Engine,
        registries: Arc<Registries>,
        settings: Settings,
        rejections: Rejections,
    ) -> Watcher {
        Watcher {
            engine,
            registries,
            settings,
            running: tokio::sync::Mutex::new(()),
            totals: Mutex::new(Totals::default()),
            rejections,
            sightings: policy::Sightings::default(),
            expected: Mutex::new(HashMap::new()),
            own_id: own_container_id(),
            checking_only: std::sync::atomic::AtomicBool::new(false),
            fleet: crate::fleet::Fleet::in_memory(),
            verification: crate::verify::Verification::default(),
        }
    }

    /// The same watcher, keeping history, holds and windows as `fleet` says.
    pub fn with_fleet(mut self, fleet: crate::fleet::Fleet) -> Watcher {
        self.fleet = fleet;
        self
    }

    pub fn fleet(&self) -> &crate::fleet::Fleet {
        &self.fleet
    }

    /// The engine this watcher updates.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A session that changes nothing: what each container runs and what its registry
    /// has, after a session under way.
    pub async fn check_only(&self, only_images: Option<&[String]>) -> SessionReport {
        use std::sync::atomic::{AtomicBool, Ordering};
        /// Clears the flag however the session ends, even dropped half way.
        struct Reset<'a>(&'a AtomicBool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let _one_at_a_time = self.running.lock().await;
        self.checking_only.store(true, Ordering::SeqCst);
        let _reset = Reset(&self.checking_only);
        self.session_now(only_images).await
    }

    /// Check new images' signatures before any update, as `verification` asks.
    pub fn verify_with(mut self, verification: crate::verify::Verification) -> Watcher {
        self.verification = verification;
        self
    }

    /// Why the checked image must not be run, when its container asks for a signature
    /// that does not verify.
    async fn unverified(&self, c: &Checked) -> Option<String> {
        let (Ok(image), Some(Ok(digest)), None) = (&c.image, &c.latest, &c.local) else {
            return None;
        };
        let labels = c.target.labels().0;
        let why = self
            .verification
            .refusal(&self.registries, labels, image, digest)
            .await?;
        tracing::warn!(container = %c.target.name, %image, %digest, reason = %why, "a new image does not verify; the container is left alone");
        Some(why)
    }

    /// Why a found update does not run now, and the line's outcome: an image that does
    /// not verify fails (and is never held for a window or an approval); one outside its
    /// window or awaiting approval is held, staying stale.
    async fn withheld(&self, c: &Checked, line: &ContainerReport) -> Option<(Outcome, String)> {
        if let Some(why) = self.unverified(c).await {
            return Some((Outcome::Failed, why));
        }
        self.admit(c, line).err().map(|why| (line.outcome, why))
    }

    /// The registries' clients (credentials, token cache), shared with event subscribers.
    pub fn registries(&self) -> Arc<Registries> {
        self.registries.clone()
    }

    /// Remember the digests push events announced, for the check that follows them.
    pub fn expect(&self, pushed: &[Pushed]) {
        let mut expected = lock(&self.expected);
        for p in pushed {
            let (Some(digest), Ok(image)) = (&p.digest, p.image.parse::<ImageRef>()) else {
                continue;
            };
            expected.insert(crate::identity::image_key(&image), digest.clone());
        }
    }

    /// Which of `images` some watched container uses (by the rules of `?image=`), without
    /// asking any registry: an event for an image no one uses costs no check.
    pub async fn used(&self, images: &[String]) -> Result<Vec<String>, crate::engine::EngineError> {
        let (_, watched) = self.targets().await?;
        Ok(images
            .iter()
            .filter(|i| {
                let one = Some(std::slice::from_ref(*i));
                !filter_images(watched.clone(), one, |t| self.follows_tags(t)).is_empty()
            })
            .cloned()
            .collect())
    }

    /// The registries the watched containers' images come from, each once.
    pub async fn watched_registries(
        &self,
    ) -> Result<Vec<wharf_client::Registry>, crate::engine::EngineError> {
        let (_, watched) = self.targets().await?;
        let mut registries: Vec<wharf_client::Registry> = Vec::new();
        for t in &watched {
            if let Ok(image) = t.reference().parse::<ImageRef>() {
                if !registries.contains(image.registry()) {
                    registries.push(image.registry().clone());
                }
            }
        }
        Ok(registries)
    }

    pub fn totals(&self) -> Totals {
        lock(&self.totals).clone()
    }

    /// Check every watched container (or those whose image is in `only_images`) and
    /// update what is stale, after the session running now if there is one. Never fails
    /// as a whole: each container's trouble is in its line of the report.
    pub async fn session(&self, only_images: Option<&[String]>) -> SessionReport {
        let _one_at_a_time = self.running.lock().await;
        self.session_now(only_images).await
    }

    /// As `session`, but `None` at once if a session is running.
    pub async fn try_session(&self, only_images: Option<&[String]>) -> Option<SessionReport> {
        let _one_at_a_time = self.running.try_lock().ok()?;
        Some(self.session_now(only_images).await)
    }

    /// Put back what an update cut short by a crash left set aside. Sessions do it
    /// first too; this is for start-up, the next session being possibly a day away.
    pub async fn recover(&self) {
        let _one_at_a_time = self.running.lock().await;
        self.recover_now().await;
    }

    async fn recover_now(&self) {
        if let Err(e) = update::recover_interrupted(&self.engine, &self.settings.selection).await {
            tracing::error!(error = %e, "could not finish an interrupted update");
        }
    }

    async fn session_now(&self, only_images: Option<&[String]>) -> SessionReport {
        let mut report = SessionReport {
            started: now(),
            ..Default::default()
        };
        self.registries.refresh_credentials();
        self.recover_now().await;
        match self.targets().await {
            Ok((all, watched)) => {
                let watched = filter_images(watched, only_images, |t| self.follows_tags(t));
                self.run(&all, watched, &mut report).await;
            }
            Err(e) => report.containers.push(ContainerReport {
                name: "(engine)".into(),
                image: String::new(),
                old_digest: None,
                new_digest: None,
                outcome: Outcome::Failed,
                detail: Some(e.to_string()),
                host: None,
            }),
        }
        report.finished = now();
        self.record(&report);
        report
    }

    fn record(&self, report: &SessionReport) {
        let mut t = lock(&self.totals);
        t.sessions += 1;
        t.scanned += report.scanned() as u64;
        t.updated += report.count(Outcome::Updated) as u64;
        t.failed += report.failed() as u64;
        t.last = Some(report.clone());
    }

    /// Every container (for dependencies) and the watched ones.
    async fn targets(&self) -> Result<(Vec<Target>, Vec<Target>), crate::engine::EngineError> {
        let mut all = Vec::new();
        for summary in self.engine.list_containers(true).await? {
            let Some(id) = summary.id else { continue };
            let inspect = match self.engine.inspect_container(&id).await {
                Ok(i) => i,
                Err(e) if crate::engine::is_not_found(&e) => continue,
                Err(e) => return Err(e),
            };
            let name = inspect
                .name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned();
            let was_running = is_running(&inspect);
            all.push(Target {
                id,
                name,
                inspect,
                was_running,
            });
        }
        let watched = all
            .iter()
            .filter(|t| {
                let state = t
                    .inspect
                    .state
                    .as_ref()
                    .and_then(|s| s.status)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                self.settings
                    .selection
                    .includes(&t.name, &state, &t.labels())
                    && self.own_id.as_deref() != Some(t.id.as_str())
            })
            .cloned()
            .collect();
        for name in &self.settings.selection.names {
            if !all.iter().any(|t| &t.name == name) {
                tracing::warn!("no container is named {name}, so it is not watched: check the name with `docker ps -a`");
            }
        }
        Ok((all, watched))
    }

    async fn run(&self, all: &[Target], watched: Vec<Target>, report: &mut SessionReport) {
        let timing = &self.settings.timing;
        for t in watched.iter().filter(|t| t.was_running) {
            if let Err(NotReplaced::Failed(why) | NotReplaced::Skipped(why)) =
                update::run_hook(&self.engine, t, &t.id, Hook::PreCheck, timing).await
            {
                tracing::warn!(container = %t.name, %why, "pre-check hook failed");
            }
        }
        let mut checked = self.check(watched).await;
        let deps = Dependencies::of(all);
        let names: Vec<String> = checked.iter().map(|c| c.target.name.clone()).collect();
        let order = deps.sorted(&names);
        checked.sort_by_key(|c| order.iter().position(|n| n == &c.target.name));
        let checked = self.compose_order(checked).await;
        let mut pending: Vec<(usize, Replaced)> = Vec::new();
        let mut lines: Vec<ContainerReport> = Vec::new();
        // Old container id → its name, for every container replaced this session.
        let mut replaced_ids: HashMap<String, String> = HashMap::new();
        let mut pulled: HashMap<String, Result<String, String>> = HashMap::new();
        for c in &checked {
            let mut line = self.line(c);
            let provider_replaced = spec::network_provider(&c.target.inspect)
                .and_then(|provider| replaced_ids.get(provider));
            if line.outcome == Outcome::Stale && !self.monitor_only(c) {
                if let Some(provider) = provider_replaced {
                    // Its provider's swap recreates it on the new network; replacing it
                    // as well in the same check would race that (and its rollback).
                    line.outcome = Outcome::Skipped;
                    line.detail = Some(format!("it shares the network of {provider}, updated in this check: it is recreated on the new network now and updated at the next check"));
                    lines.push(line);
                    continue;
                }
                if let Some((outcome, why)) = self.withheld(c, &line).await {
                    line.outcome = outcome;
                    line.detail = Some(why);
                    lines.push(line);
                    continue;
                }
                if self.settings.no_restart {
                    self.pull_only(c, &mut pulled, &mut line).await;
                    lines.push(line);
                    continue;
                }
                match self.update(c, &deps, &mut pulled, &mut replaced_ids).await {
                    Ok(Some(replaced)) => {
                        line.outcome = Outcome::Updated;
                        if self.settings.rolling_restart {
                            self.finish(&replaced, &deps, &replaced_ids, &mut line)
                                .await;
                        } else {
                            pending.push((lines.len(), replaced));
                        }
                    }
                    Ok(None) => line.outcome = Outcome::Fresh,
                    Err(NotReplaced::Skipped(why)) => {
                        line.outcome = Outcome::Skipped;
                        line.detail = Some(why);
                    }
                    Err(NotReplaced::Failed(why)) => {
                        line.outcome = Outcome::Failed;
                        line.detail = Some(why);
                    }
                    Err(NotReplaced::RolledBack(why)) => {
                        let tried = pulled_id(c, &pulled);
                        self.rolled_back(c, &mut line, why, tried)
                    }
                }
            }
            lines.push(line);
        }
        let finishing = pending.iter().map(|(i, r)| {
            let mut line = lines[*i].clone();
            let (ids, deps) = (&replaced_ids, &deps);
            async move {
                self.finish(r, deps, ids, &mut line).await;
                (*i, line)
            }
        });
        for (i, line) in futures::future::join_all(finishing).await {
            lines[i] = line;
        }
        // By name: after an update the name is the replacement's.
        for c in checked.iter().filter(|c| c.target.was_running) {
            let name = &c.target.name;
            if let Err(NotReplaced::Failed(why) | NotReplaced::Skipped(why)) =
                update::run_hook(&self.engine, &c.target, name, Hook::PostCheck, timing).await
            {
                tracing::warn!(container = %c.target.name, %why, "post-check hook failed");
            }
        }
        if self.settings.cleanup {
            self.cleanup(&checked, &lines).await;
        }
        report.containers = lines;
    }

    /// watchtower's `--no-restart`: the new image is pulled, the container left alone.
    async fn pull_only(
        &self,
        c: &Checked,
        pulled: &mut HashMap<String, Result<String, String>>,
        line: &mut ContainerReport,
    ) {
        match self.new_image(c, pulled).await {
            Ok(_) => {
                line.detail =
                    Some("new image pulled; the container is not restarted (--no-restart)".into())
            }
            Err(
                NotReplaced::Failed(why) | NotReplaced::Skipped(why) | NotReplaced::RolledBack(why),
            ) => {
                line.outcome = Outcome::Failed;
                line.detail = Some(why);
            }
        }
    }

    fn dependants(&self) -> Dependants<'_> {
        Dependants {
            engine: &self.engine,
            timing: &self.settings.timing,
        }
    }

    fn monitor_only(&self, c: &Checked) -> bool {
        self.checking_only.load(std::sync::atomic::Ordering::SeqCst)
            || c.target.labels().monitor_only(
                self.settings.monitor_only,
                self.settings.label_take_precedence,
            )
    }
}

/// The local id of the image `c` was to be updated to, once pulled.
fn pulled_id(c: &Checked, pulled: &HashMap<String, Result<String, String>>) -> String {
    match (&c.local, &c.image) {
        (Some(Ok(id)), _) => id.clone(),
        (_, Ok(image)) => match pulled.get(&image.to_string()) {
            Some(Ok(id)) => id.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
