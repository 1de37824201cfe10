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
use crate::auth::{parse_basic, AuthError};

const FORM_LIMIT: usize = 64 * 1024;

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::TooManyFailures => ApiError::new(ErrorCode::Toomanyrequests)
            .message(e.to_string())
            .header(http::header::RETRY_AFTER, "60"),
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
    let user = match req.header(http::header::AUTHORIZATION) {
        None => None,
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
            state
                .auth
                .login(req.peer, &user, &password)
                .await
                .map_err(auth_error)?;
            Some(user)
        }
    };
    let grants = grants_for(state, user.as_deref(), &req.query_all("scope"));
    // docker login asks for a refresh token this way, to keep as its identitytoken.
    let offline = req.query("offline_token") == Some("true");
    let refresh = user
        .as_deref()
        .filter(|_| offline)
        .map(|u| issuer.refresh_token(u));
    Ok(token_response(issuer, user.as_deref(), grants, refresh))
}

async fn post(state: &AppState, issuer: &Issuer, req: Req) -> ApiResult {
    let peer = req.peer;
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
    let user = match field("grant_type") {
        Some("password") => {
            let user = field("username").unwrap_or_default().to_owned();
            state
                .auth
                .login(peer, &user, field("password").unwrap_or_default())
                .await
                .map_err(auth_error)?;
            user
        }
        Some("refresh_token") => {
            let token = field("refresh_token").unwrap_or_default();
            let claims = issuer
                .verify_refresh(token)
                .map_err(|e| ApiError::new(ErrorCode::Unauthorized).message(e.to_string()))?;
            if !state.auth.user_exists(&claims.sub) {
                return Err(ApiError::new(ErrorCode::Unauthorized)
                    .message("the refresh token's user no longer exists"));
            }
            claims.sub
        }
        other => {
            return Err(ApiError::new(ErrorCode::Unsupported)
                .message(format!(
                    "grant_type {other:?} is not supported (use password or refresh_token)"
                ))
                .status(StatusCode::BAD_REQUEST))
        }
    };
    let grants = grants_for(state, Some(&user), &scopes);
    let refresh = issuer.refresh_token(&user);
    Ok(token_response(issuer, Some(&user), grants, Some(refresh)))
}

fn token_response(
    issuer: &Issuer,
    user: Option<&str>,
    grants: Vec<Grant>,
    refresh: Option<String>,
) -> super::response::Resp {
    let token = issuer.access_token(user.unwrap_or(""), grants);
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

/// Grant each `type:name:actions` scope as far as the policy allows `user`.
fn grants_for(state: &AppState, user: Option<&str>, scopes: &[String]) -> Vec<Grant> {
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
                let granted = Actions::from_words(wanted)
                    .intersect(state.auth.policy_allows(user, repo.as_str()));
                if !granted.is_empty() {
                    let actions = granted.words().into_iter().map(str::to_owned).collect();
                    grants.push(Grant {
                        kind: "repository".into(),
                        name: repo.to_string(),
                        actions,
                    });
                }
            }
            "registry" if name == "catalog" && user.is_some() => {
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
