//! Images whose update was rolled back, per container, kept on disk so that neither the
//! next check nor a restarted watcher deploys the same broken image again (each attempt
//! stops a healthy service). An entry holds until the tag moves to another digest, or
//! the container is recreated by someone else (it is keyed by the container's id).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use wharf_oci::sync::lock;

/// The file a watcher keeps its rollbacks in, under its state directory: one per scope,
/// since watchers of different scopes share a machine and never each other's containers.
pub fn state_file(dir: &Path, scope: Option<&str>) -> PathBuf {
    match scope.filter(|s| !s.is_empty()) {
        Some(scope) => {
            let safe: String = scope
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            dir.join(format!("rolled-back.{safe}.json"))
        }
        None => dir.join("rolled-back.json"),
    }
}

/// `$XDG_STATE_HOME/wharf-watch`, `~/.local/state/wharf-watch`, else
/// `/var/lib/wharf-watch` (a container with no HOME).
pub fn default_state_dir() -> PathBuf {
    let home = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    home("XDG_STATE_HOME")
        .or_else(|| home("HOME").map(|h| h.join(".local/state")))
        .map(|d| d.join("wharf-watch"))
        .unwrap_or_else(|| PathBuf::from("/var/lib/wharf-watch"))
}

/// One rolled-back update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The container that was put back (a rollback keeps its id).
    pub container_id: String,
    /// What was rolled back: the registry digest, or a local image id for no-pull.
    pub digest: String,
    /// The reference it was checked under.
    pub image: String,
    /// What runs again instead: a digest or an image id.
    pub running: String,
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    /// By container name.
    containers: BTreeMap<String, Rejection>,
}

pub struct Rejections {
    path: Option<PathBuf>,
    entries: Mutex<BTreeMap<String, Rejection>>,
}

impl Rejections {
    /// Read from `path`; a missing file is none yet. An unreadable or damaged one is
    /// said in the log and started afresh: losing it costs one more attempt, never more.
    pub fn open(path: PathBuf) -> Rejections {
        let entries = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(saved) => saved.containers,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "the rolled-back images file is damaged; starting afresh");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the rolled-back images file; starting afresh");
                BTreeMap::new()
            }
        };
        if !entries.is_empty() {
            tracing::info!(path = %path.display(), containers = entries.len(), "rolled-back images remembered from before: not retried until their tags move");
        }
        Rejections {
            path: Some(path),
            entries: Mutex::new(entries),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn get(&self, name: &str) -> Option<Rejection> {
        lock(&self.entries).get(name).cloned()
    }

    pub fn insert(&self, name: &str, rejection: Rejection) {
        let mut entries = lock(&self.entries);
        entries.insert(name.to_owned(), rejection);
        self.save(&entries);
    }

    pub fn remove(&self, name: &str) {
        let mut entries = lock(&self.entries);
        if entries.remove(name).is_some() {
            self.save(&entries);
        }
    }

    /// Written whole under a temporary name, fsynced, renamed over the old file, and
    /// the directory fsynced: a crash leaves the old list or the new one, never half.
    fn save(&self, entries: &BTreeMap<String, Rejection>) {
        let Some(path) = &self.path else { return };
        let saved = Saved {
            containers: entries.clone(),
        };
        let written = serde_json::to_vec_pretty(&saved)
            .map_err(std::io::Error::from)
            .and_then(|bytes| write_atomically(path, &bytes));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the rolled-back images: after a restart the watcher may try them once more");
        }
    }
}

/// The watcher's JSON state files (history, approvals), through [`write_atomically`].
pub(crate) fn write_json_atomically<T: Serialize>(path: &Path, saved: &T) -> std::io::Result<()> {
    write_atomically(path, &serde_json::to_vec_pretty(saved)?)
}

/// Replace `path` with `bytes` whole: written aside, fsynced, renamed, the directory
/// fsynced; a crash leaves the old file or the new one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollbacks_survive_a_restart_and_go_when_removed() {
        let dir = std::env::temp_dir().join(format!("wharf-rejected-{}", std::process::id()));
        let path = state_file(&dir, Some("team a"));
        assert!(path.ends_with("rolled-back.team_a.json"));
        let r = Rejection {
            container_id: "c1".into(),
            digest: "sha256:bad".into(),
            image: "localhost:5000/app:1".into(),
            running: "sha256:good".into(),
            reason: "exit code 3".into(),
            at: 1,
        };
        Rejections::open(path.clone()).insert("web", r.clone());
        let again = Rejections::open(path.clone());
        assert_eq!(again.get("web"), Some(r));
        again.remove("web");
        assert_eq!(Rejections::open(path.clone()).get("web"), None);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(Rejections::open(path).get("web"), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
