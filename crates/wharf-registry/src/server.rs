//! Accepting connections: HTTP/1.1 over TCP or TLS, with a header read timeout, no limit on
//! body size (blob uploads stream to disk), and a graceful shutdown that lets in-flight
//! requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

use crate::auth::Auth;
use crate::config::Config;
use crate::http::{handle, AppState};
use crate::registry::events::{Events, Source};
use crate::registry::Registry;
use crate::store::Store;

/// Slow-loris guard: a client has this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// And this long to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests, unless `http.draintimeout` says otherwise.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn state_for(config: &Config) -> anyhow::Result<Arc<AppState>> {
    let store = crate::store::open(&config.storage, config.database.as_ref(), true)
        .await
        .with_context(|| format!("cannot open storage {}", config.storage.describe()))?;
    let mut auth = Auth::new(
        config.auth.as_ref(),
        config.access.clone(),
        config.http.secret.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(db) = &config.database {
        auth.share_failures(Arc::new(crate::store::postgres::open_failures(db)?));
    }
    let extra_headers = config
        .http
        .headers
        .iter()
        .map(|(k, v)| {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .with_context(|| format!("http.headers: {k:?} is not a header name"))?;
            let value = http::HeaderValue::from_str(v)
                .with_context(|| format!("http.headers.{k}: {v:?} is not a header value"))?;
            Ok((name, value))
        })
        .collect::<anyhow::Result<_>>()?;
    let upload_secret = match &config.http.secret {
        Some(s) => s.as_bytes().to_vec(),
        None if !matches!(
            config.storage,
            crate::store::StorageConfig::Filesystem { .. }
        ) =>
        {
            // Shared storage means replicas, and registry:2's trap: each would sign upload
            // locations with its own key and refuse the others'.
            tracing::warn!(
                "http.secret is not set: this process signs upload locations with a random key, \
                 so replicas behind one load balancer will reject each other's uploads; \
                 set the same http.secret (REGISTRY_HTTP_SECRET) on every replica"
            );
            random_secret()?
        }
        None => random_secret()?,
    };
    let mut metrics = crate::metrics::Metrics::new();
    if let Some(dir) = &store.state_dir {
        metrics.add_store_reports(dir.clone());
    }
    let proxy = match &config.proxy {
        Some(p) => Some(crate::registry::proxy::Proxy::new(p).context("proxy:")?),
        None => None,
    };
    if let Some(p) = &proxy {
        metrics.add_proxy(p.stats.clone());
    }
    let metrics = Arc::new(metrics);
    let mut registry = Registry::new(store);
    registry.metrics = metrics.clone();
    registry.governance = Arc::new(config.governance.clone());
    registry.proxy = proxy;
    let events_dir = crate::store::fs::Layout::new(config.storage.local_root())
        .wharf_dir()
        .join("events");
    let source = Source {
        addr: format!("{}:{}", hostname(), config.addr.port()),
        instance_id: uuid::Uuid::new_v4().to_string(),
    };
    registry.events = match Events::open(&events_dir, config.notifications.clone(), source, metrics)
    {
        Ok(events) => Some(Arc::new(events)),
        // A read-only store can still be served, without events, unless webhooks are wanted.
        Err(e) if config.notifications.is_empty() => {
            tracing::warn!(error = %e, dir = %events_dir.display(), "no event log: /v2/_events is off");
            None
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot open the event log in {} that notifications.endpoints need",
                events_dir.display()
            )))
        }
    };
    Ok(Arc::new(AppState {
        registry,
        delete_enabled: config.delete_enabled,
        read_only: config.read_only,
        auth,
        upload_secret,
        base_url: config.http.host.clone(),
        tls: config.http.tls.is_some(),
        extra_headers,
        access_log: config.log.access_log,
        health: Arc::default(),
    }))
}

fn random_secret() -> anyhow::Result<Vec<u8>> {
    let mut random = vec![0u8; 32];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(random)
}

/// This machine's name, as registry:2 puts it in events' `source.addr`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Serve `config` until `shutdown` resolves, then drain.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let root = config.storage.local_root();
    std::fs::create_dir_all(root).with_context(|| {
        format!(
            "cannot create storage root {}: choose another with --root",
            root.display()
        )
    })?;
    let state = state_for(&config).await?;
    let tls = match &config.http.tls {
        Some(t) => Some(crate::tls::acceptor(t).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let listener = TcpListener::bind(config.addr).await.with_context(|| {
        format!(
            "cannot listen on {}: is another registry running? choose another with --addr",
            config.addr
        )
    })?;
    tracing::info!(
        addr = %listener.local_addr()?,
        root = %root.display(),
        tls = tls.is_some(),
        auth = state.auth.enabled(),
        delete_enabled = config.delete_enabled,
        "wharf registry listening"
    );
    if let Some(db) = &config.database {
        tracing::info!(database = %db.describe(), "metadata in PostgreSQL");
    }
    if let Some(proxy) = &config.proxy {
        for u in &proxy.upstreams {
            let prefix = if u.prefix.is_empty() {
                "(every repository)"
            } else {
                u.prefix.as_str()
            };
            tracing::info!(prefix, upstream = %u.remoteurl, ttl_secs = u.ttl.as_secs(), "pull-through cache");
        }
    }
    if let Some(purging) = config.upload_purging.clone() {
        tokio::spawn(purge_uploads_periodically(
            state.registry.store.clone(),
            purging,
        ));
    }
    if let Some(gc) = config.gc.clone() {
        tokio::spawn(collect_garbage_periodically(
            state.clone(),
            gc,
            config.proxy.clone(),
        ));
    }
    if let Some(every) = config
        .governance
        .retention
        .as_ref()
        .and_then(|r| r.schedule)
        .filter(|_| !config.read_only)
    // a read-only registry deletes nothing
    {
        tokio::spawn(crate::registry::retention::periodically(
            state.clone(),
            every,
        ));
    }
    if let Some(proxy) = &state.registry.proxy {
        tokio::spawn(log_proxy_stats(proxy.stats.clone()));
    }
    let events = state.registry.events.clone();
    if let Some(e) = &events {
        e.start()?;
    }
    let (closing, closed) = tokio::sync::watch::channel(false);
    let health = state.health.clone();
    if let Some(check) = config.health.clone() {
        let probe = match &config.storage {
            crate::store::StorageConfig::Filesystem { root } => crate::debug::Probe {
                name: "storagedriver_filesystem".into(),
                root: Some(root.clone()),
                store: config
                    .database
                    .as_ref()
                    .map(|_| state.registry.store.clone()),
            },
            crate::store::StorageConfig::S3 { .. } => crate::debug::Probe {
                name: "storagedriver_s3".into(),
                root: None,
                store: Some(state.registry.store.clone()),
            },
        };
        tokio::spawn(crate::debug::check_storage(
            check,
            probe,
            health.clone(),
            state.registry.metrics.clone(),
        ));
    }
    if let Some(debug) = config.http.debug.clone() {
        let mut closed = closed.clone();
        let stop = async move {
            let _ = closed.wait_for(|c| *c).await;
        };
        crate::debug::serve(debug, state.registry.metrics.clone(), health, stop).await?;
    }
    let drain = config.http.drain_timeout.unwrap_or(DRAIN_TIMEOUT);
    // Event streams never end by themselves: end them when shutdown begins, or they
    // would hold the drain open until it times out.
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
        if let Some(e) = events {
            e.close();
        }
    };
    let router = router(state, &config.ui);
    serve_listener(listener, router, tls, drain, shutdown).await
}

/// Once across every process on the store: the job lock skips a round another holds.
async fn purge_uploads_periodically(store: Store, purging: crate::config::UploadPurging) {
    let mut tick = tokio::time::interval(purging.interval);
    loop {
        tick.tick().await;
        let Ok(Some(_job)) = store.locks.try_job("purge").await else {
            continue;
        };
        match store.blobs.purge_uploads(purging.age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "purged abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "purging abandoned uploads failed"),
        }
    }
}

/// `gc:`: collect while serving. The first run waits one interval, as purging's does.
/// The cache's counters in the log once a minute when they moved (metrics will export
/// the same `ProxyStats`).
async fn log_proxy_stats(stats: Arc<crate::registry::proxy::ProxyStats>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut last = [0u64; 5];
    loop {
        tick.tick().await;
        let now = stats.snapshot();
        if now != last {
            let [hits, misses, upstream_bytes, errors, stale] = now;
            tracing::info!(
                hits,
                misses,
                upstream_bytes,
                errors,
                stale,
                "pull-through cache"
            );
            last = now;
        }
    }
}

async fn collect_garbage_periodically(
    state: Arc<AppState>,
    gc: crate::config::GcSchedule,
    proxy: Option<crate::config::proxy::ProxyConfig>,
) {
    let opts = crate::registry::gc::GcOptions {
        dry_run: false,
        delete_untagged: gc.delete_untagged,
        grace: gc.grace,
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + gc.interval, gc.interval);
    loop {
        tick.tick().await;
        // Evicted manifests leave their blobs unreferenced: this same collection sweeps them.
        if let Some(proxy) = &proxy {
            match state.registry.evict_cached(proxy).await {
                Ok(e) if e.manifests > 0 => {
                    tracing::info!(
                        manifests = e.manifests,
                        bytes = e.bytes,
                        "evicted cached content"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "evicting cached content failed"),
            }
        }
        match state.registry.collect_garbage(&opts).await {
            Ok(r) => {
                tracing::info!(
                    blobs = r.blobs.len(),
                    manifests = r.manifests.len(),
                    bytes_freed = r.bytes_freed,
                    held = r.blobs_held,
                    "garbage collected"
                )
            }
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}

pub async fn serve_listener(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = Arc::new(GracefulShutdown::new());
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
        let (router, http, graceful) = (router.clone(), http.clone(), graceful.clone());
        match tls.clone() {
            None => serve_connection(TokioIo::new(stream), peer, router, &http, &graceful),
            Some(acceptor) => {
                // Handshake off the accept loop, so a slow client holds up nobody else.
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => serve_connection(
                            TokioIo::new(tls_stream),
                            peer,
                            router,
                            &http,
                            &graceful,
                        ),
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    // Stop listening before draining: new connections are refused at once, not left queued
    // in the backlog, unanswered, until the drain ends.
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    let graceful = await_handshakes(graceful).await;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain timed out; closing remaining connections"),
    }
    Ok(())
}

/// TLS handshakes still under way hold a handle to the shutdown tracker; they end within
/// the handshake timeout, after which every connection is registered and can be drained.
async fn await_handshakes(mut graceful: Arc<GracefulShutdown>) -> GracefulShutdown {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT + Duration::from_secs(1);
    loop {
        match Arc::try_unwrap(graceful) {
            Ok(g) => return g,
            Err(shared) if tokio::time::Instant::now() < deadline => {
                graceful = shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                tracing::warn!("TLS handshakes outlived their timeout; not waiting for them");
                return GracefulShutdown::new();
            }
        }
    }
}

/// The client's address, put in each request's extensions for the services behind the router.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The registry API is the router's fallback, so its own routing (names with slashes,
/// registry:2's error bodies for unknown paths) stays as it is; the UI is mounted beside it.
pub fn router(state: Arc<AppState>, ui: &crate::config::UiConfig) -> axum::Router {
    let api = state.clone();
    let fallback = move |req: axum::extract::Request| {
        let state = api.clone();
        async move {
            let peer = req
                .extensions()
                .get::<Peer>()
                .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0);
            match handle(state, peer, req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        }
    };
    let router = axum::Router::new();
    let router = if ui.enabled {
        router.merge(crate::ui::router(state, ui))
    } else {
        router
    };
    router.fallback(fallback)
}

fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    router: axum::Router,
    http: &hyper::server::conn::http1::Builder,
    graceful: &GracefulShutdown,
) where
    IO: Read + Write + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let conn = graceful.watch(http.serve_connection(io, service));
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}
