//! Each container's update history, kept on disk beside the rolled-back images: what every
//! update, rollback and automatic rollback changed and when, and which earlier images are
//! kept (`--keep-previous`, or the `wharf.watch.keep-previous` label) so that `wharf watch
//! rollback` has something to go back to and `--cleanup` leaves them alone.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use wharf_oci::sync::lock;

use crate::rejected::write_json_atomically;

/// The label that overrides `--keep-previous` for one container.
pub const KEEP_PREVIOUS: &str = "wharf.watch.keep-previous";
/// Changes remembered per container: enough for any `--to`, bounded so the file is too.
const MAX_CHANGES: usize = 50;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A newer image replaced the running one.
    Update,
    /// Someone asked (`wharf watch rollback`, the API, the dashboard) for an earlier image.
    Rollback,
    /// The new image failed (it exited or went unhealthy in its grace period), and the
    /// old container runs again; `reason` says why.
    AutoRollback,
}

/// An image as the engine knows it (`id`) and as its registry does (`digest`, when known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAt {
    pub id: String,
    #[serde(default)]
    pub digest: Option<String>,
}

impl ImageAt {
    /// Whether `wanted` names this image: its digest, its id, or an id prefix of at
    /// least 12 hex digits (with or without `sha256:`), as `docker` accepts.
    pub fn matches(&self, wanted: &str) -> bool {
        let wanted = wanted.trim();
        if self.digest.as_deref() == Some(wanted) || self.id == wanted {
            return true;
        }
        let hex = wanted.trim_start_matches("sha256:");
        hex.len() >= 12 && self.id.trim_start_matches("sha256:").starts_with(hex)
    }
}

/// One change to a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub kind: ChangeKind,
    /// The image reference the container runs under (`registry/app:tag`).
    pub reference: String,
    /// What ran before.
    pub from: ImageAt,
    /// What it changed to; for an automatic rollback, the image that failed.
    pub to: ImageAt,
    /// Why: the failed health check of an automatic rollback, or who asked for a rollback.
    #[serde(default)]
    pub reason: Option<String>,
    /// The Docker host, when the watcher manages more than one.
    #[serde(default)]
    pub host: Option<String>,
}

impl Change {
    /// The image the container ran after this change.
    pub fn running_after(&self) -> &ImageAt {
        match self.kind {
            ChangeKind::AutoRollback => &self.from,
            ChangeKind::Update | ChangeKind::Rollback => &self.to,
        }
    }
}

/// One container's history, oldest change first, and how many earlier images it keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub keep: usize,
    pub changes: Vec<Change>,
}

impl Record {
    /// The earlier images kept for a rollback, most recent first: images the container
    /// ran before a change, never the one it runs now nor one that failed, at most `keep`.
    pub fn kept(&self) -> Vec<ImageAt> {
        let current = self.changes.last().map(|c| c.running_after().id.clone());
        let mut kept: Vec<ImageAt> = Vec::new();
        // Before an automatic rollback the old image ran, and it runs again after it.
        let earlier = self
            .changes
            .iter()
            .rev()
            .filter(|c| c.kind != ChangeKind::AutoRollback);
        for image in earlier.map(|c| &c.from) {
            if kept.len() >= self.keep {
                break;
            }
            if !kept.iter().any(|k| k.id == image.id) && Some(&image.id) != current.as_ref() {
                kept.push(image.clone());
            }
        }
        kept
    }

    /// The image a rollback goes to: the one named by `to` (digest or id) among every
    /// image this container ran, else the most recent earlier one.
    pub fn rollback_target(&self, to: Option<&str>) -> Option<ImageAt> {
        let current = self.changes.last().map(|c| c.running_after().id.clone());
        match to {
            Some(wanted) => self
                .changes
                .iter()
                .rev()
                .flat_map(|c| [&c.to, &c.from])
                .find(|image| image.matches(wanted))
                .cloned(),
            None => self
                .changes
                .iter()
                .rev()
                .filter(|c| c.kind != ChangeKind::AutoRollback)
                .map(|c| &c.from)
                .find(|image| Some(&image.id) != current.as_ref())
                .cloned(),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    /// By container name.
    containers: BTreeMap<String, Record>,
}

/// Every watched container's history, persisted whole on each change.
pub struct History {
    path: Option<PathBuf>,
    host: Option<String>,
    entries: Mutex<BTreeMap<String, Record>>,
}

/// The history file of a watcher of `scope`, in its state directory.
pub fn history_file(dir: &Path, scope: Option<&str>) -> PathBuf {
    let rejected = crate::rejected::state_file(dir, scope);
    let name = rejected
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("rolled-back.json")
        .replacen("rolled-back", "history", 1);
    dir.join(name)
}

impl History {
    /// Read from `path`; a missing file is no history yet. A damaged one is said in the
    /// log and started afresh (a rollback then needs `--to` with a digest).
    pub fn open(path: PathBuf, host: Option<String>) -> History {
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Saved>(&bytes)
                .map(|s| s.containers)
                .unwrap_or_else(|e| {
                    tracing::warn!(path = %path.display(), error = %e, "the update history file is damaged; starting afresh");
                    BTreeMap::new()
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the update history file; starting afresh");
                BTreeMap::new()
            }
        };
        History {
            path: Some(path),
            host,
            entries: Mutex::new(entries),
        }
    }

    /// A history kept in memory only (tests, and callers with no state directory).
    pub fn in_memory(host: Option<String>) -> History {
        History {
            path: None,
            host,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    pub fn get(&self, name: &str) -> Record {
        lock(&self.entries).get(name).cloned().unwrap_or_default()
    }

    /// Add a change (stamped with this watcher's host) and save; `keep` is the
    /// container's `--keep-previous` as it is now.
    pub fn record(&self, name: &str, keep: usize, mut change: Change) {
        change.host = change.host.or_else(|| self.host.clone());
        let mut entries = lock(&self.entries);
        let record = entries.entry(name.to_owned()).or_default();
        record.keep = keep;
        record.changes.push(change);
        let over = record.changes.len().saturating_sub(MAX_CHANGES);
        record.changes.drain(..over);
        self.save(&entries);
    }

    /// Images no `--cleanup` may remove: each container's kept earlier images.
    pub fn protected(&self) -> HashSet<String> {
        lock(&self.entries)
            .values()
            .flat_map(|r| r.kept())
            .map(|image| image.id)
            .collect()
    }

    /// Every image `name`'s history mentions: after an update, the ones no longer kept
    /// are cleanup's to remove.
    pub fn mentioned(&self, name: &str) -> HashSet<String> {
        lock(&self.entries)
            .get(name)
            .into_iter()
            .flat_map(|r| r.changes.iter())
            .flat_map(|c| [c.from.id.clone(), c.to.id.clone()])
            .collect()
    }

    fn save(&self, entries: &BTreeMap<String, Record>) {
        let Some(path) = &self.path else { return };
        let saved = Saved {
            containers: entries.clone(),
        };
        if let Err(e) = write_json_atomically(path, &saved) {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the update history");
        }
    }
}

/// `wharf.watch.keep-previous` on a container, else the flag's value.
pub fn keep_of(labels: &std::collections::HashMap<String, String>, flag: usize) -> usize {
    labels
        .get(KEEP_PREVIOUS)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(n: u8) -> ImageAt {
        ImageAt {
            id: format!("sha256:{}", n.to_string().repeat(64)),
            digest: Some(format!("sha256:d{n}")),
        }
    }

    fn change(kind: ChangeKind, from: u8, to: u8) -> Change {
        Change {
            at: u64::from(from) * 10 + u64::from(to),
            kind,
            reference: "localhost:5000/app:1".into(),
            from: image(from),
            to: image(to),
            reason: None,
            host: None,
        }
    }

    #[test]
    fn kept_images_are_the_last_ones_run_never_the_current_or_a_failed_one() {
        let mut r = Record {
            keep: 2,
            changes: vec![
                change(ChangeKind::Update, 1, 2),
                change(ChangeKind::Update, 2, 3),
                change(ChangeKind::AutoRollback, 3, 4),
            ],
        };
        assert_eq!(r.kept(), vec![image(2), image(1)]);
        assert_eq!(r.rollback_target(None), Some(image(2)));
        r.changes.push(change(ChangeKind::Rollback, 3, 2));
        assert_eq!(r.kept(), vec![image(3), image(1)]);
        assert_eq!(r.rollback_target(None), Some(image(3)));
        assert_eq!(r.rollback_target(Some("sha256:d1")), Some(image(1)));
        assert_eq!(r.rollback_target(Some("111111111111")), Some(image(1)));
        assert_eq!(r.rollback_target(Some("sha256:nope")), None);
        r.keep = 0;
        assert!(r.kept().is_empty());
    }

    #[test]
    fn history_survives_a_restart_and_is_bounded() {
        let dir = std::env::temp_dir().join(format!("wharf-history-{}", std::process::id()));
        let path = history_file(&dir, Some("team a"));
        assert!(path.ends_with("history.team_a.json"));
        let h = History::open(path.clone(), Some("unix:///a.sock".into()));
        for i in 0..60u8 {
            h.record("web", 1, change(ChangeKind::Update, i, i + 1));
        }
        let again = History::open(path.clone(), None);
        let r = again.get("web");
        assert_eq!(r.changes.len(), MAX_CHANGES);
        assert_eq!(r.changes[0].host.as_deref(), Some("unix:///a.sock"));
        assert_eq!(again.protected(), HashSet::from([image(59).id]));
        let _ = std::fs::remove_dir_all(dir);
    }
}
