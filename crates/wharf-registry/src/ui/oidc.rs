//! Sign-in through an OpenID Connect provider (`auth.oidc`): `/ui/oidc/login` sends the
//! browser to the provider with a fresh `state`, `nonce` and PKCE challenge, kept in a
//! signed cookie that lasts ten minutes; `/ui/oidc/callback` checks the state against it,
//! clears it (so the same callback cannot be used twice), trades the code for an ID token
//! and signs the user in with an ordinary session carrying the token's groups.
//!
//! The flow cookie is SameSite=Lax, not Strict: the provider's redirect back is a
//! cross-site navigation, on which Strict cookies are not sent. For the same reason the
//! callback answers with a page that moves on to `/ui/` itself, so the browser's next
//! request is same-site and carries the (Strict) session cookie just set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue, StatusCode};
use maud::html;
use subtle::ConstantTimeEq;

use super::session::{self, Origin};
use super::Ui;
use crate::auth::oidc::OidcError;
use crate::auth::sso::Flow;

const FLOW: &str = "wharf_oidc";
const FLOW_TTL: Duration = Duration::from_secs(600);

fn flow_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let mut c = format!("{FLOW}={value}; Path=/ui/oidc; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("base64url and hex")
}

impl Ui {
    fn redirect_uri(&self, headers: &HeaderMap) -> String {
        format!(
            "{}/ui/oidc/callback",
            crate::http::base_url(&self.app, headers)
        )
    }

    fn seal_flow(&self, f: &Flow) -> String {
        let expires = (session::now_ms() / 1000 + FLOW_TTL.as_secs()).to_string();
        let mac = self
            .keys
            .flow_mac(&[&f.state, &f.nonce, &f.verifier, &expires]);
        format!("{}.{}.{}.{expires}.{mac}", f.state, f.nonce, f.verifier)
    }

    fn open_flow(&self, value: &str) -> Option<Flow> {
        let parts: Vec<&str> = value.split('.').collect();
        let [state, nonce, verifier, expires, mac] = parts[..] else {
            return None;
        };
        let want = self.keys.flow_mac(&[state, nonce, verifier, expires]);
        if !bool::from(want.as_bytes().ct_eq(mac.as_bytes()))
            || expires.parse::<u64>().ok()? * 1000 <= session::now_ms()
        {
            return None;
        }
        Some(Flow {
            state: state.into(),
            nonce: nonce.into(),
            verifier: verifier.into(),
        })
    }
}

fn oidc_failure(e: &OidcError) -> StatusCode {
    match e {
        OidcError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        OidcError::Rejected(_) => StatusCode::UNAUTHORIZED,
    }
}

pub async fn start(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let who = ui.visitor(&headers).await;
    let Some(oidc) = ui.app.auth.oidc() else {
        return ui.error(
            &who,
            StatusCode::NOT_FOUND,
            "this registry has no OpenID Connect sign-in (auth.oidc)",
        );
    };
    match oidc.start(&ui.redirect_uri(&headers)).await {
        Ok((flow, url)) => {
            let mut resp = Redirect::to(&url).into_response();
            let c = flow_cookie(&ui.seal_flow(&flow), FLOW_TTL.as_secs(), who.secure);
            resp.headers_mut().append(SET_COOKIE, c);
            resp
        }
        Err(e) => ui.error(&who, oidc_failure(&e), &e.to_string()),
    }
}

pub async fn callback(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = ui.visitor(&headers).await;
    let Some(oidc) = ui.app.auth.oidc() else {
        return ui.error(
            &who,
            StatusCode::NOT_FOUND,
            "this registry has no OpenID Connect sign-in (auth.oidc)",
        );
    };
    let flow = session::cookie(&headers, FLOW).and_then(|v| ui.open_flow(v));
    let refuse = |status, message: &str| {
        let mut resp = ui.error(&who, status, message);
        resp.headers_mut()
            .append(SET_COOKIE, flow_cookie("", 0, who.secure));
        resp
    };
    if let Some(e) = q.get("error") {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("the provider refused the sign-in: {e}"),
        );
    }
    let sent = q.get("state").map(String::as_str).unwrap_or_default();
    let Some(flow) = flow.filter(|f| bool::from(f.state.as_bytes().ct_eq(sent.as_bytes()))) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this sign-in is not the one this browser started, has expired or was already used (state mismatch); sign in again",
        );
    };
    let code = q.get("code").map(String::as_str).unwrap_or_default();
    match oidc.finish(code, &ui.redirect_uri(&headers), &flow).await {
        // A provider's user name is the provider's to hand out: it must never become a
        // local account (an htpasswd admin) by sharing its name, as LDAP's cannot.
        Ok(user) if ui.app.auth.user_exists(&user.name) => {
            tracing::warn!(user = %user.name, "OIDC sign-in refused: a local account has that name");
            refuse(
                StatusCode::FORBIDDEN,
                "the provider's user name is a local account's on this registry; sign in \
                 with that account's password, or ask the administrator to rename one of them",
            )
        }
        Ok(user) => {
            tracing::info!(user = %user.name, groups = user.groups.len(), "OIDC sign-in");
            let mut resp = ui.signed_in(&who, user, Origin::Oidc);
            // Same-site from here on: see the module's comment.
            *resp.status_mut() = StatusCode::OK;
            resp.headers_mut().remove(http::header::LOCATION);
            let body = html! {
                (maud::DOCTYPE)
                html lang="en" {
                    head { meta http-equiv="refresh" content="0;url=/ui/"; title { "Signed in · wharf" } }
                    body { p { "Signed in. " a href="/ui/" #continue { "Continue" } } }
                }
            };
            let (parts, _) = resp.into_parts();
            let mut resp = Response::from_parts(parts, axum::body::Body::from(body.into_string()));
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
            h.append(SET_COOKIE, flow_cookie("", 0, who.secure));
            resp
        }
        Err(e) => {
            tracing::warn!(error = %e, "OIDC sign-in refused");
            refuse(oidc_failure(&e), &e.to_string())
        }
    }
}
