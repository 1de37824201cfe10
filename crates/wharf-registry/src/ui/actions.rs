//! Deleting a tag or manifest: confirmed, policy-checked, then confirmed back.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use maud::html;
use wharf_oci::{Reference, RepoName};

use super::{encode, Ui, Visitor};
use crate::auth::policy::Actions;
use crate::registry::events::Origin;

/// The repository and reference to delete, if the visitor may delete there and the
/// registry allows deletes at all.
async fn deletable(
    ui: &Ui,
    who: &Visitor,
    f: &HashMap<String, String>,
) -> Result<(RepoName, Reference), Response> {
    let bad = |status, msg: &str| Err(ui.error(who, status, msg));
    let (Some(repo), Some(reference)) = (
        f.get("name").and_then(|n| n.parse::<RepoName>().ok()),
        f.get("ref").and_then(|r| r.parse::<Reference>().ok()),
    ) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "name a repository and a tag or digest",
        );
    };
    // The registry's own rules first (deletes disabled, read-only, a cache), in its words.
    match ui.app.registry.writable(Some(&repo), true).await {
        Ok(()) => {}
        Err(crate::registry::Error::Refused { message, .. }) => {
            return bad(StatusCode::METHOD_NOT_ALLOWED, &message)
        }
        Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
    if !ui.allowed(who, repo.as_str()).contains(Actions::DELETE) {
        return bad(
            StatusCode::FORBIDDEN,
            &format!("you may not delete in {repo}"),
        );
    }
    Ok((repo, reference))
}

pub async fn confirm_delete(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = ui.visitor(&headers).await;
    let (repo, reference) = match deletable(&ui, &who, &q).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let what = match &reference {
        Reference::Tag(t) => {
            format!("the tag {repo}:{t} (the manifest stays, reachable by digest)")
        }
        Reference::Digest(d) => format!("the manifest {repo}@{d} and every tag pointing at it"),
    };
    let body = html! {
        div.card {
            p { "Delete " (what) "?" }
            form method="post" action="/ui/delete" {
                (who.csrf_field(&ui))
                input type="hidden" name="name" value=(repo.as_str());
                input type="hidden" name="ref" value=(reference.to_string());
                button.danger type="submit" #confirm { "Delete" }
                " " a.button.secondary href={ "/ui/repo?" (encode(&[("name", repo.as_str())])) } { "Cancel" }
            }
        }
    };
    ui.page(&who, StatusCode::OK, "Delete", body)
}

/// Who made the change, for the registry's delete event, as the API records it.
fn origin(ui: &Ui, who: &Visitor, headers: &HeaderMap, ext: &http::Extensions) -> Origin {
    let actor = who.user().unwrap_or_default();
    crate::http::request_origin(&ui.app, headers, super::peer(ext), "DELETE", actor)
}

pub async fn delete(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    ext: http::Extensions,
    body: Bytes,
) -> Response {
    let (who, f) = match ui.posted(&headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (repo, reference) = match deletable(&ui, &who, &f).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let o = origin(&ui, &who, &headers, &ext);
    match ui.app.registry.delete_manifest(&o, &repo, &reference).await {
        Ok(true) => {
            let what = match &reference {
                Reference::Tag(t) => format!("{repo}:{t}"),
                Reference::Digest(d) => format!("{repo}@{d}"),
            };
            let back = encode(&[
                ("name", repo.as_str()),
                ("done", "deleted"),
                ("what", &what),
            ]);
            Redirect::to(&format!("/ui/repo?{back}")).into_response()
        }
        Ok(false) => ui.error(
            &who,
            StatusCode::NOT_FOUND,
            "nothing to delete: it is already gone",
        ),
        // A rule said no (an immutable tag): the visitor's fault, in the rule's words.
        Err(crate::registry::Error::Refused { message, .. }) => {
            ui.error(&who, StatusCode::FORBIDDEN, &message)
        }
        Err(e) => ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
