//! The web UI at `/ui/`: server-rendered HTML that works without JavaScript.
//!
//! Templates are maud's `html!` macros: Rust expressions checked at compile time, escaping
//! every interpolated value by default, with no template files to ship or a second syntax
//! to learn (askama would need both). The UI reuses the registry's own auth: a signed-in
//! user (htpasswd, LDAP or OIDC, with their directory's groups) is `Identity::User`, anyone else is anonymous, and every page shows only
//! what `Auth::allowed` lets that identity pull, as `/v2/_catalog` does.

// A handler's early return is a whole error page: boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod actions;
mod admin;
mod browse;
mod gc;
mod identity;
mod manifest;
mod oidc;
mod page;
mod replication;
mod rules;
mod session;
mod signatures;
pub mod style;
mod widgets;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use http::HeaderMap;

use crate::auth::policy::Actions;
use crate::auth::Identity;
use crate::config::UiConfig;
use crate::http::AppState;

pub use self::page::Visitor;

/// Rows per page: a page's size does not grow with the number of tags or repositories.
pub const PAGE: usize = 50;

pub struct Ui {
    app: Arc<AppState>,
    admins: Vec<String>,
    keys: session::Keys,
    /// `ui.title`: the header's name for the registry.
    title: Option<String>,
}

pub fn router(app: Arc<AppState>, config: &UiConfig) -> Router {
    let ui = Arc::new(Ui {
        keys: session::Keys::new(&app.upload_secret),
        admins: config.admins.clone(),
        title: config.title.clone(),
        app,
    });
    Router::new()
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::permanent("/ui/") }),
        )
        .route("/ui/", get(browse::repositories))
        .route("/ui/repo", get(browse::tags))
        .route("/ui/manifest", get(manifest::manifest))
        .route("/ui/style.css", get(style::stylesheet))
        .route("/ui/favicon.svg", get(style::favicon))
        .route(
            "/ui/delete",
            get(actions::confirm_delete).post(actions::delete),
        )
        .route("/ui/gc", get(gc::gc_form).post(gc::gc_run))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/oidc/login", get(oidc::start))
        .route("/ui/oidc/callback", get(oidc::callback))
        .route(
            "/ui/admin/users",
            get(admin::users).post(admin::change_user),
        )
        .route("/ui/admin/policies", get(admin::policies))
        .route("/ui/admin/storage", get(admin::storage))
        .route("/ui/admin/replication", get(replication::replication))
        .route("/ui/rules", get(rules::rules))
        .route(
            "/ui/tokens",
            get(identity::tokens).post(identity::change_token),
        )
        .route("/ui/admin/audit", get(identity::audit))
        .route(
            "/ui/delete-repository",
            get(identity::confirm_delete_repo).post(identity::delete_repo),
        )
        .with_state(ui.clone())
        .layer(axum::middleware::from_fn(move |req, next| {
            as_the_api_does(ui.clone(), req, next)
        }))
}

/// What the API does for every response, done for the UI's too: request metrics,
/// `http.headers`, and a line in the access log when `log.accesslog` asks for one.
async fn as_the_api_does(
    ui: Arc<Ui>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let (method, path, peer) = (
        req.method().clone(),
        req.uri().path().to_owned(),
        peer(req.extensions()),
    );
    let mut resp = next.run(req).await;
    // One `ui` handler label in the request metrics, beside registry:2's route names.
    ui.app.metrics.answered(
        "ui",
        method.as_str(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    for (name, value) in &ui.app.extra_headers {
        resp.headers_mut().append(name.clone(), value.clone());
    }
    if ui.app.access_log {
        tracing::info!(
            peer = %peer.ip(),
            %method,
            %path,
            status = resp.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
    }
    resp
}

impl Ui {
    /// What `who` may do in `repo`.
    fn allowed(&self, who: &Visitor, repo: &str) -> Actions {
        self.app.auth.allowed(&who.identity, repo)
    }

    fn may_pull(&self, who: &Visitor, repo: &str) -> bool {
        self.allowed(who, repo).contains(Actions::PULL)
    }

    fn is_admin(&self, identity: &Identity) -> bool {
        matches!(identity, Identity::User(u) if self.admins.contains(&u.name))
    }

    /// `host[:port]` as a `docker pull` line names this registry.
    fn registry_host(&self, headers: &HeaderMap) -> String {
        let base = crate::http::base_url(&self.app, headers);
        base.split_once("://")
            .map_or(base.as_str(), |(_, h)| h)
            .to_owned()
    }
}

/// The client's address, which the server put in the request's extensions.
fn peer(ext: &http::Extensions) -> SocketAddr {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0)
}

/// A form body's fields (`application/x-www-form-urlencoded`).
fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// A query string or form built from pairs, every value encoded.
fn encode(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    s.finish()
}
