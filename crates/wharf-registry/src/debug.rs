//! registry:2's debug address (`http.debug.addr`): Prometheus metrics at
//! `http.debug.prometheus.path` and `/debug/health`, which answers `{}` while healthy and
//! 503 with `{"storagedriver_filesystem": "<why>"}` once `health.storagedriver` fails
//! `threshold` times in a row. Meanwhile the API answers every request 503 `UNAVAILABLE`,
//! as registry:2's health handler does.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::{DebugConfig, HealthCheck};
use crate::health::Health;
use crate::http::response::{bytes_response, json_response, Resp};
use crate::metrics::Metrics;

/// Write, read back and remove a probe file in the store, as any push would need to.
/// A read-only or vanished storage root fails here even for root, unlike a permission check.
fn probe(root: &Path) -> std::io::Result<()> {
    let dir = root.join("docker/registry/v2/_wharf/health");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("probe-{}", std::process::id()));
    let token = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &token)?;
    let back = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    if back? != token {
        return Err(std::io::Error::other("the probe file read back different"));
    }
    Ok(())
}

/// What `health.storagedriver` probes: the filesystem root, or the store's backends
/// (a bucket's clock, written and read back; a metadata read, a query on PostgreSQL).
pub struct Probe {
    /// registry:2's name for the check, `storagedriver_<driver>`.
    pub name: String,
    pub root: Option<PathBuf>,
    pub store: Option<crate::store::Store>,
}

impl Probe {
    async fn run(&self) -> Result<(), String> {
        if let Some(root) = &self.root {
            let r = root.clone();
            tokio::task::spawn_blocking(move || probe(&r))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                .map_err(|e| format!("{}: {e}", root.display()))?;
        }
        if let Some(store) = &self.store {
            let probe: wharf_oci::RepoName = "wharf-health/probe".parse().expect("a valid name");
            store.blobs.now().await.map_err(|e| e.to_string())?;
            store
                .meta
                .repo_exists(&probe)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Run `health.storagedriver` until the process ends.
pub async fn check_storage(
    check: HealthCheck,
    probe: Probe,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(check.interval);
    let mut failures = 0u64;
    loop {
        tick.tick().await;
        match probe.run().await {
            Ok(()) => {
                if failures >= check.threshold {
                    tracing::info!("storage health check passes again");
                }
                failures = 0;
                health.set(None);
                metrics.set_healthy(true);
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "storage health check failed");
                if failures >= check.threshold {
                    health.set(Some((probe.name.clone(), e)));
                    metrics.set_healthy(false);
                }
            }
        }
    }
}

fn health_response(health: &Health) -> Resp {
    match health.status() {
        None => json_response(StatusCode::OK, &serde_json::json!({})),
        Some((check, why)) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ check: why }),
        ),
    }
}

fn answer(req: &Request<Incoming>, cfg: &DebugConfig, metrics: &Metrics, health: &Health) -> Resp {
    let path = req.uri().path();
    let not_found = || {
        bytes_response(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"404 page not found\n"),
        )
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return bytes_response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", Bytes::new());
    }
    if path == "/debug/health" {
        return health_response(health);
    }
    match &cfg.prometheus {
        Some(p) if p == path => bytes_response(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(metrics.encode()),
        ),
        _ => not_found(),
    }
}

/// Bind the debug address; serve it until `shutdown` resolves.
pub async fn serve(
    cfg: DebugConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("cannot listen on http.debug.addr {}", cfg.addr))?;
    let metrics_path = cfg.prometheus.as_deref().unwrap_or("off");
    tracing::info!(addr = %listener.local_addr()?, metrics = %metrics_path, "debug server listening");
    let cfg = Arc::new(cfg);
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(x) => x,
                    Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
                () = &mut shutdown => return,
            };
            let (cfg, metrics, health) = (cfg.clone(), metrics.clone(), health.clone());
            let service = service_fn(move |req| {
                let resp = answer(&req, &cfg, &metrics, &health);
                async move { Ok::<_, Infallible>(resp) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}
