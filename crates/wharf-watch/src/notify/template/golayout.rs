//! Go's time layouts ("2006-01-02 15:04:05"): the reference time's parts, each standing
//! for that part of the time being formatted.

use chrono::{DateTime, Datelike, FixedOffset, Timelike};

/// The layout's elements, longest first where one is the start of another.
const ELEMENTS: &[&str] = &[
    "January",
    "Monday",
    "2006",
    "-07:00",
    "-0700",
    "Z07:00",
    "Z0700",
    ".000000000",
    ".999999999",
    ".000000",
    ".999999",
    ".000",
    ".999",
    "Jan",
    "Mon",
    "MST",
    "_2",
    "01",
    "02",
    "03",
    "04",
    "05",
    "06",
    "15",
    "PM",
    "pm",
    "-07",
    "1",
    "2",
    "3",
    "4",
    "5",
];

pub fn format(t: &DateTime<FixedOffset>, layout: &str) -> String {
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for element in ELEMENTS {
            if let Some(after) = rest.strip_prefix(element) {
                out.push_str(&part(t, element));
                rest = after;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn part(t: &DateTime<FixedOffset>, element: &str) -> String {
    let offset = t.offset().local_minus_utc();
    let (sign, hours, minutes) = (
        if offset < 0 { '-' } else { '+' },
        offset.abs() / 3600,
        offset.abs() % 3600 / 60,
    );
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    let nanos = t.nanosecond() % 1_000_000_000;
    match element {
        "2006" => format!("{:04}", t.year()),
        "06" => format!("{:02}", t.year() % 100),
        "January" => t.format("%B").to_string(),
        "Jan" => t.format("%b").to_string(),
        "01" => format!("{:02}", t.month()),
        "1" => t.month().to_string(),
        "Monday" => t.format("%A").to_string(),
        "Mon" => t.format("%a").to_string(),
        "02" => format!("{:02}", t.day()),
        "_2" => format!("{:>2}", t.day()),
        "2" => t.day().to_string(),
        "15" => format!("{:02}", t.hour()),
        "03" => format!("{hour12:02}"),
        "3" => hour12.to_string(),
        "04" => format!("{:02}", t.minute()),
        "4" => t.minute().to_string(),
        "05" => format!("{:02}", t.second()),
        "5" => t.second().to_string(),
        "PM" => if t.hour() < 12 { "AM" } else { "PM" }.to_owned(),
        "pm" => if t.hour() < 12 { "am" } else { "pm" }.to_owned(),
        "MST" if offset == 0 => "UTC".to_owned(),
        "MST" => format!("{sign}{hours:02}{minutes:02}"),
        "Z07:00" | "Z0700" if offset == 0 => "Z".to_owned(),
        "-07:00" | "Z07:00" => format!("{sign}{hours:02}:{minutes:02}"),
        "-0700" | "Z0700" => format!("{sign}{hours:02}{minutes:02}"),
        "-07" => format!("{sign}{hours:02}"),
        fraction => {
            // .000 keeps its zeros; .999 drops trailing ones (and the dot if nothing is left).
            let digits = fraction.len() - 1;
            let text = format!("{nanos:09}")[..digits].to_owned();
            if fraction.as_bytes()[1] == b'9' {
                let trimmed = text.trim_end_matches('0');
                if trimmed.is_empty() {
                    String::new()
                } else {
                    format!(".{trimmed}")
                }
            } else {
                format!(".{text}")
            }
        }
    }
}
