//! `docker save` archives for `wharf pull REF FILE.tar` and `wharf push FILE.tar REF`.
//!
//! wharf writes what Docker 25+ `docker save` writes: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/...`) and, beside it, docker's `manifest.json` pointing at
//! the same blobs, so `docker load` (any version), skopeo's `oci-archive:` and
//! `docker-archive:` all read one file and the registry's manifest digest survives.
//!
//! It reads both that layout and the older `<id>/layer.tar` + `manifest.json` format.
//! Blobs stream straight between the registry and the file: a tar header carries the size
//! up front, which a registry blob's descriptor gives, and a saved tar is read in place by
//! offset, so nothing is staged in temporary files or held whole in memory.

use std::path::Path;

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::json;
use wharf_oci::media_type as mt;
use wharf_oci::{Descriptor, Digest, Manifest};

mod read;

use super::{
    choose, fetch_manifests, oci_layout_file, parse, push_image, Progress, Pulled, Staged,
};
use crate::client::BlobStream;
use crate::{ImageRef, RegistryClient};
use read::{DockerSave, TarIndex};

/// Uncompressed layers, as the old `docker save` stores them: valid in a schema2 manifest.
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The annotation containerd (and Docker 25+ `docker load`) names a loaded image by.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Manifests and configs are read whole; anything bigger than this is not one.
const MAX_JSON: u64 = 16 << 20;

/// A path names an archive when it ends in `.tar` or is an existing regular file; anything
/// else is an OCI layout directory.
pub fn is_archive(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tar") || path.metadata().is_ok_and(|m| m.is_file())
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

// ---- pull: registry → tar ----

pub async fn pull(
    client: &RegistryClient,
    image: &ImageRef,
    path: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<Digest> {
    let pulled = fetch_manifests(client, image).await?;
    write_archive(client, image, &pulled, path, progress).await?;
    Ok(pulled.top.digest)
}

async fn write_archive(
    client: &RegistryClient,
    image: &ImageRef,
    pulled: &Pulled,
    path: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let mut tar = TarWriter::create(path).await?;
    // One at a time: a tar is written front to back.
    for blob in pulled.blobs() {
        let transfer = progress.start(&blob.digest, blob.size);
        let (stream, _) = client.blob_stream(image.repository(), &blob.digest).await?;
        tar.append_stream(&blob_name(&blob.digest), blob.size, transfer.track(stream))
            .await?;
        transfer.done("downloaded");
    }
    for manifest in pulled.children.iter().chain([&pulled.top]) {
        tar.append(&blob_name(&manifest.digest), &manifest.bytes)
            .await?;
    }
    tar.append("oci-layout", oci_layout_file()).await?;
    let names: Vec<(&str, String)> = tagged_name(image)
        .map(|n| (CONTAINERD_NAME, n))
        .into_iter()
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_INDEX,
        "manifests": [pulled.index_entry(image, &names)],
    });
    tar.append("index.json", &serde_json::to_vec(&index)?)
        .await?;
    tar.append("manifest.json", &docker_manifest(pulled, image)?)
        .await?;
    tar.finish().await
}

/// `registry/repo:tag` without a digest, as docker names a loaded image; none for a
/// digest-only reference (docker loads it untagged).
fn tagged_name(image: &ImageRef) -> Option<String> {
    let tag = image.tag()?;
    Some(format!(
        "{}/{}:{}",
        image.registry(),
        image.repository(),
        tag.as_str()
    ))
}

/// docker's `manifest.json`: one image (from an index, the one for this machine's
/// platform, as `docker pull` would pick) with its config and layers by blob path.
fn docker_manifest(pulled: &Pulled, image: &ImageRef) -> anyhow::Result<Vec<u8>> {
    let chosen = host_image(pulled)?;
    let config = chosen
        .config
        .as_ref()
        .context("the image manifest has no config")?;
    let repo_tags: Vec<String> = match image.tag() {
        Some(_) => vec![image.familiar().split('@').next().unwrap_or("").to_owned()],
        None => vec![],
    };
    let layers: Vec<String> = chosen.layers.iter().map(|l| blob_name(&l.digest)).collect();
    let entry = json!([{
        "Config": blob_name(&config.digest),
        "RepoTags": repo_tags,
        "Layers": layers,
    }]);
    Ok(serde_json::to_vec(&entry)?)
}

fn host_image(pulled: &Pulled) -> anyhow::Result<&Manifest> {
    if pulled.children.is_empty() {
        return pulled.images.first().context("no image was pulled");
    }
    let index = parse(&pulled.top.bytes, &pulled.top.media_type)?;
    // This machine's image, else the first real one: attestation manifests are listed
    // as `unknown/unknown`.
    let entries = &index.manifests;
    let at = entries
        .iter()
        .position(|d| d.is_for_platform("linux", docker_arch(), None))
        .or_else(|| {
            entries
                .iter()
                .position(|d| !d.is_for_platform("unknown", "unknown", None))
        })
        .unwrap_or(0);
    pulled.images.get(at).context("the index lists no images")
}

/// This machine's architecture as GOARCH spells it, which image platforms use.
fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A ustar archive written front to back from async sources, under a temporary name
/// until `finish`: a broken pull never leaves a tar that looks complete.
struct TarWriter {
    file: Staged,
}

impl TarWriter {
    async fn create(path: &Path) -> anyhow::Result<TarWriter> {
        Ok(TarWriter {
            file: Staged::create(path).await?,
        })
    }

    async fn header(&mut self, name: &str, size: u64) -> anyhow::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(size);
        header.set_mode(0o644);
        // A fixed time makes the same image give the same archive, byte for byte.
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        self.file.write(header.as_bytes()).await?;
        Ok(())
    }

    async fn append(&mut self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        self.header(name, bytes.len() as u64).await?;
        self.file.write(bytes).await?;
        self.pad(bytes.len() as u64).await
    }

    /// The header promised `size` bytes: a stream that gives more or fewer would corrupt
    /// every entry after it, so it is an error.
    async fn append_stream(
        &mut self,
        name: &str,
        size: u64,
        mut stream: BlobStream,
    ) -> anyhow::Result<()> {
        self.header(name, size).await?;
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            written += chunk.len() as u64;
            if written > size {
                bail!("{name}: the registry sent more than the {size} bytes its manifest lists");
            }
            self.file.write(&chunk).await?;
        }
        if written != size {
            bail!("{name}: the registry sent {written} bytes, not the {size} its manifest lists");
        }
        self.pad(size).await
    }

    async fn pad(&mut self, len: u64) -> anyhow::Result<()> {
        let rest = (len % 512) as usize;
        if rest != 0 {
            self.file.write(&[0u8; 512][rest..]).await?;
        }
        Ok(())
    }

    /// Two zero blocks end a tar; the data is on disk before the rename makes it visible.
    async fn finish(mut self) -> anyhow::Result<()> {
        self.file.write(&[0u8; 1024]).await?;
        self.file.commit().await
    }
}

// ---- push: tar → registry ----

pub async fn push(
    client: &RegistryClient,
    image: &ImageRef,
    path: &Path,
    chunk_size: u64,
    progress: &dyn Progress,
) -> anyhow::Result<Digest> {
    let tar = TarIndex::open(path)?;
    if let Some(chosen) = oci_image(&tar, image)? {
        return push_image(client, image, &tar, &chosen, chunk_size, progress).await;
    }
    let saved = DockerSave::open(tar, image)?;
    let chosen = saved.descriptor();
    push_image(client, image, &saved, &chosen, chunk_size, progress).await
}

/// The image the archive's OCI layout names, when it has one and holds all its blobs.
/// Docker 25+ lists every platform of an index in `index.json` but saves only the one it
/// pulled: that platform's manifest is pushed then, so its digest is still the
/// registry's. Failing that, `manifest.json` describes what was saved.
fn oci_image(tar: &TarIndex, image: &ImageRef) -> anyhow::Result<Option<Descriptor>> {
    if !tar.has("index.json") {
        return Ok(None);
    }
    let chosen = choose(&tar.read("index.json")?, image, &tar.what())?;
    if tar.holds_all(&chosen)? {
        return Ok(Some(chosen));
    }
    if let Some(child) = tar.saved_platform(&chosen)? {
        return Ok(Some(child));
    }
    if !tar.has("manifest.json") {
        bail!(
            "{} lacks blobs its index.json names (blob {} or one it references)",
            tar.what(),
            chosen.digest
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_paths_end_in_tar_or_are_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(is_archive(&dir.path().join("new.tar")));
        assert!(!is_archive(&dir.path().join("layout")));
        assert!(!is_archive(dir.path()));
        let file = dir.path().join("saved");
        std::fs::write(&file, b"").unwrap();
        assert!(is_archive(&file));
    }
}
