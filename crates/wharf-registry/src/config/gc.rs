//! `gc:` (wharf's own): garbage collection inside `wharf serve`, on a schedule.

use std::time::Duration;

use serde::Deserialize;

use super::{lenient, GcSchedule};

#[derive(Deserialize, Default)]
pub(super) struct Gc {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::bool")]
    deleteuntagged: Option<bool>,
    #[serde(default, deserialize_with = "lenient::duration")]
    grace: Option<Duration>,
    #[serde(default)]
    workers: Option<usize>,
    #[serde(default, deserialize_with = "lenient::duration")]
    reviewafter: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    reviewinterval: Option<Duration>,
}

impl Gc {
    /// The schedule, unless `enabled: false` turns it off.
    pub(super) fn into_config(self) -> Option<GcSchedule> {
        if self.enabled == Some(false) {
            return None;
        }
        let defaults = GcSchedule::default();
        Some(GcSchedule {
            interval: self.interval.unwrap_or(defaults.interval),
            delete_untagged: self.deleteuntagged.unwrap_or(false),
            grace: self.grace.unwrap_or(defaults.grace),
            workers: self.workers.unwrap_or(defaults.workers),
            review_after: self.reviewafter,
            review_interval: self.reviewinterval.unwrap_or(defaults.review_interval),
        })
    }
}
