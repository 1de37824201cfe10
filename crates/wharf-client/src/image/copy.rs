//! Registry to registry copies: blobs streamed (never whole in memory), skipped when the
//! destination has them, mounted when both sides are one registry.

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use wharf_oci::{Descriptor, Digest, Manifest, ManifestKind, Reference, RepoName};

use super::{parse, Progress, PARALLEL_BLOBS};
use crate::client::{ClientError, Mount};
use crate::RegistryClient;

/// One side of the copy.
pub struct Side {
    pub client: RegistryClient,
    pub repo: RepoName,
}

pub struct Copier<'p> {
    pub src: Side,
    pub dst: Side,
    /// Both sides are one registry: blobs are mounted, not moved.
    pub same_registry: bool,
    /// Blobs larger than this go up in PATCH chunks of this size.
    pub chunk_size: u64,
    pub progress: &'p dyn Progress,
}

impl Copier<'_> {
    /// Copy `src_ref` to `dst_ref` (from an index, only `platform` when given); the digest
    /// stored at DST.
    pub async fn run(
        &self,
        src_ref: &Reference,
        dst_ref: &Reference,
        platform: Option<&str>,
    ) -> anyhow::Result<Digest> {
        let top = self
            .src
            .client
            .get_manifest(&self.src.repo, src_ref)
            .await?;
        let parsed = parse(&top.bytes, &top.media_type)?;
        if parsed.kind == ManifestKind::Image {
            self.copy_image(&parsed).await?;
            self.put(dst_ref, top.bytes, &top.media_type).await?;
            return Ok(top.digest);
        }
        let children: Vec<&Descriptor> = match platform {
            Some(p) => vec![find_platform(&parsed, p)?],
            None => parsed.manifests.iter().collect(),
        };
        for child in &children {
            let reference = Reference::Digest(child.digest.clone());
            let fetched = self
                .src
                .client
                .get_manifest(&self.src.repo, &reference)
                .await?;
            let manifest = parse(&fetched.bytes, &fetched.media_type)?;
            self.copy_image(&manifest).await?;
            // With --platform the child stands alone at DST; otherwise the index names it.
            let target = if platform.is_some() {
                dst_ref.clone()
            } else {
                reference
            };
            self.put(&target, fetched.bytes, &fetched.media_type)
                .await?;
            if platform.is_some() {
                return Ok(fetched.digest);
            }
        }
        self.put(dst_ref, top.bytes, &top.media_type).await?;
        Ok(top.digest)
    }

    async fn put(
        &self,
        reference: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> anyhow::Result<()> {
        self.dst
            .client
            .put_manifest(&self.dst.repo, reference, bytes, media_type)
            .await?;
        Ok(())
    }

    /// The config and every layer, a few at once.
    async fn copy_image(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let blobs: Vec<&Descriptor> = manifest.config.iter().chain(&manifest.layers).collect();
        futures::stream::iter(blobs)
            .map(|d| self.copy_blob(d))
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn copy_blob(&self, blob: &Descriptor) -> anyhow::Result<()> {
        let (dst, src) = (&self.dst, &self.src);
        let digest = &blob.digest;
        if dst.client.blob_exists(&dst.repo, digest).await? {
            self.progress.skipped(digest);
            return Ok(());
        }
        let session = if self.same_registry {
            match dst.client.mount_blob(&dst.repo, digest, &src.repo).await? {
                Mount::Mounted => {
                    self.progress.mounted(digest);
                    return Ok(());
                }
                Mount::Session(url) => url,
            }
        } else {
            dst.client.start_upload(&dst.repo).await?
        };
        let transfer = self.progress.start(digest, blob.size);
        // The destination verifies the digest as it writes; the bytes are not hashed
        // here as well.
        let (stream, _) = src.client.blob_stream_unverified(&src.repo, digest).await?;
        let stream = transfer.track(stream);
        let uploaded = if blob.size > self.chunk_size {
            let chunk = usize::try_from(self.chunk_size).unwrap_or(usize::MAX);
            dst.client
                .upload_blob_chunked(&dst.repo, session, digest, blob.size, stream, chunk)
                .await
        } else {
            dst.client
                .upload_blob(&dst.repo, session, digest, blob.size, stream)
                .await
        };
        uploaded.map_err(|e| blame_the_source(e, src, digest))?;
        transfer.done("uploaded");
        Ok(())
    }
}

/// The destination refusing the bytes as not matching their digest: the source most
/// likely served them so (the copy does not hash them itself), which the user checks
/// with `wharf pull`, whose downloads are verified.
fn blame_the_source(e: ClientError, src: &Side, digest: &Digest) -> anyhow::Error {
    let digest_refused = matches!(&e, ClientError::Status { status: 400, detail, .. } if detail.contains("DIGEST_INVALID"));
    if !digest_refused {
        return e.into();
    }
    let source = src.client.registry();
    anyhow::Error::new(e).context(format!(
        "the destination refused the bytes {source} served for {}@{digest}: they do not hash to that digest, so the source's storage may be corrupt (`wharf pull` of the source image checks every blob); nothing was tagged",
        src.repo
    ))
}

/// The index entry for `os/arch[/variant]`.
fn find_platform<'a>(index: &'a Manifest, wanted: &str) -> anyhow::Result<&'a Descriptor> {
    let mut parts = wanted.split('/');
    let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
    let (Some(os), Some(arch)) = (os, arch) else {
        anyhow::bail!("--platform {wanted}: expected os/arch[/variant], e.g. linux/arm64");
    };
    index
        .manifests
        .iter()
        .find(|d| d.is_for_platform(os, arch, variant))
        .with_context(|| format!("the index has no manifest for platform {wanted}; `wharf inspect` lists its platforms"))
}
