//! Files that appear whole or not at all.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::io::AsyncWriteExt;

/// Write `bytes` to `path` through a `Staged` file.
pub async fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut staged = Staged::create(path).await?;
    staged.write(bytes).await?;
    staged.commit().await
}

/// A file written under a temporary name and renamed into place only after an fsync, so a
/// crash or a failed download leaves the old file or the new one, never a torn one (an
/// `index.json` cut short would hide every image in the layout, a tar cut short every entry
/// after the cut). Dropped uncommitted, it removes its temporary file. Small writes are
/// buffered; large ones (blob chunks) pass straight through.
pub struct Staged {
    path: PathBuf,
    partial: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    committed: bool,
}

impl Staged {
    pub async fn create(path: &Path) -> anyhow::Result<Staged> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("cannot write {}", partial.display()))?;
        Ok(Staged {
            path: path.to_path_buf(),
            partial,
            file: tokio::io::BufWriter::with_capacity(256 << 10, file),
            committed: false,
        })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file
            .write_all(bytes)
            .await
            .with_context(|| format!("cannot write {}", self.partial.display()))
    }

    pub async fn commit(mut self) -> anyhow::Result<()> {
        let cannot = || format!("cannot write {}", self.path.display());
        self.file.flush().await.with_context(cannot)?;
        self.file.get_ref().sync_all().await.with_context(cannot)?;
        tokio::fs::rename(&self.partial, &self.path)
            .await
            .with_context(cannot)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
