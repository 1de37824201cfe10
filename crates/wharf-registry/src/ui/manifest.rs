//! A manifest or index: its platforms or layers, its image config, annotations, referrers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use maud::{html, Markup};
use wharf_oci::units::human_bytes;
use wharf_oci::{Digest, Manifest, Reference};

use super::browse::pullable;
use super::widgets::pull_line;
use super::{encode, Ui};
use crate::auth::policy::Actions;

type Params = Query<HashMap<String, String>>;

/// Configs larger than this are not read for the page.
pub const CONFIG_LIMIT: u64 = 4 * 1024 * 1024;

pub fn platform_of(p: &serde_json::Value) -> String {
    let get = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let mut s = format!("{}/{}", get("os"), get("architecture"));
    if !get("variant").is_empty() {
        s.push('/');
        s.push_str(get("variant"));
    }
    s
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
            table.list #platforms {
                thead { tr { th { "Platform" } th { "Digest" } th.num { "Size" } } }
                tbody { @for c in &parsed.manifests {
                    tr {
                        td.main { (c.platform.as_ref().map(platform_of).unwrap_or_default()) }
                        td data-label="Digest" { a.child href=(link(&c.digest)) { code { (c.digest) } } }
                        td.num data-label="Size" { (human_bytes(c.size)) }
                    }
                } }
            }
        }
        @if !parsed.layers.is_empty() {
            h2 { "Layers" }
            table.list #layers {
                thead { tr { th { "Digest" } th { "Media type" } th.num { "Size" } } }
                tbody { @for l in &parsed.layers {
                    tr { td.main { code { (l.digest) } } td data-label="Media type" { code { (l.media_type) } } td.num data-label="Size" { (human_bytes(l.size)) } }
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
    let trust = super::signatures::status(&ui.app.registry, &repo, &m).await;
    let host = &who.host;
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
        dl.facts.card {
            dt { "Digest" } dd { code #digest { (m.digest) } }
            dt { "Media type" } dd { code { (m.media_type) } }
            dt { "Manifest size" } dd { (human_bytes(m.bytes.len() as u64)) }
            @if let Some(t) = &trust { (super::signatures::facts(t)) }
        }
        (contents(&parsed, &link))
        @if let Some(c) = &config { (config_section(c)) }
        (pairs("Annotations", &annotations))
        h2 { "Referrers" }
        @if referrers.is_empty() { p { "None." } }
        ul #referrers { @for r in &referrers {
            li { a href=(link(&r.digest)) { code { (r.digest) } } " " (r.artifact_type.as_deref().unwrap_or(&r.media_type)) " · " (human_bytes(r.size)) }
        } }
        @if deletable {
            p { a.button.danger href={ "/ui/delete?" (encode(&[("name", name), ("ref", &m.digest.to_string())])) } { "Delete this manifest" } }
        }
    };
    let title = format!(
        "{name} @ {}",
        q.get("ref").map(String::as_str).unwrap_or("")
    );
    ui.page(&who, StatusCode::OK, &title, body)
}
