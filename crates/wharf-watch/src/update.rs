//! Replacing one container, transactionally: the new container is created and checked
//! while the old one still runs; the old one is stopped and set aside, not removed, until
//! the new one has stayed up and healthy for the grace period. Every failure on the way
//! puts the old container back under its name, running as before.

use std::time::{Duration, Instant};

use bollard::models::{ContainerInspectResponse, HealthStatusEnum, ImageConfig};

use crate::engine::{is_not_found, is_running, Engine, EngineError, STOP_MARGIN};
use crate::labels::{Hook, Labels, Selection};
use crate::spec;
use crate::target::{labels_of, Target};

/// watchtower's pre-update convention: exit 75 (EX_TEMPFAIL) means "not now".
const HOOK_SKIP_CODE: i64 = 75;
const POLL: Duration = Duration::from_millis(500);

/// How to stop and how long to wait for health.
#[derive(Debug, Clone)]
pub struct Timing {
    pub stop_timeout: Duration,
    pub health_grace: Duration,
    pub hooks: bool,
    /// watchtower's `--revive-stopped`: start the replacement of a stopped container.
    pub revive_stopped: bool,
    /// watchtower's `--remove-volumes`: the replacement gets fresh anonymous volumes, and
    /// the old container's go with it once the update stands.
    pub remove_volumes: bool,
}

/// A replacement that is running under the container's name, its predecessor set aside.
pub struct Replaced {
    pub target: Target,
    pub new_id: String,
    /// The image the replacement runs.
    pub image_id: String,
    /// Its dependants that were stopped for the swap, dependencies first: started again
    /// (or recreated, if they shared its network) once it is confirmed or rolled back.
    pub stopped_dependants: Vec<String>,
}

/// Why a replacement did not happen.
#[derive(Debug)]
pub enum NotReplaced {
    /// The pre-update hook asked to skip this time.
    Skipped(String),
    /// It failed; the old container is running (or stopped, as it was) under its name,
    /// unless the reason says that putting it back failed too.
    Failed(String),
    /// The new container would not start, so the old one was put back and runs again:
    /// the image's fault, not the moment's, and not worth another try.
    RolledBack(String),
}

/// Why a replacement did not last its grace period.
#[derive(Debug)]
pub enum Unconfirmed {
    /// The old container runs again.
    RolledBack(String),
    /// Putting the old container back failed too: the service is down.
    Down(String),
}

/// Create the replacement from `image` (a local tag pointing at `image_id`), check it,
/// and swap it in. The old container is left stopped under a side name for `confirm`.
pub async fn replace(
    engine: &Engine,
    target: &Target,
    old_image: &ImageConfig,
    image: &str,
    image_id: &str,
    timing: &Timing,
) -> Result<Replaced, NotReplaced> {
    let new_id = create_checked(engine, target, old_image, image, image_id, None, timing)
        .await
        .map_err(NotReplaced::Failed)?;
    // Each step logged: with the default stop timeout and rollback grace an update takes
    // tens of seconds, which in silence looks like a hang.
    tracing::info!(container = %target.name, new = %short(&new_id), "replacement created");
    if let Err(e) = run_hook(engine, target, &target.id, Hook::PreUpdate, timing).await {
        let _ = engine.remove(&new_id).await;
        return Err(e);
    }
    match swap(engine, target, &new_id, timing).await {
        Ok(()) => Ok(Replaced {
            target: target.clone(),
            new_id,
            image_id: image_id.to_owned(),
            stopped_dependants: Vec::new(),
        }),
        Err(e) => match restore(engine, target, &new_id).await {
            Ok(()) if e.starting => Err(NotReplaced::RolledBack(format!(
                "the new container did not start: {}",
                e.error
            ))),
            Ok(()) => Err(NotReplaced::Failed(e.error.to_string())),
            Err(down) => Err(NotReplaced::Failed(format!(
                "{}; then restoring failed, so {} is down: {down}",
                e.error, target.name
            ))),
        },
    }
}

/// Recreate `target`, stopped, which shared the network namespace of a container since
/// replaced: the namespace went with the old container, so it could never start again.
/// The same image and configuration, joined to the network of the container now named
/// `provider`; it takes `target`'s name and is started if `target` ran, and the old
/// container is removed.
pub async fn rejoin(
    engine: &Engine,
    target: &Target,
    provider: &str,
    timing: &Timing,
) -> Result<(), String> {
    let old_image = target.image_config(engine).await;
    let image = unchanged_image(engine, target).await;
    let new_id = create_checked(
        engine,
        target,
        &old_image,
        &image,
        target.image_id(),
        Some(provider),
        timing,
    )
    .await?;
    if let Err(e) = swap(engine, target, &new_id, timing).await {
        return Err(match restore(engine, target, &new_id).await {
            Ok(()) => e.error.to_string(),
            Err(down) => format!("{}; {down}", e.error),
        });
    }
    if let Err(e) = engine.remove(&target.id).await {
        tracing::warn!(container = %target.name, error = %e, "could not remove the container it replaces");
    }
    Ok(())
}

/// The reference `target` was created from, while it still names the image `target` runs,
/// else that image's id: recreating must not pick up a newer image behind a tag.
async fn unchanged_image(engine: &Engine, target: &Target) -> String {
    let reference = target.reference();
    let current = engine
        .inspect_image(reference)
        .await
        .ok()
        .and_then(|i| i.id);
    if current.as_deref() == Some(target.image_id()) {
        reference.to_owned()
    } else {
        target.image_id().to_owned()
    }
}

/// The replacement, created beside `target` under a side name, and checked to be `target`
/// again on `image_id` (on `network_of`'s network, if given); removed if it is not.
async fn create_checked(
    engine: &Engine,
    target: &Target,
    old_image: &ImageConfig,
    image: &str,
    image_id: &str,
    network_of: Option<&str>,
    timing: &Timing,
) -> Result<String, String> {
    let next_name = format!("{}{NEXT_SUFFIX}", target.name);
    discard_leftover(engine, &next_name).await;
    let mut replacement = spec::replacement(
        &target.inspect,
        old_image,
        image,
        engine.api_version(),
        !timing.remove_volumes,
    );
    let mut expected = target.inspect.clone();
    if let Some(provider) = network_of {
        // By id, as the engine records it, so the check below compares like with like.
        let provider = engine
            .inspect_container(provider)
            .await
            .ok()
            .and_then(|c| c.id)
            .ok_or_else(|| {
                format!("the container {provider}, whose network it shares, cannot be found")
            })?;
        let mode = Some(format!("container:{provider}"));
        if let Some(host) = replacement.body.host_config.as_mut() {
            host.network_mode.clone_from(&mode);
        }
        if let Some(host) = expected.host_config.as_mut() {
            host.network_mode = mode;
        }
    }
    let new_id = engine
        .create(&next_name, replacement.body)
        .await
        .map_err(|e| e.to_string())?;
    let checked = check_created(
        engine,
        &expected,
        old_image,
        &new_id,
        image_id,
        replacement.connect_later,
    )
    .await;
    if let Err(why) = checked {
        let _ = engine.remove(&new_id).await;
        return Err(why);
    }
    Ok(new_id)
}

/// A `-wharf-next` container can only be ours, from a run that died mid-update.
async fn discard_leftover(engine: &Engine, name: &str) {
    if engine.inspect_container(name).await.is_ok() {
        tracing::warn!(%name, "removing a replacement left by an interrupted update");
        let _ = engine.remove(name).await;
    }
}

async fn check_created(
    engine: &Engine,
    expected: &ContainerInspectResponse,
    old_image: &ImageConfig,
    new_id: &str,
    image_id: &str,
    connect_later: Vec<(String, bollard::models::EndpointSettings)>,
) -> Result<(), String> {
    for (network, endpoint) in connect_later {
        engine
            .connect_network(&network, new_id, endpoint)
            .await
            .map_err(|e| e.to_string())?;
    }
    let created = engine
        .inspect_container(new_id)
        .await
        .map_err(|e| e.to_string())?;
    if created.image.as_deref() != Some(image_id) {
        return Err(format!(
            "the tag moved while updating: the new container got image {} instead of the pulled {image_id}",
            created.image.as_deref().unwrap_or("?")
        ));
    }
    let differences = spec::differences(expected, old_image, &created);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the new container would not match the old one ({}); left the old one running",
            differences.join("; ")
        ))
    }
}

/// A failed swap, and whether it was the new container's start that failed.
struct SwapError {
    error: EngineError,
    starting: bool,
}

impl From<EngineError> for SwapError {
    fn from(error: EngineError) -> SwapError {
        SwapError {
            error,
            starting: false,
        }
    }
}

/// Stop the old container, move it aside, give the new one its name, start it (if the
/// old one ran, or `--revive-stopped` asks for it).
async fn swap(
    engine: &Engine,
    target: &Target,
    new_id: &str,
    timing: &Timing,
) -> Result<(), SwapError> {
    stop(engine, &target.inspect, timing.stop_timeout).await?;
    log_stopped(engine, target, timing.stop_timeout).await;
    engine.rename(&target.id, &aside_name(&target.name)).await?;
    engine.rename(new_id, &target.name).await?;
    if starts(target, timing) {
        engine.start(new_id).await.map_err(|error| SwapError {
            error,
            starting: true,
        })?;
        tracing::info!(container = %target.name, new = %short(new_id), "replacement started");
    }
    Ok(())
}

/// "stopped", or "killed" when it ignored its stop signal for the whole stop timeout and
/// the engine sent SIGKILL (exit code 137 without a KILL stop signal): a service that
/// does not shut down cleanly is worth knowing about.
async fn log_stopped(engine: &Engine, target: &Target, default_timeout: Duration) {
    let state = engine
        .inspect_container(&target.id)
        .await
        .ok()
        .and_then(|c| c.state);
    let exit_code = state.as_ref().and_then(|s| s.exit_code);
    let oom = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
    let signal = target.labels().stop_signal().map(str::to_ascii_uppercase);
    let asked_kill = matches!(signal.as_deref(), Some("SIGKILL" | "KILL" | "9"));
    if target.was_running && exit_code == Some(137) && !oom && !asked_kill {
        let timeout = stop_timeout_of(&target.inspect, default_timeout);
        tracing::warn!(
            container = %target.name,
            "old container killed: it did not stop within {} s of its stop signal (--stop-timeout), so the engine sent SIGKILL",
            timeout.as_secs()
        );
    } else {
        tracing::info!(container = %target.name, "old container stopped");
    }
}

/// Whether the replacement is started: the old container ran, or it is revived.
pub fn starts(target: &Target, timing: &Timing) -> bool {
    target.was_running || timing.revive_stopped
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Stop a container as it asks to be stopped: watchtower's stop-signal label, its own
/// StopTimeout, else `default_timeout`. After a failed stop this returns only once the
/// container is down or the stop would have been over, so a caller deciding whether to
/// start it again does not see one that is still shutting down as running.
pub async fn stop(
    engine: &Engine,
    container: &ContainerInspectResponse,
    default_timeout: Duration,
) -> Result<(), EngineError> {
    let id = container.id.as_deref().unwrap_or_default();
    let timeout = stop_timeout_of(container, default_timeout);
    let labels = labels_of(container);
    let result = engine.stop(id, labels.stop_signal(), Some(timeout)).await;
    if result.is_err() {
        wait_stopped(engine, id, timeout.saturating_add(STOP_MARGIN)).await;
    }
    result
}

/// The container's own StopTimeout, else `default_timeout`.
fn stop_timeout_of(container: &ContainerInspectResponse, default_timeout: Duration) -> Duration {
    container
        .config
        .as_ref()
        .and_then(|c| c.stop_timeout)
        // A negative StopTimeout asks newer engines to wait for ever; the watcher's own
        // timeout bounds that instead of turning it into an immediate kill.
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(default_timeout)
}

/// Until the container does not run, or `limit` has passed.
async fn wait_stopped(engine: &Engine, id: &str, limit: Duration) {
    let stopped = async {
        while let Ok(c) = engine.inspect_container(id).await {
            if !is_running(&c) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let _ = tokio::time::timeout(limit, stopped).await;
}

const ASIDE_SUFFIX: &str = "-wharf-prev";
const NEXT_SUFFIX: &str = "-wharf-next";

fn aside_name(name: &str) -> String {
    format!("{name}{ASIDE_SUFFIX}")
}

/// Finish what a watcher that died mid-update left: a container set aside (`-wharf-prev`)
/// is the last one known to work. If a container under its name runs, only the grace
/// period was cut short and the update stands; otherwise the old container gets its
/// name back and runs again. Unstarted replacements (`-wharf-next`) are removed. Only
/// containers this watcher watches are touched: another watcher (another scope) on the
/// same engine may be in the middle of its own update.
pub async fn recover_interrupted(
    engine: &Engine,
    selection: &Selection,
) -> Result<Vec<String>, EngineError> {
    let mut recovered = Vec::new();
    for summary in engine.list_containers(true).await? {
        let (Some(id), Some(names)) = (summary.id, summary.names) else {
            continue;
        };
        let Some(name) = names.first().map(|n| n.trim_start_matches('/').to_owned()) else {
            continue;
        };
        let labels = summary.labels.unwrap_or_default();
        let base = name
            .strip_suffix(NEXT_SUFFIX)
            .or_else(|| name.strip_suffix(ASIDE_SUFFIX));
        // As the container was when it was watched: running under its own name.
        if !base.is_some_and(|b| selection.includes(b, "running", &Labels(&labels))) {
            continue;
        }
        if name.ends_with(NEXT_SUFFIX) {
            tracing::warn!(container = %name, "removing a replacement left by an interrupted update");
            engine.remove(&id).await?;
        } else if let Some(base) = name.strip_suffix(ASIDE_SUFFIX) {
            restore_aside(engine, &id, base).await?;
            recovered.push(base.to_owned());
        }
    }
    Ok(recovered)
}

async fn restore_aside(engine: &Engine, aside_id: &str, base: &str) -> Result<(), EngineError> {
    match engine.inspect_container(base).await {
        Ok(current) if is_running(&current) => {
            tracing::warn!(container = %base, "an interrupted update had started its replacement; keeping it");
            engine.remove(aside_id).await
        }
        Ok(current) => {
            tracing::warn!(container = %base, "an interrupted update left a stopped replacement; restoring the old container");
            engine.remove(current.id.as_deref().unwrap_or(base)).await?;
            engine.rename(aside_id, base).await?;
            engine.start(aside_id).await
        }
        Err(e) if is_not_found(&e) => {
            tracing::warn!(container = %base, "an interrupted update left the old container aside; restoring it");
            engine.rename(aside_id, base).await?;
            engine.start(aside_id).await
        }
        Err(e) => Err(e),
    }
}

/// Put the old container back: the new one goes, the old one gets its name and, if it
/// ran before, runs again. The error says where the old container was left.
async fn restore(engine: &Engine, target: &Target, new_id: &str) -> Result<(), String> {
    if let Err(e) = engine.remove(new_id).await {
        if !is_not_found(&e) {
            tracing::error!(container = %target.name, error = %e, "could not remove the failed replacement");
        }
    }
    let old = engine
        .inspect_container(&target.id)
        .await
        .map_err(|e| format!("the old container {} cannot be found: {e}", target.id))?;
    put_back(engine, target, &old).await.map_err(|(name, failures)| {
        tracing::error!(container = %target.name, aside = %name, errors = %failures, "could not restore the old container");
        format!("the old container, named {name}, is not back ({failures})")
    })
}

/// Its name back, and started if it ran. Both are tried, since this runs after a
/// failure and either alone helps; the error is the name it has and what failed.
async fn put_back(
    engine: &Engine,
    target: &Target,
    old: &ContainerInspectResponse,
) -> Result<(), (String, String)> {
    let mut name = old
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let mut failures = Vec::new();
    if name != target.name {
        match engine.rename(&target.id, &target.name).await {
            Ok(()) => name.clone_from(&target.name),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let running = is_running(old);
    if target.was_running && !running {
        if let Err(e) = engine.start(&target.id).await {
            failures.push(e.to_string());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err((name, failures.join("; ")))
    }
}

/// Watch the replacement for the grace period. If it exits or reports unhealthy, the old
/// container comes back and the reason is returned; otherwise the old one is removed.
pub async fn confirm(
    engine: &Engine,
    replaced: &Replaced,
    timing: &Timing,
) -> Result<(), Unconfirmed> {
    let target = &replaced.target;
    if starts(target, timing) {
        tracing::info!(
            container = %target.name,
            "waiting {} s (--rollback-grace) for the replacement to stay up before keeping it",
            timing.health_grace.as_secs()
        );
        if let Err(why) = settle(engine, &replaced.new_id, timing.health_grace).await {
            tracing::warn!(container = %target.name, %why, "rolling back");
            return Err(match restore(engine, target, &replaced.new_id).await {
                Ok(()) => Unconfirmed::RolledBack(why),
                Err(down) => Unconfirmed::Down(format!(
                    "{why}; then rolling back failed, so {} is down: {down}",
                    target.name
                )),
            });
        }
        if let Err(NotReplaced::Failed(why) | NotReplaced::Skipped(why)) =
            run_hook(engine, target, &replaced.new_id, Hook::PostUpdate, timing).await
        {
            tracing::warn!(container = %target.name, %why, "post-update hook failed; the update stays");
        }
    }
    if let Err(e) = engine.remove_with(&target.id, timing.remove_volumes).await {
        tracing::warn!(container = %target.name, error = %e, "could not remove the replaced container");
    }
    Ok(())
}

/// Running and not unhealthy for `grace` (or healthy sooner).
async fn settle(engine: &Engine, id: &str, grace: Duration) -> Result<(), String> {
    // A grace too large to add is as good as for ever: no deadline is ever reached.
    let deadline = Instant::now().checked_add(grace);
    loop {
        let c = engine
            .inspect_container(id)
            .await
            .map_err(|e| e.to_string())?;
        let state = c.state.unwrap_or_default();
        if !state.running.unwrap_or(false) || state.restarting.unwrap_or(false) {
            return Err(format!(
                "the new container stopped (exit code {}) within the {} s grace period",
                state.exit_code.unwrap_or(-1),
                grace.as_secs()
            ));
        }
        match state.health.and_then(|h| h.status) {
            Some(HealthStatusEnum::UNHEALTHY) => {
                return Err(format!(
                    "the new container reported unhealthy within the {} s grace period",
                    grace.as_secs()
                ))
            }
            Some(HealthStatusEnum::HEALTHY) => return Ok(()),
            _ => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Run a lifecycle hook in `container` if hooks are on and the target has one. A
/// target that was not running has no process to exec into: watchtower skips its
/// hooks, and so do we.
pub async fn run_hook(
    engine: &Engine,
    target: &Target,
    container: &str,
    hook: Hook,
    timing: &Timing,
) -> Result<(), NotReplaced> {
    if !timing.hooks || !target.was_running {
        return Ok(());
    }
    let labels = target.labels();
    let Some(command) = labels.hook(hook) else {
        return Ok(());
    };
    let outcome = engine
        .exec(container, command, labels.hook_timeout(hook))
        .await
        .map_err(|e| NotReplaced::Failed(format!("{} hook: {e}", hook.name())))?;
    match outcome.exit_code {
        0 => Ok(()),
        HOOK_SKIP_CODE if hook == Hook::PreUpdate => Err(NotReplaced::Skipped(
            "the pre-update hook exited 75 (EX_TEMPFAIL): update skipped".into(),
        )),
        code => Err(NotReplaced::Failed(format!(
            "{} hook `{command}` exited {code}: {}",
            hook.name(),
            outcome.output.trim()
        ))),
    }
}
