//! Sign-in without server-side session state, so any number of wharf processes on one store
//! accept each other's sessions: the cookie holds the user, where they signed in (htpasswd,
//! LDAP or an OIDC provider), the groups their directory gave them that `access:` rules
//! name, when it was issued and when it expires, signed with HMAC-SHA256 under a key
//! derived from `http.secret`. Signing out
//! writes a per-user "signed out at" stamp into the store; a session issued before its
//! user's stamp is refused, wherever it is presented.
//!
//! CSRF: every visitor carries a random `wharf_csrf` cookie; a form's token is an HMAC of
//! that cookie and the session cookie, so a token is bound to one browser and one session,
//! and a cross-site page can neither read nor forge it (cookies are SameSite=Strict too).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue, StatusCode};
use maud::html;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{form, Ui, Visitor};
use crate::auth::{AuthError, Identity, Principal};

pub const SESSION: &str = "wharf_session";
pub const CSRF: &str = "wharf_csrf";
/// How long a sign-in lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

type HmacSha256 = Hmac<Sha256>;

pub struct Keys {
    session: [u8; 32],
    csrf: [u8; 32],
    flow: [u8; 32],
}

pub struct Session {
    pub user: String,
    pub origin: Origin,
    pub groups: Vec<String>,
    /// Milliseconds since the epoch.
    pub issued: u64,
}

/// Where a session's user signed in: it decides how the session is checked later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Htpasswd,
    Ldap,
    Oidc,
}

impl Origin {
    fn code(self) -> &'static str {
        match self {
            Origin::Htpasswd => "h",
            Origin::Ldap => "l",
            Origin::Oidc => "o",
        }
    }

    fn from_code(c: &str) -> Option<Origin> {
        match c {
            "h" => Some(Origin::Htpasswd),
            "l" => Some(Origin::Ldap),
            "o" => Some(Origin::Oidc),
            _ => None,
        }
    }
}

fn derive(secret: &[u8], purpose: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

fn mac_hex(key: &[u8; 32], parts: &[&str]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p.as_bytes());
        mac.update(&[0]);
    }
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn random_hex() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS has randomness");
    hex(&b)
}

impl Keys {
    /// Keys for the session and CSRF MACs, derived from `http.secret` (or the process's
    /// random secret when none is configured: then sessions last as long as the process).
    pub fn new(secret: &[u8]) -> Keys {
        Keys {
            session: derive(secret, "wharf ui session v1"),
            csrf: derive(secret, "wharf ui csrf v1"),
            flow: derive(secret, "wharf ui oidc flow v1"),
        }
    }

    /// The MAC of an OIDC sign-in's flow cookie (state, nonce, PKCE verifier, expiry).
    pub fn flow_mac(&self, parts: &[&str]) -> String {
        mac_hex(&self.flow, parts)
    }

    pub fn seal(&self, who: &Principal, origin: Origin, issued: u64) -> String {
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let name = b64.encode(&who.name);
        let groups = b64.encode(who.groups.join("\n"));
        let origin = origin.code();
        let expires = (issued / 1000 + SESSION_TTL.as_secs()).to_string();
        let issued = issued.to_string();
        let mac = mac_hex(&self.session, &[&name, origin, &groups, &issued, &expires]);
        format!("{name}.{origin}.{groups}.{issued}.{expires}.{mac}")
    }

    /// The session a cookie holds, if its signature is good and it has not expired.
    pub fn open(&self, value: &str) -> Option<Session> {
        let parts: Vec<&str> = value.split('.').collect();
        let [name, origin, groups, issued, expires, mac] = parts[..] else {
            return None;
        };
        let want = mac_hex(&self.session, &[name, origin, groups, issued, expires]);
        if !bool::from(want.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        if expires.parse::<u64>().ok()? * 1000 <= now_ms() {
            return None;
        }
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let groups = String::from_utf8(b64.decode(groups).ok()?).ok()?;
        Some(Session {
            user: String::from_utf8(b64.decode(name).ok()?).ok()?,
            origin: Origin::from_code(origin)?,
            groups: groups
                .split('\n')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
            issued: issued.parse().ok()?,
        })
    }

    pub fn csrf_token(&self, csrf_cookie: &str, session: &str) -> String {
        mac_hex(&self.csrf, &[csrf_cookie, session])
    }

    pub fn csrf_ok(&self, sent: &str, csrf_cookie: &str, session: &str) -> bool {
        let want = self.csrf_token(csrf_cookie, session);
        !csrf_cookie.is_empty() && bool::from(want.as_bytes().ct_eq(sent.as_bytes()))
    }
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// HttpOnly, SameSite=Strict, scoped to the UI; Secure under TLS. `max_age` None: until the
/// browser closes.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie values are hex and base64url")
}

impl Ui {
    /// Valid if the user still exists and has not signed out since it was issued. An LDAP
    /// user is looked up (cached): one the directory no longer has is signed out, but a
    /// directory that cannot be reached keeps sessions working. An OIDC session lasts its
    /// time: the provider is not asked again.
    pub async fn session_valid(&self, s: &Session) -> bool {
        let exists = match s.origin {
            Origin::Htpasswd => self.app.auth.user_exists(&s.user),
            Origin::Ldap => !matches!(self.app.auth.lookup(&s.user).await, Ok(None)),
            Origin::Oidc => true,
        };
        if !exists {
            return false;
        }
        match self.app.registry.signed_out_at(&s.user).await {
            Ok(Some(out)) => s.issued > out,
            Ok(None) => true,
            // Unreadable: refuse rather than honour a session that may have been revoked.
            Err(_) => false,
        }
    }

    /// Record, in the store, that `user` signed out now.
    async fn sign_out(&self, user: &str) -> crate::registry::Result<()> {
        self.app.registry.record_sign_out(user, now_ms()).await
    }

    /// Sign `who` in: the session cookie, then on to the repositories. Only the groups
    /// `access:` rules name go into the cookie, which keeps it small whatever the
    /// directory holds.
    pub fn signed_in(&self, who: &Visitor, user: Principal, origin: Origin) -> Response {
        let user = Principal {
            groups: self.app.auth.groups_in_policy(&user.groups),
            ..user
        };
        let value = self.keys.seal(&user, origin, now_ms());
        let mut resp = Redirect::to("/ui/").into_response();
        let c = set_cookie(SESSION, &value, Some(SESSION_TTL.as_secs()), who.secure);
        resp.headers_mut().append(SET_COOKIE, c);
        resp
    }

    fn login_page(&self, who: &Visitor, status: StatusCode, message: Option<&str>) -> Response {
        let can = self.app.auth.takes_passwords();
        self.page(
            who,
            status,
            "Sign in",
            html! {
                @if let Some(m) = message { p.err #error { (m) } }
                @if can {
                    form.card.signin method="post" action="/ui/login" {
                        (who.csrf_field(self))
                        p { label { span { "User" } input type="text" name="username" autocomplete="username" required; } }
                        p { label { span { "Password" } input type="password" name="password" autocomplete="current-password" required; } }
                        p.muted { "The user and password you give " code { "docker login" } "." }
                        button type="submit" #signin { "Sign in" }
                    }
                } @else {
                    p { "This registry has no users (auth.htpasswd or auth.ldap) to sign in with a password." }
                }
                @if self.app.auth.oidc().is_some() {
                    p { a href="/ui/oidc/login" #oidc { "Sign in with OpenID Connect" } }
                }
            },
        )
    }
}

pub async fn login_form(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let who = ui.visitor(&headers).await;
    ui.login_page(&who, StatusCode::OK, None)
}

pub async fn login(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: Bytes,
) -> Response {
    let (who, f) = match ui.posted(&headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (user, password) = (
        f.get("username").map(String::as_str).unwrap_or(""),
        f.get("password").map(String::as_str).unwrap_or(""),
    );
    let checked = ui
        .app
        .auth
        .login(super::peer(&ext).ip(), user, password)
        .await;
    // The UI signs in people: not robot tokens, nor workloads' ID tokens.
    let person =
        |c: &Result<Identity, AuthError>| matches!(c, Ok(Identity::User(p)) if p.scopes.is_none());
    let result = match &checked {
        Ok(_) if person(&checked) => Ok(()),
        Ok(_) => Err("the UI signs in users, not tokens".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    crate::http::audit_login(&ui.app, &headers, super::peer(&ext), user, "ui", result).await;
    let is_person = person(&checked);
    match checked {
        Ok(Identity::User(p)) if is_person => {
            let origin = match ui.app.auth.user_exists(&p.name) {
                true => Origin::Htpasswd,
                false => Origin::Ldap,
            };
            ui.signed_in(&who, p, origin)
        }
        Err(e @ AuthError::TooManyFailures) => {
            ui.login_page(&who, StatusCode::TOO_MANY_REQUESTS, Some(&e.to_string()))
        }
        Err(e @ AuthError::Unavailable(_)) => {
            ui.login_page(&who, StatusCode::SERVICE_UNAVAILABLE, Some(&e.to_string()))
        }
        _ => ui.login_page(
            &who,
            StatusCode::UNAUTHORIZED,
            Some("wrong user name or password"),
        ),
    }
}

pub async fn logout(State(ui): State<Arc<Ui>>, headers: HeaderMap, body: Bytes) -> Response {
    let who = ui.visitor(&headers).await;
    if let Err(r) = ui.check_csrf(&who, &form(&body)) {
        return r;
    }
    if let Some(user) = who.user() {
        if let Err(e) = ui.sign_out(user).await {
            tracing::warn!(user, error = %e, "cannot record a sign-out");
            return ui.error(
                &who,
                StatusCode::INTERNAL_SERVER_ERROR,
                "the sign-out could not be recorded in the store; you are still signed in",
            );
        }
    }
    let mut resp = Redirect::to("/ui/").into_response();
    resp.headers_mut()
        .append(SET_COOKIE, set_cookie(SESSION, "", Some(0), who.secure));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_signed_and_expire() {
        let k = Keys::new(b"secret");
        let alice = Principal::member("alice.b", vec!["devs".into(), "ops".into()]);
        let v = k.seal(&alice, Origin::Ldap, now_ms());
        let s = k.open(&v).unwrap();
        assert_eq!(
            (s.user.as_str(), s.origin, s.groups),
            ("alice.b", Origin::Ldap, alice.groups.clone())
        );
        // Another secret, a changed user, or an old expiry: refused.
        assert!(Keys::new(b"other").open(&v).is_none());
        let forged = v.replacen("YWxpY2UuYg", "Ym9i", 1);
        assert!(k.open(&forged).is_none());
        let forged = v.replacen(".l.", ".h.", 1);
        assert!(k.open(&forged).is_none(), "the origin is signed too");
        let old = k.seal(
            &Principal::local("alice"),
            Origin::Htpasswd,
            now_ms() - SESSION_TTL.as_millis() as u64 - 1000,
        );
        assert!(k.open(&old).is_none());
    }

    #[test]
    fn csrf_tokens_are_bound_to_cookie_and_session() {
        let k = Keys::new(b"secret");
        let t = k.csrf_token("c1", "s1");
        assert!(k.csrf_ok(&t, "c1", "s1"));
        assert!(!k.csrf_ok(&t, "c2", "s1"));
        assert!(!k.csrf_ok(&t, "c1", ""));
        assert!(!k.csrf_ok("", "c1", "s1"));
    }
}
