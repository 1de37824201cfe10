//! Pushing an image from wherever its blobs are (a layout directory, a tar archive).

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use wharf_oci::{Descriptor, Digest, Manifest, ManifestKind, Reference, RepoName};

use super::{parse, Progress, PARALLEL_BLOBS};
use crate::client::BlobStream;
use crate::{ImageRef, RegistryClient};

/// Where `push` reads blobs from: a layout directory or a tar archive.
pub trait Blobs: Sync {
    /// A small blob (a manifest or config) whole, checked against `digest`.
    fn read(&self, digest: &Digest) -> anyhow::Result<Vec<u8>>;
    /// A blob as a stream that fails if its content does not hash to `digest`, and its size.
    fn open(&self, digest: &Digest) -> anyhow::Result<(BlobStream, u64)>;
}

/// Push the manifest `chosen` (an image or an index) with everything it references; blobs
/// larger than `chunk_size` go up in resumable chunks of that size.
pub async fn push_image(
    client: &RegistryClient,
    image: &ImageRef,
    blobs: &dyn Blobs,
    chosen: &Descriptor,
    chunk_size: u64,
    progress: &dyn Progress,
) -> anyhow::Result<Digest> {
    let repo = image.repository();
    let top = blobs.read(&chosen.digest)?;
    let parsed = parse(&top, &chosen.media_type)?;
    if parsed.kind == ManifestKind::Index {
        for child in &parsed.manifests {
            let bytes = blobs.read(&child.digest)?;
            let manifest = parse(&bytes, &child.media_type)?;
            upload_image(client, repo, blobs, &manifest, chunk_size, progress).await?;
            let reference = Reference::Digest(child.digest.clone());
            client
                .put_manifest(repo, &reference, bytes, &child.media_type)
                .await?;
        }
    } else {
        upload_image(client, repo, blobs, &parsed, chunk_size, progress).await?;
    }
    client
        .put_manifest(repo, &image.manifest_reference(), top, &chosen.media_type)
        .await?;
    Ok(chosen.digest.clone())
}

pub async fn upload_image(
    client: &RegistryClient,
    repo: &RepoName,
    blobs: &dyn Blobs,
    manifest: &Manifest,
    chunk_size: u64,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    // Each once: an old `docker save` repeats the same empty layer.
    let unique: BTreeMap<&Digest, &Descriptor> = manifest
        .config
        .iter()
        .chain(&manifest.layers)
        .map(|d| (&d.digest, d))
        .collect();
    futures::stream::iter(unique.into_values())
        .map(|d| upload(client, repo, blobs, &d.digest, chunk_size, progress))
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Upload a blob unless the registry has it; both ends check its digest (the source's
/// stream fails before its last bytes if they do not match).
async fn upload(
    client: &RegistryClient,
    repo: &RepoName,
    blobs: &dyn Blobs,
    digest: &Digest,
    chunk_size: u64,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    if client.blob_exists(repo, digest).await? {
        progress.skipped(digest);
        return Ok(());
    }
    let (stream, size) = blobs.open(digest)?;
    let transfer = progress.start(digest, size);
    let session = client.start_upload(repo).await?;
    let stream = transfer.track(stream);
    if size > chunk_size {
        let chunk = usize::try_from(chunk_size).unwrap_or(usize::MAX);
        client
            .upload_blob_chunked(repo, session, digest, size, stream, chunk)
            .await?;
    } else {
        client
            .upload_blob(repo, session, digest, size, stream)
            .await?;
    }
    transfer.done("uploaded");
    Ok(())
}
