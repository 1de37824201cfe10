//! The OCI Distribution HTTP API: one module per resource, routed by [`Route::parse`].

mod access;
pub use access::base_url;
mod base;
mod blobs;
mod catalog;
pub mod error;
mod events;
mod manifests;
mod mirror;
mod referrers;
mod repositories;
pub mod response;
mod tags;
mod token;
mod uploads;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use uuid::Uuid;
use wharf_oci::{Digest, ErrorCode, Reference, RepoName};

use self::error::{digest_invalid, name_invalid, ApiError, ApiResult};
use self::response::{empty, header_value, Resp, RespExt, API_VERSION};
use crate::auth::{Auth, Identity};
use crate::metrics::Metrics;
use crate::registry::events::envelope::{Actor, RequestRecord};
use crate::registry::events::Origin;
use crate::registry::ByteStream;
use crate::registry::Registry;

/// Everything a request handler needs.
pub struct AppState {
    /// The only door to what the registry holds.
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    /// Signs the `_state` of upload URLs as registry:2 does with `http.secret`, so that a
    /// Distribution sharing the store and the secret continues uploads wharf started.
    pub upload_secret: Vec<u8>,
    /// `http.host`: the external URL, when requests' own Host headers are not it.
    pub base_url: Option<String>,
    /// Whether wharf itself terminates TLS (for URLs it builds when no proxy says otherwise).
    pub tls: bool,
    /// `http.headers`, added to every response.
    pub extra_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Log every request at info (registry:2's access log).
    pub access_log: bool,
    /// `health.storagedriver`'s verdict.
    pub health: Arc<crate::health::Health>,
}

/// The parts of a request handlers look at, with the body still unread.
pub struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    /// The query as sent, for parameters that repeat (`scope`).
    pub raw_query: String,
    pub peer: IpAddr,
    /// With the port, as registry:2's events report the client.
    pub peer_addr: SocketAddr,
    pub identity: Identity,
    /// axum's body (the API is the fallback service of the router `server.rs` builds),
    /// wrapped so that `&Req` may cross an await in a `Send` future: axum's body is not `Sync`.
    pub body: sync_wrapper::SyncWrapper<axum::body::Body>,
    /// Set when reading the body failed (a malformed chunked encoding, a cut connection):
    /// whatever the handler made of that, it is the client's fault.
    body_failed: Arc<AtomicBool>,
    /// Body bytes read so far, for the metrics.
    bytes_in: Arc<AtomicU64>,
}

impl Req {
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// Every value of a repeated query parameter.
    pub fn query_all(&self, key: &str) -> Vec<String> {
        form_urlencoded::parse(self.raw_query.as_bytes())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .collect()
    }

    /// The body as a stream of byte chunks, never collected in memory.
    pub fn into_stream(self) -> ByteStream {
        let failed = self.body_failed;
        let counted = self.bytes_in;
        TryStreamExt::map_err(self.body.into_inner().into_data_stream(), move |e| {
            failed.store(true, Ordering::Relaxed);
            io::Error::other(e)
        })
        .inspect_ok(move |chunk| {
            counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        })
        .boxed()
    }

    /// The whole body, refusing more than `limit` bytes.
    pub async fn collect(self, limit: usize) -> ApiResult<Bytes> {
        let mut buf = Vec::new();
        let mut stream = self.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(ErrorCode::Unknown).message(format!("reading body: {e}"))
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::new(ErrorCode::SizeInvalid)
                    .message(format!("body larger than {limit} bytes"))
                    .status(StatusCode::PAYLOAD_TOO_LARGE)
                    // The rest of the body is left unread, so this connection cannot be reused.
                    .header(http::header::CONNECTION, "close"));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.into())
    }
}

/// What a `/v2/...` path addresses. Names and digests are parsed into validated types here,
/// at the edge, so nothing below sees a raw path.
#[derive(Debug, PartialEq)]
enum Route {
    /// The built-in token endpoint.
    Token,
    Base,
    Catalog,
    /// `/v2/_events`: the event stream.
    Events,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    /// A manifest URL whose reference is neither a tag nor a digest: unknown to reads,
    /// invalid to writes.
    BadReference(RepoName, String),
    Blob(RepoName, Digest),
    Uploads(RepoName),
    Upload(RepoName, Uuid),
    Referrers(RepoName, Digest),
    /// wharf's own `/wharf/v1/repositories/<name>`: a whole repository.
    Repository(RepoName),
}

impl Route {
    fn parse(path: &str) -> Result<Route, ApiError> {
        let not_found = || {
            ApiError::new(ErrorCode::Unsupported)
                .message("no such endpoint")
                .status(StatusCode::NOT_FOUND)
        };
        if path == crate::auth::TOKEN_PATH {
            return Ok(Route::Token);
        }
        if let Some(name) = path.strip_prefix(repositories::PREFIX) {
            return Ok(Route::Repository(name.parse().map_err(name_invalid)?));
        }
        let rest = match path.strip_prefix("/v2") {
            Some("" | "/") => return Ok(Route::Base),
            Some(rest) => rest.strip_prefix('/').ok_or_else(not_found)?,
            None => return Err(not_found()),
        };
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        if rest == "_events" {
            return Ok(Route::Events);
        }
        let name = |s: &str| s.parse::<RepoName>().map_err(name_invalid);
        let digest = |s: &str| s.parse::<Digest>().map_err(digest_invalid);
        let (head, last) = rest.rsplit_once('/').ok_or_else(not_found)?;
        let (repo, kind) = head.rsplit_once('/').ok_or_else(not_found)?;
        match (kind, last) {
            ("tags", "list") => Ok(Route::Tags(name(repo)?)),
            ("manifests", r) => Ok(match r.parse() {
                Ok(reference) => Route::Manifest(name(repo)?, reference),
                Err(e) => Route::BadReference(name(repo)?, e.to_string()),
            }),
            ("blobs", "uploads") => Ok(Route::Uploads(name(repo)?)),
            ("blobs", d) => Ok(Route::Blob(name(repo)?, digest(d)?)),
            ("referrers", d) => Ok(Route::Referrers(name(repo)?, digest(d)?)),
            ("uploads", id) => {
                let repo = repo.strip_suffix("/blobs").ok_or_else(not_found)?;
                if id.is_empty() {
                    return Ok(Route::Uploads(name(repo)?));
                }
                let id =
                    Uuid::parse_str(id).map_err(|_| ApiError::new(ErrorCode::BlobUploadUnknown))?;
                Ok(Route::Upload(name(repo)?, id))
            }
            _ => Err(not_found()),
        }
    }
}

impl Route {
    /// The repository the route addresses, if any.
    fn repo(&self) -> Option<&RepoName> {
        match self {
            Route::Tags(r)
            | Route::Manifest(r, _)
            | Route::BadReference(r, _)
            | Route::Blob(r, _)
            | Route::Uploads(r)
            | Route::Upload(r, _)
            | Route::Referrers(r, _)
            | Route::Repository(r) => Some(r),
            Route::Token | Route::Base | Route::Catalog | Route::Events => None,
        }
    }

    /// The `handler` label of the metrics, registry:2's route names.
    fn label(&self) -> &'static str {
        match self {
            Route::Token => "token",
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Events => "events",
            Route::Tags(_) => "tags",
            Route::Manifest(..) | Route::BadReference(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::Uploads(_) => "blob_upload",
            Route::Upload(..) => "blob_upload_chunk",
            Route::Referrers(..) => "referrers",
            Route::Repository(_) => "repository",
        }
    }
}

/// Who made a request, for the events it causes: registry:2's request record.
fn origin(state: &AppState, req: &Req) -> Origin {
    let actor = req.identity.name().unwrap_or_default();
    request_origin(
        state,
        &req.headers,
        req.peer_addr,
        req.method.as_str(),
        actor,
    )
}

/// registry:2's request record for the events a request causes, from the API or the UI.
pub(crate) fn request_origin(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    method: &str,
    actor: &str,
) -> Origin {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    Origin {
        request: RequestRecord {
            id: Uuid::new_v4().to_string(),
            addr: client_addr(headers, peer),
            host: header("host").unwrap_or_default().to_owned(),
            method: method.to_owned(),
            useragent: header("user-agent").unwrap_or_default().to_owned(),
        },
        actor: Actor {
            name: actor.to_owned(),
        },
        base_url: access::base_url(state, headers),
    }
}

/// The client's address as Distribution's RemoteAddr: a proxy's X-Forwarded-For or
/// X-Real-Ip, when an IP, else the peer.
pub(crate) fn client_addr(headers: &HeaderMap, peer: SocketAddr) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .or_else(|| header("x-real-ip"))
        .map(str::trim)
        .filter(|ip| ip.parse::<IpAddr>().is_ok())
        .map_or_else(|| peer.to_string(), str::to_owned)
}

/// Record a login (a credential check a client asked for) in the audit log.
pub(crate) async fn audit_login(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    user: &str,
    how: &str,
    result: Result<(), String>,
) {
    let outcome = match result {
        Ok(()) => "ok".to_owned(),
        Err(why) => format!("refused: {why}"),
    };
    let source = client_addr(headers, peer);
    let e = crate::registry::audit::entry(user, &source, "login", how, &outcome);
    state.registry.record(e).await;
}

fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::Unsupported).message("method not allowed on this endpoint")
}

async fn dispatch(state: &Arc<AppState>, route: Route, req: Req) -> ApiResult {
    let head = req.method == Method::HEAD;
    let writes =
        !matches!(req.method, Method::GET | Method::HEAD) && !matches!(route, Route::Token);
    if writes {
        // Asked of the service before anything is read or parsed, so that a write it would
        // refuse (read-only mode, a pull-through cache) is refused in its words, at once.
        state.registry.writable(route.repo(), false).await?;
    }
    // A read causes an event only when an endpoint wants pulls: no record (a random id,
    // five strings) is built for every GET of the hot path otherwise.
    let quiet = matches!(req.method, Method::GET | Method::HEAD) && !state.registry.records_pulls();
    let o = &if quiet {
        // The method alone: the pull counter tells a GET from a HEAD.
        Origin::method(req.method.as_str())
    } else {
        origin(state, &req)
    };
    match (route, req.method.clone()) {
        (Route::Token, Method::GET | Method::POST) => token::handle(state, req).await,
        (Route::Events, Method::GET) => events::get(state, &req).await,
        (Route::Base, Method::GET | Method::HEAD) => Ok(base::get()),
        (Route::Catalog, Method::GET) => catalog::get(state, &req, o).await,
        (Route::Tags(repo), Method::GET) => tags::list(state, &repo, &req, o).await,
        (Route::Manifest(repo, r), Method::GET | Method::HEAD) => {
            manifests::get(state, &repo, &r, head, o).await
        }
        (Route::Manifest(repo, r), Method::PUT) => manifests::put(state, &repo, &r, req, o).await,
        (Route::Manifest(repo, r), Method::DELETE) => manifests::delete(state, &repo, &r, o).await,
        (Route::BadReference(repo, why), Method::PUT) => {
            Err(ApiError::new(ErrorCode::ManifestInvalid)
                .message(why)
                .detail(serde_json::json!({ "name": repo.as_str() })))
        }
        (Route::BadReference(repo, why), _) => Err(ApiError::new(ErrorCode::ManifestUnknown)
            .message(why)
            .detail(serde_json::json!({ "name": repo.as_str() }))),
        (Route::Blob(repo, d), Method::GET | Method::HEAD) => {
            blobs::get(state, &repo, &d, &req, head, o).await
        }
        (Route::Blob(repo, d), Method::DELETE) => blobs::delete(state, &repo, &d, o).await,
        (Route::Uploads(repo), Method::POST) => uploads::start(state, &repo, req, o).await,
        (Route::Upload(repo, id), Method::GET) => uploads::status(state, &repo, id, o).await,
        (Route::Upload(repo, id), Method::PATCH) => uploads::patch(state, &repo, id, req, o).await,
        (Route::Upload(repo, id), Method::PUT) => uploads::put(state, &repo, id, req, o).await,
        (Route::Upload(repo, id), Method::DELETE) => uploads::cancel(state, &repo, id, o).await,
        (Route::Referrers(repo, d), Method::GET) => referrers::get(state, &repo, &d, &req, o).await,
        (Route::Repository(repo), Method::DELETE) => repositories::delete(state, &repo, o).await,
        _ => Err(method_not_allowed()),
    }
}

/// The service entry point: route, authenticate, authorize, run the handler, turn errors
/// into spec bodies, log.
pub async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<axum::body::Body>,
) -> Result<Resp, Infallible> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let query = form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let path = parts.uri.path().to_owned();
    let body_unread = !body.is_end_stream();
    let body_failed = Arc::new(AtomicBool::new(false));
    let bytes_in = Arc::new(AtomicU64::new(0));
    let req = Req {
        method: parts.method,
        headers: parts.headers,
        query,
        raw_query,
        peer: peer.ip(),
        peer_addr: peer,
        identity: Identity::Anonymous,
        body: sync_wrapper::SyncWrapper::new(body),
        body_failed: body_failed.clone(),
        bytes_in: bytes_in.clone(),
    };
    let method = req.method.clone();
    let (mut resp, label) = match trailing_slash_redirect(&path, &req.raw_query) {
        // registry:2 answers nothing but this while a health check fails.
        _ if state.health.is_unhealthy() => (
            ApiError::new(ErrorCode::Unavailable)
                .detail(serde_json::json!(
                    "health check failed: please see /debug/health"
                ))
                .into_response(),
            "unavailable",
        ),
        Some(location) => (
            empty(StatusCode::MOVED_PERMANENTLY).location(&location),
            "redirect",
        ),
        None => route_and_run(&state, &path, req).await,
    };
    let peer = peer.ip();
    if body_failed.load(Ordering::Relaxed) {
        resp = ApiError::new(ErrorCode::Unknown)
            .message(
                "the request body could not be read (malformed chunked encoding, or cut short)",
            )
            .status(StatusCode::BAD_REQUEST)
            .into_response();
    }
    // An error answered before the body was read leaves the body unread on the
    // connection, which hyper then closes: say so, or the client's next request on it
    // meets a closed socket.
    if body_unread && !resp.status().is_success() {
        resp.headers_mut()
            .insert(http::header::CONNECTION, header_value("close"));
    }
    let headers = resp.headers_mut();
    headers.insert(API_VERSION, header_value("registry/2.0"));
    for (name, value) in &state.extra_headers {
        headers.append(name.clone(), value.clone());
    }
    let metrics = &state.metrics;
    metrics.answered(
        label,
        method.as_str(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    metrics.bytes_in(label, bytes_in.load(Ordering::Relaxed));
    let resp = count_body(resp, metrics.bytes_out_counter(label));
    if state.access_log {
        tracing::info!(
            %peer,
            %method,
            %path,
            status = resp.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
    }
    Ok(resp)
}

/// Response bodies count their bytes into `counter` as they are sent.
fn count_body(resp: Resp, counter: prometheus_client::metrics::counter::Counter) -> Resp {
    resp.map(|body| {
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counter.inc_by(data.len() as u64);
            }
            frame
        })
        .boxed_unsync()
    })
}

/// Route, authorize and run the handler; an error becomes its spec body. Also returns
/// the route's metrics label.
async fn route_and_run(state: &Arc<AppState>, path: &str, mut req: Req) -> (Resp, &'static str) {
    let method = req.method.clone();
    let parsed = Route::parse(path).and_then(|route| mirror::rename(state, route, &req));
    let (result, label) = match parsed {
        Ok(route) => {
            let label = route.label();
            let upload =
                matches!(route, Route::Uploads(_) | Route::Upload(..)) && method != Method::GET;
            let _in_flight = state.metrics.begin(label, upload);
            let result = match authorize(state, &route, &mut req).await {
                Ok(()) => dispatch(state, route, req).await,
                Err(e) => {
                    state.metrics.auth_failed(label);
                    Err(e)
                }
            };
            (result, label)
        }
        Err(e) => (Err(e), "unknown"),
    };
    let resp = result.unwrap_or_else(|e| {
        if e.status.is_server_error() {
            tracing::warn!(%method, %path, code = e.code.as_str(), message = %e.message, "request failed");
        } else if e.status == StatusCode::FORBIDDEN {
            // A policy said no (a quota, an immutable tag, a permission): the operator
            // asked why gets the same reason the client got.
            tracing::info!(%method, %path, code = %e.code.as_str(), reason = %e.message, "request refused");
        }
        e.into_response()
    });
    (resp, label)
}

/// Distribution (gorilla/mux with strict slashes) answers a known URL with a trailing
/// slash by a 301 to the URL without it; seed 003's `/v2/<name>/tags/list/` relies on it.
fn trailing_slash_redirect(path: &str, query: &str) -> Option<String> {
    let trimmed = path.strip_suffix('/')?;
    if trimmed.is_empty() || Route::parse(path).is_ok() || Route::parse(trimmed).is_err() {
        return None;
    }
    Some(if query.is_empty() {
        trimmed.to_owned()
    } else {
        format!("{trimmed}?{query}")
    })
}

/// Establish who is calling and whether they may do what the route needs.
async fn authorize(state: &AppState, route: &Route, req: &mut Req) -> ApiResult<()> {
    let need = access::need(route, &req.method);
    if matches!(need, access::Need::Nothing) {
        return Ok(());
    }
    let authorization = req.header(http::header::AUTHORIZATION).map(str::to_owned);
    req.identity = match state
        .auth
        .identify(authorization.as_deref(), req.peer)
        .await
    {
        Ok(id) => id,
        Err(e) => {
            if let Some(user) = basic_user(authorization.as_deref()) {
                let why = Err(e.to_string());
                audit_login(state, &req.headers, req.peer_addr, &user, "basic", why).await;
            }
            return Err(access::identify_failed(state, req, &need, e));
        }
    };
    // `docker login` checks its credentials with `GET /v2/`: that is the login; every
    // later request repeats them and is recorded by what it does instead.
    if let (access::Need::Login, Some(user)) = (&need, basic_user(authorization.as_deref())) {
        audit_login(state, &req.headers, req.peer_addr, &user, "basic", Ok(())).await;
    }
    let checked = access::check(state, req, &need);
    if let (Err(e), access::Need::Repo(repo, wanted)) = (&checked, &need) {
        let named = req
            .identity
            .name()
            .filter(|_| req.method != Method::GET && req.method != Method::HEAD);
        if let Some(who) = named {
            let source = client_addr(&req.headers, req.peer_addr);
            let outcome = format!("denied: {}", e.message);
            let action = format!("access {wanted}");
            let entry =
                crate::registry::audit::entry(who, &source, &action, repo.as_str(), &outcome);
            state.registry.record(entry).await;
        }
    }
    checked
}

/// The user name of Basic credentials, for the audit log.
fn basic_user(authorization: Option<&str>) -> Option<String> {
    let (scheme, value) = authorization?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    crate::auth::parse_basic(value.trim()).ok().map(|(u, _)| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Digest {
        Digest::sha256_of(b"")
    }

    #[test]
    fn routes_every_resource() {
        let n = |s: &str| s.parse::<RepoName>().unwrap();
        assert_eq!(Route::parse("/v2/").unwrap(), Route::Base);
        assert_eq!(Route::parse("/v2").unwrap(), Route::Base);
        assert_eq!(Route::parse("/v2/_catalog").unwrap(), Route::Catalog);
        assert_eq!(
            Route::parse("/v2/a/b/tags/list").unwrap(),
            Route::Tags(n("a/b"))
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads/manifests/latest").unwrap(),
            Route::Manifest(n("a/blobs/uploads"), "latest".parse().unwrap())
        );
        assert_eq!(
            Route::parse(&format!("/v2/a/blobs/{}", d())).unwrap(),
            Route::Blob(n("a"), d())
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads/").unwrap(),
            Route::Uploads(n("a"))
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads").unwrap(),
            Route::Uploads(n("a"))
        );
        let id = Uuid::new_v4();
        assert_eq!(
            Route::parse(&format!("/v2/a/b/blobs/uploads/{id}")).unwrap(),
            Route::Upload(n("a/b"), id)
        );
        assert_eq!(
            Route::parse(&format!("/v2/a/referrers/{}", d())).unwrap(),
            Route::Referrers(n("a"), d())
        );
    }

    #[test]
    fn trailing_slashes_redirect_as_distribution_does() {
        let r = trailing_slash_redirect;
        assert_eq!(
            r("/v2/alpine/tags/list/", "").as_deref(),
            Some("/v2/alpine/tags/list")
        );
        assert_eq!(
            r("/v2/alpine/manifests/latest/", "").as_deref(),
            Some("/v2/alpine/manifests/latest")
        );
        assert_eq!(
            r("/v2/_catalog/", "n=1").as_deref(),
            Some("/v2/_catalog?n=1")
        );
        // Already valid with the slash, or invalid without it: no redirect.
        assert_eq!(r("/v2/", ""), None);
        assert_eq!(r("/v2/a/blobs/uploads/", ""), None);
        assert_eq!(r("/v2/A/tags/list/", ""), None);
        assert_eq!(r("/", ""), None);
        assert_eq!(r("/v2/a/tags/list", ""), None);
    }

    #[test]
    fn rejects_traversal_at_the_edge() {
        for bad in [
            "/v2/../etc/manifests/x",
            "/v2/a/../b/tags/list",
            "/v2/A/tags/list",
        ] {
            assert_eq!(
                Route::parse(bad).unwrap_err().code,
                ErrorCode::NameInvalid,
                "{bad}"
            );
        }
        assert_eq!(
            Route::parse("/v2/a/blobs/sha256:..").unwrap_err().code,
            ErrorCode::DigestInvalid
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads/../../x")
                .unwrap_err()
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            Route::parse("/other").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }
}
