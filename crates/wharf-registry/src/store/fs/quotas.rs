//! Quota figures in files, under `_wharf/quotas/<quota key>/`: `usage` holds the bytes
//! charged as decimal text, and `blobs/<hex>` marks each blob charged (holding its size).
//! Writers hold the quota's exclusive lock (`Locks::exclusive`), which every process on
//! the root shares, so files are only replaced, atomically and fsynced.
//!
//! A charge writes the usage first (durably) and the blob's mark second (atomically, not
//! fsynced): a crash between, or one that loses the mark, leaves the figure high, so a
//! later push may be refused early but never admitted over the limit, and `wharf scrub`
//! puts it right.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use wharf_oci::Digest;

use super::durable::{write_atomic, AtomicWrite, Fsync};
use super::{blocking, read_dir_if_any, read_if_any};
use crate::store::state::QuotaLedger;
use crate::store::{StoreError, StoreResult};

pub struct FsQuotas {
    dir: PathBuf,
}

impl FsQuotas {
    pub fn new(dir: PathBuf) -> FsQuotas {
        FsQuotas { dir }
    }

    fn quota_dir(&self, quota: &str) -> PathBuf {
        // Keys are hex (see registry::governance): safe as a file name.
        self.dir.join(quota)
    }
}

fn read_usage(dir: &Path) -> StoreResult<Option<u64>> {
    let path = dir.join("usage");
    let Some(bytes) = read_if_any(&path)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| StoreError::Corrupt {
            what: path.display().to_string(),
            why: "not a number of bytes; `wharf scrub` recounts it".into(),
        })
}

fn marks(dir: &Path) -> io::Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    let Some(entries) = read_dir_if_any(&dir.join("blobs"))? else {
        return Ok(out);
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let size = fs::read_to_string(e.path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        out.insert(name, size);
    }
    Ok(out)
}

/// A mark's file name: the digest with its algorithm, `:` made `-`.
fn mark_name(d: &Digest) -> String {
    d.to_string().replace(':', "-")
}

#[async_trait]
impl QuotaLedger for FsQuotas {
    async fn usage(&self, quota: &str) -> StoreResult<Option<u64>> {
        let dir = self.quota_dir(quota);
        blocking(move || Ok(read_usage(&dir))).await?
    }

    async fn charged(&self, quota: &str, digest: &Digest) -> StoreResult<bool> {
        let path = self.quota_dir(quota).join("blobs").join(mark_name(digest));
        Ok(blocking(move || Ok(path.exists())).await?)
    }

    async fn charge(&self, quota: &str, digest: &Digest, size: u64) -> StoreResult<()> {
        let dir = self.quota_dir(quota);
        let mark = dir.join("blobs").join(mark_name(digest));
        blocking(move || {
            let used = match read_usage(&dir) {
                Ok(u) => u.unwrap_or(0),
                Err(e) => return Ok(Err(e)),
            };
            write_atomic(
                &dir.join("usage"),
                used.saturating_add(size).to_string().as_bytes(),
            )?;
            // Not fsynced: a mark a crash loses leaves the figure high (the blob is
            // charged again at its next link), never low.
            AtomicWrite {
                sync: Fsync::Skip,
                sync_dir: false,
                ..AtomicWrite::DURABLE
            }
            .replace(&mark, size.to_string().as_bytes())?;
            Ok(Ok(()))
        })
        .await?
    }

    async fn replace(&self, quota: &str, blobs: &[(Digest, u64)]) -> StoreResult<Option<u64>> {
        let dir = self.quota_dir(quota);
        let want: HashMap<String, u64> = blobs.iter().map(|(d, s)| (mark_name(d), *s)).collect();
        let total = blobs.iter().fold(0u64, |t, (_, s)| t.saturating_add(*s));
        blocking(move || {
            // An unreadable figure is what a recount replaces.
            let old = read_usage(&dir).ok().flatten();
            let have = marks(&dir)?;
            for (name, size) in &want {
                if have.get(name) != Some(size) {
                    write_atomic(&dir.join("blobs").join(name), size.to_string().as_bytes())?;
                }
            }
            for name in have.keys().filter(|n| !want.contains_key(*n)) {
                match fs::remove_file(dir.join("blobs").join(name)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            write_atomic(&dir.join("usage"), total.to_string().as_bytes())?;
            Ok(old)
        })
        .await
        .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_add_up_and_a_recount_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let q = FsQuotas::new(dir.path().to_owned());
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        assert_eq!(q.usage("k").await.unwrap(), None);
        q.charge("k", &a, 10).await.unwrap();
        q.charge("k", &b, 5).await.unwrap();
        assert_eq!(q.usage("k").await.unwrap(), Some(15));
        assert!(q.charged("k", &a).await.unwrap());
        assert!(!q.charged("other", &a).await.unwrap());
        assert_eq!(q.replace("k", &[(b.clone(), 5)]).await.unwrap(), Some(15));
        assert_eq!(q.usage("k").await.unwrap(), Some(5));
        assert!(!q.charged("k", &a).await.unwrap());
        assert!(q.charged("k", &b).await.unwrap());
    }
}
