//! The dashboard's HTML (maud escapes every value) and stylesheet, in the registry UI's
//! look: no script, styles from one stylesheet of its own (the CSP allows nothing else).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::auth;
use crate::hosts::protocol::{ContainerInfo, HostView, PendingInfo};
use crate::hosts::HostStatus;
use crate::report::SessionReport;
use crate::session::HistoryView;

/// No script at all; styles only from the dashboard's stylesheet; forms post only here;
/// never framed.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub const CSS: &str = r#"
:root{--brand:#0b5cad;--brand-dark:#0a2f57;--bg:#f3f5f8;--card:#fff;--text:#1c2733;--muted:#5d6b7b;
--line:#e0e5eb;--ok-bg:#e7f5ec;--ok:#1d6b35;--err-bg:#fdeceb;--err:#a4261c;--radius:8px}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;background:var(--bg);color:var(--text)}
header.top{background:var(--brand-dark);color:#fff}
header.top .bar{max-width:80rem;margin:0 auto;padding:.55rem 1rem;display:flex;flex-wrap:wrap;align-items:center;gap:.4rem 1.25rem}
.brand{color:#fff;font-weight:650;font-size:1.05rem}
.me{margin-left:auto;display:flex;align-items:center;gap:.5rem;color:#d5e3f3}
main{max-width:80rem;margin:0 auto;padding:1.1rem 1rem 3rem;overflow-wrap:anywhere}
h1{font-size:1.45rem;margin:.3rem 0 1rem;font-weight:650}
h2{font-size:1.1rem;margin:0 0 .6rem;display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
.card{background:var(--card);border:1px solid var(--line);border-radius:var(--radius);padding:1rem 1.1rem;margin-bottom:1rem}
table{border-collapse:separate;border-spacing:0;width:100%;border:1px solid var(--line);border-radius:var(--radius);overflow:hidden;margin:.6rem 0}
th,td{padding:.5rem .7rem;text-align:left;vertical-align:top;border-bottom:1px solid var(--line);overflow-wrap:anywhere}
th{font-size:.76rem;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);background:#f8fafc;font-weight:600}
tbody tr:last-child td{border-bottom:0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.86em}
button{font:inherit;font-size:.88rem;cursor:pointer;border-radius:6px;border:1px solid var(--brand);background:var(--brand);color:#fff;padding:.3rem .75rem}
button.secondary{background:#fff;color:var(--brand)}
form.inline{display:inline}
.badge{font-size:.78rem;border-radius:999px;padding:.05rem .55rem;font-weight:600}
.badge.on{background:var(--ok-bg);color:var(--ok)}
.badge.off{background:var(--err-bg);color:var(--err)}
.muted{color:var(--muted)}
.err{background:var(--err-bg);color:var(--err);padding:.6rem .8rem;border-radius:6px}
.ok{background:var(--ok-bg);color:var(--ok);padding:.6rem .8rem;border-radius:6px}
label span{display:block;font-size:.85rem;color:var(--muted)}
input[type=text],input[type=password]{font:inherit;padding:.35rem .5rem;border:1px solid var(--line);border-radius:6px;width:100%;max-width:24rem}
.signin{max-width:28rem}
ol.history{margin:.3rem 0;padding-left:1.2rem;font-size:.9rem}
"#;

/// A full page: chrome, then `body`; the CSRF cookie set when the visitor had none.
pub fn page(
    status: StatusCode,
    title: &str,
    user: Option<&str>,
    csrf: &str,
    new_csrf: Option<&str>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · wharf watch" }
                link rel="stylesheet" href="/dashboard/style.css";
            }
            body {
                header.top { div.bar {
                    a.brand href="/dashboard" { "wharf watch" }
                    div.me {
                        @if let Some(u) = user {
                            span { "Signed in as " b #user { (u) } }
                            form.inline method="post" action="/dashboard/logout" {
                                input type="hidden" name="_csrf" value=(csrf);
                                button.secondary type="submit" #logout { "Sign out" }
                            }
                        }
                    }
                } }
                main { h1 { (title) } (body) }
            }
        }
    };
    let mut resp = (status, markup.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if let Some(value) = new_csrf {
        h.append(SET_COOKIE, auth::set_cookie(auth::CSRF, value, None));
    }
    resp
}

pub fn login_form(csrf: &str, users: bool, message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message { p.err #error role="alert" { (m) } }
        form.card.signin method="post" action="/dashboard/login" {
            input type="hidden" name="_csrf" value=(csrf);
            @if users {
                p { label { span { "User" } input type="text" name="username" autocomplete="username"; } }
                p { label { span { "Password" } input type="password" name="password" autocomplete="current-password"; } }
                p.muted { "Or the watch API's token:" }
            }
            p { label { span { "API token" } input type="password" name="token" #token autocomplete="off"; } }
            button type="submit" #signin { "Sign in" }
        }
    }
}

/// One button in a form of its own, with the CSRF field and the hidden fields it acts on.
fn action(csrf: &str, what: &str, label: &str, host: &str, container: Option<&str>) -> Markup {
    let id = match container {
        Some(c) => format!("{what}-{host}-{c}"),
        None => format!("{what}-{host}"),
    };
    html! {
        form.inline method="post" action="/dashboard/action" {
            input type="hidden" name="_csrf" value=(csrf);
            input type="hidden" name="action" value=(what);
            input type="hidden" name="host" value=(host);
            @if let Some(c) = container { input type="hidden" name="container" value=(c); }
            button.(if what == "update" { "" } else { "secondary" }) type="submit" id=(id) { (label) }
        }
    }
}

fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

fn when(seconds: u64) -> String {
    chrono::DateTime::from_timestamp(seconds as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// The overview: each host with its containers, candidates, held updates and history.
pub fn overview(
    csrf: &str,
    notice: Option<&str>,
    hosts: &[(HostStatus, Result<HostView, String>, Option<SessionReport>)],
) -> Markup {
    html! {
        @if let Some(n) = notice { p.ok #notice role="status" { (n) } }
        @for (status, view, last) in hosts {
            section.card.host id=(format!("host-{}", status.name)) {
                h2 {
                    span.name { (status.name) }
                    span.muted { (status.kind) }
                    @if status.connected { span.badge.on { "connected" } } @else { span.badge.off { "not connected" } }
                    (action(csrf, "check", "Check now", &status.name, None))
                }
                p.muted { code { (status.url) } " · last check: "
                    @match last { Some(r) => span.last { (when(r.finished)) }, None => span.last { "none yet" } } }
                @match view {
                    Err(e) => p.err { (e) },
                    Ok(v) => (host_table(csrf, &status.name, v, last.as_ref())),
                }
            }
        }
    }
}

fn host_table(csrf: &str, host: &str, view: &HostView, last: Option<&SessionReport>) -> Markup {
    html! {
        table {
            thead { tr { th { "Container" } th { "State" } th { "Image" } th { "Running" } th { "Newest candidate" } th { "History" } th { "" } } }
            tbody {
                @for c in &view.containers {
                    (container_row(csrf, host, c, view, last))
                }
            }
        }
    }
}

fn container_row(
    csrf: &str,
    host: &str,
    c: &ContainerInfo,
    view: &HostView,
    last: Option<&SessionReport>,
) -> Markup {
    let line = last.and_then(|r| r.containers.iter().find(|l| l.name == c.name));
    let held: Option<&PendingInfo> = view.pending.iter().find(|p| p.container == c.name);
    let history: Option<&HistoryView> = view.history.iter().find(|h| h.container == c.name);
    let candidate = match (held, line) {
        (Some(p), _) => Some((p.digest.clone(), format!("held for {}", p.waiting_for))),
        (None, Some(l)) => l
            .new_digest
            .clone()
            .filter(|n| l.old_digest.as_deref() != Some(n.as_str()))
            .map(|n| (n, format!("{:?}", l.outcome).to_lowercase())),
        _ => None,
    };
    let running = line
        .and_then(|l| l.old_digest.clone())
        .unwrap_or_else(|| c.image_id.clone());
    html! {
        tr.container id=(format!("c-{host}-{}", c.name)) {
            td { b { (c.name) } }
            td { (c.state) }
            td { code { (c.image) } }
            td { code.running title=(running) { (short(&running)) } }
            td.candidate {
                @match &candidate { Some((d, why)) => { code title=(d) { (short(d)) } " " span.muted { (why) } }, None => span.muted { "—" } }
            }
            td.history {
                @match history {
                    Some(h) if !h.changes.is_empty() => ol.history {
                        @for ch in h.changes.iter().take(5) {
                            li.change { (format!("{:?}", ch.kind).to_lowercase()) " " (when(ch.at)) ": "
                                code { (short(ch.from.digest.as_deref().unwrap_or(&ch.from.id))) } " → "
                                code { (short(ch.to.digest.as_deref().unwrap_or(&ch.to.id))) }
                                @if let Some(r) = &ch.reason { " (" (r) ")" } }
                        }
                    },
                    _ => span.muted { "no changes yet" },
                }
            }
            td {
                (action(csrf, "update", "Update now", host, Some(&c.name)))
                " "
                @if held.is_some_and(|p| p.waiting_for == "approval") { (action(csrf, "approve", "Approve", host, Some(&c.name))) " " }
                (action(csrf, "rollback", "Roll back", host, Some(&c.name)))
            }
        }
    }
}
