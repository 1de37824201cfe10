//! Flags every registry-client command shares (TLS trust, plain http), and the glue that
//! turns them into a `RegistryClient`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use wharf_client::client::tls;
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
    /// insecure registry.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// A registry (host:port) to treat as --insecure; repeatable.
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
}

impl ClientFlags {
    pub fn options(&self) -> anyhow::Result<ClientOptions> {
        if self.registry_ca_validate {
            let path = self.registry_ca.as_deref().context(
                "--registry-ca-validate needs --registry-ca FILE (or WHARF_REGISTRY_CA)",
            )?;
            tls::validate_ca(path)?;
        }
        Ok(ClientOptions {
            ca_bundle: self.registry_ca.clone(),
            certs_dir: self.docker_certs_dir.clone(),
            insecure: self.insecure,
            insecure_registries: self.insecure_registries.clone(),
        })
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
