//! Admin pages: users (bcrypt htpasswd entries), the access policy (read only), storage.
//! Admins are the users named in `ui.admins`; there is no self-registration.

use std::sync::Arc;

use axum::body::Bytes;
use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use maud::{html, Markup};
use wharf_oci::units::human_bytes;

use super::widgets::notice;
use super::{form, Ui, Visitor};
use crate::auth::htpasswd_file;

pub(super) async fn admin(ui: &Ui, headers: &HeaderMap) -> Result<Visitor, Response> {
    let who = ui.visitor(headers).await;
    ui.require_admin(&who)?;
    Ok(who)
}

fn users_page(
    ui: &Ui,
    who: &Visitor,
    status: StatusCode,
    message: Option<&str>,
    done: Markup,
) -> Response {
    let Some(users) = ui.app.auth.htpasswd() else {
        return ui.error(
            who,
            StatusCode::NOT_FOUND,
            "this registry has no htpasswd file",
        );
    };
    let names = users.user_names();
    let body = html! {
        (done)
        @if let Some(m) = message { p.err #message role="alert" { (m) } }
        p { "Users of " code { (users.path().display()) } " (bcrypt). Admins: " (ui.admins.join(", ")) "." }
        table.list #users {
            thead { tr { th { "User" } th { "New password" } th {} } }
            tbody { @for u in &names {
                tr {
                    td.name.main { (u) }
                    td data-label="New password" { form.inline method="post" action="/ui/admin/users" {
                        (who.csrf_field(ui))
                        input type="hidden" name="action" value="reset";
                        input type="hidden" name="username" value=(u);
                        input type="password" name="password" required aria-label={ "new password for " (u) };
                        " " button type="submit" { "Reset password" }
                    } }
                    td data-label="" { form.inline method="post" action="/ui/admin/users" {
                        (who.csrf_field(ui))
                        input type="hidden" name="action" value="delete";
                        input type="hidden" name="username" value=(u);
                        button.danger type="submit" { "Delete" }
                    } }
                }
            } }
        }
        h2 { "Add a user" }
        form.toolbar.card #add method="post" action="/ui/admin/users" {
            (who.csrf_field(ui))
            input type="hidden" name="action" value="add";
            label { "User " input type="text" name="username" required; } " "
            label { "Password " input type="password" name="password" required; } " "
            button type="submit" #adduser { "Add" }
        }
    };
    ui.page(who, status, "Users", body)
}

pub async fn users(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match admin(&ui, &headers).await {
        Ok(who) => users_page(&ui, &who, StatusCode::OK, None, notice(&q)),
        Err(r) => r,
    }
}

pub async fn change_user(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: Bytes,
) -> Response {
    let who = match admin(&ui, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let f = form(&body);
    if let Err(r) = ui.check_csrf(&who, &f) {
        return r;
    }
    let Some(users) = ui.app.auth.htpasswd() else {
        return ui.error(
            &who,
            StatusCode::NOT_FOUND,
            "this registry has no htpasswd file",
        );
    };
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (action, user, password) = (get("action"), get("username"), get("password"));
    let exists = users.user_names().contains(&user);
    let refuse = |m: &str| users_page(&ui, &who, StatusCode::BAD_REQUEST, Some(m), html! {});
    let file = users.path().to_owned();
    let done = match action.as_str() {
        "add" if exists => return refuse("that user exists already: reset their password instead"),
        "reset" | "delete" if !exists => return refuse("no such user"),
        "add" | "reset" => {
            let (u, p) = (user.clone(), password);
            tokio::task::spawn_blocking(move || htpasswd_file::set_password(&file, &u, &p)).await
        }
        "delete" => {
            let u = user.clone();
            tokio::task::spawn_blocking(move || htpasswd_file::delete_user(&file, &u).map(drop))
                .await
        }
        _ => return refuse("unknown action"),
    };
    let result = match &done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(crate::registry::Error::refused(
            wharf_oci::ErrorCode::Denied,
            e.clone(),
        )),
        Err(e) => Err(crate::registry::Error::refused(
            wharf_oci::ErrorCode::Unknown,
            e.to_string(),
        )),
    };
    let source = crate::http::client_addr(&headers, super::peer(&ext));
    let actor = crate::registry::Actor {
        name: who.user().unwrap_or_default(),
        source: &source,
    };
    let audited = format!("user {action}");
    ui.app
        .registry
        .record_as(actor, &audited, &user, &result)
        .await;
    match done {
        Ok(Ok(())) => {
            users.reload_now();
            if action == "delete" {
                revoke_tokens_of(&ui, actor, &user).await;
            }
            tracing::info!(
                admin = who.user().unwrap_or_default(),
                user,
                action,
                "user changed in the UI"
            );
            let done = match action.as_str() {
                "add" => "user-added",
                "reset" => "user-reset",
                _ => "user-deleted",
            };
            let back = super::encode(&[("done", done), ("user", &user)]);
            Redirect::to(&format!("/ui/admin/users?{back}")).into_response()
        }
        Ok(Err(e)) => refuse(&e),
        Err(e) => ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub async fn policies(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let who = match admin(&ui, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let glob = |g: &crate::auth::policy::RepoGlob| format!("{g:?}").trim_matches('"').to_owned();
    let body = match ui.app.auth.policy() {
        None => {
            html! { p { "No access policy (access:): every signed-in user may pull, push and delete everywhere"
            @if !ui.app.auth.enabled() { ", and so may anonymous callers (no auth is configured)" } "." } }
        }
        Some(p) => html! {
            @if !p.groups.is_empty() {
                h2 { "Groups" }
                table.list { tbody { @for (g, members) in &p.groups { tr { td.main { (g) } td data-label="Members" { (members.join(", ")) } } } } }
            }
            h2 { "Rules" }
            table.list #rules {
                thead { tr { th { "Repositories" } th { "Users" } th { "Groups" } th { "Anonymous" } th { "Actions" } } }
                tbody { @for r in &p.rules {
                    tr {
                        td.main { (r.repositories.iter().map(glob).collect::<Vec<_>>().join(", ")) }
                        td data-label="Users" { (r.users.join(", ")) }
                        td data-label="Groups" { (r.groups.join(", ")) }
                        td data-label="Anonymous" { @if r.anonymous { "yes" } }
                        td data-label="Actions" { (r.actions.to_string()) }
                    }
                } }
            }
        },
    };
    ui.page(&who, StatusCode::OK, "Access policy", body)
}

pub async fn storage(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let who = match admin(&ui, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let s = match ui.app.registry.storage_summary().await {
        Ok(s) => s,
        Err(e) => return ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let body = html! {
        dl.facts.card #storage {
            dt { "Storage" } dd { code { (s.describe) } }
            dt { "Repositories" } dd { (s.repositories) }
            dt { "Blobs" } dd #blobcount { (s.blobs) }
            dt { "Blob bytes (shared layers once)" } dd { (human_bytes(s.blob_bytes)) }
            dt { "Uploads in progress" } dd { (s.uploads) " (" (human_bytes(s.upload_bytes)) ")" }
            dt { "Deletes" } dd { @if s.rules.delete_enabled { "enabled" } @else { "disabled (storage.delete.enabled)" } }
            dt { "Read-only" } dd { @if s.rules.read_only { "yes" } @else { "no" } }
        }
    };
    ui.page(&who, StatusCode::OK, "Storage", body)
}

/// A deleted user's personal tokens go with them: a token is never more than its owner.
async fn revoke_tokens_of(ui: &Ui, actor: crate::registry::Actor<'_>, user: &str) {
    let registry = &ui.app.registry;
    let tokens = match registry.list_tokens(Some(user)).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(user, error = %e, "the deleted user's tokens could not be listed");
            return;
        }
    };
    for t in tokens.iter().filter(|t| t.revoked.is_none()) {
        if let Err(e) = registry.revoke_token(actor, &t.name, Some(user)).await {
            tracing::warn!(token = %t.name, error = %e, "a deleted user's token was not revoked");
        }
    }
}
