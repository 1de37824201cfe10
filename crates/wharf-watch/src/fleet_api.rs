//! The watch API's fleet endpoints, beside watchtower's (`api`), with the same bearer
//! token. Every one takes an optional `host`: the Docker host whose watcher acts, which
//! may be left out when there is only one.
//!
//! - `POST /v1/approve` `{"container", "digest"?, "host"?}`: approve a held update (the
//!   digest it waits with, unless one is given); 202, and the container is checked at
//!   once in the background, so the newest image approved runs.
//! - `POST /v1/rollback` `{"name", "digest"?, "host"?}`: recreate the container on an
//!   earlier image (the previous one unless `digest` names one); answers once the new
//!   container has stood its grace period: 200 with the change, 409 when it did not.
//! - `GET /v1/history?name=NAME[&host=H]`: the container's changes, newest first, and
//!   the earlier images it keeps.
//! - `GET /v1/pending[?host=H]`: the updates waiting for an approval or a window.
//! - `POST /v1/clock` `{"now": RFC 3339}`: tests only, served only with `--test-clock`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::hold::Clock;
use crate::session::Watcher;

/// The watchers of the hosts the API acts on.
pub trait Hosts: Send + Sync {
    /// The watcher of `host`; with `None`, the only one (an error when there are several).
    fn watcher(&self, host: Option<&str>) -> Result<Arc<Watcher>, String>;
    /// Check `images` on `host` now, in the background, reported and notified as a
    /// scheduled check is.
    fn check(&self, host: Option<&str>, images: Vec<String>);
}

#[derive(Clone)]
struct FleetApi {
    token: Arc<str>,
    hosts: Arc<dyn Hosts>,
    clock: Arc<Clock>,
}

/// Requests are a few names and a digest.
const MAX_BODY: usize = 64 * 1024;

/// The fleet endpoints; `POST /v1/clock` only when `clock` is settable (`--test-clock`).
pub fn router(token: &str, hosts: Arc<dyn Hosts>, clock: Arc<Clock>) -> Router {
    let settable = clock.is_settable();
    let api = FleetApi {
        token: token.into(),
        hosts,
        clock,
    };
    let router = Router::new()
        .route("/v1/approve", post(approve))
        .route("/v1/rollback", post(rollback))
        .route("/v1/history", get(history))
        .route("/v1/pending", get(pending));
    let router = if settable {
        router.route("/v1/clock", post(set_clock))
    } else {
        router
    };
    router
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

#[derive(Deserialize)]
struct ApproveBody {
    container: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

async fn approve(State(api): State<FleetApi>, headers: HeaderMap, body: Bytes) -> Response {
    let body: ApproveBody = match authorized(&api, &headers, &body) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let host = named(body.host.as_deref());
    let watcher = match host_watcher(&api, host) {
        Ok(w) => w,
        Err(missing) => return missing,
    };
    match watcher.approve(&body.container, body.digest.as_deref()) {
        Ok((image, digest)) => {
            if !image.is_empty() {
                api.hosts.check(host, vec![image.clone()]);
            }
            let answer = serde_json::json!({
                "container": body.container, "host": host, "digest": digest, "image": image,
                "checking": !image.is_empty(),
            });
            (StatusCode::ACCEPTED, Json(answer)).into_response()
        }
        Err(e) => error(StatusCode::NOT_FOUND, &e),
    }
}

#[derive(Deserialize)]
struct RollbackBody {
    #[serde(alias = "container")]
    name: String,
    #[serde(default, alias = "to")]
    digest: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

async fn rollback(State(api): State<FleetApi>, headers: HeaderMap, body: Bytes) -> Response {
    let body: RollbackBody = match authorized(&api, &headers, &body) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let host = named(body.host.as_deref());
    let watcher = match host_watcher(&api, host) {
        Ok(w) => w,
        Err(missing) => return missing,
    };
    let to = body.digest.filter(|d| !d.is_empty());
    // In a task of its own: a client hanging up must not cut a swap short.
    let name = body.name;
    let done = tokio::spawn(async move {
        watcher
            .rollback(&name, to.as_deref(), "requested through the API")
            .await
    });
    match done.await {
        Ok(Ok(change)) => Json(change).into_response(),
        Ok(Err(e)) => error(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::CONFLICT),
            &e.to_string(),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the rollback did not finish: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

async fn history(
    State(api): State<FleetApi>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Response {
    if let Some(refused) = refusal(&api, &headers) {
        return refused;
    }
    let Some(name) = q.name.filter(|n| !n.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "name the container: GET /v1/history?name=NAME",
        );
    };
    match host_watcher(&api, named(q.host.as_deref())) {
        Ok(w) => Json(w.history(&name)).into_response(),
        Err(missing) => missing,
    }
}

async fn pending(
    State(api): State<FleetApi>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Response {
    if let Some(refused) = refusal(&api, &headers) {
        return refused;
    }
    match host_watcher(&api, named(q.host.as_deref())) {
        Ok(w) => Json(w.pending()).into_response(),
        Err(missing) => missing,
    }
}

#[derive(Deserialize)]
struct ClockBody {
    now: String,
}

async fn set_clock(State(api): State<FleetApi>, headers: HeaderMap, body: Bytes) -> Response {
    let body: ClockBody = match authorized(&api, &headers, &body) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let at = match crate::hold::parse_time(&body.now) {
        Ok(at) => at,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match api.clock.set(at) {
        Ok(()) => Json(serde_json::json!({"now": api.clock.now().to_rfc3339()})).into_response(),
        Err(e) => error(StatusCode::FORBIDDEN, &e),
    }
}

/// The request's JSON body, once its token is checked: else the 401 or 400 to send.
// The Err is the handler's own answer, built once and returned as is: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn authorized<T: serde::de::DeserializeOwned>(
    api: &FleetApi,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Response> {
    if let Some(refused) = refusal(api, headers) {
        return Err(refused);
    }
    serde_json::from_slice(body).map_err(|e| {
        let why = format!("the body is not the JSON this endpoint takes: {e}");
        error(StatusCode::BAD_REQUEST, &why)
    })
}

/// A host named in a request; empty is none.
fn named(host: Option<&str>) -> Option<&str> {
    host.filter(|h| !h.is_empty())
}

/// The watcher of `host` (the only one when None), or the 404 naming what is managed.
// The Err is the handler's own answer, built once and returned as is: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn host_watcher(api: &FleetApi, host: Option<&str>) -> Result<Arc<Watcher>, Response> {
    api.hosts
        .watcher(host)
        .map_err(|e| error(StatusCode::NOT_FOUND, &e))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({"error": message}))).into_response()
}

/// The 401 answer, unless the request carries the API token.
fn refusal(api: &FleetApi, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !presented.is_empty() && bool::from(presented.as_bytes().ct_eq(api.token.as_bytes())) {
        return None;
    }
    Some((
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({"error": "missing or wrong API token: send Authorization: Bearer <WATCHTOWER_HTTP_API_TOKEN>"})),
    )
        .into_response())
}
