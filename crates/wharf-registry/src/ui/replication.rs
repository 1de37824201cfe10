//! Replication's status for admins: each target's queue, lag and last error, and each
//! sync entry's, as this process knows them (the process running a target holds its
//! figures; the cursor is in the store). Read-only: `wharf replicate` changes things.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use maud::{html, Markup};

use super::Ui;
use crate::registry::replication::Progress;

fn when(t: Option<f64>) -> String {
    t.map(|s| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(s);
        humantime::format_rfc3339_seconds(at).to_string()
    })
    .unwrap_or_else(|| "never".into())
}

fn table(id: &str, first: &str, rows: &[(String, Progress)]) -> Markup {
    html! {
        table.card id=(id) {
            thead { tr { th { (first) } th { "Queue" } th { "Lag" } th { "Replicated" } th { "Failures" } th { "Last success" } th { "Last error" } th { "Here" } } }
            tbody {
                @for (name, p) in rows {
                    tr {
                        td { code { (name) } }
                        td.queue { (p.queue) }
                        td.lag { (format!("{:.1} s", p.lag_seconds)) }
                        td { (p.replicated) }
                        td { (p.failures) }
                        td { (when(p.last_success_at)) }
                        td.error { @match &p.last_error { Some(e) => { (when(p.last_error_at)) ": " (e) } None => { "none" } } }
                        td { @if p.running_here { "running" } @else { "another process, or waiting" } }
                    }
                }
            }
        }
    }
}

pub async fn replication(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let who = match super::admin::admin(&ui, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(r) = ui.app.registry.replication() else {
        let body = html! { p.muted #none { "No replication is configured: see the " code { "replication:" } " section in docs/replication.md." } };
        return ui.page(&who, StatusCode::OK, "Replication", body);
    };
    let targets: Vec<_> = r.status.targets().into_iter().collect();
    let syncs: Vec<_> = r.status.syncs().into_iter().collect();
    let body = html! {
        h2 { "Targets" }
        @if targets.is_empty() { p.muted { "No target has a rule." } } @else { (table("targets", "Target", &targets)) }
        h2 { "Sync" }
        @if syncs.is_empty() { p.muted { "No sync entries." } } @else { (table("syncs", "Entry", &syncs)) }
        p.muted { "Queue: events not yet replicated. " code { "wharf replicate status CONFIG" } " compares every tag; "
            code { "wharf replicate reconcile CONFIG" } " converges them." }
    };
    ui.page(&who, StatusCode::OK, "Replication", body)
}
