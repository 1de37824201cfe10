//! `wharf watch rollback` and `wharf watch history`, and the fleet wiring of the watcher:
//! history, held updates, windows and the fleet API endpoints.
//!
//! The two commands talk to a running watcher's HTTP API when they have its token
//! (`--http-api-token` / `WATCHTOWER_HTTP_API_TOKEN`): the watcher then does the rollback
//! between its own sessions, never at the same time as one. With no token, or when
//! nothing listens at the API's address, they act on the engine directly, with the
//! same state directory and flags as the watcher (`wharf watch --state-dir D rollback
//! NAME`); running a watcher without its API beside them is then the user's choice to
//! avoid, as two watchers of one engine would be.

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use wharf_watch::fleet::Fleet;
use wharf_watch::history::{history_file, History};
use wharf_watch::hold::{approvals_file, Clock, Holds};
use wharf_watch::session::{HistoryView, Watcher};
use wharf_watch::window::parse_windows;

use super::WatchArgs;
use crate::client_args::ClientFlags;
use wharf_watch::api::RunSession;

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Recreate a container on an earlier image (the previous one unless --to names
    /// one), through the update's transactional path: if the earlier image does not stay
    /// up for the grace period, the current container runs again.
    Rollback(RollbackArgs),
    /// List a container's updates and rollbacks, newest first, with why and when.
    History(HistoryArgs),
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The container.
    name: String,
    /// The image to go back to: a registry digest or image id from its history, or any
    /// digest of its repository.
    #[arg(long, value_name = "DIGEST")]
    to: Option<String>,
    #[command(flatten)]
    reach: Reach,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The container.
    name: String,
    /// Print the history as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    reach: Reach,
}

/// Which watcher or engine a command acts on.
#[derive(Args, Debug)]
struct Reach {
    /// The Docker host the container is on, when the watcher manages several.
    #[arg(long = "host", value_name = "HOST")]
    on_host: Option<String>,
    /// The running watcher's API (default: http://127.0.0.1:<port of --http-api-addr>).
    #[arg(long, env = "WHARF_WATCH_URL", value_name = "URL")]
    url: Option<String>,
}

/// What the watcher keeps beyond a session, per its flags.
pub(super) fn fleet(args: &WatchArgs, clock: Arc<Clock>) -> anyhow::Result<Fleet> {
    let dir = args
        .state_dir
        .clone()
        .unwrap_or_else(wharf_watch::rejected::default_state_dir);
    fleet_on(args, clock, &dir, engine_host(args))
}

/// As `fleet`, for the engine at `host` (its `DOCKER_HOST`), its state kept in `dir`:
/// each host of several keeps its own.
pub(super) fn fleet_on(
    args: &WatchArgs,
    clock: Arc<Clock>,
    dir: &std::path::Path,
    host: String,
) -> anyhow::Result<Fleet> {
    let dir = dir.to_path_buf();
    let scope = args.scope.as_deref();
    let mut windows = Vec::new();
    for text in &args.windows {
        windows.extend(parse_windows(text).map_err(|e| anyhow::anyhow!("--window: {e}"))?);
    }
    let host = Some(host);
    let compose = args
        .compose_bin
        .clone()
        .or_else(wharf_watch::compose::find_binary);
    Ok(Fleet {
        history: History::open(history_file(&dir, scope), host.clone()),
        holds: Holds::open(
            Some(approvals_file(&dir, scope)),
            host.clone(),
            public_url(args),
        ),
        clock,
        windows,
        keep_previous: args.keep_previous,
        compose,
        docker_host: host,
    })
}

/// The engine's address as given (`--host`, `DOCKER_HOST`), else docker's default.
fn engine_host(args: &WatchArgs) -> String {
    args.host
        .first()
        .cloned()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| wharf_watch::engine::DEFAULT_HOST.to_owned())
}

/// The link an "approval waiting" notification carries.
fn public_url(args: &WatchArgs) -> Option<String> {
    if let Some(url) = &args.public_url {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let port = args.http_api_addr.rsplit_once(':').map(|(_, p)| p)?;
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    Some(format!("http://{host}:{port}"))
}

/// Check held updates as their windows open (by the watcher's clock, which a test moves).
pub(super) fn run_when_windows_open(watcher: Arc<Watcher>, session: RunSession) {
    tokio::spawn(async move {
        loop {
            let clock = watcher.fleet().clock.clone();
            let due = watcher.fleet().holds.due(&clock).await;
            tracing::info!(images = %due.join(", "), "a maintenance window opened: checking the held updates");
            session(Some(due)).await;
        }
    });
}

/// `wharf watch rollback|history`.
pub(super) async fn run_command(
    command: FleetCommand,
    args: WatchArgs,
    flags: &ClientFlags,
) -> anyhow::Result<()> {
    let reach = match &command {
        FleetCommand::Rollback(r) => &r.reach,
        FleetCommand::History(h) => &h.reach,
    };
    let token = args.http_api_token.clone().filter(|t| !t.is_empty());
    if let Some(token) = token {
        let url = reach.url.clone().unwrap_or_else(|| local_api(&args));
        match through_api(&command, &url, &token).await {
            Ok(text) => {
                println!("{text}");
                return Ok(());
            }
            Err(ApiError::Unreachable(e)) => {
                eprintln!("no watcher answers at {url} ({e}); acting on the engine directly");
            }
            Err(ApiError::Refused(e)) => anyhow::bail!(e),
        }
    }
    directly(command, args, flags).await
}

fn local_api(args: &WatchArgs) -> String {
    let port = args
        .http_api_addr
        .rsplit_once(':')
        .map(|(_, p)| p)
        .unwrap_or("8080");
    format!("http://127.0.0.1:{port}")
}

enum ApiError {
    Unreachable(String),
    Refused(String),
}

async fn through_api(command: &FleetCommand, url: &str, token: &str) -> Result<String, ApiError> {
    let client = reqwest::Client::new();
    let request = match command {
        FleetCommand::Rollback(r) => client
            .post(format!("{url}/v1/rollback"))
            .json(&serde_json::json!({"name": r.name, "digest": r.to, "host": r.reach.on_host})),
        FleetCommand::History(h) => {
            let mut query = vec![("name", h.name.clone())];
            query.extend(h.reach.on_host.clone().map(|host| ("host", host)));
            client.get(format!("{url}/v1/history")).query(&query)
        }
    };
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| ApiError::Unreachable(e.to_string()))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| {
        ApiError::Refused(format!("the watcher answered {status} with no JSON: {e}"))
    })?;
    if !status.is_success() {
        let why = body["error"].as_str().unwrap_or("no reason given");
        return Err(ApiError::Refused(format!(
            "the watcher answered {status}: {why}"
        )));
    }
    Ok(match command {
        FleetCommand::Rollback(r) => rolled_back_line(&r.name, &body),
        FleetCommand::History(h) if h.json => {
            serde_json::to_string_pretty(&body).unwrap_or_default()
        }
        FleetCommand::History(_) => {
            let view: HistoryView = serde_json::from_value(body).map_err(|e| {
                ApiError::Refused(format!("unexpected history from the watcher: {e}"))
            })?;
            history_table(&view)
        }
    })
}

/// Without a watcher: the engine and state directory the watcher would use.
async fn directly(
    command: FleetCommand,
    args: WatchArgs,
    flags: &ClientFlags,
) -> anyhow::Result<()> {
    let mut args = args;
    let on_host = match &command {
        FleetCommand::Rollback(r) => r.reach.on_host.clone(),
        FleetCommand::History(h) => h.reach.on_host.clone(),
    };
    if let Some(h) = on_host {
        args.host = vec![h];
    }
    match command {
        FleetCommand::History(h) => {
            // The history is read from the state directory alone: no engine needed.
            let clock = Arc::new(Clock::system());
            let fleet = fleet(&args, clock)?;
            let record = fleet.history.get(&h.name);
            let view = HistoryView::of(&h.name, fleet.history.host(), record);
            if h.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!("{}", history_table(&view));
            }
            Ok(())
        }
        FleetCommand::Rollback(r) => {
            let set = super::hosts::connect(&args, flags, None).await?;
            let watcher = set.locals()[0].watcher.clone();
            let change = watcher
                .rollback(
                    &r.name,
                    r.to.as_deref(),
                    "requested with wharf watch rollback",
                )
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let body = serde_json::to_value(&change).context("the change as JSON")?;
            println!("{}", rolled_back_line(&r.name, &body));
            Ok(())
        }
    }
}

fn rolled_back_line(name: &str, change: &serde_json::Value) -> String {
    let image = |side: &str| {
        change[side]["digest"]
            .as_str()
            .or(change[side]["id"].as_str())
            .unwrap_or("?")
            .to_owned()
    };
    format!("{name} rolled back: {} -> {}", image("from"), image("to"))
}

/// One line per change, newest first: when, what, from, to, why.
fn history_table(view: &HistoryView) -> String {
    let mut out = format!(
        "{} (keeps {} earlier image{}{})\n",
        view.container,
        view.keep,
        if view.keep == 1 { "" } else { "s" },
        view.host
            .as_deref()
            .map(|h| format!(", on {h}"))
            .unwrap_or_default()
    );
    if view.changes.is_empty() {
        out.push_str("no updates recorded yet\n");
    }
    for c in &view.changes {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(c.at);
        let short = |i: &wharf_watch::history::ImageAt| {
            let text = i.digest.as_deref().unwrap_or(&i.id);
            text.chars().take(19).collect::<String>()
        };
        let kind = serde_json::to_value(c.kind).unwrap_or_default();
        out.push_str(&format!(
            "{}  {:<13} {} -> {}  {}{}\n",
            humantime::format_rfc3339_seconds(when),
            kind.as_str().unwrap_or("?"),
            short(&c.from),
            short(&c.to),
            c.reference,
            c.reason
                .as_deref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        ));
    }
    out.trim_end().to_owned()
}

/// Whether the HTTP API is served: any of its `--http-api-*` switches, or the dashboard.
pub(super) fn api_on(args: &WatchArgs) -> bool {
    args.http_api_update
        || args.http_api_metrics
        || args.http_api_events
        || args.http_api_fleet
        || args.hosts.dashboard
}
