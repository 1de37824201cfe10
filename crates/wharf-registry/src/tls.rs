//! TLS with rustls. The certificate and key are re-read when their files change, so a
//! renewed certificate takes effect without a restart (connections already open keep
//! the one they started with).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use wharf_oci::sync::{read, write};

use crate::config::TlsConfig;

const RELOAD_CHECK: Duration = Duration::from_secs(2);

fn load(config: &TlsConfig) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.certificate)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            format!(
                "cannot read TLS certificate {}: {e}",
                config.certificate.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate",
            config.certificate.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|e| format!("cannot read TLS key {}: {e}", config.key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("TLS key {} is not usable: {e}", config.key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "TLS key {} does not belong to certificate {}: {e}",
            config.key.display(),
            config.certificate.display()
        )
    })?;
    Ok(Arc::new(certified))
}

fn stamp(paths: &[&Path]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(read(&self.current).clone())
    }
}

/// A TLS acceptor for `config`, and a background task that swaps in changed certificates.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    let resolver = Arc::new(Reloading {
        current: RwLock::new(load(config)?),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (cert, key): (PathBuf, PathBuf) = (config.certificate.clone(), config.key.clone());
    let config = config.clone();
    tokio::spawn(async move {
        let mut seen = stamp(&[&cert, &key]);
        loop {
            tokio::time::sleep(RELOAD_CHECK).await;
            let now = stamp(&[&cert, &key]);
            if now == seen {
                continue;
            }
            match load(&config) {
                Ok(k) => {
                    *write(&resolver.current) = k;
                    seen = now;
                    tracing::info!(certificate = %cert.display(), "TLS certificate reloaded");
                }
                // Half-written files are common during renewal: try again next time.
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate changed but cannot be loaded; keeping the old one")
                }
            }
        }
    });
    Ok(TlsAcceptor::from(Arc::new(server)))
}
