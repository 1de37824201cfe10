//! The governance rules (retention, immutable tags, quotas) and each quota's usage, for any
//! signed-in user: they explain why a push or delete was refused.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use maud::html;
use wharf_oci::units::human_bytes;

use super::Ui;

fn secs(s: u64) -> String {
    humantime::format_duration(Duration::from_secs(s)).to_string()
}

pub async fn rules(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let who = ui.visitor(&headers).await;
    if who.user().is_none() && ui.app.auth.enabled() {
        return ui.error(
            &who,
            StatusCode::FORBIDDEN,
            "sign in to see the registry's rules",
        );
    }
    let s = match ui.app.registry.governance_summary().await {
        Ok(s) => s,
        Err(e) => return ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let body = html! {
        h2 { "Retention" }
        @match &s.retention {
            None => p { "No retention rules (retention:)." },
            Some(r) => {
                p { "Runs " @match r.schedule_secs { Some(t) => { "every " (secs(t)) }, None => { "only with wharf retention" } } "." }
                table.list #retention {
                    thead { tr { th { "Repositories" } th { "Keep last" } th { "Keep top semver" } th { "Keep matching" } th { "Untagged older than" } } }
                    tbody { @for rule in &r.rules { tr {
                        td.main { (rule.repositories.join(", ")) }
                        td data-label="Keep last" { @if let Some(n) = rule.keeplast { (n) } }
                        td data-label="Keep top semver" { @if let Some(n) = rule.keepsemver { (n) } }
                        td data-label="Keep matching" { @if let Some(m) = &rule.keepmatching { code { (m) } } }
                        td data-label="Untagged older than" { @if let Some(t) = rule.untaggedolderthan_secs { (secs(t)) } }
                    } } }
                }
            }
        }
        h2 { "Immutable tags" }
        @if s.immutable.is_empty() { p { "None (immutable:)." } }
        @else {
            table.list #immutable {
                thead { tr { th { "Repositories" } th { "Tags" } } }
                tbody { @for r in &s.immutable { tr { td.main { (r.repositories.join(", ")) } td data-label="Tags" { code { (r.tags) } } } } }
            }
        }
        h2 { "Quotas" }
        @if s.quotas.is_empty() { p { "None (quotas:)." } }
        @else {
            table.list #quotas {
                thead { tr { th { "Repositories" } th { "Quota" } th { "Used" } th { "Share" } } }
                tbody { @for q in &s.quotas { tr {
                    td.main { (q.repositories.join(", ")) }
                    td data-label="Quota" { (human_bytes(q.bytes)) }
                    td data-label="Used" { (human_bytes(q.used)) }
                    td data-label="Share" { @if q.bytes > 0 { (format!("{:.0}%", q.used as f64 * 100.0 / q.bytes as f64)) } }
                } } }
            }
        }
    };
    ui.page(&who, StatusCode::OK, "Rules", body)
}
