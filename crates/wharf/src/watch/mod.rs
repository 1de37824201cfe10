//! `wharf watch [NAME…]`: the updater, configured with watchtower's flags and
//! environment names so a watchtower user switches by changing the binary.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use wharf_client::client::tls;
use wharf_client::{CredentialSource, Registry};
use wharf_watch::api::{self, ReadTotals, RunSession};
use wharf_watch::events::{Dispatcher, Pushed, RunChecks};
use wharf_watch::hosts::HostSet;
use wharf_watch::identity::same_registry;
use wharf_watch::labels::{split_names, Selection};
use wharf_watch::notify::{Notifiers, NotifySettings};
use wharf_watch::policy::PolicyDefaults;
use wharf_watch::rejected::{default_state_dir, state_file, Rejections};
use wharf_watch::report::{Outcome, SessionReport};
use wharf_watch::resume::Resume;
use wharf_watch::schedule::Schedule;
use wharf_watch::session::Settings;
use wharf_watch::sse;
use wharf_watch::update::Timing;

use crate::client_args::ClientFlags;

mod args;
mod fleet;
mod hosts;
mod hosts_args;
pub use args::WatchArgs;

pub fn run(mut args: WatchArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    // wharf's own modules only: the engine and HTTP crates' debug output drowns them.
    let level = if args.trace {
        Some("info,wharf=trace,wharf_watch=trace,wharf_client=trace")
    } else if args.debug {
        Some("info,wharf=debug,wharf_watch=debug,wharf_client=debug")
    } else {
        args.log_level
            .as_deref()
            .map(|l| match l.to_ascii_lowercase().as_str() {
                "panic" | "fatal" | "error" => "error",
                "warn" | "warning" => "warn",
                "debug" => "info,wharf=debug,wharf_watch=debug,wharf_client=debug",
                "trace" => "info,wharf=trace,wharf_watch=trace,wharf_client=trace",
                _ => "info",
            })
    };
    if args.no_color {
        // Read by the log set-up of every command; set before any thread starts.
        std::env::set_var("NO_COLOR", "1");
    }
    crate::init_logging_as(level, args.log_format.eq_ignore_ascii_case("json"));
    let flags = flags.merge(&ClientFlags {
        registry_ca: args.registry_ca.clone(),
        registry_ca_validate: args.registry_ca_validate,
        insecure: args.insecure,
        insecure_registries: args.insecure_registries.clone(),
        docker_certs_dir: flags.docker_certs_dir.clone(),
        daemon_json: flags.daemon_json.clone(),
    });
    let flags = &flags;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(command) = args.command.take() {
        return runtime.block_on(fleet::run_command(command, args, flags));
    }
    if hosts::is_agent(&args) {
        // `agent` is the mode, not a container to watch.
        args.names.remove(0);
        return runtime.block_on(async {
            let stop = stop_requested()?;
            tokio::select! {
                result = hosts::run_agent(&args, flags) => result,
                () = stop => Ok(()),
            }
        });
    }
    runtime.block_on(watch(args, flags))
}

/// Until SIGTERM or SIGINT, and then until no session is running: one cut short in the
/// middle of a swap would leave a service down until the next start.
async fn watch(args: WatchArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let stop = stop_requested()?;
    let gate = Gate::default();
    tokio::select! {
        result = run_watcher(args, flags, gate.clone()) => result,
        () = stop => {
            gate.close().await;
            Ok(())
        }
    }
}

async fn run_watcher(args: WatchArgs, flags: &ClientFlags, gate: Gate) -> anyhow::Result<()> {
    let schedule = match &args.schedule {
        Some(pattern) => Schedule::cron(pattern)?,
        None => Schedule::every(args.interval)?,
    };
    policy_defaults(&args)
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.revive_stopped && !args.include_stopped {
        tracing::warn!("--revive-stopped acts only on stopped containers, which are watched with --include-stopped");
    }
    let api_on = fleet::api_on(&args);
    let token = api_token(&args, api_on)?;
    let notifiers = Arc::new(notifiers(&args)?);
    let agents = hosts::listen_for_agents(&args).await?;
    let watcher = Arc::new(hosts::connect(&args, flags, agents).await?);
    let quiet = args.warn_on_head_failure.eq_ignore_ascii_case("never");
    let run_session = session_runner(
        watcher.clone(),
        notifiers.clone(),
        gate.clone(),
        true,
        quiet,
    );
    if args.run_once {
        return run_once(&args, &run_session).await;
    }
    // Before the API listens, so that its first request does not find recovery running.
    let recovering = watcher.clone();
    guarded(gate.clone(), async move { recovering.recover().await }).await;
    let events = (args.http_api_events || !args.events_from.is_empty()).then(|| {
        let checks = event_checks(watcher.clone(), notifiers.clone(), gate.clone(), quiet);
        Dispatcher::spawn(checks)
    });
    if let Some(dispatcher) = &events {
        follow_events(&args, &watcher, dispatcher)?;
    }
    warn_unused_subscriptions(&watcher, &args.events_from).await;
    let queued = session_runner(
        watcher.clone(),
        notifiers.clone(),
        gate.clone(),
        true,
        quiet,
    );
    let per_host = |host: &str| {
        let host = Some(host.to_owned());
        host_session_runner(
            watcher.clone(),
            notifiers.clone(),
            gate.clone(),
            quiet,
            host,
        )
    };
    for local in watcher.locals() {
        fleet::run_when_windows_open(local.watcher.clone(), per_host(&local.name));
    }
    if api_on {
        let requested = session_runner(
            watcher.clone(),
            notifiers.clone(),
            gate.clone(),
            false,
            quiet,
        );
        let webhook = events.filter(|_| args.http_api_events);
        let runners = watcher.locals().iter().map(|l| per_host(&l.name)).collect();
        let fleet_api =
            hosts::fleet_router(&args, &token, &watcher, runners, queued, &notifiers, quiet)?;
        serve_api(
            &args,
            &token,
            requested,
            watcher.clone(),
            webhook,
            fleet_api,
        )
        .await?;
    }
    if args.http_api_update && !args.http_api_periodic_polls {
        tracing::info!("periodic checks are off: checks run on POST /v1/update");
        return std::future::pending().await;
    }
    if !args.no_startup_message {
        tracing::info!(schedule = %schedule_text(&args), "watching");
    }
    loop {
        tokio::time::sleep(schedule.next_delay()).await;
        run_session(None).await;
    }
}

/// The schedule as the user wrote it, not Rust's debug text (`Every(3600s)`).
fn schedule_text(args: &WatchArgs) -> String {
    match &args.schedule {
        Some(pattern) => format!("at {pattern:?}"),
        None => format!("every {}", humantime::format_duration(args.interval)),
    }
}

/// `--run-once`: one session, its report on stdout, its failures in the exit code.
async fn run_once(args: &WatchArgs, run_session: &RunSession) -> anyhow::Result<()> {
    let Some(report) = run_session(None).await else {
        return Ok(());
    };
    // With --porcelain, stdout carries its lines (sent as a notification) only.
    if args.porcelain.is_none() {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    // Scripts and `restart: on-failure` read the exit code, not the report.
    if report.failed() > 0 {
        anyhow::bail!(
            "{} of {} containers failed their check or update (see the report)",
            report.failed(),
            report.scanned()
        );
    }
    Ok(())
}

/// Subscribe to each `--events-from` registry's events, resuming from the last event id
/// kept where the rollbacks are, so a restarted watcher misses nothing.
fn follow_events(
    args: &WatchArgs,
    watcher: &HostSet,
    dispatcher: &Dispatcher,
) -> anyhow::Result<()> {
    for host in &args.events_from {
        let registry: Registry = host
            .parse()
            .with_context(|| format!("--events-from {host}: not a registry host"))?;
        tracing::info!(%registry, "following the registry's events");
        let dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
        let resume = Resume::new(&dir, args.scope.as_deref(), registry.as_str());
        tokio::spawn(sse::subscribe(
            watcher.registries(),
            registry,
            dispatcher.clone(),
            Some(resume),
        ));
    }
    Ok(())
}

/// A subscription that no watched container's registry matches updates nothing: most
/// often a host spelled differently from the containers' images (a name the registry is
/// not known by), said at start rather than discovered at the first silent push.
async fn warn_unused_subscriptions(watcher: &HostSet, events_from: &[String]) {
    if events_from.is_empty() {
        return;
    }
    let used = watcher.watched_registries().await;
    for host in events_from {
        let Ok(registry) = host.parse::<Registry>() else {
            continue;
        };
        if !used.iter().any(|r| same_registry(r, &registry)) {
            let names: Vec<String> = used.iter().map(|r| r.to_string()).collect();
            tracing::warn!(
                %registry,
                watched_registries = %names.join(", "),
                "no watched container uses an image from this registry, so its push events update nothing: check --events-from against the containers' image references"
            );
        }
    }
}

fn api_token(args: &WatchArgs, api_on: bool) -> anyhow::Result<String> {
    Ok(match (&args.http_api_token, api_on) {
        (Some(t), _) if !t.is_empty() => t.clone(),
        (_, true) => anyhow::bail!(
            "the HTTP API needs a token: set --http-api-token or WATCHTOWER_HTTP_API_TOKEN"
        ),
        _ => String::new(),
    })
}

/// SIGTERM (`docker stop`) or SIGINT, listened for from this call on and for the life
/// of the process, so that no signal kills it or goes unheard in between.
fn stop_requested() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received; stopping once no update is running");
    })
}

/// Open until shutdown. Work holds it shared; closing takes it exclusively, so it waits
/// for the work under way, and since tokio's lock is fair nothing starts after.
#[derive(Clone, Default)]
struct Gate(Arc<tokio::sync::RwLock<bool>>);

impl Gate {
    async fn enter(&self) -> Option<tokio::sync::RwLockReadGuard<'_, bool>> {
        let closed = self.0.read().await;
        (!*closed).then_some(closed)
    }

    async fn close(&self) {
        *self.0.write().await = true;
    }
}

/// `work` under the gate, in a task of its own: dropping the caller on a signal (or an
/// HTTP client hanging up) does not cancel it half done. `None` once the gate is closed.
async fn guarded<T: Send + 'static>(
    gate: Gate,
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let task = tokio::spawn(async move {
        let _open = gate.enter().await?;
        Some(work.await)
    });
    match task.await {
        Ok(done) => done,
        // Cancelled only when the runtime shuts down, which never resumes us.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Rollbacks on disk, so neither a restart nor the next `--run-once` (from cron, say)
/// tries the same image again.
fn rejections(args: &WatchArgs) -> Rejections {
    let dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let path = state_file(&dir, args.scope.as_deref());
    tracing::debug!(path = %path.display(), "rolled-back images are kept here");
    Rejections::open(path)
}

fn settings(args: &WatchArgs) -> Settings {
    Settings {
        selection: Selection {
            names: args
                .names
                .iter()
                .map(|n| n.trim_start_matches('/').to_owned())
                .collect(),
            label_enable: args.label_enable,
            disabled: args
                .disable_containers
                .iter()
                .flat_map(|d| split_names(d))
                .collect(),
            scope: args.scope.clone(),
            include_stopped: args.include_stopped,
            include_restarting: args.include_restarting,
        },
        monitor_only: args.monitor_only,
        no_pull: args.no_pull,
        cleanup: args.cleanup,
        rolling_restart: args.rolling_restart,
        no_restart: args.no_restart,
        timing: Timing {
            stop_timeout: args.stop_timeout,
            health_grace: args.rollback_grace,
            hooks: args.lifecycle_hooks,
            revive_stopped: args.revive_stopped,
            remove_volumes: args.remove_volumes,
        },
        policy: policy_defaults(args),
        label_take_precedence: args.label_take_precedence,
    }
}

fn policy_defaults(args: &WatchArgs) -> PolicyDefaults {
    PolicyDefaults {
        semver: args.tag_semver.clone(),
        include: args.tag_include.clone(),
        exclude: args.tag_exclude.clone(),
        min_age: args.min_age.clone(),
    }
}

/// The client flags; a bad --registry-ca stops the watcher at start when asked to check.
fn client_options(flags: &ClientFlags) -> anyhow::Result<wharf_client::ClientOptions> {
    if flags.registry_ca_validate {
        let path = flags.registry_ca.as_deref().context(
            "--registry-ca-validate needs --registry-ca FILE (or WATCHTOWER_REGISTRY_CA)",
        )?;
        tls::validate_ca(path)?;
    }
    flags.options()
}

/// docker's lookup (`DOCKER_CONFIG`, else `~/.docker`), except that in a container where
/// that holds no config.json but `/config.json` exists, that file is used: watchtower's
/// default, which its users mount (`-v ~/.docker/config.json:/config.json`).
fn credential_source() -> anyhow::Result<CredentialSource> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let root = PathBuf::from("/");
    match CredentialSource::from_env(env.clone()) {
        Ok(source) if env.contains_key("DOCKER_CONFIG") || source.config_path().exists() => {
            Ok(source)
        }
        Ok(source) if !root.join("config.json").exists() => Ok(source),
        _ => Ok(CredentialSource::new(env, root)),
    }
}

/// watchtower's WATCHTOWER_NOTIFICATION* environment, plus `--notification-url`s.
fn notifiers(args: &WatchArgs) -> anyhow::Result<Notifiers> {
    let mut env: HashMap<String, String> = std::env::vars().collect();
    let flags = [
        ("WATCHTOWER_NOTIFICATIONS", args.notifications.clone()),
        (
            "WATCHTOWER_NOTIFICATIONS_LEVEL",
            args.notifications_level.clone(),
        ),
        (
            "WATCHTOWER_NOTIFICATION_TEMPLATE",
            args.notification_template.clone(),
        ),
        (
            "WATCHTOWER_NOTIFICATION_REPORT",
            Some(args.notification_report.to_string()),
        ),
    ];
    for (name, value) in flags {
        if let Some(value) = value {
            env.insert(name.into(), value);
        }
    }
    let mut settings = NotifySettings::from_env(&env)?;
    for url in &args.notification_urls {
        settings.add_url(url)?;
    }
    if args.porcelain.is_some() {
        settings.porcelain_v1();
    }
    let notifiers = Notifiers::new(&settings)?;
    if !notifiers.is_empty() {
        let targets: Vec<String> = settings.targets.iter().map(|t| t.describe()).collect();
        tracing::info!(targets = %targets.join(", "), "notifications on");
    }
    Ok(notifiers)
}

/// A session, then its report logged and sent to the notifiers. A failed notification
/// is logged; it never holds up the watcher. While another session runs, this one waits
/// for it if `queue`, else it does not run. `None` when it did not run.
fn session_runner(
    watcher: Arc<HostSet>,
    notifiers: Arc<Notifiers>,
    gate: Gate,
    queue: bool,
    quiet_check_failures: bool,
) -> RunSession {
    runner(watcher, notifiers, gate, queue, quiet_check_failures, None)
}

/// As `session_runner`, queued, on one host only.
fn host_session_runner(
    watcher: Arc<HostSet>,
    notifiers: Arc<Notifiers>,
    gate: Gate,
    quiet_check_failures: bool,
    host: Option<String>,
) -> RunSession {
    runner(watcher, notifiers, gate, true, quiet_check_failures, host)
}

fn runner(
    watcher: Arc<HostSet>,
    notifiers: Arc<Notifiers>,
    gate: Gate,
    queue: bool,
    quiet_check_failures: bool,
    host: Option<String>,
) -> RunSession {
    Arc::new(move |images: Option<Vec<String>>| {
        let host = host.clone();
        let watcher = watcher.clone();
        let notifiers = notifiers.clone();
        let work = async move {
            let report = watcher
                .session(images.as_deref(), queue, host.as_deref())
                .await?;
            log_report(&report, quiet_check_failures);
            for error in notifiers.send(&report).await {
                tracing::warn!("{error}");
            }
            Some(report)
        };
        let gate = gate.clone();
        Box::pin(async move { guarded(gate, work).await.flatten() })
    })
}

/// What a push event sets off: a check of the containers using the pushed images, now
/// (after a session under way), unless no watched container uses them.
fn event_checks(
    watcher: Arc<HostSet>,
    notifiers: Arc<Notifiers>,
    gate: Gate,
    quiet: bool,
) -> RunChecks {
    Arc::new(move |pushed: Vec<Pushed>| {
        let (watcher, notifiers, gate) = (watcher.clone(), notifiers.clone(), gate.clone());
        Box::pin(async move {
            let work = async move {
                // Every host checks the containers using the pushed images (none: no check).
                let report = watcher.pushed(pushed).await?;
                log_report(&report, quiet);
                for error in notifiers.send(&report).await {
                    tracing::warn!("{error}");
                }
                Some(())
            };
            guarded(gate, work).await;
        })
    })
}

/// Each container's line, with a message that says what happened (the detail, when
/// the session left one). `quiet_check_failures`: --warn-on-head-failure=never.
fn log_report(report: &SessionReport, quiet_check_failures: bool) {
    for c in &report.containers {
        let detail = c.detail.as_deref().unwrap_or("");
        match c.outcome {
            Outcome::Failed if quiet_check_failures && c.new_digest.is_none() => {
                tracing::debug!(container = %c.label(), image = %c.image, outcome = ?c.outcome, "{detail}")
            }
            Outcome::Failed | Outcome::RolledBack => {
                tracing::warn!(container = %c.label(), image = %c.image, outcome = ?c.outcome, "{detail}")
            }
            Outcome::Updated | Outcome::Stale => {
                let message = match (detail, c.outcome) {
                    ("", Outcome::Updated) => "updated to the registry's newer image",
                    ("", _) => "the registry has a newer image",
                    (d, _) => d,
                };
                tracing::info!(
                    container = %c.label(),
                    image = %c.image,
                    old = c.old_digest.as_deref().unwrap_or("?"),
                    new = c.new_digest.as_deref().unwrap_or("?"),
                    outcome = ?c.outcome,
                    "{message}"
                )
            }
            Outcome::Fresh | Outcome::Skipped => {
                tracing::debug!(container = %c.label(), outcome = ?c.outcome, "{detail}")
            }
        }
    }
    tracing::info!(
        scanned = report.scanned(),
        updated = report.count(Outcome::Updated),
        failed = report.count(Outcome::Failed),
        rolled_back = report.count(Outcome::RolledBack),
        "session done"
    );
}

async fn serve_api(
    args: &WatchArgs,
    token: &str,
    run: RunSession,
    watcher: Arc<HostSet>,
    events: Option<Dispatcher>,
    fleet_api: axum::Router,
) -> anyhow::Result<()> {
    let totals: ReadTotals = Arc::new(move || watcher.totals());
    let router = api::router(token, run, totals, events).merge(fleet_api);
    let listener = tokio::net::TcpListener::bind(&args.http_api_addr)
        .await
        .with_context(|| format!("cannot listen on {} for the HTTP API", args.http_api_addr))?;
    tracing::info!(addr = %args.http_api_addr, "HTTP API listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the HTTP API stopped");
        }
    });
    Ok(())
}
