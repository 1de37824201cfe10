//! Flags every registry-client command shares (TLS trust, plain http), and the glue that
//! turns them into a `RegistryClient`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgAction, Args};
use wharf_client::client::{insecure, tls};
use wharf_client::{ClientOptions, CredentialSource, Registry, RegistryClient};

#[derive(Args, Clone, Debug)]
pub struct ClientFlags {
    /// A PEM bundle of CA certificates to trust for the registry, on top of the system's
    /// roots and /etc/docker/certs.d/<host:port>/*.crt.
    #[arg(long, value_name = "FILE", env = "WHARF_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
    /// Check the --registry-ca file (readable, holds a PEM certificate) before anything
    /// else, and stop at once if it does not.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub registry_ca_validate: bool,
    /// Accept any certificate and fall back to plain http, as docker does for an
    /// insecure registry. Loopback registries fall back to plain http without it.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub insecure: bool,
    /// A registry (host:port, or a CIDR) to treat as --insecure; repeatable. Added to
    /// insecure-registries in daemon.json.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "WHARF_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Where docker's per-registry CA directories live.
    #[arg(
        long,
        value_name = "DIR",
        env = "WHARF_DOCKER_CERTS_DIR",
        default_value = tls::DOCKER_CERTS_DIR,
        hide = true
    )]
    pub docker_certs_dir: PathBuf,
    /// The daemon.json whose insecure-registries apply too.
    #[arg(
        long,
        value_name = "FILE",
        env = "WHARF_DAEMON_JSON",
        default_value = insecure::DAEMON_JSON,
        hide = true
    )]
    pub daemon_json: PathBuf,
}

/// A boolean flag's value as watchtower (Go's ParseBool) and docker users write it:
/// `--cleanup`, `--cleanup=true`, `--cleanup=0`, `WATCHTOWER_CLEANUP=1`; an empty
/// variable is false.
pub fn flag_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "f" | "false" | "n" | "no" | "off" => Ok(false),
        "1" | "t" | "true" | "y" | "yes" | "on" => Ok(true),
        _ => Err("expected true or false (or 1/0, yes/no, on/off)".into()),
    }
}

/// How blobs go up (`wharf push`, `wharf copy`).
#[derive(Args, Clone, Debug)]
pub struct ChunkArgs {
    /// Blobs larger than this go up in PATCH chunks of this size, each resumed from where
    /// the registry got to if a connection drops; smaller ones in one PUT. Bytes, or with
    /// a unit: 64KiB, 8MiB, 1GiB (binary) or 500KB, 10MB (decimal).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = chunk_size)]
    pub chunk_size: u64,
}

fn chunk_size(text: &str) -> Result<u64, String> {
    match wharf_oci::units::parse_bytes(text)? {
        0 => Err("a chunk must hold at least one byte".into()),
        n => Ok(n),
    }
}

/// Flags every client subcommand takes, and takes before the subcommand too (`wharf
/// --insecure tags ...`), so each subcommand's help lists only what applies to it.
#[derive(Args, Clone, Debug)]
pub struct WithClient<T: Args> {
    #[command(flatten)]
    pub args: T,
    #[command(flatten)]
    pub client: ClientFlags,
}

impl ClientFlags {
    /// These flags (given before the subcommand) with the subcommand's own on top.
    pub fn merge(&self, sub: &ClientFlags) -> ClientFlags {
        let mut insecure_registries = self.insecure_registries.clone();
        for r in &sub.insecure_registries {
            if !insecure_registries.contains(r) {
                insecure_registries.push(r.clone());
            }
        }
        let pick = |top: &PathBuf, sub: &PathBuf, default: &str| {
            if sub.as_os_str() != default {
                sub.clone()
            } else {
                top.clone()
            }
        };
        ClientFlags {
            registry_ca: sub.registry_ca.clone().or_else(|| self.registry_ca.clone()),
            registry_ca_validate: self.registry_ca_validate || sub.registry_ca_validate,
            insecure: self.insecure || sub.insecure,
            insecure_registries,
            docker_certs_dir: pick(
                &self.docker_certs_dir,
                &sub.docker_certs_dir,
                tls::DOCKER_CERTS_DIR,
            ),
            daemon_json: pick(&self.daemon_json, &sub.daemon_json, insecure::DAEMON_JSON),
        }
    }

    pub fn options(&self) -> anyhow::Result<ClientOptions> {
        if self.registry_ca_validate {
            let path = self.registry_ca.as_deref().context(
                "--registry-ca-validate needs --registry-ca FILE (or WHARF_REGISTRY_CA)",
            )?;
            tls::validate_ca(path)?;
        }
        let mut insecure_registries = self.insecure_registries.clone();
        insecure_registries.extend(
            insecure::daemon_json_insecure_registries(&self.daemon_json)
                .map_err(anyhow::Error::msg)?,
        );
        Ok(ClientOptions {
            ca_bundle: self.registry_ca.clone(),
            certs_dir: self.docker_certs_dir.clone(),
            insecure: self.insecure,
            insecure_registries,
            plain_http: Vec::new(),
            user_agent: None,
        })
    }

    /// A client for a registry the user named as an address: `http://host:port` means
    /// plain http, as a URL says.
    pub fn client_for_address(&self, address: &str) -> anyhow::Result<RegistryClient> {
        let registry = Registry::from_server_address(address)?;
        let mut options = self.options()?;
        if address.trim().starts_with("http://") {
            options.plain_http.push(registry.as_str().to_owned());
        }
        let source = CredentialSource::from_process_env()?;
        Ok(RegistryClient::new(registry, &options, source)?)
    }

    /// A client for `registry` with the credentials docker would use for it.
    pub fn client(&self, registry: &Registry) -> anyhow::Result<RegistryClient> {
        let options = self.options()?;
        let source = CredentialSource::from_process_env()?;
        Ok(RegistryClient::new(registry.clone(), &options, source)?)
    }
}

/// The client commands are one request chain each: a current-thread runtime is enough.
pub fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}
