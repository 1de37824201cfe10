//! Pages for accountability: tokens (an admin's robots and everyone's, a signed-in
//! user's own personal tokens for `docker login`), the audit log with its verdict, and
//! deleting a whole repository. Every form carries the CSRF field; every change is
//! recorded in the audit log by the registry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use maud::{html, Markup};
use wharf_oci::RepoName;

use super::{encode, Ui, Visitor};
use crate::auth::policy::Actions;
use crate::auth::robots::{now_secs, usable};
use crate::auth::{Identity, Principal};
use crate::registry::{Actor, AuditQuery, Error};

/// Records the audit page shows, newest first.
const AUDIT_ROWS: usize = 200;

fn when(secs: Option<u64>) -> String {
    secs.map_or_else(
        || "-".into(),
        |s| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s))
                .to_string()
        },
    )
}

fn refused(e: &Error) -> (StatusCode, String) {
    match e {
        Error::Refused { message, .. } => (StatusCode::BAD_REQUEST, message.clone()),
        other => (StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

/// Whose tokens a visitor manages: an admin's all (None), a user's their own.
fn scope_of(who: &Visitor) -> Option<Option<String>> {
    match who.user() {
        None => None,
        Some(_) if who.admin => Some(None),
        Some(u) => Some(Some(u.to_owned())),
    }
}

async fn tokens_page(ui: &Ui, who: &Visitor, status: StatusCode, note: Option<Markup>) -> Response {
    let Some(owner) = scope_of(who) else {
        return ui.error(who, StatusCode::UNAUTHORIZED, "sign in to manage tokens");
    };
    let tokens = match ui.app.registry.list_tokens(owner.as_deref()).await {
        Ok(t) => t,
        Err(e) => {
            let (s, m) = refused(&e);
            return ui.error(who, s, &m);
        }
    };
    let now = now_secs();
    let body = html! {
        @if let Some(n) = note { (n) }
        @if owner.is_some() {
            p { "Personal tokens log in to docker as you, with no more access than you have: "
                code { "docker login -u <token name> --password-stdin" } "." }
        }
        table #tokens {
            thead { tr { th { "Name" } th { "Owner" } th { "Scopes" } th { "Expires" } th { "Last used" } th { "State" } th {} } }
            tbody { @for t in &tokens {
                @let state = usable(t, now).map_or_else(|e| e.to_string(), |_| "active".to_owned());
                tr {
                    td.name { (t.name) }
                    td { (t.owner.as_deref().unwrap_or("-")) }
                    td { code { (t.scopes.join(" ")) } }
                    td { (when(t.expires)) }
                    td { (when(t.last_used)) }
                    td.state { (state) }
                    td { @if t.revoked.is_none() {
                        form.inline method="post" action="/ui/tokens" {
                            (who.csrf_field(ui))
                            input type="hidden" name="action" value="revoke";
                            input type="hidden" name="name" value=(t.name);
                            button type="submit" { "Revoke" }
                        }
                    } }
                }
            } }
        }
        h2 { "New token" }
        form #newtoken method="post" action="/ui/tokens" {
            (who.csrf_field(ui))
            input type="hidden" name="action" value="create";
            label { "Name " input type="text" name="name" required; } " "
            label { "Scope " input type="text" name="scope" required placeholder="team/*:pull,push"; } " "
            label { "Days " input type="number" name="days" min="1" value="90"; } " "
            @if who.admin { label { input type="checkbox" name="robot" value="1"; " Robot (owned by no user; its scopes alone bound it)" } " " }
            button type="submit" #create { "Create" }
        }
    };
    ui.page(who, status, "Tokens", body)
}

pub async fn tokens(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let who = ui.visitor(&headers).await;
    tokens_page(&ui, &who, StatusCode::OK, None).await
}

pub async fn change_token(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: Bytes,
) -> Response {
    let (who, f) = match ui.posted(&headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(owner) = scope_of(&who) else {
        return ui.error(&who, StatusCode::UNAUTHORIZED, "sign in to manage tokens");
    };
    let source = crate::http::client_addr(&headers, super::peer(&ext));
    let actor = Actor {
        name: who.user().unwrap_or_default(),
        source: &source,
    };
    let get = |k: &str| f.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let registry = &ui.app.registry;
    match get("action").as_str() {
        "create" => {
            // Personal unless an admin asks for a robot, which no user owns.
            let me = match &who.identity {
                Identity::User(p) => p.clone(),
                _ => Principal::local(who.user().unwrap_or_default()),
            };
            let owner = (!(who.admin && f.contains_key("robot"))).then_some(me);
            // A personal token's name carries its owner's, so no user takes another's.
            let name = match &owner {
                Some(u) => format!("{}+{}", u.name, get("name")),
                None => get("name"),
            };
            // Ten years at most: beyond that the product overflows the clock.
            let days = get("days")
                .parse::<u64>()
                .ok()
                .filter(|d| (1..=3_650).contains(d));
            let lifetime = days.map(|d| Duration::from_secs(d * 86_400));
            let scopes = vec![get("scope")];
            match registry
                .create_token(actor, &name, owner.as_ref(), &scopes, lifetime)
                .await
            {
                Ok((record, secret)) => {
                    let note = html! { div #created {
                        p { "Token " b { (record.name) } " created. Its secret is shown once; copy it now:" }
                        input.pull #secret type="text" readonly value=(secret);
                    } };
                    tokens_page(&ui, &who, StatusCode::OK, Some(note)).await
                }
                Err(e) => {
                    let (s, m) = refused(&e);
                    tokens_page(&ui, &who, s, Some(html! { p.err #message { (m) } })).await
                }
            }
        }
        "revoke" => match registry
            .revoke_token(actor, &get("name"), owner.as_deref())
            .await
        {
            Ok(()) => Redirect::to("/ui/tokens").into_response(),
            Err(e) => {
                let (s, m) = refused(&e);
                tokens_page(&ui, &who, s, Some(html! { p.err #message { (m) } })).await
            }
        },
        _ => ui.error(&who, StatusCode::BAD_REQUEST, "unknown action"),
    }
}

pub async fn audit(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let who = ui.visitor(&headers).await;
    if let Err(r) = ui.require_admin(&who) {
        return r;
    }
    let registry = &ui.app.registry;
    let (records, verdict) = match (
        registry.audit_records(&AuditQuery::default()).await,
        registry.verify_audit().await,
    ) {
        (Ok(r), Ok(v)) => (r, v),
        (Err(e), _) | (_, Err(e)) => {
            let (s, m) = refused(&e);
            return ui.error(&who, s, &m);
        }
    };
    let body = html! {
        @match &verdict {
            Ok(n) => p #verdict { "Intact: " (n) " records, each holding the hash of the one before." },
            Err(b) => p.err #verdict { "Broken at record " (b.position) ": " (b.why) },
        }
        table #audit {
            thead { tr { th { "#" } th { "Time" } th { "Actor" } th { "Source" } th { "Action" } th { "Target" } th { "Outcome" } } }
            tbody { @for r in records.iter().rev().take(AUDIT_ROWS) {
                tr {
                    td { (r.seq) } td { (r.entry.time) } td.actor { (r.entry.actor) } td { (r.entry.source) }
                    td.action { (r.entry.action) } td { code { (r.entry.target) } } td { (r.entry.outcome) }
                }
            } }
        }
    };
    ui.page(&who, StatusCode::OK, "Audit log", body)
}

/// The repository a visitor may delete whole, or the page saying why not.
async fn repo_deletable(
    ui: &Ui,
    who: &Visitor,
    f: &HashMap<String, String>,
) -> Result<RepoName, Response> {
    let Some(repo) = f.get("name").and_then(|n| n.parse::<RepoName>().ok()) else {
        return Err(ui.error(who, StatusCode::BAD_REQUEST, "name a repository"));
    };
    if let Err(e) = ui.app.registry.writable(Some(&repo), true).await {
        let (_, m) = refused(&e);
        return Err(ui.error(who, StatusCode::METHOD_NOT_ALLOWED, &m));
    }
    if !ui.allowed(who, repo.as_str()).contains(Actions::DELETE) {
        return Err(ui.error(
            who,
            StatusCode::FORBIDDEN,
            &format!("you may not delete in {repo}"),
        ));
    }
    Ok(repo)
}

pub async fn confirm_delete_repo(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = ui.visitor(&headers).await;
    let repo = match repo_deletable(&ui, &who, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let body = html! {
        p { "Delete the repository " code { (repo) } " with every tag and manifest in it? Garbage collection then frees its blobs." }
        form method="post" action="/ui/delete-repository" {
            (who.csrf_field(&ui))
            input type="hidden" name="name" value=(repo.as_str());
            button type="submit" #confirm { "Delete repository" }
            " " a href={ "/ui/repo?" (encode(&[("name", repo.as_str())])) } { "Cancel" }
        }
    };
    ui.page(&who, StatusCode::OK, "Delete repository", body)
}

pub async fn delete_repo(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: Bytes,
) -> Response {
    let (who, f) = match ui.posted(&headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let repo = match repo_deletable(&ui, &who, &f).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let actor = who.user().unwrap_or_default();
    let o = crate::http::request_origin(&ui.app, &headers, super::peer(&ext), "DELETE", actor);
    match ui.app.registry.delete_repository(&o, &repo).await {
        Ok(Some(_)) => Redirect::to("/ui/").into_response(),
        Ok(None) => ui.error(
            &who,
            StatusCode::NOT_FOUND,
            "nothing to delete: it is already gone",
        ),
        Err(Error::Refused { message, .. }) => ui.error(&who, StatusCode::FORBIDDEN, &message),
        Err(e) => ui.error(&who, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
