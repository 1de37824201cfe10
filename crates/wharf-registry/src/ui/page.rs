//! What every page shares: who is visiting, the layout, the CSRF field, error pages.

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use maud::{html, Markup, DOCTYPE};

use super::{session, Ui};
use crate::auth::Identity;

/// Who is asking, from the request's cookies.
pub struct Visitor {
    pub identity: Identity,
    pub admin: bool,
    /// The session cookie's value ("" when signed out): CSRF tokens are bound to it.
    pub session: String,
    /// The CSRF cookie's value, and whether this response must set it.
    pub csrf_cookie: String,
    pub new_csrf: bool,
    /// Whether cookies get `Secure` (wharf terminates TLS, or a proxy in front says https).
    pub secure: bool,
}

impl Visitor {
    pub fn user(&self) -> Option<&str> {
        self.identity.name()
    }

    /// The hidden field every form carries.
    pub fn csrf_field(&self, ui: &Ui) -> Markup {
        html! { input type="hidden" name="_csrf" value=(ui.keys.csrf_token(&self.csrf_cookie, &self.session)); }
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:0 auto;max-width:70em;padding:0 1em}\
nav{display:flex;gap:1em;align-items:center;border-bottom:1px solid #ccc;padding:.5em 0}\
nav .me{margin-left:auto}table{border-collapse:collapse;width:100%}\
td,th{border-bottom:1px solid #eee;padding:.3em;text-align:left;vertical-align:top}\
code,input.pull{font-family:monospace}input.pull{width:100%}.err{color:#a00}\
form.inline{display:inline}h1{overflow-wrap:anywhere}input.pull{box-sizing:border-box}";

impl Ui {
    pub async fn visitor(&self, headers: &HeaderMap) -> Visitor {
        let identity = match session::cookie(headers, session::SESSION) {
            Some(value) => match self.keys.open(value) {
                Some(s) if self.session_valid(&s).await => {
                    Identity::User(crate::auth::Principal::member(s.user, s.groups))
                }
                _ => Identity::Anonymous,
            },
            None => Identity::Anonymous,
        };
        let session = match identity {
            Identity::User(_) => session::cookie(headers, session::SESSION)
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        };
        let (csrf_cookie, new_csrf) = match session::cookie(headers, session::CSRF) {
            Some(v) if v.len() == 64 => (v.to_owned(), false),
            _ => (session::random_hex(), true),
        };
        let base = crate::http::base_url(&self.app, headers);
        Visitor {
            admin: self.is_admin(&identity),
            identity,
            session,
            csrf_cookie,
            new_csrf,
            secure: base.starts_with("https://"),
        }
    }

    /// A full HTML page.
    pub fn page(&self, who: &Visitor, status: StatusCode, title: &str, body: Markup) -> Response {
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · wharf" }
                    // An empty icon: browsers would otherwise ask the registry API for one.
                    link rel="icon" href="data:,";
                    style { (STYLE) }
                }
                body {
                    nav {
                        a href="/ui/" { "Repositories" }
                        @if who.user().is_some() || !self.app.auth.enabled() { a href="/ui/rules" { "Rules" } }
                        @if who.user().is_some() { a href="/ui/tokens" { "Tokens" } }
                        @if who.admin {
                            a href="/ui/admin/users" { "Users" }
                            a href="/ui/admin/policies" { "Access" }
                            a href="/ui/admin/storage" { "Storage" }
                            a href="/ui/gc" { "GC" }
                            a href="/ui/admin/audit" { "Audit" }
                        }
                        span.me {
                            @match who.user() {
                                Some(u) => {
                                    "Signed in as " b #user { (u) } " "
                                    form.inline method="post" action="/ui/logout" {
                                        (who.csrf_field(self))
                                        button type="submit" #logout { "Sign out" }
                                    }
                                }
                                None => { a href="/ui/login" #login { "Sign in" } }
                            }
                        }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        };
        let mut resp = (status, markup.into_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // No script at all; styles only from the page itself; never framed (clickjacking).
        h.insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
        if who.new_csrf {
            let c = session::set_cookie(session::CSRF, &who.csrf_cookie, None, who.secure);
            h.append(SET_COOKIE, c);
        }
        resp
    }

    /// An error page, with the status it deserves.
    pub fn error(&self, who: &Visitor, status: StatusCode, message: &str) -> Response {
        let title = status.canonical_reason().unwrap_or("Error");
        self.page(who, status, title, html! { p.err #error { (message) } })
    }

    /// 403 unless the visitor is an admin.
    pub fn require_admin(&self, who: &Visitor) -> Result<(), Response> {
        if who.admin {
            Ok(())
        } else {
            Err(self.error(
                who,
                StatusCode::FORBIDDEN,
                "this page is for the administrators named in ui.admins",
            ))
        }
    }

    /// 403 unless the form carries the token bound to this visitor's cookies.
    pub fn check_csrf(
        &self,
        who: &Visitor,
        form: &std::collections::HashMap<String, String>,
    ) -> Result<(), Response> {
        let sent = form.get("_csrf").map(String::as_str).unwrap_or("");
        if !who.new_csrf && self.keys.csrf_ok(sent, &who.csrf_cookie, &who.session) {
            return Ok(());
        }
        Err(self.error(
            who,
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or does not match this session: reload the page and try again",
        ))
    }
}
