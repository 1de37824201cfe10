//! When sessions run: every poll interval, or at the times of a 6-field cron expression
//! (seconds first, as watchtower's `WATCHTOWER_SCHEDULE`), in local time (`TZ`).

use std::time::Duration;

use croner::parser::{CronParser, Seconds};
use croner::Cron;
use wharf_oci::units::parse_duration;

#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<Cron>),
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule {pattern:?} is not a 6-field cron expression (seconds minutes hours day-of-month month day-of-week, e.g. \"0 0 4 * * *\"): {detail}")]
    Cron { pattern: String, detail: String },
    #[error("poll interval must be at least one second")]
    ZeroInterval,
}

impl Schedule {
    /// A cron expression, or robfig/cron's `@every 1h30m` which watchtower users also write.
    pub fn cron(pattern: &str) -> Result<Schedule, ScheduleError> {
        let pattern = pattern.trim();
        if let Some(every) = pattern.strip_prefix("@every") {
            let interval = parse_duration(every.trim()).map_err(|e| ScheduleError::Cron {
                pattern: pattern.to_owned(),
                detail: format!("@every needs a duration: {e}"),
            })?;
            return Schedule::every(interval);
        }
        let parser = CronParser::builder().seconds(Seconds::Required).build();
        let cron = if pattern.starts_with('@') {
            CronParser::new().parse(pattern)
        } else {
            parser.parse(pattern)
        }
        .map_err(|e| ScheduleError::Cron {
            pattern: pattern.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Schedule::Cron(Box::new(cron)))
    }

    pub fn every(interval: Duration) -> Result<Schedule, ScheduleError> {
        if interval < Duration::from_secs(1) {
            return Err(ScheduleError::ZeroInterval);
        }
        Ok(Schedule::Every(interval))
    }

    /// How long until the next session, from now.
    pub fn next_delay(&self) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron(cron) => {
                let now = chrono::Local::now().naive_local();
                cron.find_next_occurrence(&now, false)
                    .ok()
                    .and_then(|next| (next - now).to_std().ok())
                    // An expression that never fires again (a past year): check daily.
                    .unwrap_or(Duration::from_secs(86_400))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use wharf_oci::units::DurationError;

    use super::*;

    #[test]
    fn six_field_cron_and_every() {
        assert!(matches!(
            Schedule::cron("0 0 4 * * *"),
            Ok(Schedule::Cron(_))
        ));
        let err = Schedule::cron("0 4 * * *").unwrap_err().to_string();
        assert!(err.contains("6-field"), "{err}");
        match Schedule::cron("@every 1h30m").unwrap() {
            Schedule::Every(d) => assert_eq!(d, Duration::from_secs(5400)),
            other => panic!("{other:?}"),
        }
        let every_second = Schedule::cron("* * * * * *").unwrap();
        assert!(every_second.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("5x"),
            Err(DurationError::Syntax("5x".into()))
        );
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        let huge = "999999999999999999999h";
        assert_eq!(
            parse_duration(huge),
            Err(DurationError::TooLong(huge.into()))
        );
        let err = Schedule::cron(&format!("@every {huge}")).unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }
}
