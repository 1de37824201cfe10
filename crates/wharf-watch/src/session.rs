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
use crate::report::{ContainerReport, Outcome, SessionReport};
use crate::spec;
use crate::target::{filter_images, own_container_id, parse_reference, Target};
use crate::update::{self, NotReplaced, Replaced, Timing, Unconfirmed};

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
    /// Digests whose update was rolled back, per container: not retried at every check.
    rejected: Mutex<HashMap<String, Digest>>,
    /// When tags first appeared, for policies' `min-age`.
    sightings: policy::Sightings,
    /// Digests just announced by push events, by image reference: the next check of that
    /// reference waits briefly for the tag to reach it (see `settled_digest`).
    expected: Mutex<HashMap<String, Digest>>,
    /// The container this process runs in, if any: never stopped by itself mid-update.
    own_id: Option<String>,
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
    pub fn new(engine: Engine, registries: Registries, settings: Settings) -> Watcher {
        Watcher {
            engine,
            registries: Arc::new(registries),
            settings,
            running: tokio::sync::Mutex::new(()),
            totals: Mutex::new(Totals::default()),
            rejected: Mutex::new(HashMap::new()),
            sightings: policy::Sightings::default(),
            expected: Mutex::new(HashMap::new()),
            own_id: own_container_id(),
        }
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
            expected.insert(image.to_string(), digest.clone());
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
                if self.settings.no_restart {
                    match self.new_image(c, &mut pulled).await {
                        Ok(_) => {
                            line.detail = Some(
                                "new image pulled; the container is not restarted (--no-restart)"
                                    .into(),
                            )
                        }
                        Err(NotReplaced::Failed(why) | NotReplaced::Skipped(why)) => {
                            line.outcome = Outcome::Failed;
                            line.detail = Some(why);
                        }
                    }
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

    fn dependants(&self) -> Dependants<'_> {
        Dependants {
            engine: &self.engine,
            timing: &self.settings.timing,
        }
    }

    fn monitor_only(&self, c: &Checked) -> bool {
        self.settings.monitor_only || c.target.labels().monitor_only()
    }

    /// One HEAD per distinct reference, however many containers use it.
    async fn check(&self, watched: Vec<Target>) -> Vec<Checked> {
        let mut checked: Vec<Checked> = Vec::new();
        let mut latest: HashMap<String, Result<Digest, String>> = HashMap::new();
        for target in watched {
            let reference = target.reference().to_owned();
            let image = parse_reference(&reference);
            let mut c = Checked {
                target,
                reference,
                image,
                old_digest: None,
                latest: None,
                local: None,
                note: None,
            };
            if c.target.labels().no_pull(self.settings.no_pull) {
                c.local = Some(self.local_image(&c.reference).await);
            } else if let Err(why) = self.follow_tags(&mut c).await {
                c.latest = Some(Err(why));
            } else if let Ok(image) = &c.image {
                let key = image.to_string();
                if !latest.contains_key(&key) {
                    let result = self.settled_digest(image).await;
                    latest.insert(key.clone(), result);
                }
                c.latest = latest.get(&key).cloned();
                c.old_digest = self.old_digest(&c.target, image, c.latest.as_ref()).await;
            }
            checked.push(c);
        }
        checked
    }

    /// The digest `image` has now. registry:2 sends a push event as soon as the manifest
    /// is stored and moves the tag just after, so a check set off by the event may see
    /// the tag's old digest: when an event announced another digest, the HEAD is asked
    /// again a few times, a moment apart (then the registry's answer stands: the tag may
    /// have moved on since).
    async fn settled_digest(&self, image: &ImageRef) -> Result<Digest, String> {
        let wanted = lock(&self.expected).remove(&image.to_string());
        let mut result = self.registries.latest_digest(image).await;
        let Some(wanted) = wanted else {
            return result.map_err(|e| e.to_string());
        };
        for wait in [100, 250, 500, 1000, 2000] {
            match &result {
                Ok(d) if d != &wanted => {
                    tracing::debug!(%image, now = %d, pushed = %wanted, "the tag has not reached the pushed digest yet; asking again");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    result = self.registries.latest_digest(image).await;
                }
                _ => break,
            }
        }
        result.map_err(|e| e.to_string())
    }

    /// A container with a tag-following policy is checked under the tag it moves to, if
    /// its policy finds one: that reference becomes its image when it is updated.
    async fn follow_tags(&self, c: &mut Checked) -> Result<(), String> {
        let Some(policy) = Policy::of(c.target.labels().0, &self.settings.policy)? else {
            return Ok(());
        };
        let Ok(image) = &c.image else { return Ok(()) };
        let followed = policy::follow(&self.registries, &self.sightings, &policy, image).await?;
        c.note = followed.note;
        if let Some(to) = followed.to {
            tracing::info!(container = %c.target.name, from = %c.reference, to = %to.familiar(), "a newer tag matches its policy");
            c.reference = to.familiar();
            c.image = Ok(to);
        }
        Ok(())
    }

    /// Whether `t` follows tags: then a push of any tag of its repository concerns it.
    fn follows_tags(&self, t: &Target) -> bool {
        matches!(Policy::of(t.labels().0, &self.settings.policy), Ok(Some(_)))
    }

    /// The id of the image `reference` names on the engine now.
    async fn local_image(&self, reference: &str) -> Result<String, String> {
        let image = self
            .engine
            .inspect_image(reference)
            .await
            .map_err(|e| format!("no-pull: {reference} is not on the engine: {e}"))?;
        image
            .id
            .ok_or_else(|| format!("the engine reported no id for {reference}"))
    }

    /// The recorded digest equal to the registry's, if any; else one of the recorded ones.
    async fn old_digest(
        &self,
        target: &Target,
        image: &ImageRef,
        latest: Option<&Result<Digest, String>>,
    ) -> Option<Digest> {
        let inspected = self.engine.inspect_image(target.image_id()).await.ok()?;
        let recorded = recorded_digests(&inspected, image);
        match latest {
            Some(Ok(d)) if recorded.contains(d) => Some(d.clone()),
            _ => recorded.into_iter().next(),
        }
    }

    fn line(&self, c: &Checked) -> ContainerReport {
        let mut line = ContainerReport {
            name: c.target.name.clone(),
            image: c.reference.clone(),
            old_digest: c.old_digest.as_ref().map(|d| d.to_string()),
            new_digest: None,
            outcome: Outcome::Skipped,
            detail: None,
        };
        if let Some(local) = &c.local {
            match local {
                Ok(id) if id == c.target.image_id() => line.outcome = Outcome::Fresh,
                Ok(id) => {
                    line.outcome = Outcome::Stale;
                    line.new_digest = Some(id.clone());
                    line.detail = Some(format!(
                        "no-pull: {} is now the local image {id}",
                        c.reference
                    ));
                    self.unless_rejected(&mut line);
                }
                Err(why) => {
                    line.outcome = Outcome::Failed;
                    line.detail = Some(why.clone());
                }
            }
            return line;
        }
        match (&c.image, &c.latest) {
            (Err(why), _) => line.detail = Some(why.clone()),
            (Ok(_), Some(Ok(latest))) => {
                line.new_digest = Some(latest.to_string());
                line.outcome = if c.old_digest.as_ref() == Some(latest) {
                    Outcome::Fresh
                } else {
                    Outcome::Stale
                };
                if line.outcome == Outcome::Stale {
                    self.unless_rejected(&mut line);
                }
            }
            (Ok(_), Some(Err(why))) => {
                line.outcome = Outcome::Failed;
                line.detail = Some(why.clone());
            }
            (Ok(_), None) => {}
        }
        if line.detail.is_none() {
            line.detail.clone_from(&c.note);
        }
        line
    }

    /// A stale line whose new image was rolled back before is not tried again.
    fn unless_rejected(&self, line: &mut ContainerReport) {
        let rejected = lock(&self.rejected).get(&line.name).map(Digest::to_string);
        if rejected.is_some() && rejected == line.new_digest {
            line.detail =
                Some("an update to this image was rolled back before; not retried".into());
            line.outcome = Outcome::Failed;
        }
    }

    /// Pull the checked digest and swap the container. `Ok(None)`: the pulled image is
    /// the one already running (the engine had recorded no digest for it).
    async fn update(
        &self,
        c: &Checked,
        deps: &Dependencies,
        pulled: &mut HashMap<String, Result<String, String>>,
        replaced_ids: &mut HashMap<String, String>,
    ) -> Result<Option<Replaced>, NotReplaced> {
        let image_id = self.new_image(c, pulled).await?;
        if image_id == c.target.image_id() {
            return Ok(None);
        }
        tracing::info!(container = %c.target.name, image = %c.reference, id = %image_id, "new image ready; replacing the container");
        let old_image = c.target.image_config(&self.engine).await;
        let stopped = self.dependants().stop(&c.target, deps).await;
        let result = update::replace(
            &self.engine,
            &c.target,
            &old_image,
            &c.reference,
            &image_id,
            &self.settings.timing,
        )
        .await;
        match result {
            Ok(mut replaced) => {
                replaced_ids.insert(c.target.id.clone(), c.target.name.clone());
                replaced.stopped_dependants = stopped;
                Ok(Some(replaced))
            }
            Err(e) => {
                self.dependants().start_all(&stopped, replaced_ids).await;
                Err(e)
            }
        }
    }

    /// The checked image's local id: the one named locally (no-pull), or the checked
    /// digest, pulled once per reference per session.
    async fn new_image(
        &self,
        c: &Checked,
        pulled: &mut HashMap<String, Result<String, String>>,
    ) -> Result<String, NotReplaced> {
        match (&c.local, &c.image, &c.latest) {
            (Some(Ok(local)), _, _) => Ok(local.clone()),
            (None, Ok(image), Some(Ok(digest))) => match pulled.get(&image.to_string()) {
                Some(result) => result.clone(),
                None => {
                    let result = self.pull(image, digest).await;
                    pulled.insert(image.to_string(), result.clone());
                    result
                }
            }
            .map_err(NotReplaced::Failed),
            _ => Err(NotReplaced::Failed("nothing to update to".into())),
        }
    }

    /// Pull exactly the checked digest, with the check's credentials.
    async fn pull(&self, image: &ImageRef, digest: &Digest) -> Result<String, String> {
        let credentials = self
            .registries
            .docker_credentials(image.registry())
            .await
            .map_err(|e| e.to_string())?;
        self.engine
            .pull_checked(image, digest, credentials)
            .await
            .map_err(|e| e.to_string())
    }

    /// After a replacement: the grace period, rollback if needed, dependants restarted.
    async fn finish(
        &self,
        replaced: &Replaced,
        deps: &Dependencies,
        replaced_ids: &HashMap<String, String>,
        line: &mut ContainerReport,
    ) {
        if let Err(undone) = update::confirm(&self.engine, replaced, &self.settings.timing).await {
            let (outcome, why) = match undone {
                Unconfirmed::RolledBack(why) => (Outcome::RolledBack, why),
                Unconfirmed::Down(why) => (Outcome::Failed, why),
            };
            line.outcome = outcome;
            line.detail = Some(why);
            if let Some(d) = &line.new_digest {
                if let Ok(d) = d.parse() {
                    lock(&self.rejected).insert(replaced.target.name.clone(), d);
                }
            }
        }
        let trouble = self
            .dependants()
            .restart(replaced, deps, replaced_ids)
            .await;
        if !trouble.is_empty() {
            let detail = line.detail.take().into_iter().chain(trouble);
            line.detail = Some(detail.collect::<Vec<_>>().join("; "));
        }
    }

    /// Remove old images nothing uses any more.
    async fn cleanup(&self, checked: &[Checked], lines: &[ContainerReport]) {
        let updated: HashSet<&str> = lines
            .iter()
            .filter(|l| l.outcome == Outcome::Updated)
            .map(|l| l.name.as_str())
            .collect();
        let old_images: HashSet<String> = checked
            .iter()
            .filter(|c| updated.contains(c.target.name.as_str()))
            .map(|c| c.target.image_id().to_owned())
            .collect();
        let in_use: HashSet<String> = match self.engine.list_containers(true).await {
            Ok(list) => list.into_iter().filter_map(|c| c.image_id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cleanup skipped: cannot list containers");
                return;
            }
        };
        for id in old_images.difference(&in_use) {
            match self.engine.remove_image(id).await {
                Ok(()) => tracing::info!(image = %id, "removed the old image"),
                Err(e) => tracing::warn!(image = %id, error = %e, "old image kept"),
            }
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
