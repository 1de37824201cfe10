//! Accepting connections: HTTP/1.1 with a header read timeout, no limit on body size (blob
//! uploads stream to disk), and a graceful shutdown that lets in-flight requests finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{handle, AppState, ManifestCache};
use crate::store::fs::{FsBlobStore, FsMetaStore, Layout};
use crate::store::{BlobStore, MetaStore};

/// Slow-loris guard: a client has this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests (a large upload may take a while).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

pub fn state_for(config: &Config) -> Arc<AppState> {
    let layout = Layout::new(&config.root);
    let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::new(layout.clone()));
    let meta: Arc<dyn MetaStore> = Arc::new(FsMetaStore::new(layout, blobs.clone()));
    Arc::new(AppState {
        blobs,
        meta,
        delete_enabled: config.delete_enabled,
        manifests: ManifestCache::default(),
    })
}

/// Serve `config` until `shutdown` resolves, then drain.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.root).with_context(|| {
        format!(
            "cannot create storage root {}: choose another with --root",
            config.root.display()
        )
    })?;
    let listener = TcpListener::bind(config.addr).await.with_context(|| {
        format!(
            "cannot listen on {}: is another registry running? choose another with --addr",
            config.addr
        )
    })?;
    tracing::info!(addr = %listener.local_addr()?, root = %config.root.display(), delete_enabled = config.delete_enabled, "wharf registry listening");
    let state = state_for(&config);
    if let Some(purging) = config.upload_purging.clone() {
        tokio::spawn(purge_uploads_periodically(state.blobs.clone(), purging));
    }
    serve_listener(listener, state, shutdown).await
}

async fn purge_uploads_periodically(
    blobs: Arc<dyn BlobStore>,
    purging: crate::config::UploadPurging,
) {
    let mut tick = tokio::time::interval(purging.interval);
    loop {
        tick.tick().await;
        match blobs.purge_uploads(purging.age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "purged abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "purging abandoned uploads failed"),
        }
    }
}

pub async fn serve_listener(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req| handle(state.clone(), req));
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out; closing remaining connections"),
    }
    Ok(())
}
