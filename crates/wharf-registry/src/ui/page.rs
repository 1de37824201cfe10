//! What every page shares: who is visiting, the layout, the CSRF field, error pages.

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use maud::{html, Markup, DOCTYPE};

use super::{session, style, Ui};
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
    /// `host[:port]` the visitor reached the registry at: the header's name when `ui.title`
    /// is unset, and what `docker pull` lines name.
    pub host: String,
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
            host: self.registry_host(headers),
        }
    }

    /// A full HTML page in the UI's chrome: the header with the registry's name, the
    /// navigation and who is signed in; the stylesheet and favicon from `/ui/`.
    pub fn page(&self, who: &Visitor, status: StatusCode, title: &str, body: Markup) -> Response {
        let name = self.title.as_deref().unwrap_or(&who.host);
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · " (name) }
                    link rel="icon" type="image/svg+xml" href="/ui/favicon.svg";
                    link rel="stylesheet" href=(style::stylesheet_href());
                }
                body {
                    header.top { div.bar {
                        a.brand href="/ui/" { img src="/ui/favicon.svg" alt=""; span #registry { (name) } }
                        (self.nav(who, title))
                    } }
                    main {
                        h1 { (title) }
                        (body)
                    }
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
        h.insert(
            "content-security-policy",
            HeaderValue::from_static(style::CSP),
        );
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
        if who.new_csrf {
            let c = session::set_cookie(session::CSRF, &who.csrf_cookie, None, who.secure);
            h.append(SET_COOKIE, c);
        }
        resp
    }

    /// The navigation, with the link to the page being shown (named by its title) marked.
    fn nav(&self, who: &Visitor, title: &str) -> Markup {
        let rules = who.user().is_some() || !self.app.auth.enabled();
        let links = [
            ("/ui/", "Repositories", "Repositories", true),
            ("/ui/rules", "Rules", "Rules", rules),
            ("/ui/tokens", "Tokens", "Tokens", who.user().is_some()),
            ("/ui/admin/users", "Users", "Users", who.admin),
            ("/ui/admin/policies", "Access", "Access policy", who.admin),
            ("/ui/admin/storage", "Storage", "Storage", who.admin),
            (
                "/ui/admin/replication",
                "Replication",
                "Replication",
                who.admin,
            ),
            ("/ui/gc", "GC", "Garbage collection", who.admin),
            ("/ui/admin/audit", "Audit", "Audit log", who.admin),
        ];
        html! {
            nav.main aria-label="main" {
                @for (href, label, page, shown) in links {
                    @if shown {
                        @if page == title { a.on href=(href) aria-current="page" { (label) } }
                        @else { a href=(href) { (label) } }
                    }
                }
            }
            div.me {
                @match who.user() {
                    Some(u) => {
                        span { "Signed in as " b #user { (u) } }
                        form.inline method="post" action="/ui/logout" {
                            (who.csrf_field(self))
                            button type="submit" #logout { "Sign out" }
                        }
                    }
                    None => { a href="/ui/login" #login { "Sign in" } }
                }
            }
        }
    }

    /// An error page, with the status it deserves and a way back.
    pub fn error(&self, who: &Visitor, status: StatusCode, message: &str) -> Response {
        let title = status.canonical_reason().unwrap_or("Error");
        let body = html! {
            p.err #error role="alert" { (message) }
            p {
                a.button.secondary #back href="/ui/" { "Back to repositories" }
                @if who.user().is_none() && self.app.auth.enabled() && status == StatusCode::FORBIDDEN {
                    " " a.button href="/ui/login" { "Sign in" }
                }
            }
        };
        self.page(who, status, title, body)
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
    /// A form posted by a visitor: who they are and its fields, once its CSRF token checks.
    pub async fn posted(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(Visitor, std::collections::HashMap<String, String>), Response> {
        let who = self.visitor(headers).await;
        let f = super::form(body);
        self.check_csrf(&who, &f)?;
        Ok((who, f))
    }

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
