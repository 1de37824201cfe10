//! Small pieces pages share: relative times, confirmation notices, pagers, pull lines.

use std::collections::HashMap;
use std::time::SystemTime;

use maud::{html, Markup};

use super::encode;

/// "3 minutes ago", with the exact time (UTC, RFC 3339) on hover.
pub fn ago(t: SystemTime) -> Markup {
    let exact = humantime::format_rfc3339_seconds(t).to_string();
    html! { time datetime=(exact) title=(exact) { (relative(t, SystemTime::now())) } }
}

fn relative(t: SystemTime, now: SystemTime) -> String {
    let (secs, future) = match now.duration_since(t) {
        Ok(d) => (d.as_secs(), false),
        Err(e) => (e.duration().as_secs(), true),
    };
    if secs < 60 {
        return "just now".into();
    }
    let units = [
        (365 * 86_400, "year"),
        (30 * 86_400, "month"),
        (7 * 86_400, "week"),
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
    ];
    let (size, unit) = units
        .iter()
        .copied()
        .find(|(size, _)| secs >= *size)
        .unwrap_or((60, "minute"));
    let n = secs / size;
    let plural = if n == 1 { "" } else { "s" };
    match future {
        false => format!("{n} {unit}{plural} ago"),
        true => format!("in {n} {unit}{plural}"),
    }
}

/// The confirmation a redirect after an action asks for (`?done=...`). Only these fixed
/// sentences can appear, with the values escaped, so a link cannot put words in the
/// registry's mouth.
pub fn notice(q: &HashMap<String, String>) -> Markup {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
    let text = match get("done") {
        "deleted" => format!("Deleted {}.", get("what")),
        "user-added" => format!("Added the user {}.", get("user")),
        "user-reset" => format!("Changed the password of {}.", get("user")),
        "user-deleted" => format!("Deleted the user {}.", get("user")),
        "gc" => format!(
            "Garbage collection deleted {} and {}, freeing {}.",
            count(num("blobs"), "blob"),
            count(num("manifests"), "manifest"),
            wharf_oci::units::human_bytes(num("freed"))
        ),
        _ => return html! {},
    };
    html! { p.notice #notice role="status" { (text) } }
}

/// "1 blob", "3 blobs"; "1 repository", "3 repositories".
pub fn count(n: u64, what: &str) -> String {
    match (n, what.strip_suffix('y')) {
        (1, _) => format!("1 {what}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {what}s"),
    }
}

/// Page `page` (from 1) of `total` rows, `per` to a page.
pub struct Pager<'a> {
    pub path: &'a str,
    /// The query every page link keeps (search, sort, filter).
    pub keep: Vec<(&'a str, &'a str)>,
    pub page: usize,
    pub per: usize,
    pub total: usize,
    pub noun: &'a str,
}

impl Pager<'_> {
    pub fn pages(&self) -> usize {
        self.total.div_ceil(self.per).max(1)
    }

    fn link(&self, page: usize) -> String {
        let page = page.to_string();
        let mut pairs = self.keep.clone();
        pairs.push(("page", &page));
        format!("{}?{}", self.path, encode(&pairs))
    }

    pub fn render(&self) -> Markup {
        let first = (self.page - 1) * self.per + 1;
        let last = (self.page * self.per).min(self.total);
        html! {
            nav.pager aria-label="pages" {
                span.muted #total {
                    @if self.total == 0 { "None" }
                    @else { (first) "–" (last) " of " (count(self.total as u64, self.noun)) }
                }
                span {
                    @if self.page > 1 { a.button.secondary #prev href=(self.link(self.page - 1)) rel="prev" { "← Previous" } " " }
                    @if self.page < self.pages() { a.button.secondary #next href=(self.link(self.page + 1)) rel="next" { "Next →" } }
                }
            }
        }
    }
}

/// The page number a query asks for: from 1, and never past the last page.
pub fn page_number(q: &HashMap<String, String>) -> usize {
    q.get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1)
        .min(1_000_000)
}

/// The copyable pull line (selectable text: no script needed).
pub fn pull_line(line: &str) -> Markup {
    html! {
        div.pull { span { "Pull" } input #pull type="text" readonly value=(line) aria-label="docker pull command"; }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn relative_times_read_as_people_say_them() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 365 * 86_400);
        let at = |s: u64| relative(now - Duration::from_secs(s), now);
        assert_eq!(at(5), "just now");
        assert_eq!(at(60), "1 minute ago");
        assert_eq!(at(3 * 60 + 5), "3 minutes ago");
        assert_eq!(at(2 * 3600), "2 hours ago");
        assert_eq!(at(86_400), "1 day ago");
        assert_eq!(at(15 * 86_400), "2 weeks ago");
        assert_eq!(at(400 * 86_400), "1 year ago");
        assert_eq!(
            relative(now + Duration::from_secs(120), now),
            "in 2 minutes"
        );
    }

    #[test]
    fn counts_read_in_english() {
        assert_eq!(count(1, "blob"), "1 blob");
        assert_eq!(count(0, "manifest"), "0 manifests");
        assert_eq!(count(58, "repository"), "58 repositories");
        assert_eq!(count(1, "repository"), "1 repository");
    }

    #[test]
    fn notices_are_the_registrys_own_sentences_with_values_escaped() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let html = notice(&q(&[("done", "deleted"), ("what", "<b>x</b>")])).into_string();
        assert!(html.contains("Deleted &lt;b&gt;x&lt;/b&gt;."), "{html}");
        assert!(notice(&q(&[("done", "Your account is locked")]))
            .into_string()
            .is_empty());
        let gc = q(&[
            ("done", "gc"),
            ("blobs", "1"),
            ("manifests", "2"),
            ("freed", "x"),
        ]);
        let html = notice(&gc).into_string();
        assert!(
            html.contains("deleted 1 blob and 2 manifests, freeing 0 B."),
            "{html}"
        );
    }
}
