//! When the pull-through cache last confirmed each cached tag with its upstream, kept where
//! every process on the store reads it: a tag one replica confirmed is fresh on all of
//! them for its `ttl`, so the upstream sees one HEAD per tag and ttl, not one per replica.
//!
//! Not durable on purpose: a check time lost to a crash only costs one more HEAD.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::StoreResult;

#[async_trait]
pub trait TagChecks: Send + Sync + 'static {
    /// How long ago `repo:tag` was last confirmed upstream, by any process.
    async fn checked_ago(&self, repo: &str, tag: &str) -> StoreResult<Option<Duration>>;
    /// Record that `repo:tag` was confirmed upstream now.
    async fn confirm(&self, repo: &str, tag: &str) -> StoreResult<()>;
}

/// Files under `_wharf/proxy-checked/`, one per tag, named by a hash of `repo:tag` (names
/// may be longer than a file name), holding the time in milliseconds since the epoch.
pub struct FsTagChecks {
    dir: PathBuf,
}

impl FsTagChecks {
    pub fn new(dir: PathBuf) -> FsTagChecks {
        FsTagChecks { dir }
    }

    fn path(&self, repo: &str, tag: &str) -> PathBuf {
        let hash = Sha256::digest(format!("{repo}:{tag}").as_bytes());
        self.dir.join(hex::encode(hash))
    }
}

#[async_trait]
impl TagChecks for FsTagChecks {
    async fn checked_ago(&self, repo: &str, tag: &str) -> StoreResult<Option<Duration>> {
        let path = self.path(repo, tag);
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // A file cut short is read as never checked: one more HEAD, nothing worse.
        Ok(text
            .trim()
            .parse::<u64>()
            .ok()
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
            // A time ahead of this host's clock (another host's skew) counts as just now.
            .map(|at| SystemTime::now().duration_since(at).unwrap_or_default()))
    }

    async fn confirm(&self, repo: &str, tag: &str) -> StoreResult<()> {
        let path = self.path(repo, tag);
        let dir = self.dir.clone();
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            // Written aside and renamed, so a reader never sees half a time.
            let tmp = dir.join(format!(".{}", uuid::Uuid::new_v4()));
            std::fs::write(&tmp, ms.to_string())?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn another_process_sees_a_confirmation() {
        let dir = tempfile::tempdir().unwrap();
        let a = FsTagChecks::new(dir.path().join("c"));
        let b = FsTagChecks::new(dir.path().join("c"));
        assert!(b.checked_ago("r", "t").await.unwrap().is_none());
        a.confirm("r", "t").await.unwrap();
        let ago = b.checked_ago("r", "t").await.unwrap().unwrap();
        assert!(ago < Duration::from_secs(5));
        assert!(b.checked_ago("r", "u").await.unwrap().is_none());
    }
}
