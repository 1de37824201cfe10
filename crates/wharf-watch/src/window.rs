//! Maintenance windows: `Sat 02:00-04:00 Europe/Berlin`, written in the
//! `wharf.watch.window` label or `--window` flag, several allowed. Inside one, found updates
//! run; outside all of them they wait (see `hold`). Times are wall-clock times in the
//! window's IANA time zone (`chrono-tz`), so a window keeps its local hours across
//! daylight-saving changes.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// The label holding a container's windows (overriding `--window`).
pub const WINDOW: &str = "wharf.watch.window";

/// One weekly (or daily) window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The days it opens on; empty for every day.
    days: Vec<Weekday>,
    start: NaiveTime,
    /// Before `start` (or equal): the window runs past midnight into the next day.
    end: NaiveTime,
    tz: Tz,
    text: String,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Windows separated by `;` or `,` (`Sat 02:00-04:00 Europe/Berlin; Sun 03:00-05:00 UTC`).
/// A comma inside a list of days (`Sat,Sun 02:00-04:00 UTC`) stays part of its window.
pub fn parse_windows(text: &str) -> Result<Vec<Window>, String> {
    let mut windows = Vec::new();
    for part in text.split(';') {
        let mut pending = String::new();
        for piece in part.split(',') {
            if !pending.is_empty() {
                pending.push(',');
            }
            pending.push_str(piece);
            // Still a list of days: the times come in a later piece.
            if !piece.contains(':') && !piece.trim().is_empty() {
                continue;
            }
            if !pending.trim().is_empty() {
                windows.push(pending.trim().parse()?);
            }
            pending.clear();
        }
        if !pending.trim().is_empty() {
            return Err(format!(
                "maintenance window {:?} has no hours: write it as `Sat 02:00-04:00 Europe/Berlin`",
                pending.trim()
            ));
        }
    }
    Ok(windows)
}

impl std::str::FromStr for Window {
    type Err = String;

    /// `[DAYS] HH:MM-HH:MM [ZONE]`: days as `Sat`, `Sat,Sun` or `Mon-Fri` (every day when
    /// left out), the zone an IANA name (UTC when left out).
    fn from_str(text: &str) -> Result<Window, String> {
        let bad = |why: &str| {
            format!("maintenance window {text:?}: {why}; write it as `Sat 02:00-04:00 Europe/Berlin` (days optional, an IANA time zone, UTC if none)")
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let hours_at = words
            .iter()
            .position(|w| w.contains(':'))
            .ok_or_else(|| bad("no hours"))?;
        if hours_at > 1 || words.len() > hours_at + 2 {
            return Err(bad("too many words"));
        }
        let days = match hours_at {
            1 => parse_days(words[0]).map_err(|e| bad(&e))?,
            _ => Vec::new(),
        };
        let (start, end) = words[hours_at]
            .split_once('-')
            .ok_or_else(|| bad("hours are FROM-TO"))?;
        let time = |t: &str| {
            NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| bad(&format!("{t:?} is not HH:MM")))
        };
        let (start, end) = (time(start)?, time(end)?);
        let tz = match words.get(hours_at + 1) {
            Some(zone) => zone
                .parse::<Tz>()
                .map_err(|_| bad(&format!("{zone:?} is not an IANA time zone")))?,
            None => Tz::UTC,
        };
        Ok(Window {
            days,
            start,
            end,
            tz,
            text: text.trim().to_owned(),
        })
    }
}

fn parse_days(text: &str) -> Result<Vec<Weekday>, String> {
    let day = |d: &str| {
        d.trim()
            .parse::<Weekday>()
            .map_err(|_| format!("{d:?} is not a day (Mon, Tue, … Sun)"))
    };
    let mut days = Vec::new();
    for item in text.split(',') {
        match item.split_once('-') {
            Some((from, to)) => {
                let (mut d, to) = (day(from)?, day(to)?);
                days.push(d);
                while d != to {
                    d = d.succ();
                    days.push(d);
                }
            }
            None => days.push(day(item)?),
        }
    }
    Ok(days)
}

impl Window {
    /// Whether the window is open at `now`.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz).date_naive();
        // It may have opened today or, running past midnight, yesterday.
        [local.pred_opt(), Some(local)]
            .into_iter()
            .flatten()
            .filter_map(|date| self.span(date))
            .any(|(open, close)| open <= now && now < close)
    }

    /// When the window next opens after `now` (`now` itself if it is open).
    pub fn next_open(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.contains(now) {
            return Some(now);
        }
        let today = now.with_timezone(&self.tz).date_naive();
        (0..=8)
            .filter_map(|n| today.checked_add_signed(Duration::days(n)))
            .filter_map(|date| self.span(date))
            .map(|(open, _)| open)
            .find(|open| *open > now)
    }

    /// The window opening on local `date`, if it opens that day: (open, close) in UTC.
    fn span(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.days.is_empty() && !self.days.contains(&date.weekday()) {
            return None;
        }
        let open = self.at(date, self.start)?;
        let close_date = if self.end <= self.start {
            date.succ_opt()?
        } else {
            date
        };
        let close = self.at(close_date, self.end)?;
        Some((open, close))
    }

    /// `date time` in the window's zone, in UTC: the earlier of an hour that happens
    /// twice, and for an hour that a clock change skips, the moment after the gap.
    fn at(&self, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
        let local = date.and_time(time);
        match self.tz.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
                Some(t.with_timezone(&Utc))
            }
            chrono::LocalResult::None => (1..=4).find_map(|h| {
                self.tz
                    .from_local_datetime(&(local + Duration::hours(h)))
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            }),
        }
    }
}

/// Whether any of `windows` is open at `now` (no windows: always).
pub fn open(windows: &[Window], now: DateTime<Utc>) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(now))
}

/// When the first of `windows` next opens.
pub fn next_open(windows: &[Window], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    windows.iter().filter_map(|w| w.next_open(now)).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_weekly_window_in_berlin_opens_at_local_hours_across_dst() {
        let w: Window = "Sat 02:00-04:00 Europe/Berlin".parse().unwrap();
        // 2026-12-05 is a Saturday; Berlin is UTC+1 in winter.
        assert!(!w.contains(utc("2026-12-05T00:59:00Z")));
        assert!(w.contains(utc("2026-12-05T01:00:00Z")));
        assert!(!w.contains(utc("2026-12-05T03:00:00Z")));
        assert_eq!(
            w.next_open(utc("2026-12-05T03:00:00Z")),
            Some(utc("2026-12-12T01:00:00Z"))
        );
        // 2026-07-04 is a Saturday in summer time (UTC+2).
        assert!(w.contains(utc("2026-07-04T00:30:00Z")));
        assert_eq!(
            w.next_open(utc("2026-07-03T12:00:00Z")),
            Some(utc("2026-07-04T00:00:00Z"))
        );
    }

    #[test]
    fn lists_ranges_midnight_and_mistakes() {
        let ws =
            parse_windows("Sat,Sun 23:00-01:00 UTC; Mon-Fri 12:00-12:30, 06:00-07:00").unwrap();
        assert_eq!(ws.len(), 3);
        // Sunday 00:30 is inside Saturday's window, which runs past midnight.
        assert!(ws[0].contains(utc("2026-12-06T00:30:00Z")));
        assert!(!ws[0].contains(utc("2026-12-07T23:30:00Z")));
        assert!(ws[1].contains(utc("2026-12-07T12:10:00Z")));
        assert!(!ws[1].contains(utc("2026-12-06T12:10:00Z")));
        assert!(ws[2].contains(utc("2026-12-06T06:10:00Z")));
        assert!(open(&[], utc("2026-12-06T06:10:00Z")));
        for bad in [
            "Sat",
            "Sat 2-4",
            "Sat 02:00-04:00 Mars/Base",
            "Caturday 02:00-03:00",
        ] {
            assert!(parse_windows(bad).is_err(), "{bad}");
        }
    }
}
