//! Where a watcher's event stream has got to, kept on disk: the id of the last event it
//! received from each registry (`events.<registry>.id` in its state directory). A
//! restarted watcher resumes with `Last-Event-ID`, so pushes made while it was down
//! still update their containers at once rather than at the next scheduled check.

use std::path::{Path, PathBuf};

use crate::rejected::write_atomically;

/// The last event id received from one registry, kept in one file.
#[derive(Debug, Clone)]
pub struct Resume {
    path: PathBuf,
}

/// A registry host as a file name: letters, digits, '-', '.' and '_' kept.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' => c,
            _ => '_',
        })
        .collect()
}

impl Resume {
    /// The file for `registry` under `dir`; one per scope, as the rollbacks are.
    pub fn new(dir: &Path, scope: Option<&str>, registry: &str) -> Resume {
        let name = match scope.filter(|s| !s.is_empty()) {
            Some(scope) => format!("events.{}.{}.id", safe(registry), safe(scope)),
            None => format!("events.{}.id", safe(registry)),
        };
        Resume {
            path: dir.join(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id saved, if any (an unreadable file is said and ignored: the stream then
    /// starts at the newest event, as a first start does).
    pub fn load(&self) -> Option<String> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => {
                let id = s.trim();
                let plain =
                    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_digit());
                if !plain {
                    tracing::warn!(path = %self.path.display(), "ignoring an event id that is not a number");
                }
                plain.then(|| id.to_owned())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the last event id");
                None
            }
        }
    }

    /// Replace the saved id atomically; a failure is logged (the stream goes on).
    pub fn save(&self, id: &str) {
        if let Err(e) = write_atomically(&self.path, format!("{id}\n").as_bytes()) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot save the last event id: a restart resumes from an older one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_id_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("wharf-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = Resume::new(&dir, None, "127.0.0.1:5000");
        assert_eq!(r.load(), None);
        r.save("42");
        let again = Resume::new(&dir, None, "127.0.0.1:5000");
        assert_eq!(again.load().as_deref(), Some("42"));
        assert!(again.path().ends_with("events.127.0.0.1_5000.id"));
        std::fs::write(again.path(), "junk").unwrap();
        assert_eq!(again.load(), None);
        let scoped = Resume::new(&dir, Some("a/b"), "r:1");
        assert!(scoped.path().ends_with("events.r_1.a_b.id"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
