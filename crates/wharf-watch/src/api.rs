//! watchtower's HTTP API: `POST /v1/update` (optionally `?image=a,b`) runs a session now
//! and answers with its report (429 while a session is running); `GET /v1/metrics` is
//! Prometheus text; `POST /v1/events` takes registry:2 notification envelopes and checks
//! the containers using the pushed tags at once. All need `Authorization: Bearer <token>`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;

use crate::events::{self, Dispatcher};
use crate::report::SessionReport;
use crate::session::Totals;

/// Runs a session (limited to some images, or all) and handles its report (notifying);
/// `None` when it did not run because another session is running.
pub type RunSession = Arc<
    dyn Fn(Option<Vec<String>>) -> Pin<Box<dyn Future<Output = Option<SessionReport>> + Send>>
        + Send
        + Sync,
>;

/// Reads the counters for `/v1/metrics`.
pub type ReadTotals = Arc<dyn Fn() -> Totals + Send + Sync>;

#[derive(Clone)]
struct Api {
    token: Arc<str>,
    run: RunSession,
    totals: ReadTotals,
    events: Option<Dispatcher>,
}

/// registry:2 envelopes are a few KiB; Distribution batches at most a few events.
const MAX_ENVELOPE: usize = 1 << 20;

/// The API; `POST /v1/events` is served only when `events` is given.
pub fn router(
    token: &str,
    run: RunSession,
    totals: ReadTotals,
    events: Option<Dispatcher>,
) -> Router {
    let with_events = events.is_some();
    let api = Api {
        token: token.into(),
        run,
        totals,
        events,
    };
    let router = Router::new()
        .route("/v1/update", get(update).post(update))
        .route("/v1/metrics", get(metrics));
    let router = if with_events {
        router.route(
            "/v1/events",
            post(notified).layer(DefaultBodyLimit::max(MAX_ENVELOPE)),
        )
    } else {
        router
    };
    router.with_state(api)
}

/// A registry's notification: answered at once (202) with the images it will check, so
/// the registry's notifier is never held up by an update; the check runs behind it.
async fn notified(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&api, &headers) {
        tracing::warn!("registry event refused: missing or wrong API token");
        return refused();
    }
    let parsed = match events::parse(&body) {
        Ok(parsed) => parsed,
        Err(why) => {
            tracing::warn!(error = %why, "malformed registry event refused");
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": why})),
            )
                .into_response();
        }
    };
    let pushed = events::pushed(&parsed, None);
    let images: Vec<String> = pushed.iter().map(|p| p.image.clone()).collect();
    if let Some(dispatcher) = &api.events {
        dispatcher.send(pushed);
    }
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"events": parsed.len(), "pushed": images})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct UpdateQuery {
    image: Option<String>,
}

/// Runs a session and answers with its report. While one is running (scheduled or
/// requested) the request is not queued behind it: watchtower skips such a request
/// too, and a queue would let callers pile up sessions without bound. The answer is
/// then 429 with `{"error": …}`; the caller may retry later.
async fn update(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<UpdateQuery>,
) -> Response {
    if !authorized(&api, &headers) {
        return refused();
    }
    let images = q.image.map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    match (api.run)(images).await {
        Some(report) => Json(report).into_response(),
        None => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(serde_json::json!({"error": "an update is already running; try again later"})),
        )
            .into_response(),
    }
}

async fn metrics(State(api): State<Api>, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return refused();
    }
    let body = render_metrics(&(api.totals)());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn authorized(api: &Api, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    !presented.is_empty() && bool::from(presented.as_bytes().ct_eq(api.token.as_bytes()))
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong API token: send Authorization: Bearer <WATCHTOWER_HTTP_API_TOKEN>\n",
    )
        .into_response()
}

/// watchtower's metric names (so dashboards carry over), plus wharf's running totals.
pub fn render_metrics(t: &Totals) -> String {
    let last = t.last.clone().unwrap_or_default();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "watchtower_containers_scanned",
        "gauge",
        "Containers scanned in the last session",
        last.scanned() as u64,
    );
    metric(
        "watchtower_containers_updated",
        "gauge",
        "Containers updated in the last session",
        last.count(crate::report::Outcome::Updated) as u64,
    );
    metric(
        "watchtower_containers_failed",
        "gauge",
        "Containers whose update failed or was rolled back in the last session",
        last.failed() as u64,
    );
    metric(
        "watchtower_scans_total",
        "counter",
        "Sessions run since start",
        t.sessions,
    );
    metric(
        "wharf_watch_containers_scanned_total",
        "counter",
        "Containers scanned since start",
        t.scanned,
    );
    metric(
        "wharf_watch_containers_updated_total",
        "counter",
        "Containers updated since start",
        t.updated,
    );
    metric(
        "wharf_watch_containers_failed_total",
        "counter",
        "Failed or rolled back updates since start",
        t.failed,
    );
    out
}
