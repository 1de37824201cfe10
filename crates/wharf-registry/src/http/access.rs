//! The gate in front of every handler: what each route needs, and the 401/403/429 answers
//! (with `WWW-Authenticate` challenges) when the caller does not have it.

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, Method, StatusCode};
use wharf_oci::{ErrorCode, RepoName};

use super::error::ApiError;
use super::{AppState, Req, Route};
use crate::auth::policy::Actions;
use crate::auth::{AuthError, Identity};

/// What a request needs from its caller.
pub enum Need {
    /// Nothing: the token endpoint authenticates by itself.
    Nothing,
    /// To be known (`GET /v2/`), when auth is on.
    Login,
    Catalog,
    Repo(RepoName, Actions),
}

pub fn need(route: &Route, method: &Method) -> Need {
    let repo = |r: &RepoName, a: Actions| Need::Repo(r.clone(), a);
    let read = matches!(*method, Method::GET | Method::HEAD);
    match route {
        Route::Token => Need::Nothing,
        Route::Base => Need::Login,
        // The event stream names repositories as the catalog does, so it is guarded alike.
        Route::Catalog | Route::Events => Need::Catalog,
        Route::Tags(r) | Route::Referrers(r, _) => repo(r, Actions::PULL),
        Route::Manifest(r, _) | Route::BadReference(r, _) | Route::Blob(r, _) if read => {
            repo(r, Actions::PULL)
        }
        Route::Manifest(r, _) | Route::BadReference(r, _) | Route::Blob(r, _)
            if *method == Method::DELETE =>
        {
            repo(r, Actions::DELETE)
        }
        // Pushing reads too: clients HEAD what exists before they upload.
        Route::Manifest(r, _) | Route::BadReference(r, _) | Route::Blob(r, _) => {
            repo(r, Actions::PULL | Actions::PUSH)
        }
        Route::Uploads(r) | Route::Upload(r, _) => repo(r, Actions::PULL | Actions::PUSH),
        Route::Repository(r) => repo(r, Actions::DELETE),
    }
}

/// The registry's external base URL: `http.host` if set, else what the client (or a
/// TLS-terminating proxy in front, via `X-Forwarded-Proto`/`-Host`) used to reach us.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(host) = &state.base_url {
        return host.trim_end_matches('/').to_owned();
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let scheme = first("x-forwarded-proto").unwrap_or(if state.tls { "https" } else { "http" });
    let host = first("x-forwarded-host")
        .or_else(|| first("host"))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

fn scope_for(need: &Need) -> Option<String> {
    match need {
        Need::Repo(r, a) => Some(format!("repository:{r}:{a}")),
        Need::Catalog => Some("registry:catalog:*".to_owned()),
        _ => None,
    }
}

fn unauthorized(
    state: &AppState,
    req: &Req,
    need: &Need,
    insufficient: bool,
    message: String,
) -> ApiError {
    let base = base_url(state, &req.headers);
    let mut err = ApiError::new(ErrorCode::Unauthorized).message(message);
    if let Some(challenge) = state
        .auth
        .challenge(&base, scope_for(need).as_deref(), insufficient)
    {
        err = err.header(WWW_AUTHENTICATE, challenge);
    }
    if let Need::Repo(r, a) = need {
        err = err.detail(serde_json::json!([{ "Type": "repository", "Name": r.as_str(), "Action": a.to_string() }]));
    }
    err
}

pub fn identify_failed(state: &AppState, req: &Req, need: &Need, e: AuthError) -> ApiError {
    match e {
        AuthError::TooManyFailures => ApiError::new(ErrorCode::Toomanyrequests)
            .message(e.to_string())
            .header(http::header::RETRY_AFTER, "60"),
        AuthError::Unavailable(why) => ApiError::new(ErrorCode::Unavailable)
            .message(format!("cannot check credentials now: {why}"))
            .status(StatusCode::SERVICE_UNAVAILABLE),
        other => unauthorized(state, req, need, false, other.to_string()),
    }
}

/// Ok if `req.identity` may do what `need` says.
pub fn check(state: &AppState, req: &Req, need: &Need) -> Result<(), ApiError> {
    let who = &req.identity;
    let anonymous = matches!(who, Identity::Anonymous);
    match need {
        Need::Nothing => Ok(()),
        Need::Login if anonymous && state.auth.enabled() => Err(unauthorized(
            state,
            req,
            need,
            false,
            "authentication required".into(),
        )),
        Need::Login => Ok(()),
        Need::Catalog if state.auth.may_list_catalog(who) => Ok(()),
        Need::Catalog => Err(unauthorized(
            state,
            req,
            need,
            !anonymous,
            "listing the catalog needs authentication".into(),
        )),
        Need::Repo(repo, wanted) => {
            let have = state.auth.allowed(who, repo.as_str());
            if have.contains(*wanted) {
                return Ok(());
            }
            let message = format!(
                "{wanted} on {repo} is not allowed (allowed: {})",
                if have.is_empty() {
                    "nothing".into()
                } else {
                    have.to_string()
                }
            );
            match who {
                // Basic users and tokens cannot get more by authenticating again.
                Identity::User(_) | Identity::Robot(_) => Err(ApiError::new(ErrorCode::Denied)
                    .message(message)
                    .status(StatusCode::FORBIDDEN)),
                Identity::Anonymous => Err(unauthorized(state, req, need, false, message)),
                Identity::Token(_) => Err(unauthorized(state, req, need, true, message)),
            }
        }
    }
}
