//! OCI image layouts: a pull into `DIR/blobs/<alg>/<hex>` files and a layout read back for
//! a push. Blobs stream between the registry and the files, never whole in memory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use wharf_oci::{Descriptor, Digest, RepoName};

use super::{
    blob_path, check_digest, choose, fetch_manifests, file_stream, oci_layout_file, verified,
    write_file, Blobs, Progress, Staged, PARALLEL_BLOBS,
};
use crate::client::BlobStream;
use crate::{ImageRef, RegistryClient};

/// Pull `image` into the layout `dir` (created if missing); the top manifest's digest.
pub async fn pull_to_dir(
    client: &RegistryClient,
    image: &ImageRef,
    dir: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<Digest> {
    let pulled = fetch_manifests(client, image).await?;
    for child in &pulled.children {
        write_file(&blob_path(dir, &child.digest), &child.bytes).await?;
    }
    futures::stream::iter(pulled.blobs())
        .map(|d| download(client, image.repository(), dir, d, progress))
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect::<Vec<()>>()
        .await?;
    let top = &pulled.top;
    write_file(&blob_path(dir, &top.digest), &top.bytes).await?;
    let index = json!({ "schemaVersion": 2, "manifests": [pulled.index_entry(image, &[])] });
    write_file(&dir.join("index.json"), &serde_json::to_vec_pretty(&index)?).await?;
    write_file(&dir.join("oci-layout"), oci_layout_file()).await?;
    Ok(top.digest.clone())
}

/// Stream a blob to its file, verified as it streams; it appears under its name only
/// when complete and durable.
async fn download(
    client: &RegistryClient,
    repo: &RepoName,
    dir: &Path,
    blob: &Descriptor,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let path = blob_path(dir, &blob.digest);
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        progress.skipped(&blob.digest);
        return Ok(());
    }
    let mut staged = Staged::create(&path).await?;
    let transfer = progress.start(&blob.digest, blob.size);
    let (stream, _) = client.blob_stream(repo, &blob.digest).await?;
    let mut stream = transfer.track(stream);
    while let Some(chunk) = stream.next().await {
        staged.write(&chunk?).await?;
    }
    staged.commit().await?;
    transfer.done("downloaded");
    Ok(())
}

/// An OCI image layout directory and the image in it that the push names.
pub struct Layout {
    dir: PathBuf,
    pub chosen: Descriptor,
}

impl Layout {
    pub fn open(dir: &Path, image: &ImageRef) -> anyhow::Result<Layout> {
        let index_path = dir.join("index.json");
        let bytes = std::fs::read(&index_path).with_context(|| format!("cannot read {}; is {} an OCI image layout (as `wharf pull` or `skopeo copy oci:` write)?", index_path.display(), dir.display()))?;
        let chosen = choose(&bytes, image, &dir.display().to_string())?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            chosen,
        })
    }
}

impl Blobs for Layout {
    fn read(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let path = blob_path(&self.dir, digest);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        check_digest(bytes, digest, &path.display().to_string())
    }

    fn open(&self, digest: &Digest) -> anyhow::Result<(BlobStream, u64)> {
        let path = blob_path(&self.dir, digest);
        let file = std::fs::File::open(&path).with_context(|| {
            format!(
                "cannot read {}: the layout is missing a blob",
                path.display()
            )
        })?;
        let size = file.metadata()?.len();
        let what = path.display().to_string();
        let stream = file_stream(tokio::fs::File::from_std(file), what.clone());
        Ok((verified(stream, digest.clone(), what), size))
    }
}
