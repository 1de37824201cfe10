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

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use wharf_oci::media_type as mt;
use wharf_oci::{Descriptor, Digest, DigestHasher, Manifest};

use super::{
    check_digest, choose, fetch_manifests, file_stream, oci_layout_file, parse, push_image,
    verified, Blobs, Progress, Pulled, Staged,
};
use crate::client::{BlobStream, ClientError};
use crate::{ImageRef, RegistryClient};

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
    progress: &dyn Progress,
) -> anyhow::Result<Digest> {
    let tar = TarIndex::open(path)?;
    if let Some(chosen) = oci_image(&tar, image)? {
        return push_image(client, image, &tar, &chosen, progress).await;
    }
    let saved = DockerSave::open(tar, image)?;
    let chosen = saved.descriptor();
    push_image(client, image, &saved, &chosen, progress).await
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

/// Where one member's bytes sit in the archive file.
#[derive(Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

/// A tar's members by path, read in place: the archive is scanned once for offsets, then
/// each blob is read by seeking to it.
struct TarIndex {
    path: PathBuf,
    members: HashMap<String, Member>,
}

impl TarIndex {
    fn open(path: &Path) -> anyhow::Result<TarIndex> {
        let what = path.display().to_string();
        let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {what}"))?;
        refuse_compressed(&mut file, &what)?;
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        let mut links = vec![];
        let entries = archive
            .entries_with_seek()
            .with_context(|| format!("{what} is not a tar archive"))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("{what} is not a valid tar archive"))?;
            let path = entry
                .path()
                .with_context(|| format!("{what} has an entry with an unreadable name"))?;
            let name = normalize(Path::new(""), &path);
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let member = Member {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                };
                members.insert(name, member);
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .with_context(|| format!("{what}: the link {name} has an unreadable target"))?;
                let Some(target) = target else {
                    continue;
                };
                // A symlink is relative to its directory, a hard link to the archive root.
                let base = match kind.is_symlink() {
                    true => Path::new(&name).parent().unwrap_or(Path::new("")),
                    false => Path::new(""),
                };
                links.push((name.clone(), normalize(base, &target)));
            }
        }
        // Docker 25+ links `<id>/layer.tar` to `blobs/sha256/...`; a few rounds follow
        // chains of links, and a cycle just stays unresolved.
        for _ in 0..8 {
            for (name, target) in &links {
                if let Some(member) = members.get(target).copied() {
                    members.entry(name.clone()).or_insert(member);
                }
            }
        }
        Ok(TarIndex {
            path: path.to_path_buf(),
            members,
        })
    }

    fn what(&self) -> String {
        self.path.display().to_string()
    }

    fn has(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    fn member(&self, name: &str) -> anyhow::Result<Member> {
        self.members
            .get(name)
            .copied()
            .with_context(|| format!("{} has no {name}", self.what()))
    }

    /// A small member (JSON) whole.
    fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let member = self.member(name)?;
        if member.size > MAX_JSON {
            bail!(
                "{name} in {} is {} bytes, too big for a manifest or config",
                self.what(),
                member.size
            );
        }
        let mut bytes = vec![0; member.size as usize];
        let mut file = self.seek_to(member)?;
        file.read_exact(&mut bytes)
            .with_context(|| format!("cannot read {name} in {}", self.what()))?;
        Ok(bytes)
    }

    fn seek_to(&self, member: Member) -> anyhow::Result<std::fs::File> {
        let mut file = std::fs::File::open(&self.path)
            .with_context(|| format!("cannot read {}", self.what()))?;
        file.seek(SeekFrom::Start(member.offset))?;
        Ok(file)
    }

    /// The first bytes of a member, to tell compressed layers from plain tars.
    fn magic(&self, name: &str) -> anyhow::Result<[u8; 4]> {
        let member = self.member(name)?;
        let mut magic = [0u8; 4];
        let n = member.size.min(4) as usize;
        self.seek_to(member)?.read_exact(&mut magic[..n])?;
        Ok(magic)
    }

    /// The digest of a member's content, hashed in a streaming pass.
    fn digest(&self, name: &str) -> anyhow::Result<Digest> {
        let member = self.member(name)?;
        let mut reader = self.seek_to(member)?.take(member.size);
        let mut hasher = DigestHasher::new(wharf_oci::Algorithm::Sha256);
        let mut buf = vec![0; 256 << 10];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher.finish());
            }
            hasher.update(&buf[..n]);
        }
    }

    /// A member as a stream checked against `digest` while it is read.
    fn stream(&self, name: &str, digest: &Digest) -> anyhow::Result<(BlobStream, u64)> {
        let member = self.member(name)?;
        let file = tokio::fs::File::from_std(self.seek_to(member)?);
        let what = format!("{name} in {}", self.what());
        let stream = file_stream(file.take(member.size), what.clone());
        Ok((verified(stream, digest.clone(), what), member.size))
    }

    /// Whether the archive holds the manifest `chosen` and every blob it needs.
    fn holds_all(&self, chosen: &Descriptor) -> anyhow::Result<bool> {
        let name = blob_name(&chosen.digest);
        if !self.has(&name) {
            return Ok(false);
        }
        let manifest = parse(&Blobs::read(self, &chosen.digest)?, &chosen.media_type)?;
        for child in &manifest.manifests {
            if !self.holds_all(child)? {
                return Ok(false);
            }
        }
        let blobs = manifest.config.iter().chain(&manifest.layers);
        Ok(blobs
            .filter(|b| b.urls.is_none())
            .all(|b| self.has(&blob_name(&b.digest))))
    }
}

impl TarIndex {
    /// Of an index the archive holds only in part, a platform's image that it holds
    /// whole, this machine's first (attestations, `unknown/unknown`, are not images).
    fn saved_platform(&self, index: &Descriptor) -> anyhow::Result<Option<Descriptor>> {
        if !self.has(&blob_name(&index.digest)) {
            return Ok(None);
        }
        let index = parse(&Blobs::read(self, &index.digest)?, &index.media_type)?;
        let mut entries: Vec<&Descriptor> = index.manifests.iter().collect();
        entries.sort_by_key(|d| !d.is_for_platform("linux", docker_arch(), None));
        for entry in entries {
            let attestation = entry.is_for_platform("unknown", "unknown", None);
            if !attestation && self.holds_all(entry)? {
                return Ok(Some(entry.clone()));
            }
        }
        Ok(None)
    }
}

impl Blobs for TarIndex {
    fn read(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let name = blob_name(digest);
        let bytes = TarIndex::read(self, &name)?;
        check_digest(bytes, digest, &format!("{name} in {}", self.what()))
    }

    fn open(&self, digest: &Digest) -> anyhow::Result<(BlobStream, u64)> {
        self.stream(&blob_name(digest), digest)
    }
}

/// A gzipped `docker save` cannot be read by offset; say how to fix it rather than fail
/// on a "bad tar header".
fn refuse_compressed(file: &mut std::fs::File, what: &str) -> anyhow::Result<()> {
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    file.rewind()?;
    if n >= 2 && is_compressed(&magic) {
        bail!(
            "{what} is compressed; decompress it first (`gunzip` or `zstd -d`), then push the .tar"
        );
    }
    Ok(())
}

fn is_compressed(magic: &[u8; 4]) -> bool {
    magic[..2] == [0x1f, 0x8b] || *magic == [0x28, 0xb5, 0x2f, 0xfd]
}

/// A member path with `.`, `..` and leading `/` resolved, relative to `base`.
fn normalize(base: &Path, path: &Path) -> String {
    let mut parts: Vec<String> = vec![];
    let start = if path.is_absolute() {
        Path::new("")
    } else {
        base
    };
    for component in start.components().chain(path.components()) {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// One image of an old-format `docker save` `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An image from `manifest.json`, with the schema2 manifest wharf writes for it: the saved
/// files are pushed as they are, so the digests are those of the files.
struct DockerSave {
    tar: TarIndex,
    config: Vec<u8>,
    manifest: Vec<u8>,
    /// Which member holds each layer.
    layers: HashMap<Digest, String>,
}

impl DockerSave {
    fn open(tar: TarIndex, image: &ImageRef) -> anyhow::Result<DockerSave> {
        let what = tar.what();
        let list = tar.read("manifest.json").with_context(|| {
            format!("{what} is not a `docker save` archive (no manifest.json or index.json)")
        })?;
        let saved: Vec<SavedImage> = serde_json::from_slice(&list)
            .with_context(|| format!("the manifest.json in {what} is not docker's format"))?;
        let chosen = choose_saved(&saved, image, &what)?;
        let config = tar.read(&normalize(Path::new(""), Path::new(&chosen.config)))?;
        let diff_ids = diff_ids(&config, &what)?;
        if diff_ids.len() != chosen.layers.len() {
            bail!(
                "{what}: the config lists {} layers but manifest.json {}",
                diff_ids.len(),
                chosen.layers.len()
            );
        }
        let mut layers = HashMap::new();
        let mut descriptors = vec![];
        for (path, diff_id) in chosen.layers.iter().zip(diff_ids) {
            let name = normalize(Path::new(""), Path::new(path));
            let (digest, media_type) = layer_digest(&tar, &name, diff_id)?;
            let size = tar.member(&name)?.size;
            descriptors.push(json!({ "mediaType": media_type, "size": size, "digest": digest }));
            layers.insert(digest, name);
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": mt::DOCKER_MANIFEST,
            "config": {
                "mediaType": mt::DOCKER_CONFIG,
                "size": config.len(),
                "digest": Digest::sha256_of(&config),
            },
            "layers": descriptors,
        });
        Ok(DockerSave {
            tar,
            config,
            manifest: serde_json::to_vec_pretty(&manifest)?,
            layers,
        })
    }

    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: mt::DOCKER_MANIFEST.to_owned(),
            digest: Digest::sha256_of(&self.manifest),
            size: self.manifest.len() as u64,
            artifact_type: None,
            annotations: None,
            urls: None,
            platform: None,
        }
    }
}

impl Blobs for DockerSave {
    fn read(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        [&self.manifest, &self.config]
            .into_iter()
            .find(|b| Digest::sha256_of(b) == *digest)
            .cloned()
            .with_context(|| format!("{} has no blob {digest}", self.tar.what()))
    }

    fn open(&self, digest: &Digest) -> anyhow::Result<(BlobStream, u64)> {
        match self.layers.get(digest) {
            Some(name) => self.tar.stream(name, digest),
            None => {
                let bytes = Blobs::read(self, digest)?;
                let size = bytes.len() as u64;
                let chunk: Result<bytes::Bytes, ClientError> = Ok(bytes.into());
                Ok((Box::pin(futures::stream::iter([chunk])), size))
            }
        }
    }
}

/// The saved image to push: the only one, or the one tagged with IMAGE_REF's tag.
fn choose_saved<'a>(
    saved: &'a [SavedImage],
    image: &ImageRef,
    what: &str,
) -> anyhow::Result<&'a SavedImage> {
    if let [one] = saved {
        return Ok(one);
    }
    let tag = image.tag().map(|t| t.as_str());
    let tag_of = |name: &str| {
        name.rsplit_once(':')
            .map(|(_, t)| t.to_owned())
            .filter(|t| !t.contains('/'))
    };
    let tagged: Vec<&SavedImage> = saved
        .iter()
        .filter(|s| {
            s.repo_tags
                .iter()
                .flatten()
                .any(|n| tag_of(n).as_deref() == tag)
        })
        .collect();
    if tagged.len() > 1 {
        bail!(
            "{what} holds {} images tagged {}; push from an archive that holds one of them (`docker save IMAGE`)",
            tagged.len(),
            tag.unwrap_or_default()
        );
    }
    tagged.first().copied().with_context(|| {
        let names: Vec<&String> = saved
            .iter()
            .flat_map(|s| s.repo_tags.iter().flatten())
            .collect();
        format!(
            "{what} holds {} images ({names:?}); name one with IMAGE_REF's tag",
            saved.len()
        )
    })
}

fn diff_ids(config: &[u8], what: &str) -> anyhow::Result<Vec<Digest>> {
    let config: Value = serde_json::from_slice(config)
        .with_context(|| format!("the image config in {what} is not JSON"))?;
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .with_context(|| format!("the image config in {what} has no rootfs.diff_ids"))?;
    ids.iter()
        .map(|id| {
            id.as_str()
                .unwrap_or("")
                .parse()
                .with_context(|| format!("the image config in {what} has a bad diff_id {id}"))
        })
        .collect()
}

/// A layer's digest and media type as pushed. A plain tar's digest is its diff_id, so it
/// goes up as saved, uncompressed (valid schema2, and no CPU spent or temporary file
/// needed to learn a compressed digest before the manifest names it); a gzipped one
/// (from other tools) keeps its own bytes and needs one hashing pass.
fn layer_digest(
    tar: &TarIndex,
    name: &str,
    diff_id: Digest,
) -> anyhow::Result<(Digest, &'static str)> {
    let magic = tar.magic(name)?;
    if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        bail!(
            "{name} in {} is zstd-compressed, which a Docker schema2 manifest cannot describe",
            tar.what()
        );
    }
    if is_compressed(&magic) {
        return Ok((tar.digest(name)?, DOCKER_LAYER_GZIP));
    }
    Ok((diff_id, DOCKER_LAYER_TAR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_like_a_filesystem() {
        let base = Path::new("abc");
        assert_eq!(
            normalize(base, Path::new("../blobs/sha256/x")),
            "blobs/sha256/x"
        );
        assert_eq!(
            normalize(Path::new(""), Path::new("./manifest.json")),
            "manifest.json"
        );
        assert_eq!(normalize(base, Path::new("/blobs/x")), "blobs/x");
    }

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
