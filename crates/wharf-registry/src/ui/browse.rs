//! Browsing: the repositories (tags, size, last push, pulls; sorted and paged) and a
//! repository's tags (sorted, filtered, paged, with the immutable ones locked).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use maud::{html, Markup};
use wharf_oci::units::human_bytes;
use wharf_oci::{Digest, Manifest, Reference, RepoName, Tag};

use super::manifest::{platform_of, CONFIG_LIMIT};
use super::widgets::{ago, notice, page_number, pull_line, Pager};
use super::{encode, style, Ui, Visitor, PAGE};
use crate::auth::policy::Actions;
use crate::registry::listing::{RepoSort, TagSort, TagSummary};

type Params = Query<HashMap<String, String>>;

fn short(d: &Digest) -> String {
    let s = d.to_string();
    s.chars().take(19).collect()
}

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map_or("", |s| s.trim())
}

/// A sortable column's heading: a link that sorts by it, marked when it is the order.
fn sort_heading(label: &str, href: String, on: bool, class: &str) -> Markup {
    html! {
        th class=(class) aria-sort=(if on { "descending" } else { "none" }) {
            a href=(href) { (label) @if on { " ▾" } }
        }
    }
}

pub async fn repositories(State(ui): State<Arc<Ui>>, headers: HeaderMap, q: Params) -> Response {
    let who = ui.visitor(&headers).await;
    let search = param(&q, "q").to_owned();
    let sort = match param(&q, "sort") {
        "pushed" => RepoSort::Pushed,
        _ => RepoSort::Name,
    };
    let sort_key = if sort == RepoSort::Pushed {
        "pushed"
    } else {
        ""
    };
    let mut number = page_number(&q);
    let visible = |r: &str| ui.may_pull(&who, r);
    let registry = &ui.app.registry;
    let mut listing = registry
        .repository_list(&search, &visible, sort, (number - 1) * PAGE, PAGE)
        .await;
    // A page past the end (the list shrank since the link was made): show the last one.
    if let Ok(l) = &listing {
        if l.items.is_empty() && l.total > 0 {
            number = l.total.div_ceil(PAGE);
            listing = registry
                .repository_list(&search, &visible, sort, (number - 1) * PAGE, PAGE)
                .await;
        }
    }
    let listing = match listing {
        Ok(l) => l,
        Err(e) => return ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let by = |s: &str| format!("/ui/?{}", encode(&[("q", &search), ("sort", s)]));
    let pager = Pager {
        path: "/ui/",
        keep: vec![("q", &search), ("sort", sort_key)],
        page: number,
        per: PAGE,
        total: listing.total,
        noun: "repository",
    };
    let body = html! {
        (notice(&q))
        form.toolbar method="get" action="/ui/" role="search" {
            input type="search" name="q" value=(search) placeholder="Search repositories" aria-label="search";
            @if !sort_key.is_empty() { input type="hidden" name="sort" value=(sort_key); }
            button type="submit" #search { "Search" }
        }
        @if listing.items.is_empty() {
            p.empty #empty {
                @if search.is_empty() { "No repositories you may pull" } @else { "No repositories match " b { (search) } }
                @if who.user().is_none() && ui.app.auth.enabled() { " (sign in to see more)" } "."
            }
        } @else {
            table.list #repositories {
                thead { tr {
                    (sort_heading("Repository", by(""), sort == RepoSort::Name, ""))
                    th.num { "Tags" }
                    th.num { "Size" }
                    (sort_heading("Last push", by("pushed"), sort == RepoSort::Pushed, ""))
                    th.num { "Pulls" }
                } }
                tbody { @for r in &listing.items {
                    tr {
                        td.main data-label="Repository" { a href={ "/ui/repo?" (encode(&[("name", &r.name)])) } { (r.name) } }
                        td.num.tags data-label="Tags" { (r.tags) }
                        td.num data-label="Size" { (human_bytes(r.size)) }
                        td.pushed data-label="Last push" { @match r.pushed { Some(t) => (ago(t)), None => span.muted { "never" } } }
                        td.num.pulls data-label="Pulls" { @match r.pulls { Some(n) => (n), None => span.muted title="this storage keeps no pull counts" { "–" } } }
                    }
                } }
            }
        }
        (pager.render())
    };
    ui.page(&who, StatusCode::OK, "Repositories", body)
}

/// A repository the visitor may pull, or the page that says it is not there. Absent and
/// forbidden look alike, so the UI does not reveal which repositories exist.
pub fn pullable(ui: &Ui, who: &Visitor, name: Option<&String>) -> Result<RepoName, Response> {
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

/// What a tag's manifest says: its size and platforms.
#[derive(Default)]
struct TagDetail {
    size: u64,
    platforms: Vec<String>,
    /// An index: its size is its own and its children's manifests, not their layers.
    index: bool,
    /// Signed or not, and whether that verifies under the `trust:` rules.
    trust: Option<crate::registry::trust::TrustStatus>,
}

/// The manifest's size and platforms: the config's for an image, each child's for an index.
async fn tag_detail(ui: &Ui, repo: &RepoName, digest: &Digest) -> TagDetail {
    let mut row = TagDetail::default();
    let Ok(Some(m)) = ui
        .app
        .registry
        .stored_manifest(repo, &Reference::Digest(digest.clone()))
        .await
    else {
        return row;
    };
    row.trust = super::signatures::status(&ui.app.registry, repo, &m).await;
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
        let registry = &ui.app.registry;
        if let Ok(Some(bytes)) = registry.small_blob(&config.digest, CONFIG_LIMIT).await {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                if v.get("architecture").is_some() {
                    row.platforms.push(platform_of(&v));
                }
            }
        }
    }
    row
}

/// The tag a `docker pull` line names: `latest` if it exists, else the newest push.
async fn pull_tag(ui: &Ui, repo: &RepoName) -> Option<String> {
    let registry = &ui.app.registry;
    if let Ok(latest) = "latest".parse::<Tag>() {
        if let Ok(Some(_)) = registry.tag_pushed(repo, &latest).await {
            return Some("latest".into());
        }
    }
    let newest = registry.tag_list(repo, TagSort::Pushed, "", 0, 1).await;
    newest.ok().flatten()?.items.pop().map(|t| t.name)
}

fn tag_rows(name: &str, rows: &[(TagSummary, TagDetail)], deletable: bool) -> Markup {
    html! {
        tbody { @for (t, d) in rows {
            tr {
                td.main data-label="Tag" {
                    a.tag href={ "/ui/manifest?" (encode(&[("name", name), ("ref", &t.name)])) } { (t.name) }
                    @if t.immutable { (style::lock()) }
                }
                td data-label="Digest" { code title=(t.digest) { (short(&t.digest)) } }
                td.num data-label="Size" { (human_bytes(d.size)) @if d.index { " " span.badge { "index" } } }
                td data-label="Pushed" { (ago(t.pushed)) }
                td data-label="Platforms" { (d.platforms.join(", ")) }
                td data-label="Signature" { (super::signatures::cell(d.trust.as_ref())) }
                @if deletable {
                    td data-label="" { @if !t.immutable {
                        a.delete href={ "/ui/delete?" (encode(&[("name", name), ("ref", &t.name)])) } { "Delete" }
                    } }
                }
            }
        } }
    }
}

pub async fn tags(State(ui): State<Arc<Ui>>, headers: HeaderMap, q: Params) -> Response {
    let who = ui.visitor(&headers).await;
    let repo = match pullable(&ui, &who, q.get("name")) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let filter = param(&q, "filter").to_owned();
    let (sort, sort_key) = match param(&q, "sort") {
        "name" => (TagSort::Name, "name"),
        _ => (TagSort::Pushed, ""),
    };
    let number = page_number(&q);
    let registry = &ui.app.registry;
    let offset = (number - 1) * PAGE;
    let listing = match registry.tag_list(&repo, sort, &filter, offset, PAGE).await {
        Ok(Some(l)) => l,
        Ok(None) => return pullable(&ui, &who, None).unwrap_err(),
        Err(e) => return ui.error(&who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let details = futures::future::join_all(
        listing
            .items
            .iter()
            .map(|t| tag_detail(&ui, &repo, &t.digest)),
    )
    .await;
    let rows: Vec<_> = listing.items.into_iter().zip(details).collect();
    let name = repo.as_str();
    let host = &who.host;
    let deletable =
        registry.rules().delete_enabled && ui.allowed(&who, name).contains(Actions::DELETE);
    let by = |s: &str| {
        let query = encode(&[("name", name), ("filter", &filter), ("sort", s)]);
        format!("/ui/repo?{query}")
    };
    let pager = Pager {
        path: "/ui/repo",
        keep: vec![("name", name), ("filter", &filter), ("sort", sort_key)],
        page: number,
        per: PAGE,
        total: listing.total,
        noun: "tag",
    };
    let pull = pull_tag(&ui, &repo).await;
    let body = html! {
        (notice(&q))
        @if let Some(tag) = &pull { (pull_line(&format!("docker pull {host}/{name}:{tag}"))) }
        @if pull.is_none() {
            div.empty #empty {
                p { "This repository is empty: it has no tags." }
                p { "Push one with " code { "docker push " (host) "/" (name) ":latest" } "." }
            }
        } @else {
            form.toolbar method="get" action="/ui/repo" role="search" {
                input type="hidden" name="name" value=(name);
                input type="search" name="filter" value=(filter) placeholder="Filter tags" aria-label="filter tags";
                label { "Sort " select name="sort" aria-label="sort tags" {
                    option value="" selected[sort == TagSort::Pushed] { "Newest push" }
                    option value="name" selected[sort == TagSort::Name] { "Name" }
                } }
                button type="submit" #filterbutton { "Apply" }
            }
            @if rows.is_empty() {
                p.empty #nomatch { "No tag contains " b { (filter) } "." }
            } @else {
                table.list #tags {
                    thead { tr {
                        (sort_heading("Tag", by("name"), sort == TagSort::Name, ""))
                        th { "Digest" } th.num { "Size" }
                        (sort_heading("Pushed", by(""), sort == TagSort::Pushed, ""))
                        th { "Platforms" } th { "Signature" } @if deletable { th {} }
                    } }
                    (tag_rows(name, &rows, deletable))
                }
            }
            (pager.render())
        }
        @if deletable { p { a #deleterepo href={ "/ui/delete-repository?" (encode(&[("name", name)])) } { "Delete this repository" } } }
    };
    ui.page(&who, StatusCode::OK, name, body)
}
