//! Whether an image is signed, by whom, and whether that verifies under the `trust:`
//! rules: a line on the manifest page and a cell in the tag list. maud escapes every
//! value (a key path, a certificate subject, a reason all come from outside).

use maud::{html, Markup};

use crate::config::trust::TrustMode;
use crate::registry::trust::{Finding, TrustStatus};
use crate::registry::{ManifestContent, Registry};
use wharf_oci::RepoName;

/// The status for a page, or None when no rule is configured and nothing could be read.
pub async fn status(
    registry: &Registry,
    repo: &RepoName,
    m: &ManifestContent,
) -> Option<TrustStatus> {
    match registry.trust_status(repo, m).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(repository = %repo, digest = %m.digest, error = %e, "cannot read the signatures for the page");
            None
        }
    }
}

/// One short phrase and its class: `verified`, `unverified`, `signed`, `unsigned`.
fn summary(s: &TrustStatus) -> (&'static str, String) {
    match (&s.finding, &s.rule) {
        (Some(Finding::Verified { by, .. }), _) => ("verified", format!("verified: {by}")),
        (Some(Finding::Exempt), _) => ("signed", "signature or referrer artifact".to_owned()),
        (Some(Finding::Unverified(why)), Some((_, TrustMode::Enforce))) => {
            ("unverified", format!("refused: {why}"))
        }
        (Some(Finding::Unverified(why)), _) => ("unverified", format!("unverified: {why}")),
        (None, _) if s.signed => ("signed", "signed (no trust rule checks it)".to_owned()),
        (None, _) => ("unsigned", "not signed".to_owned()),
    }
}

/// The manifest page's facts: signed or not, by whom, under which rule.
pub fn facts(s: &TrustStatus) -> Markup {
    let (class, text) = summary(s);
    html! {
        dt { "Signature" }
        dd #signature class=(format!("trust {class}")) { (text) }
        @if let Some(Finding::Verified { form, .. }) = &s.finding {
            dt { "Signature form" } dd #signatureform { (form) }
        }
        @if let Some((rule, mode)) = &s.rule {
            dt { "Trust rule" } dd #trustrule { code { (rule) } " (" (mode.as_str()) ")" }
        }
    }
}

/// The tag list's cell.
pub fn cell(s: Option<&TrustStatus>) -> Markup {
    match s {
        Some(s) => {
            let (class, text) = summary(s);
            html! { span class=(format!("badge trust {class}")) { (text) } }
        }
        None => html! {},
    }
}
