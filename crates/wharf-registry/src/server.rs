//! Accepting connections: HTTP/1.1 over TCP or TLS, with a header read timeout, no limit on
//! body size (blob uploads stream to disk), and a graceful shutdown that lets in-flight
//! requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

use crate::http::{handle, AppState};

mod wiring;

pub use wiring::{serve, state_for, Wiring};

/// Slow-loris guard: a client has this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// And this long to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The registry API is the router's fallback, so its own routing (names with slashes,
/// registry:2's error bodies for unknown paths) stays as it is; the UI is mounted beside it.
pub fn router(state: Arc<AppState>, ui: &crate::config::UiConfig) -> axum::Router {
    let api = state.clone();
    let fallback = move |req: axum::extract::Request| {
        let state = api.clone();
        async move {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
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
        // axum's own type, so the UI reads the client's address without knowing the server.
        req.extensions_mut().insert(ConnectInfo(peer));
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
