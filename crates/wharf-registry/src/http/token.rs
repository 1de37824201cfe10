//! `/auth/token`: the built-in token server of the Docker registry token protocol.
//!
//! - `GET ?service=&scope=...` with optional Basic credentials (docker's classic flow;
//!   with `offline_token=true`, as `docker login` sends, also a refresh token);
//! - `POST` form `grant_type=password` (user + password) or `grant_type=refresh_token`, the
//!   OAuth2 flow docker uses when logging in, answered with a refresh token that docker
//!   keeps as its `identitytoken`.
//!
//! Each requested scope is granted as far as the access policy allows; anonymous callers get
//! what the policy gives anonymous callers.

use http::{Method, StatusCode};
use serde_json::json;
use wharf_oci::{ErrorCode, RepoName};

use super::error::{ApiError, ApiResult};
use super::response::json_response;
use super::{AppState, Req};
use crate::auth::policy::Actions;
use crate::auth::token::{Grant, Issuer};
use crate::auth::{parse_basic, AuthError, Identity};

const FORM_LIMIT: usize = 64 * 1024;

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::TooManyFailures => ApiError::new(ErrorCode::Toomanyrequests)
            .message(e.to_string())
            .header(http::header::RETRY_AFTER, "60"),
        AuthError::Unavailable(why) => ApiError::new(ErrorCode::Unavailable)
            .message(format!("cannot check credentials now: {why}"))
            .status(StatusCode::SERVICE_UNAVAILABLE),
        e => ApiError::new(ErrorCode::Unauthorized).message(e.to_string()),
    }
}

pub async fn handle(state: &AppState, req: Req) -> ApiResult {
    let Some(issuer) = state.auth.issuer() else {
        return Err(ApiError::new(ErrorCode::Unsupported)
            .message("this registry issues no tokens (set auth.htpasswd.token to enable it)")
            .status(StatusCode::NOT_FOUND));
    };
    if req.method == Method::POST {
        post(state, issuer, req).await
    } else {
        get(state, issuer, req).await
    }
}

fn check_service(issuer: &Issuer, service: Option<&str>) -> ApiResult<()> {
    match service {
        Some(s) if !s.is_empty() && s != issuer.service => Err(ApiError::new(ErrorCode::Denied)
            .message(format!(
                "tokens here are for service {:?}, not {s:?}",
                issuer.service
            ))
            .status(StatusCode::BAD_REQUEST)),
        _ => Ok(()),
    }
}

async fn get(state: &AppState, issuer: &Issuer, req: Req) -> ApiResult {
    check_service(issuer, req.query("service"))?;
    let who = match req.header(http::header::AUTHORIZATION) {
        None => Identity::Anonymous,
        Some(h) => {
            let value = h
                .trim()
                .strip_prefix("Basic ")
                .or_else(|| h.trim().strip_prefix("basic "))
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::Unauthorized)
                        .message("the token endpoint takes Basic credentials")
                })?;
            let (user, password) = parse_basic(value.trim()).map_err(auth_error)?;
            let checked = state.auth.login(req.peer, &user, &password).await;
            audited(state, &req, &user, &checked).await;
            checked.map_err(auth_error)?
        }
    };
    let grants = grants_for(state, &who, &req.query_all("scope"));
    // docker login asks for a refresh token this way, to keep as its identitytoken.
    let offline = req.query("offline_token") == Some("true");
    let refresh = Some(&who)
        .filter(|_| offline)
        .and_then(|w| refresh_for(issuer, w));
    Ok(token_response(issuer, &who, grants, refresh))
}

fn refresh_for(issuer: &Issuer, who: &Identity) -> Option<String> {
    match who {
        // A workload's rights come from its ID token, which a refresh token would
        // outlive: it gets none, so docker sends the ID token again (which expires).
        Identity::User(u) if u.scopes.is_some() => None,
        Identity::User(u) => Some(issuer.refresh_token(&u.name)),
        Identity::Robot(r) => Some(issuer.robot_refresh_token(&r.name)),
        Identity::Anonymous | Identity::Token(_) => None,
    }
}

/// The identity a refresh token stands for, if it still exists (and, for a robot's, is
/// neither revoked nor expired).
async fn refreshed(state: &AppState, issuer: &Issuer, token: &str) -> ApiResult<Identity> {
    let unauthorized = |m: String| ApiError::new(ErrorCode::Unauthorized).message(m);
    let claims = issuer
        .verify_refresh(token)
        .map_err(|e| unauthorized(e.to_string()))?;
    if claims.robot {
        let robots = state
            .auth
            .robots()
            .ok_or_else(|| unauthorized("robot tokens are not accepted here".into()))?;
        let robot = robots.active(&claims.sub).await.map_err(|e| match e {
            crate::auth::robots::Refused::Unavailable(why) => {
                auth_error(AuthError::Unavailable(why))
            }
            e => unauthorized(e.to_string()),
        })?;
        return Ok(Identity::Robot(Box::new(robot)));
    }
    match state.auth.lookup(&claims.sub).await.map_err(auth_error)? {
        Some(who) => Ok(Identity::User(who)),
        None => Err(unauthorized(
            "the refresh token's user no longer exists".into(),
        )),
    }
}

/// Record a credential check of the token endpoint.
async fn audited(state: &AppState, req: &Req, user: &str, checked: &Result<Identity, AuthError>) {
    let result = checked.as_ref().map(drop).map_err(ToString::to_string);
    super::audit_login(state, &req.headers, req.peer_addr, user, "token", result).await;
}

async fn post(state: &AppState, issuer: &Issuer, req: Req) -> ApiResult {
    let peer = req.peer;
    let (headers, peer_addr) = (req.headers.clone(), req.peer_addr);
    let body = req.collect(FORM_LIMIT).await?;
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    check_service(issuer, field("service"))?;
    let scopes: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let who = match field("grant_type") {
        Some("password") => {
            let user = field("username").unwrap_or_default().to_owned();
            let password = field("password").unwrap_or_default();
            let checked = state.auth.login(peer, &user, password).await;
            let result = checked.as_ref().map(drop).map_err(ToString::to_string);
            super::audit_login(state, &headers, peer_addr, &user, "token", result).await;
            checked.map_err(auth_error)?
        }
        Some("refresh_token") => {
            refreshed(state, issuer, field("refresh_token").unwrap_or_default()).await?
        }
        other => {
            return Err(ApiError::new(ErrorCode::Unsupported)
                .message(format!(
                    "grant_type {other:?} is not supported (use password or refresh_token)"
                ))
                .status(StatusCode::BAD_REQUEST))
        }
    };
    let grants = grants_for(state, &who, &scopes);
    let refresh = refresh_for(issuer, &who);
    Ok(token_response(issuer, &who, grants, refresh))
}

fn token_response(
    issuer: &Issuer,
    who: &Identity,
    grants: Vec<Grant>,
    refresh: Option<String>,
) -> super::response::Resp {
    let token = match who {
        Identity::Robot(r) => issuer.robot_access_token(&r.name, grants),
        Identity::User(p) if p.scopes.is_some() => issuer.workload_access_token(&p.name, grants),
        other => issuer.access_token(other.name().unwrap_or(""), grants),
    };
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": issuer.expiration.as_secs(),
    });
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
    }
    json_response(StatusCode::OK, &body)
}

/// Grant each `type:name:actions` scope as far as `who` may (the policy for a user, its
/// scopes for a robot).
fn grants_for(state: &AppState, who: &Identity, scopes: &[String]) -> Vec<Grant> {
    let known = !matches!(who, Identity::Anonymous);
    let mut grants = Vec::new();
    for scope in scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
    {
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let wanted = actions.split(',');
        match kind {
            "repository" => {
                let Ok(repo) = name.parse::<RepoName>() else {
                    continue;
                };
                let granted =
                    Actions::from_words(wanted).intersect(state.auth.allowed(who, repo.as_str()));
                if !granted.is_empty() {
                    let actions = granted.words().into_iter().map(str::to_owned).collect();
                    grants.push(Grant {
                        kind: "repository".into(),
                        name: repo.to_string(),
                        actions,
                    });
                }
            }
            "registry" if name == "catalog" && known => {
                grants.push(Grant {
                    kind: "registry".into(),
                    name: "catalog".into(),
                    actions: vec!["*".into()],
                });
            }
            _ => {}
        }
    }
    grants
}
