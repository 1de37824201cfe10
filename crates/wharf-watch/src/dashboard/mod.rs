//! The dashboard (`--dashboard`): a server-rendered page on the watch HTTP API showing
//! every host and agent (connected or not), their containers with the image they run and
//! the newest candidate, the last check and each container's history; with buttons to
//! check now, update now, approve a held update and roll back. Sign-in is with the API
//! token or a user of an htpasswd file; every form carries a CSRF token.

pub mod auth;
mod page;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use subtle::ConstantTimeEq;

use crate::hosts::protocol::{Command, Reply};
use crate::hosts::HostSet;
use crate::report::SessionReport;
use auth::{Keys, Users};

/// Logs and notifies a report of a session the dashboard started, as any other.
pub type Notify =
    Arc<dyn Fn(SessionReport) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

struct Inner {
    token: String,
    users: Users,
    has_users: bool,
    keys: Keys,
    hosts: Arc<HostSet>,
    notify: Notify,
}

#[derive(Clone)]
pub struct Dashboard(Arc<Inner>);

/// Forms are a few short fields.
const MAX_FORM: usize = 16 * 1024;

/// The dashboard's routes, under `/dashboard`.
pub fn router(
    token: &str,
    users: Option<&Path>,
    hosts: Arc<HostSet>,
    notify: Notify,
) -> Result<Router, String> {
    let (users, has_users) = match users {
        Some(path) => (Users::load(path)?, true),
        None => (Users::default(), false),
    };
    let d = Dashboard(Arc::new(Inner {
        token: token.to_owned(),
        users,
        has_users,
        keys: Keys::default(),
        hosts,
        notify,
    }));
    Ok(Router::new()
        .route("/dashboard", get(overview))
        .route("/dashboard/", get(overview))
        .route("/dashboard/style.css", get(style))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/action", post(act))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .with_state(d))
}

/// Who is asking: their user (signed in) and cookies.
struct Visitor {
    user: Option<String>,
    session: String,
    csrf_cookie: String,
    new_csrf: bool,
}

impl Dashboard {
    fn visitor(&self, headers: &HeaderMap) -> Visitor {
        let session = auth::cookie(headers, auth::SESSION)
            .unwrap_or("")
            .to_owned();
        let user = self.0.keys.open(&session);
        let (csrf_cookie, new_csrf) = match auth::cookie(headers, auth::CSRF) {
            Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                (v.to_owned(), false)
            }
            _ => (auth::random_hex(), true),
        };
        Visitor {
            session: if user.is_some() {
                session
            } else {
                String::new()
            },
            user,
            csrf_cookie,
            new_csrf,
        }
    }

    fn csrf(&self, who: &Visitor) -> String {
        self.0.keys.csrf_token(&who.csrf_cookie, &who.session)
    }

    fn page(&self, who: &Visitor, status: StatusCode, title: &str, body: maud::Markup) -> Response {
        let csrf = self.csrf(who);
        let new = who.new_csrf.then_some(who.csrf_cookie.as_str());
        page::page(status, title, who.user.as_deref(), &csrf, new, body)
    }

    fn login_page(&self, who: &Visitor, status: StatusCode, message: Option<&str>) -> Response {
        let form = page::login_form(&self.csrf(who), self.0.has_users, message);
        self.page(who, status, "Sign in", form)
    }

    /// A 403 page unless the form carries the token bound to this visitor's cookies.
    fn csrf_refusal(&self, who: &Visitor, form: &HashMap<String, String>) -> Option<Response> {
        let sent = form.get("_csrf").map(String::as_str).unwrap_or("");
        if !who.new_csrf && self.0.keys.csrf_ok(sent, &who.csrf_cookie, &who.session) {
            return None;
        }
        let message = "the form's CSRF token is missing or does not match this session: reload the page and try again";
        let body = maud::html! { p.err #error role="alert" { (message) } p { a href="/dashboard" { "Back to the dashboard" } } };
        Some(self.page(who, StatusCode::FORBIDDEN, "Forbidden", body))
    }
}

async fn style() -> Response {
    let mut resp = page::CSS.into_response();
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[derive(serde::Deserialize)]
struct OverviewQuery {
    notice: Option<String>,
}

async fn overview(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let who = d.visitor(&headers);
    if who.user.is_none() {
        return d.login_page(&who, StatusCode::OK, None);
    }
    let views = d.0.hosts.views().await;
    let hosts: Vec<_> = views
        .into_iter()
        .map(|(status, view)| {
            let last = d.0.hosts.last_report(&status.name);
            (status, view, last)
        })
        .collect();
    let body = page::overview(&d.csrf(&who), q.notice.as_deref(), &hosts);
    d.page(&who, StatusCode::OK, "Hosts", body)
}

async fn login(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let who = d.visitor(&headers);
    if let Some(refused) = d.csrf_refusal(&who, &f) {
        return refused;
    }
    let field = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    let user = if !field("token").is_empty() {
        let ok = bool::from(field("token").as_bytes().ct_eq(d.0.token.as_bytes()));
        ok.then(|| "api-token".to_owned())
    } else if d.0.has_users && d.0.users.check(field("username"), field("password")) {
        Some(field("username").to_owned())
    } else {
        None
    };
    let Some(user) = user else {
        tracing::warn!(user = field("username"), "dashboard sign-in refused");
        return d.login_page(
            &who,
            StatusCode::UNAUTHORIZED,
            Some("wrong token, or wrong user name or password"),
        );
    };
    tracing::info!(%user, "signed in to the dashboard");
    let value = d.0.keys.seal(&user);
    let mut resp = see_other("/dashboard");
    let h = resp.headers_mut();
    h.append(
        SET_COOKIE,
        auth::set_cookie(auth::SESSION, &value, Some(auth::session_ttl())),
    );
    resp
}

async fn logout(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let who = d.visitor(&headers);
    if let Some(refused) = d.csrf_refusal(&who, &f) {
        return refused;
    }
    let mut resp = see_other("/dashboard");
    resp.headers_mut()
        .append(SET_COOKIE, auth::set_cookie(auth::SESSION, "", Some(0)));
    resp
}

fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// A button: check now, update now, approve, roll back. Then back to the overview,
/// with what happened.
async fn act(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let who = d.visitor(&headers);
    if who.user.is_none() {
        return d.login_page(&who, StatusCode::UNAUTHORIZED, Some("sign in first"));
    }
    if let Some(refused) = d.csrf_refusal(&who, &f) {
        return refused;
    }
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (what, host, container) = (field("action"), field("host"), field("container"));
    tracing::info!(user = who.user.as_deref().unwrap_or(""), action = %what, %host, %container, "dashboard action");
    let notice = match what.as_str() {
        "check" => d.check(&host).await,
        "update" => d.update(&host, &container).await,
        "approve" => {
            d.ask(
                &host,
                Command::Approve {
                    name: container.clone(),
                },
                &container,
            )
            .await
        }
        "rollback" => {
            d.ask(
                &host,
                Command::Rollback {
                    name: container.clone(),
                    to: None,
                },
                &container,
            )
            .await
        }
        _ => format!("unknown action {what:?}"),
    };
    let query: String = url_encode(&notice);
    see_other(&format!("/dashboard?notice={query}"))
}

impl Dashboard {
    async fn check(&self, host: &str) -> String {
        match self.0.hosts.check_only(Some(host)).await {
            Some(r) => format!(
                "{host}: checked {} containers, {} with a newer image",
                r.scanned(),
                r.count(crate::report::Outcome::Stale)
            ),
            None => format!("{host}: a check is already running; try again shortly"),
        }
    }

    async fn update(&self, host: &str, container: &str) -> String {
        let image = match self.0.hosts.ask(host, Command::Containers).await {
            Ok(Reply::Containers(list)) => list
                .into_iter()
                .find(|c| c.name == container)
                .map(|c| c.image),
            Ok(Reply::Error(e)) | Err(e) => return format!("{host}: {e}"),
            Ok(_) => None,
        };
        let Some(image) = image else {
            return format!("{host} has no container named {container}");
        };
        match self
            .0
            .hosts
            .session(Some(std::slice::from_ref(&image)), true, Some(host))
            .await
        {
            Some(report) => self.told(report, container).await,
            None => format!("{host}: nothing was checked"),
        }
    }

    async fn ask(&self, host: &str, command: Command, container: &str) -> String {
        match self.0.hosts.ask(host, command).await {
            Ok(Reply::Report(report)) => self.told(report, container).await,
            Ok(Reply::Change(change)) => format!(
                "{container} on {host}: {:?} to {}",
                change.kind,
                change.to.digest.as_deref().unwrap_or(&change.to.id)
            )
            .to_lowercase(),
            Ok(Reply::Idle) => format!("{container} on {host}: approved; nothing else to do"),
            Ok(Reply::Error(e)) | Err(e) => format!("{container} on {host}: {e}"),
            Ok(_) => format!("{container} on {host}: done"),
        }
    }

    /// The container's line of `report`, after the report is logged and notified.
    async fn told(&self, report: SessionReport, container: &str) -> String {
        let line = report
            .containers
            .iter()
            .find(|l| l.name == container)
            .map(|l| {
                format!(
                    "{}: {:?}{}",
                    l.label(),
                    l.outcome,
                    l.detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )
            });
        (self.0.notify)(report).await;
        line.unwrap_or_else(|| format!("{container}: not checked (not watched?)"))
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
