//! Image transfers shared by the CLI (`pull`, `push`, `copy`), the pull-through cache and
//! exports: OCI image layouts, `docker save` archives, registry-to-registry copies.
//!
//! The pieces every format needs live here, so `layout` and `archive` never import each
//! other: manifest parsing, digest checks, file streams, the layout's `index.json` choice,
//! and the progress a caller wants reported.

pub mod archive;
pub mod copy;
pub mod layout;
mod pull;
mod push;
pub mod referrers;
mod staged;

use anyhow::Context;
use futures::StreamExt;
use serde_json::Value;
use wharf_oci::{Descriptor, Digest, DigestHasher, Manifest};

use crate::client::{BlobStream, ClientError};
use crate::ImageRef;

pub use pull::{fetch_manifests, Pulled};
pub use push::{push_image, upload_image, Blobs};
pub use staged::{write_file, Staged};

/// Blobs moved at once by pull, push and copy: enough to hide per-request latency, few
/// enough not to swamp either registry or the link between them.
pub const PARALLEL_BLOBS: usize = 4;
/// The annotation an OCI layout uses to name an image, as skopeo and docker write it.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What a transfer tells its caller as blobs move: the CLI draws bars, a server logs or
/// counts, or nothing at all (`Silent`).
pub trait Progress: Sync {
    /// The destination already had the blob.
    fn skipped(&self, digest: &Digest);
    /// The registry linked the blob from another repository.
    fn mounted(&self, digest: &Digest);
    /// A blob of `size` bytes starts to move.
    fn start(&self, digest: &Digest, size: u64) -> Box<dyn Transfer + Send + '_>;
}

/// One blob on the move; `done` counts it, dropping it without `done` (an error) does not.
pub trait Transfer {
    /// `stream`, observed as the consumer takes it.
    fn track(&self, stream: BlobStream) -> BlobStream;
    /// The blob arrived; `what` says how ("uploaded", "downloaded").
    fn done(self: Box<Self>, what: &str);
}

/// Progress nobody watches.
pub struct Silent;

impl Progress for Silent {
    fn skipped(&self, _: &Digest) {}
    fn mounted(&self, _: &Digest) {}
    fn start(&self, _: &Digest, _: u64) -> Box<dyn Transfer + Send + '_> {
        Box::new(Silent)
    }
}

impl Transfer for Silent {
    fn track(&self, stream: BlobStream) -> BlobStream {
        stream
    }
    fn done(self: Box<Self>, _: &str) {}
}

pub fn blob_path(dir: &std::path::Path, digest: &Digest) -> std::path::PathBuf {
    dir.join("blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex())
}

pub fn parse(bytes: &[u8], media_type: &str) -> anyhow::Result<Manifest> {
    Manifest::parse(bytes, Some(media_type))
        .context("not an image manifest or index wharf can handle")
}

pub fn oci_layout_file() -> &'static [u8] {
    br#"{"imageLayoutVersion":"1.0.0"}"#
}

/// A manifest or config read whole, refused unless it hashes to `digest`: a corrupt file
/// must not go out under a tag, and with the check no index can lead back to itself.
pub fn check_digest(bytes: Vec<u8>, digest: &Digest, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut hasher = DigestHasher::new(digest.algorithm());
    hasher.update(&bytes);
    let got = hasher.finish();
    if got != *digest {
        anyhow::bail!("{what} is corrupt: its content hashes to {got}, not {digest}");
    }
    Ok(bytes)
}

/// A file's (or archive member's) content, checked against its digest as it streams.
pub fn verified(inner: BlobStream, expected: Digest, what: String) -> BlobStream {
    crate::client::verified_stream(inner, expected, move |got, expected| ClientError::Request {
        url: what.clone(),
        detail: format!("its content hashes to {got}, not {expected}; the file is corrupt"),
    })
}

/// A reader as a blob stream; `what` names it in errors.
pub fn file_stream(reader: impl tokio::io::AsyncRead + Send + 'static, what: String) -> BlobStream {
    Box::pin(
        tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10).map(move |r| {
            r.map_err(|e| ClientError::Request {
                url: what.clone(),
                detail: e.to_string(),
            })
        }),
    )
}

/// From an `index.json`, the one image or the one named by IMAGE_REF's tag.
pub fn choose(index_json: &[u8], image: &ImageRef, what: &str) -> anyhow::Result<Descriptor> {
    let index: Value = serde_json::from_slice(index_json)
        .with_context(|| format!("the index.json in {what} is not valid JSON"))?;
    let entries: Vec<Descriptor> =
        serde_json::from_value(index.get("manifests").cloned().unwrap_or(Value::Null))
            .with_context(|| format!("the index.json in {what} has no manifests list"))?;
    if let [one] = entries.as_slice() {
        return Ok(one.clone());
    }
    let tag = image.tag().map(|t| t.as_str());
    let named: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| {
            let name = d.annotations.as_ref().and_then(|a| a.get(REF_NAME));
            name.is_some() && name.map(String::as_str) == tag
        })
        .collect();
    match named.as_slice() {
        [one] => Ok((*one).clone()),
        [] => anyhow::bail!(
            "{what} holds {} images; name one with IMAGE_REF's tag (its {REF_NAME})",
            entries.len()
        ),
        _ => anyhow::bail!(
            "{what} holds {} images tagged {}; push from a layout or archive that holds one of them",
            named.len(),
            tag.unwrap_or_default()
        ),
    }
}
