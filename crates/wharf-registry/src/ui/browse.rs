//! Browsing: repositories, a repository's tags, a manifest or index.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use maud::{html, Markup};
use wharf_oci::units::human_bytes;
use wharf_oci::{Digest, Manifest, Reference, RepoName, Tag};

use super::{encode, Ui, Visitor, PAGE};
use crate::auth::policy::Actions;
use crate::registry::events::Origin;

type Params = Query<HashMap<String, String>>;

/// Configs larger than this are not read for the page.
const CONFIG_LIMIT: u64 = 4 * 1024 * 1024;

fn short(d: &Digest) -> String {
    let s = d.to_string();
    s.chars().take(19).collect()
}

/// The copyable pull line (selectable text: no script needed).
fn pull_line(line: &str) -> Markup {
    html! { p { label { "Pull: " input.pull type="text" readonly value=(line) aria-label="docker pull command"; } } }
}

fn platform_of(p: &serde_json::Value) -> String {
    let get = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let mut s = format!("{}/{}", get("os"), get("architecture"));
    if !get("variant").is_empty() {
        s.push('/');
        s.push_str(get("variant"));
    }
    s
}

pub async fn repositories(State(ui): State<Arc<Ui>>, headers: HeaderMap, q: Params) -> Response {
    let who = ui.visitor(&headers).await;
    let search = q.get("q").map(|s| s.trim().to_owned()).unwrap_or_default();
    let last = q.get("last").map(String::as_str).filter(|s| !s.is_empty());
    let open = !ui.app.auth.enabled() && ui.app.auth.policy().is_none();
    let visible = |r: &str| (search.is_empty() || r.contains(&search)) && ui.may_pull(&who, r);
    let filter: Option<&(dyn Fn(&str) -> bool + Sync)> = if open && search.is_empty() {
        None
    } else {
        Some(&visible)
    };
    let page = match ui
        .app
        .registry
        .catalog(&Origin::default(), last, Some(PAGE), filter)
        .await
    {
        Ok(p) => p,
        Err(e) => return ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let next = match (page.more, page.items.last()) {
        (true, Some(l)) => Some(format!("/ui/?{}", encode(&[("q", &search), ("last", l)]))),
        _ => None,
    };
    let body = html! {
        form method="get" action="/ui/" role="search" {
            input type="search" name="q" value=(search) placeholder="Search repositories" aria-label="search";
            " " button type="submit" #search { "Search" }
        }
        @if page.items.is_empty() {
            p #empty { "No repositories you may pull"
                @if who.user().is_none() && ui.app.auth.enabled() { " (sign in to see more)" } "." }
        }
        ul #repositories {
            @for r in &page.items {
                li { a href={ "/ui/repo?" (encode(&[("name", r)])) } { (r) } }
            }
        }
        @if let Some(n) = next { p { a #next href=(n) { "Next page" } } }
    };
    ui.page(&who, StatusCode::OK, "Repositories", body)
}

/// A repository the visitor may pull, or the page that says it is not there. Absent and
/// forbidden look alike, so the UI does not reveal which repositories exist.
fn pullable(ui: &Ui, who: &Visitor, name: Option<&String>) -> Result<RepoName, Response> {
    let not_found = || {
        ui.error(
            who,
            StatusCode::NOT_FOUND,
            "no such repository, or you may not pull it",
        )
    };
    let repo: RepoName = name.and_then(|n| n.parse().ok()).ok_or_else(not_found)?;
    if !ui.may_pull(who, repo.as_str()) {
        return Err(not_found());
    }
    Ok(repo)
}

struct TagRow {
    tag: String,
    digest: Option<Digest>,
    size: u64,
    pushed: Option<std::time::SystemTime>,
    platforms: Vec<String>,
    /// An index: its size is its own and its children's manifests, not their layers.
    index: bool,
}

/// One tag's row: its manifest, the config's platform for an image, each child's for an index.
async fn tag_row(ui: &Ui, repo: &RepoName, tag: String) -> TagRow {
    let mut row = TagRow {
        tag,
        digest: None,
        size: 0,
        pushed: None,
        platforms: Vec::new(),
        index: false,
    };
    let Ok(t) = row.tag.parse::<Tag>() else {
        return row;
    };
    row.pushed = ui.app.registry.tag_pushed(repo, &t).await.ok().flatten();
    let Ok(Some(m)) = ui
        .app
        .registry
        .stored_manifest(repo, &Reference::Tag(t))
        .await
    else {
        return row;
    };
    row.digest = Some(m.digest);
    let Ok(parsed) = Manifest::parse(&m.bytes, Some(&m.media_type)) else {
        return row;
    };
    row.index = !parsed.manifests.is_empty();
    row.size = m.bytes.len() as u64
        + parsed.layers.iter().map(|l| l.size).sum::<u64>()
        + parsed.config.as_ref().map_or(0, |c| c.size)
        + parsed.manifests.iter().map(|c| c.size).sum::<u64>();
    row.platforms = parsed
        .manifests
        .iter()
        .filter_map(|c| c.platform.as_ref())
        .map(platform_of)
        .filter(|p| p != "unknown/unknown")
        .collect();
    if let Some(config) = &parsed.config {
        if let Ok(Some(bytes)) = ui
            .app
            .registry
            .small_blob(&config.digest, CONFIG_LIMIT)
            .await
        {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                if v.get("architecture").is_some() {
                    row.platforms.push(platform_of(&v));
                }
            }
        }
    }
    row
}

pub async fn tags(State(ui): State<Arc<Ui>>, headers: HeaderMap, q: Params) -> Response {
    let who = ui.visitor(&headers).await;
    let repo = match pullable(&ui, &who, q.get("name")) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let last = q.get("last").map(String::as_str).filter(|s| !s.is_empty());
    let page = match ui.app.registry.stored_tags(&repo, last, Some(PAGE)).await {
        Ok(Some(p)) => p,
        Ok(None) => return pullable(&ui, &who, None).unwrap_err(),
        Err(e) => return ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let rows =
        futures::future::join_all(page.items.iter().map(|t| tag_row(&ui, &repo, t.clone()))).await;
    let host = ui.registry_host(&headers);
    let name = repo.as_str();
    let deletable =
        ui.app.registry.rules().delete_enabled && ui.allowed(&who, name).contains(Actions::DELETE);
    let next = match (page.more, page.items.last()) {
        (true, Some(l)) => Some(format!(
            "/ui/repo?{}",
            encode(&[("name", name), ("last", l)])
        )),
        _ => None,
    };
    let body = html! {
        (pull_line(&format!("docker pull {host}/{name}")))
        table #tags {
            thead { tr { th { "Tag" } th { "Digest" } th { "Size" } th { "Pushed" } th { "Platforms" } @if deletable { th {} } } }
            tbody {
                @for r in &rows {
                    tr {
                        td { a.tag href={ "/ui/manifest?" (encode(&[("name", name), ("ref", &r.tag)])) } { (r.tag) } }
                        td { @if let Some(d) = &r.digest { code title=(d) { (short(d)) } } }
                        td { (human_bytes(r.size)) @if r.index { " (index)" } }
                        td { @if let Some(t) = r.pushed { (humantime::format_rfc3339_seconds(t)) } }
                        td { (r.platforms.join(", ")) }
                        @if deletable {
                            td { a href={ "/ui/delete?" (encode(&[("name", name), ("ref", &r.tag)])) } { "Delete" } }
                        }
                    }
                }
            }
        }
        @if let Some(n) = next { p { a #next href=(n) { "Next page" } } }
        @if deletable { p { a #deleterepo href={ "/ui/delete-repository?" (encode(&[("name", name)])) } { "Delete this repository" } } }
    };
    ui.page(&who, StatusCode::OK, name, body)
}

fn pairs(title: &str, items: &[(String, String)]) -> Markup {
    html! {
        @if !items.is_empty() {
            h3 { (title) }
            table { @for (k, v) in items { tr { td { code { (k) } } td { code { (v) } } } } }
        }
    }
}

/// The image config's env, entrypoint, command, labels and history.
fn config_section(v: &serde_json::Value) -> Markup {
    let c = &v["config"];
    let list = |x: &serde_json::Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let labels: Vec<(String, String)> = c["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let history = v["history"].as_array().cloned().unwrap_or_default();
    html! {
        h2 { "Config" }
        p { "Platform: " (platform_of(v)) }
        @if !list(&c["Entrypoint"]).is_empty() { p { "Entrypoint: " code { (format!("{:?}", list(&c["Entrypoint"]))) } } }
        @if !list(&c["Cmd"]).is_empty() { p { "Command: " code { (format!("{:?}", list(&c["Cmd"]))) } } }
        @if !list(&c["Env"]).is_empty() {
            h3 { "Environment" }
            ul { @for e in list(&c["Env"]) { li { code { (e) } } } }
        }
        (pairs("Labels", &labels))
        @if !history.is_empty() {
            h3 { "History" }
            ol #history { @for h in &history {
                li { (h["created"].as_str().unwrap_or("")) " " code { (h["created_by"].as_str().unwrap_or("")) } }
            } }
        }
    }
}

/// An index's platforms, or an image's layers.
fn contents(parsed: &Manifest, link: &dyn Fn(&Digest) -> String) -> Markup {
    html! {
        @if !parsed.manifests.is_empty() {
            h2 { "Platforms" }
            table #platforms {
                thead { tr { th { "Platform" } th { "Digest" } th { "Size" } } }
                tbody { @for c in &parsed.manifests {
                    tr {
                        td { (c.platform.as_ref().map(platform_of).unwrap_or_default()) }
                        td { a.child href=(link(&c.digest)) { code { (c.digest) } } }
                        td { (human_bytes(c.size)) }
                    }
                } }
            }
        }
        @if !parsed.layers.is_empty() {
            h2 { "Layers" }
            table #layers {
                thead { tr { th { "Digest" } th { "Media type" } th { "Size" } } }
                tbody { @for l in &parsed.layers {
                    tr { td { code { (l.digest) } } td { code { (l.media_type) } } td { (human_bytes(l.size)) } }
                } }
            }
            p { "Total: " (human_bytes(parsed.layers.iter().map(|l| l.size).sum())) }
        }
    }
}

pub async fn manifest(State(ui): State<Arc<Ui>>, headers: HeaderMap, q: Params) -> Response {
    let who = ui.visitor(&headers).await;
    let repo = match pullable(&ui, &who, q.get("name")) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let not_found = || {
        ui.error(
            &who,
            StatusCode::NOT_FOUND,
            "no such manifest in this repository",
        )
    };
    let Some(reference) = q.get("ref").and_then(|r| r.parse::<Reference>().ok()) else {
        return not_found();
    };
    let m = match ui.app.registry.stored_manifest(&repo, &reference).await {
        Ok(Some(m)) => m,
        Ok(None) => return not_found(),
        Err(e) => return ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let parsed = match Manifest::parse(&m.bytes, Some(&m.media_type)) {
        Ok(p) => p,
        Err(e) => return ui.error(&who, StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    let config = match &parsed.config {
        Some(c) => ui
            .app
            .registry
            .small_blob(&c.digest, CONFIG_LIMIT)
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()),
        None => None,
    };
    let referrers = ui
        .app
        .registry
        .stored_referrers(&repo, &m.digest)
        .await
        .unwrap_or_default();
    let host = ui.registry_host(&headers);
    let name = repo.as_str();
    let link = |d: &Digest| {
        format!(
            "/ui/manifest?{}",
            encode(&[("name", name), ("ref", &d.to_string())])
        )
    };
    let annotations: Vec<(String, String)> = parsed
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let deletable =
        ui.app.registry.rules().delete_enabled && ui.allowed(&who, name).contains(Actions::DELETE);
    let body = html! {
        (pull_line(&format!("docker pull {host}/{name}@{}", m.digest)))
        p { "Digest: " code #digest { (m.digest) } }
        p { "Media type: " code { (m.media_type) } " · " (human_bytes(m.bytes.len() as u64)) }
        (contents(&parsed, &link))
        @if let Some(c) = &config { (config_section(c)) }
        (pairs("Annotations", &annotations))
        h2 { "Referrers" }
        @if referrers.is_empty() { p { "None." } }
        ul #referrers { @for r in &referrers {
            li { a href=(link(&r.digest)) { code { (r.digest) } } " " (r.artifact_type.as_deref().unwrap_or(&r.media_type)) " · " (human_bytes(r.size)) }
        } }
        @if deletable {
            p { a href={ "/ui/delete?" (encode(&[("name", name), ("ref", &m.digest.to_string())])) } { "Delete this manifest" } }
        }
    };
    let title = format!(
        "{name} @ {}",
        q.get("ref").map(String::as_str).unwrap_or("")
    );
    ui.page(&who, StatusCode::OK, &title, body)
}
