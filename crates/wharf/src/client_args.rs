//! Flags every registry-client command shares (TLS trust, plain http), and the glue that
//! turns them into a `RegistryClient`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use wharf_client::client::{insecure, tls};
use wharf_client::{ClientOptions, CredentialSource, Registry, RegistryClient};

#[derive(Args, Clone, Debug)]
pub struct ClientFlags {
    /// A PEM bundle of CA certificates to trust for the registry, on top of the system's
    /// roots and /etc/docker/certs.d/<host:port>/*.crt.
    #[arg(long, global = true, value_name = "FILE", env = "WHARF_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
    /// Check the --registry-ca file (readable, holds a PEM certificate) before anything
    /// else, and stop at once if it does not.
    #[arg(long, global = true)]
    pub registry_ca_validate: bool,
    /// Accept any certificate and fall back to plain http, as docker does for an
    /// insecure registry. Loopback registries fall back to plain http without it.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// A registry (host:port, or a CIDR) to treat as --insecure; repeatable. Added to
    /// insecure-registries in daemon.json.
    #[arg(
        long = "insecure-registry",
        global = true,
        value_name = "HOST",
        env = "WHARF_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Where docker's per-registry CA directories live.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "WHARF_DOCKER_CERTS_DIR",
        default_value = tls::DOCKER_CERTS_DIR,
        hide = true
    )]
    pub docker_certs_dir: PathBuf,
    /// The daemon.json whose insecure-registries apply too.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "WHARF_DAEMON_JSON",
        default_value = insecure::DAEMON_JSON,
        hide = true
    )]
    pub daemon_json: PathBuf,
}

impl ClientFlags {
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
