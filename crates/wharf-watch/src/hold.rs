//! Updates that were found but wait: for an approval (label `wharf.watch.approve=true`)
//! or for a maintenance window to open (see `window`). A held update is not remembered as
//! an image to apply later: when the approval comes or the window opens, the container is
//! checked again, so a newer image pushed in between is the one that runs. An approval is
//! for one digest; a newer image needs its own.
//!
//! The clock the windows are read by can be set by tests (`WHARF_WATCH_FAKE_NOW`, and
//! `POST /v1/clock` with the hidden `--test-clock` flag): never used in production.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use wharf_oci::sync::lock;

use crate::labels::Labels;
use crate::rejected::write_json_atomically;
use crate::window::{self, Window};

/// The label that holds a container's updates until they are approved.
pub const APPROVE: &str = "wharf.watch.approve";
/// The environment variable that starts the watcher's clock at another time (RFC 3339):
/// for tests of maintenance windows only.
pub const FAKE_NOW: &str = "WHARF_WATCH_FAKE_NOW";

/// Wall-clock time, shifted for tests. Time still flows: a set clock moves on from the
/// time set, so waits and grace periods behave as in production.
pub struct Clock {
    offset_ms: Mutex<i64>,
    settable: bool,
    changed: Notify,
}

impl Clock {
    pub fn system() -> Clock {
        Clock {
            offset_ms: Mutex::new(0),
            settable: false,
            changed: Notify::new(),
        }
    }

    /// The system clock, unless `WHARF_WATCH_FAKE_NOW` sets another start; `settable`
    /// (the hidden `--test-clock` flag) lets `POST /v1/clock` move it.
    pub fn from_env(settable: bool) -> Result<Clock, String> {
        let clock = Clock {
            settable,
            ..Clock::system()
        };
        if let Some(text) = std::env::var(FAKE_NOW).ok().filter(|t| !t.is_empty()) {
            let at = parse_time(&text).map_err(|e| format!("{FAKE_NOW}: {e}"))?;
            clock.shift_to(at);
            tracing::warn!(now = %at, "{FAKE_NOW} is set: maintenance windows are read by a test clock");
        }
        Ok(clock)
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(*lock(&self.offset_ms))
    }

    pub fn is_settable(&self) -> bool {
        self.settable
    }

    /// Move a test clock; refused unless the watcher was started with `--test-clock`.
    pub fn set(&self, at: DateTime<Utc>) -> Result<(), String> {
        if !self.settable {
            return Err(
                "the clock can only be set when wharf watch runs with --test-clock (tests only)"
                    .into(),
            );
        }
        self.shift_to(at);
        tracing::warn!(now = %at, "test clock set");
        self.changed.notify_one();
        Ok(())
    }

    fn shift_to(&self, at: DateTime<Utc>) {
        *lock(&self.offset_ms) = (at - Utc::now()).num_milliseconds();
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An RFC 3339 time (`2026-12-05T01:30:00Z`).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2026-12-05T01:30:00Z ({e})"))
}

/// What a held update waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitingFor {
    Approval,
    Window,
}

/// An update found and held back.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub container: String,
    pub host: Option<String>,
    /// The reference checked, which the update would run under.
    pub image: String,
    /// The image found: a registry digest, or a local image id for no-pull containers.
    pub digest: String,
    pub waiting_for: WaitingFor,
    /// When the next window opens (RFC 3339), for one waiting for a window.
    pub opens_at: Option<String>,
    /// Seconds since the Unix epoch when it was first held for this digest.
    pub since: u64,
    #[serde(skip)]
    opens: Option<DateTime<Utc>>,
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    /// Container name → approved digest.
    approvals: BTreeMap<String, String>,
}

/// The held updates of one watcher (one Docker host), and the approvals given.
pub struct Holds {
    host: Option<String>,
    /// Where people approve: the watch API's (or dashboard's) public address.
    link: Option<String>,
    path: Option<PathBuf>,
    held: Mutex<BTreeMap<String, Held>>,
    approvals: Mutex<BTreeMap<String, String>>,
    changed: Notify,
}

/// The approvals file of a watcher of `scope`, in its state directory.
pub fn approvals_file(dir: &Path, scope: Option<&str>) -> PathBuf {
    let rejected = crate::rejected::state_file(dir, scope);
    let name = rejected
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("rolled-back.json")
        .replacen("rolled-back", "approvals", 1);
    dir.join(name)
}

impl Holds {
    /// Approvals given before a restart are read from `path` (none if `None`).
    pub fn open(path: Option<PathBuf>, host: Option<String>, link: Option<String>) -> Holds {
        let approvals = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice::<Saved>(&bytes).ok())
            .map(|s| s.approvals)
            .unwrap_or_default();
        Holds {
            host,
            link,
            path,
            held: Mutex::new(BTreeMap::new()),
            approvals: Mutex::new(approvals),
            changed: Notify::new(),
        }
    }

    pub fn link(&self) -> Option<&str> {
        self.link.as_deref()
    }

    /// Every update waiting now.
    pub fn list(&self) -> Vec<Held> {
        lock(&self.held).values().cloned().collect()
    }

    /// Whether the update of `name` (labels `labels`) to `digest` under `image` may run
    /// now; if not, it is held and the error says what it waits for. `flag_windows` are
    /// `--window`'s, which the label replaces.
    pub fn admit(
        &self,
        name: &str,
        labels: &Labels,
        image: &str,
        digest: &str,
        flag_windows: &[Window],
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let needs_approval = labels
            .0
            .get(APPROVE)
            .is_some_and(|v| matches!(v.trim(), "true" | "1" | "True" | "TRUE"));
        if needs_approval && lock(&self.approvals).get(name).map(String::as_str) != Some(digest) {
            self.hold(name, image, digest, WaitingFor::Approval, None);
            return Err(self.approval_detail(name, digest));
        }
        let label_windows = labels
            .0
            .get(window::WINDOW)
            .map(|t| window::parse_windows(t));
        let windows = match label_windows {
            Some(Ok(ws)) => ws,
            Some(Err(e)) => {
                // Never update outside what the owner meant; say how to fix it.
                self.hold(name, image, digest, WaitingFor::Window, None);
                return Err(format!(
                    "held: the {} label is invalid: {e}",
                    window::WINDOW
                ));
            }
            None => flag_windows.to_vec(),
        };
        if window::open(&windows, now) {
            lock(&self.held).remove(name);
            return Ok(());
        }
        let opens = window::next_open(&windows, now);
        self.hold(name, image, digest, WaitingFor::Window, opens);
        let list: Vec<String> = windows.iter().map(|w| w.to_string()).collect();
        Err(format!(
            "held: outside its maintenance window ({}); it runs when the window opens{}, with the newest image then",
            list.join("; "),
            opens.map(|t| format!(" at {}", t.to_rfc3339())).unwrap_or_default()
        ))
    }

    fn approval_detail(&self, name: &str, digest: &str) -> String {
        let link = self.link.as_deref().unwrap_or("the watch API");
        format!(
            "waiting for approval: approve it on {link} or with POST {link}/v1/approve {{\"container\":\"{name}\",\"digest\":\"{digest}\"}}"
        )
    }

    fn hold(
        &self,
        name: &str,
        image: &str,
        digest: &str,
        waiting_for: WaitingFor,
        opens: Option<DateTime<Utc>>,
    ) {
        let mut held = lock(&self.held);
        let since = match held.get(name) {
            Some(h) if h.digest == digest => h.since,
            _ => unix_now(),
        };
        held.insert(
            name.to_owned(),
            Held {
                container: name.to_owned(),
                host: self.host.clone(),
                image: image.to_owned(),
                digest: digest.to_owned(),
                waiting_for,
                opens_at: opens.map(|t| t.to_rfc3339()),
                since,
                opens,
            },
        );
        drop(held);
        tracing::info!(container = %name, %image, %digest, waiting_for = ?waiting_for, "update held");
        self.changed.notify_one();
    }

    /// Approve `name`'s update to `digest`, or to the one it waits with. Returns the
    /// image reference to check now.
    pub fn approve(&self, name: &str, digest: Option<&str>) -> Result<(String, String), String> {
        let held = lock(&self.held).get(name).cloned();
        let (digest, image) = match (digest.filter(|d| !d.is_empty()), &held) {
            (Some(d), Some(h)) => (d.to_owned(), h.image.clone()),
            (Some(d), None) => (d.to_owned(), String::new()),
            (None, Some(h)) if h.waiting_for == WaitingFor::Approval => {
                (h.digest.clone(), h.image.clone())
            }
            _ => {
                return Err(format!(
                    "no update of {name} waits for approval: nothing to approve (GET /v1/pending lists what waits)"
                ))
            }
        };
        let mut approvals = lock(&self.approvals);
        approvals.insert(name.to_owned(), digest.clone());
        self.save(&approvals);
        tracing::info!(container = %name, %digest, "update approved");
        Ok((image, digest))
    }

    /// After an update of `name` ran: its approval is used up.
    pub fn done(&self, name: &str) {
        lock(&self.held).remove(name);
        let mut approvals = lock(&self.approvals);
        if approvals.remove(name).is_some() {
            self.save(&approvals);
        }
    }

    /// Until a held update's window opens (by `clock`): the images to check then. Each
    /// hold fires once; the check holds it again if it is still outside its window.
    pub async fn due(&self, clock: &Clock) -> Vec<String> {
        loop {
            let now = clock.now();
            let next = {
                let mut held = lock(&self.held);
                let mut due: Vec<String> = Vec::new();
                for h in held.values_mut() {
                    if h.opens.is_some_and(|t| t <= now) {
                        h.opens = None;
                        if !due.contains(&h.image) {
                            due.push(h.image.clone());
                        }
                    }
                }
                if !due.is_empty() {
                    return due;
                }
                held.values().filter_map(|h| h.opens).min()
            };
            let wait = next
                .and_then(|t| (t - now).to_std().ok())
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(3600));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = clock.changed.notified() => {}
                () = self.changed.notified() => {}
            }
        }
    }

    fn save(&self, approvals: &BTreeMap<String, String>) {
        let Some(path) = &self.path else { return };
        let saved = Saved {
            approvals: approvals.clone(),
        };
        if let Err(e) = write_json_atomically(path, &saved) {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the approvals: after a restart they must be given again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn approvals_are_per_digest_and_windows_hold_until_they_open() {
        let holds = Holds::open(None, None, Some("http://watch:8080".into()));
        let now = parse_time("2026-12-05T00:30:00Z").unwrap();
        let approve = labels(&[(APPROVE, "true")]);
        let why = holds
            .admit("web", &Labels(&approve), "r/app:1", "sha256:a", &[], now)
            .unwrap_err();
        assert!(why.contains("http://watch:8080/v1/approve"), "{why}");
        assert_eq!(holds.list()[0].waiting_for, WaitingFor::Approval);
        assert_eq!(holds.approve("web", None).unwrap().1, "sha256:a");
        assert!(holds
            .admit("web", &Labels(&approve), "r/app:1", "sha256:b", &[], now)
            .is_err());
        assert!(holds
            .admit("web", &Labels(&approve), "r/app:1", "sha256:a", &[], now)
            .is_ok());
        holds.done("web");
        assert!(holds.approve("web", None).is_err());

        let windowed = labels(&[(window::WINDOW, "Sat 02:00-04:00 Europe/Berlin")]);
        let why = holds
            .admit("db", &Labels(&windowed), "r/db:1", "sha256:c", &[], now)
            .unwrap_err();
        assert!(why.contains("2026-12-05T01:00:00"), "{why}");
        let inside = parse_time("2026-12-05T01:30:00Z").unwrap();
        assert!(holds
            .admit("db", &Labels(&windowed), "r/db:1", "sha256:c", &[], inside)
            .is_ok());
        assert!(holds.list().is_empty());
    }
}
