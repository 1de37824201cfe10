//! `wharf serve`: flags and registry:2's environment variables into a registry config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use wharf_registry::Config;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; registry:2's `:5000` form is accepted.
    #[arg(long, env = "REGISTRY_HTTP_ADDR", default_value = "0.0.0.0:5000", value_parser = parse_addr)]
    addr: SocketAddr,
    /// Storage root (registry:2's rootdirectory, which holds docker/registry/v2/).
    /// Default: /var/lib/registry when writable, else ~/.local/share/wharf.
    #[arg(long, env = "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")]
    root: Option<PathBuf>,
    /// Allow deleting manifests, tags and blobs (registry:2's storage.delete.enabled).
    #[arg(long, env = "REGISTRY_STORAGE_DELETE_ENABLED", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    delete_enabled: bool,
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .map_err(|e| format!("{s:?} is not host:port ({e})"))
}

fn writable_dir(dir: &Path) -> bool {
    std::fs::create_dir_all(dir).is_ok() && tempfile_probe(dir)
}

fn tempfile_probe(dir: &Path) -> bool {
    let probe = dir.join(format!(".wharf-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

fn default_root() -> anyhow::Result<PathBuf> {
    let system = PathBuf::from("/var/lib/registry");
    if writable_dir(&system) {
        return Ok(system);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .context("no writable /var/lib/registry and no HOME: pass --root DIR")?;
    Ok(data.join("wharf"))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let root = match args.root {
        Some(r) => r,
        None => default_root()?,
    };
    let mut config = Config::new(root);
    config.addr = args.addr;
    config.delete_enabled = args.delete_enabled;
    wharf_registry::serve(config, shutdown_signal()).await
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
