//! Garbage collection from the UI, for admins: the page runs a dry run and lists what a
//! collection would delete; its button (a CSRF-checked POST) runs the collection and
//! comes back to the page with what it freed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use maud::{html, Markup};
use wharf_oci::units::{human_bytes, parse_duration};

use super::widgets::notice;
use super::{encode, form, Ui, Visitor};
use crate::registry::gc::{GcOptions, GcReport};

/// Entries shown of a report's lists; the counts cover them all.
const REPORT_ROWS: usize = 200;

/// The collection's options from a query or form: `untagged`, and `grace` as a Go
/// duration ("1h", "0s").
fn options(f: &HashMap<String, String>, dry_run: bool) -> Result<(GcOptions, String), String> {
    let text = f
        .get("grace")
        .map(|g| g.trim())
        .filter(|g| !g.is_empty())
        .unwrap_or("1h")
        .to_owned();
    let grace = parse_duration(&text)
        .map_err(|e| format!("grace {text:?}: {e}; write a duration such as 1h or 0s"))?;
    let opts = GcOptions {
        dry_run,
        delete_untagged: f.get("untagged").is_some_and(|v| !v.is_empty()),
        grace,
    };
    Ok((opts, text))
}

fn report_table(r: &GcReport) -> Markup {
    html! {
        dl.facts.card #report {
            dt { "Repositories" } dd { (r.repositories) }
            dt { "Manifests in use" } dd { (r.manifests_marked) }
            dt { "Blobs in use" } dd { (r.blobs_marked) }
            dt { "Untagged manifests that would go" } dd #manifests { (r.manifests.len()) }
            dt { "Blobs that would go" } dd #blobs { (r.blobs.len()) }
            dt { "Space that would be freed" } dd #freed { (human_bytes(r.bytes_freed)) }
            dt { "Blobs kept within the grace period" } dd #held { (r.blobs_held) }
        }
    }
}

fn report_lists(r: &GcReport) -> Markup {
    html! {
        @if !r.manifests.is_empty() {
            h2 { "Manifests" }
            ul #manifestlist { @for m in r.manifests.iter().take(REPORT_ROWS) { li { code { (m.repository) "@" (m.digest) } } } }
        }
        @if !r.blobs.is_empty() {
            h2 { "Blobs" }
            ul #bloblist { @for b in r.blobs.iter().take(REPORT_ROWS) { li { code { (b.digest) } " " span.muted { (human_bytes(b.size)) } } } }
        }
    }
}

fn forms(ui: &Ui, who: &Visitor, untagged: bool, grace: &str, nothing: bool) -> Markup {
    html! {
        form.toolbar method="get" action="/ui/gc" {
            label { input type="checkbox" name="untagged" value="1" checked[untagged]; "Also untagged manifests (--delete-untagged)" }
            label { "Grace " input type="text" name="grace" value=(grace) size="6" aria-label="grace period"; }
            button.secondary type="submit" #preview { "Preview" }
        }
        p.muted { "Content pushed within the grace period is kept, so a push under way is never cut short. "
            "Use 0s only when nothing is pushing." }
        form method="post" action="/ui/gc" {
            (who.csrf_field(ui))
            @if untagged { input type="hidden" name="untagged" value="1"; }
            input type="hidden" name="grace" value=(grace);
            button.danger type="submit" #gc disabled[nothing] { "Run garbage collection" }
            @if nothing { " " span.muted { "Nothing to collect." } }
        }
    }
}

pub async fn gc_form(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    q: Query<HashMap<String, String>>,
) -> Response {
    let who = ui.visitor(&headers).await;
    if let Err(r) = ui.require_admin(&who) {
        return r;
    }
    let (opts, grace) = match options(&q, true) {
        Ok(o) => o,
        Err(e) => return ui.error(&who, StatusCode::BAD_REQUEST, &e),
    };
    let report = match ui.app.registry.collect(&opts).await {
        Ok(r) => r,
        Err(e) => return ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let nothing = report.blobs.is_empty() && report.manifests.is_empty();
    let read_only = ui.app.registry.rules().read_only;
    let body = html! {
        (notice(&q))
        p { "A dry run: what a collection would delete now. Nothing is deleted until you run it." }
        (report_table(&report))
        @if read_only { p.err { "The registry is read-only (storage.maintenance.readonly): it cannot collect." } }
        @else { (forms(&ui, &who, opts.delete_untagged, &grace, nothing)) }
        (report_lists(&report))
    };
    ui.page(&who, StatusCode::OK, "Garbage collection", body)
}

pub async fn gc_run(State(ui): State<Arc<Ui>>, headers: HeaderMap, body: Bytes) -> Response {
    let who = ui.visitor(&headers).await;
    if let Err(r) = ui.require_admin(&who) {
        return r;
    }
    let f = form(&body);
    if let Err(r) = ui.check_csrf(&who, &f) {
        return r;
    }
    if ui.app.registry.rules().read_only {
        let why = "the registry is read-only (storage.maintenance.readonly): it cannot collect";
        return ui.error(&who, StatusCode::METHOD_NOT_ALLOWED, why);
    }
    let (opts, grace) = match options(&f, false) {
        Ok(o) => o,
        Err(e) => return ui.error(&who, StatusCode::BAD_REQUEST, &e),
    };
    let started = std::time::Instant::now();
    let report = match ui.app.registry.collect(&opts).await {
        Ok(r) => r,
        // Another collection holds the store's job lock: try again later, not a fault.
        Err(crate::registry::Error::Store(crate::registry::StoreError::NotAStore(why))) => {
            return ui.error(&who, StatusCode::CONFLICT, &why)
        }
        Err(e) => return ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    tracing::info!(
        admin = who.user().unwrap_or_default(),
        blobs = report.blobs.len(),
        manifests = report.manifests.len(),
        bytes_freed = report.bytes_freed,
        millis = started.elapsed().as_millis() as u64,
        "garbage collection run from the UI"
    );
    let (blobs, manifests) = (
        report.blobs.len().to_string(),
        report.manifests.len().to_string(),
    );
    let freed = report.bytes_freed.to_string();
    let untagged = if opts.delete_untagged { "1" } else { "" };
    let back = encode(&[
        ("done", "gc"),
        ("blobs", &blobs),
        ("manifests", &manifests),
        ("freed", &freed),
        ("untagged", untagged),
        ("grace", &grace),
    ]);
    Redirect::to(&format!("/ui/gc?{back}")).into_response()
}
