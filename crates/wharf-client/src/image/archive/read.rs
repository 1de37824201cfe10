//! Reading a tar for a push: its members found by offset once, then read in place; an
//! OCI layout inside it, or an old `docker save` (`manifest.json` and `<id>/layer.tar`).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use wharf_oci::media_type as mt;
use wharf_oci::{Descriptor, Digest, DigestHasher};

use super::{blob_name, docker_arch, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, MAX_JSON};
use crate::client::{BlobStream, ClientError};
use crate::image::{check_digest, file_stream, parse, verified, Blobs};
use crate::ImageRef;

/// Where one member's bytes sit in the archive file.
#[derive(Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

/// A tar's members by path, read in place: the archive is scanned once for offsets, then
/// each blob is read by seeking to it.
pub(super) struct TarIndex {
    path: PathBuf,
    members: HashMap<String, Member>,
}

impl TarIndex {
    pub(super) fn open(path: &Path) -> anyhow::Result<TarIndex> {
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

    pub(super) fn what(&self) -> String {
        self.path.display().to_string()
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    fn member(&self, name: &str) -> anyhow::Result<Member> {
        self.members
            .get(name)
            .copied()
            .with_context(|| format!("{} has no {name}", self.what()))
    }

    /// A small member (JSON) whole.
    pub(super) fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
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
    pub(super) fn digest(&self, name: &str) -> anyhow::Result<Digest> {
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
    pub(super) fn stream(&self, name: &str, digest: &Digest) -> anyhow::Result<(BlobStream, u64)> {
        let member = self.member(name)?;
        let file = tokio::fs::File::from_std(self.seek_to(member)?);
        let what = format!("{name} in {}", self.what());
        let stream = file_stream(file.take(member.size), what.clone());
        Ok((verified(stream, digest.clone(), what), member.size))
    }

    /// Whether the archive holds the manifest `chosen` and every blob it needs.
    pub(super) fn holds_all(&self, chosen: &Descriptor) -> anyhow::Result<bool> {
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
    pub(super) fn saved_platform(&self, index: &Descriptor) -> anyhow::Result<Option<Descriptor>> {
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
pub(super) struct DockerSave {
    tar: TarIndex,
    config: Vec<u8>,
    manifest: Vec<u8>,
    /// Which member holds each layer.
    layers: HashMap<Digest, String>,
}

impl DockerSave {
    pub(super) fn open(tar: TarIndex, image: &ImageRef) -> anyhow::Result<DockerSave> {
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

    pub(super) fn descriptor(&self) -> Descriptor {
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
}
