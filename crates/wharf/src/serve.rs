//! `wharf serve [CONFIG]`: registry:2's `config.yml`, then its `REGISTRY_*` environment,
//! then these flags, into one registry config.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use wharf_registry::config::{self, Config};

#[derive(Args)]
pub struct ServeArgs {
    /// A registry:2 config.yml (as in `registry serve /etc/docker/registry/config.yml`).
    #[arg(value_name = "CONFIG", env = "REGISTRY_CONFIGURATION_PATH")]
    config: Option<PathBuf>,
    /// Address to listen on (http.addr); registry:2's `:5000` form is accepted. Default 0.0.0.0:5000.
    #[arg(long)]
    addr: Option<String>,
    /// Storage root (storage.filesystem.rootdirectory, which holds docker/registry/v2/).
    /// Default: /var/lib/registry when writable, else ~/.local/share/wharf.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Allow deleting manifests, tags and blobs (storage.delete.enabled). A value needs
    /// `=` (`--delete-enabled=false`), so that `--delete-enabled config.yml` reads the
    /// path as the config.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::client_args::flag_bool)]
    delete_enabled: Option<bool>,
}

fn load(args: &ServeArgs) -> anyhow::Result<(Config, Vec<String>)> {
    let (mut config, warnings) = config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(addr) = &args.addr {
        config.addr = config::parse_addr(addr)
            .map_err(anyhow::Error::msg)
            .context("--addr")?;
    }
    if let Some(root) = &args.root {
        *config.storage.local_root_mut() = root.clone();
    }
    if let Some(d) = args.delete_enabled {
        config.delete_enabled = d;
    }
    Ok((config, warnings))
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (config, warnings) = load(&args)?;
    crate::init_logging(config.log.level.as_deref(), config.log.json);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(wharf_registry::serve(config, shutdown_signal()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("signal received");
}
