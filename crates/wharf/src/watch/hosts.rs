//! The fleet's wiring: which engines (`--host`…, `--hosts-file`), one watcher each over
//! shared registry clients; the agents' listener; and `wharf watch agent`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use wharf_watch::api::RunSession;
use wharf_watch::check::Registries;
use wharf_watch::engine::DEFAULT_HOST;
use wharf_watch::fleet_api::Hosts;
use wharf_watch::hold::Clock;
use wharf_watch::hosts::agent::{self, AgentOptions};
use wharf_watch::hosts::controller::Agents;
use wharf_watch::hosts::engines::{self as hosts, HostSpec};
use wharf_watch::hosts::{HostSet, LocalHost};
use wharf_watch::rejected::{default_state_dir, state_file, Rejections};
use wharf_watch::session::Watcher;

use super::WatchArgs;
use crate::client_args::ClientFlags;

/// `wharf watch agent …`: the word `agent` first, with `--controller`.
pub(super) fn is_agent(args: &WatchArgs) -> bool {
    args.names.first().map(String::as_str) == Some("agent") && args.hosts.controller.is_some()
}

/// The engines to manage, as given; the default socket when none is.
fn specs(args: &WatchArgs) -> anyhow::Result<Vec<HostSpec>> {
    let f = &args.hosts;
    let tls = hosts::tls_files(
        args.tls_verify,
        args.cert_path.clone(),
        f.tlscacert.clone(),
        f.tlscert.clone(),
        f.tlskey.clone(),
    );
    let mut specs: Vec<HostSpec> = args
        .host
        .iter()
        .filter(|h| !h.is_empty())
        .map(|h| hosts::from_flag(h, tls.as_ref()))
        .collect();
    if let Some(file) = &f.hosts_file {
        specs.extend(hosts::read_file(file).map_err(anyhow::Error::msg)?);
    }
    if specs.is_empty() {
        specs.push(hosts::from_flag(DEFAULT_HOST, tls.as_ref()));
    }
    hosts::check_names(&specs).map_err(anyhow::Error::msg)?;
    Ok(specs)
}

/// One watcher per engine, sharing the registries' clients; `agents` join the fleet.
pub(super) async fn connect(
    args: &WatchArgs,
    flags: &ClientFlags,
    agents: Option<Arc<Agents>>,
) -> anyhow::Result<HostSet> {
    let specs = specs(args)?;
    let engines = hosts::connect_all(&specs, args.api_version.as_deref()).await?;
    let mut options = super::client_options(flags)?;
    // The engines pull what the watcher checks: each registry is reached as they reach it.
    for (spec, engine) in specs.iter().zip(&engines) {
        match engine.insecure_registries().await {
            Ok(list) => {
                tracing::debug!(host = %spec.name, insecure = ?list, "the engine's insecure registries");
                options.insecure_registries.extend(list);
            }
            Err(e) => {
                tracing::warn!(host = %spec.name, error = %e, "cannot read the engine's insecure registries")
            }
        }
    }
    let registries = Arc::new(Registries::new(
        options,
        super::credential_source()?,
        args.registry_timeout,
    ));
    let several = specs.len() > 1;
    // One clock for every host: a test that moves it moves them all.
    let clock = Arc::new(Clock::from_env(args.test_clock).map_err(anyhow::Error::msg)?);
    let mut locals = Vec::new();
    for (spec, engine) in specs.into_iter().zip(engines) {
        // Container names repeat across hosts: each host keeps its own rollbacks,
        // history and held updates.
        let dir = state_dir(args, several.then_some(spec.name.as_str()));
        let rejections = match several {
            true => Rejections::open(state_file(&dir, args.scope.as_deref())),
            false => super::rejections(args),
        };
        let kept = super::fleet::fleet_on(args, clock.clone(), &dir, spec.url.clone())?;
        let watcher = Watcher::shared(
            engine,
            registries.clone(),
            super::settings(args),
            rejections,
        )
        .with_fleet(kept)
        // Per host: a label's key, loaded on first use, is kept by that host's watcher.
        .verify_with(wharf_watch::verify::Verification::load(
            args.verify.as_deref(),
            args.trust.as_deref(),
        )?);
        locals.push(LocalHost {
            name: spec.name,
            url: spec.url,
            watcher: Arc::new(watcher),
        });
    }
    Ok(HostSet::new(locals, agents, registries))
}

/// The state directory; of several hosts, each has its own below it.
fn state_dir(args: &WatchArgs, host: Option<&str>) -> PathBuf {
    let dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let Some(host) = host else { return dir };
    let slug: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join("hosts").join(slug)
}

/// The fleet API's view of the hosts: the named local host's watcher, and its checks.
/// Agents are reached through the dashboard and the agents' protocol instead.
pub(super) struct ManyHosts {
    set: Arc<HostSet>,
    /// Per local host, in `set.locals()` order: a queued session on that host alone.
    runners: Vec<RunSession>,
    /// A queued session on every host.
    all: RunSession,
}

impl ManyHosts {
    pub(super) fn new(set: Arc<HostSet>, runners: Vec<RunSession>, all: RunSession) -> ManyHosts {
        ManyHosts { set, runners, all }
    }

    fn index(&self, host: Option<&str>) -> Result<usize, String> {
        let locals = self.set.locals();
        match host {
            None if locals.len() == 1 => Ok(0),
            None => Err(format!(
                "this watcher manages several hosts ({}): name one with \"host\"",
                names(locals)
            )),
            Some(h) => locals
                .iter()
                .position(|l| l.name == h || l.url == h || (locals.len() == 1 && h == "local"))
                .ok_or_else(|| {
                    format!("no Docker host {h}: this watcher manages {}", names(locals))
                }),
        }
    }
}

fn names(locals: &[LocalHost]) -> String {
    locals
        .iter()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Hosts for ManyHosts {
    fn watcher(&self, host: Option<&str>) -> Result<Arc<Watcher>, String> {
        let i = self.index(host)?;
        Ok(self.set.locals()[i].watcher.clone())
    }

    fn check(&self, host: Option<&str>, images: Vec<String>) {
        let session = match self.index(host) {
            Ok(i) => self.runners[i].clone(),
            Err(_) => self.all.clone(),
        };
        tokio::spawn(async move {
            session(Some(images)).await;
        });
    }
}

/// `--agents-listen`: the agents' TLS listener, when asked for.
pub(super) async fn listen_for_agents(args: &WatchArgs) -> anyhow::Result<Option<Arc<Agents>>> {
    let f = &args.hosts;
    let Some(addr) = &f.agents_listen else {
        return Ok(None);
    };
    let need = |v: &Option<std::path::PathBuf>, flag: &str| {
        v.clone()
            .with_context(|| format!("--agents-listen needs {flag}"))
    };
    let tokens = need(
        &f.agents_tokens,
        "--agents-tokens FILE (NAME sha256:HEX a line)",
    )?;
    let cert = need(
        &f.agents_tls_cert,
        "--agents-tls-cert FILE (agents connect over HTTPS only)",
    )?;
    let key = need(&f.agents_tls_key, "--agents-tls-key FILE")?;
    let agents = Arc::new(Agents::from_file(&tokens).map_err(anyhow::Error::msg)?);
    agents
        .listen(addr, &cert, &key)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Some(agents))
}

/// `wharf watch agent --controller URL --token-file F`: this engine, driven from afar.
pub(super) async fn run_agent(args: &WatchArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let f = &args.hosts;
    let controller = f
        .controller
        .clone()
        .context("agent mode needs --controller URL")?;
    let file = f
        .token_file
        .as_deref()
        .context("wharf watch agent needs --token-file FILE (the agent's token)")?;
    let token = read_token(file)?;
    let fleet = connect(args, flags, None).await?;
    let [host] = fleet.locals() else {
        anyhow::bail!(
            "an agent drives one engine: give one --host (or none, for the default socket)"
        );
    };
    host.watcher.recover().await;
    let options = AgentOptions {
        controller,
        token,
        ca: f.controller_ca.clone(),
        engine: host.url.clone(),
    };
    agent::run(host.watcher.clone(), options)
        .await
        .map_err(anyhow::Error::msg)
}

fn read_token(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --token-file {}", file.display()))?;
    let token = text.trim().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "--token-file {} is empty",
        file.display()
    );
    Ok(token)
}

/// `--dashboard`: its routes, whose sessions are logged and notified as any other.
pub(super) fn dashboard(
    args: &WatchArgs,
    token: &str,
    set: &Arc<HostSet>,
    notifiers: Arc<wharf_watch::notify::Notifiers>,
    quiet: bool,
) -> anyhow::Result<axum::Router> {
    let notify: wharf_watch::dashboard::Notify = Arc::new(move |report| {
        let notifiers = notifiers.clone();
        Box::pin(async move {
            super::log_report(&report, quiet);
            for error in notifiers.send(&report).await {
                tracing::warn!("{error}");
            }
        })
    });
    let users = args.hosts.dashboard_users.as_deref();
    wharf_watch::dashboard::router(token, users, set.clone(), notify).map_err(anyhow::Error::msg)
}

/// The fleet endpoints (history, rollback, approvals) over every host, and the dashboard
/// when asked for.
pub(super) fn fleet_router(
    args: &WatchArgs,
    token: &str,
    watcher: &Arc<HostSet>,
    runners: Vec<RunSession>,
    queued: RunSession,
    notifiers: &Arc<wharf_watch::notify::Notifiers>,
    quiet: bool,
) -> anyhow::Result<axum::Router> {
    let many = Arc::new(ManyHosts::new(watcher.clone(), runners, queued));
    let clock = watcher.locals()[0].watcher.fleet().clock.clone();
    let fleet_api = wharf_watch::fleet_api::router(token, many, clock);
    Ok(match args.hosts.dashboard {
        true => fleet_api.merge(dashboard(args, token, watcher, notifiers.clone(), quiet)?),
        false => fleet_api,
    })
}
