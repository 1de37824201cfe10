//! The data watchtower hands its templates, built from a session's report: log entries
//! (`.Message`, `.Time`, `.Level`, `.Data`) and, with `--notification-report`, the
//! report (`.Report.Updated`, `.Failed`, … with `.Name`, `.ImageName`, `.State`, …).

use chrono::{DateTime, FixedOffset, TimeZone, Utc};

use super::Value;
use crate::report::{ContainerReport, Outcome, SessionReport};

/// One line of what happened, as a log entry: logrus's level names.
#[derive(Debug, Clone)]
pub struct Entry {
    pub level: &'static str,
    pub message: String,
    pub container: String,
    pub image: String,
}

/// Where each level sits: an entry is kept when it is at or above the notification level.
pub fn level_rank(level: &str) -> Option<u8> {
    Some(match level.to_ascii_lowercase().as_str() {
        "panic" => 0,
        "fatal" => 1,
        "error" => 2,
        "warn" | "warning" => 3,
        "info" => 4,
        "debug" => 5,
        "trace" => 6,
        _ => return None,
    })
}

/// The session's entries at `max_rank` or more severe.
pub fn entries(report: &SessionReport, max_rank: u8) -> Vec<Entry> {
    report
        .containers
        .iter()
        .filter_map(entry)
        .filter(|e| level_rank(e.level).is_some_and(|r| r <= max_rank))
        .collect()
}

fn entry(c: &ContainerReport) -> Option<Entry> {
    let (old, new) = (
        short(c.old_digest.as_deref()),
        short(c.new_digest.as_deref()),
    );
    let detail = c.detail.as_deref().unwrap_or("");
    let (level, message) = match c.outcome {
        Outcome::Updated => (
            "info",
            format!("Updated {} ({}) from {old} to {new}", c.label(), c.image),
        ),
        Outcome::Stale => (
            "info",
            format!("Found new {} image ({new}) for {}", c.image, c.label()),
        ),
        Outcome::RolledBack => (
            "warning",
            format!("Rolled back {} ({}): {detail}", c.label(), c.image),
        ),
        Outcome::Failed => ("error", format!("{} ({}): {detail}", c.label(), c.image)),
        Outcome::Skipped if detail.is_empty() => return None,
        Outcome::Skipped => ("debug", format!("Skipped {}: {detail}", c.label())),
        Outcome::Fresh => (
            "debug",
            format!("{} ({}) is up to date", c.label(), c.image),
        ),
    };
    Some(Entry {
        level,
        message,
        container: c.name.clone(),
        image: c.image.clone(),
    })
}

fn short(digest: Option<&str>) -> String {
    let d = digest.unwrap_or("?");
    d.split_once(':')
        .map_or(d, |(_, h)| h)
        .chars()
        .take(12)
        .collect()
}

fn time_of(seconds: u64) -> DateTime<FixedOffset> {
    let utc = Utc
        .timestamp_opt(seconds as i64, 0)
        .single()
        .unwrap_or_default();
    utc.with_timezone(&chrono::Local).fixed_offset()
}

fn entry_values(entries: &[Entry], at: u64) -> Value {
    Value::List(
        entries
            .iter()
            .map(|e| {
                Value::map(vec![
                    ("Message", Value::Str(e.message.clone())),
                    ("Level", Value::Str(e.level.to_owned())),
                    ("Time", Value::Time(time_of(at))),
                    (
                        "Data",
                        Value::map(vec![
                            ("container", Value::Str(e.container.clone())),
                            ("image", Value::Str(e.image.clone())),
                        ]),
                    ),
                ])
            })
            .collect(),
    )
}

/// Without `--notification-report`: the entries alone, as watchtower's legacy templates
/// (`{{range .}}{{.Message}}{{println}}{{end}}`) expect.
pub fn legacy_data(report: &SessionReport, entries: &[Entry]) -> Value {
    entry_values(entries, report.finished)
}

/// With `--notification-report`: `.Title`, `.Host`, `.Entries` and `.Report`.
pub fn report_data(report: &SessionReport, entries: &[Entry], host: &str) -> Value {
    let state = |o: Outcome| match o {
        Outcome::Fresh => "Fresh",
        Outcome::Stale => "Stale",
        Outcome::Updated => "Updated",
        Outcome::RolledBack | Outcome::Failed => "Failed",
        Outcome::Skipped => "Skipped",
    };
    let status = |c: &ContainerReport| {
        Value::map(vec![
            ("ID", Value::Id(c.name.clone())),
            ("Name", Value::Str(c.name.clone())),
            ("ImageName", Value::Str(c.image.clone())),
            (
                "CurrentImageID",
                Value::Id(c.old_digest.clone().unwrap_or_default()),
            ),
            (
                "LatestImageID",
                Value::Id(c.new_digest.clone().unwrap_or_default()),
            ),
            ("State", Value::Str(state(c.outcome).to_owned())),
            ("Error", Value::Str(error_of(c))),
        ])
    };
    let of = |pick: &dyn Fn(Outcome) -> bool| {
        Value::List(
            report
                .containers
                .iter()
                .filter(|c| pick(c.outcome))
                .map(status)
                .collect(),
        )
    };
    let report_value = Value::map(vec![
        ("Scanned", of(&|o| o != Outcome::Skipped)),
        ("Updated", of(&|o| o == Outcome::Updated)),
        (
            "Failed",
            of(&|o| matches!(o, Outcome::Failed | Outcome::RolledBack)),
        ),
        ("Skipped", of(&|o| o == Outcome::Skipped)),
        ("Stale", of(&|o| o == Outcome::Stale)),
        ("Fresh", of(&|o| o == Outcome::Fresh)),
        ("All", of(&|_| true)),
    ]);
    Value::map(vec![
        (
            "Title",
            Value::Str(format!("wharf watch updates on {host}")),
        ),
        ("Host", Value::Str(host.to_owned())),
        ("Entries", entry_values(entries, report.finished)),
        ("Report", report_value),
    ])
}

/// What watchtower calls a container's error: why it failed, was rolled back or skipped.
pub fn error_of(c: &ContainerReport) -> String {
    match c.outcome {
        Outcome::Failed | Outcome::RolledBack | Outcome::Skipped => {
            c.detail.clone().unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// A report with one container in each state, to try a template on at start.
pub fn sample() -> SessionReport {
    let line = |name: &str, outcome: Outcome, detail: Option<&str>| ContainerReport {
        name: name.to_owned(),
        image: format!("registry.example/{name}:latest"),
        old_digest: Some(format!("sha256:{}", "a".repeat(64))),
        new_digest: Some(format!("sha256:{}", "b".repeat(64))),
        outcome,
        detail: detail.map(str::to_owned),
        host: None,
    };
    SessionReport {
        started: 0,
        finished: 0,
        containers: vec![
            line("updated", Outcome::Updated, None),
            line("stale", Outcome::Stale, None),
            line("fresh", Outcome::Fresh, None),
            line("failed", Outcome::Failed, Some("the registry answered 500")),
            line("rolledback", Outcome::RolledBack, Some("exit code 3")),
            line("skipped", Outcome::Skipped, Some("pinned by digest")),
        ],
    }
}
