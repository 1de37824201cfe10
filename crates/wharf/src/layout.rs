//! `wharf pull REF DIR` into an OCI image layout and `wharf push DIR REF` back out: blobs
//! stream between the registry and `DIR/blobs/<alg>/<hex>` files, never whole in memory.
//! A `.tar` (or any existing regular file) is a `docker save` archive instead: `archive.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use wharf_client::client::{BlobStream, ClientError, Manifest as ServedManifest};
use wharf_client::{ImageRef, RegistryClient};
use wharf_oci::{Descriptor, Digest, DigestHasher, Manifest, ManifestKind, Reference, RepoName};

use crate::archive;
use crate::client_args::{block_on, ClientFlags};
use crate::progress::{OutputArgs, Progress};

/// Blobs moved at once by pull, push and copy: enough to hide per-request latency, few
/// enough not to swamp either registry or the link between them.
pub const PARALLEL_BLOBS: usize = 4;
/// The annotation an OCI layout uses to name an image, as skopeo and docker write it.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Args)]
pub struct PullArgs {
    /// The image to pull: [host[:port]/]repo[:tag][@digest].
    #[arg(value_name = "IMAGE_REF")]
    image: String,
    /// The OCI image layout directory to write (created if missing), or FILE.tar to write
    /// a `docker save` archive that `docker load` and skopeo read.
    #[arg(value_name = "DIR|FILE.tar")]
    dir: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
pub struct PushArgs {
    /// An OCI image layout directory holding one image (or one named by REF's tag), or a
    /// tar written by `docker save` (or `wharf pull REF FILE.tar`).
    #[arg(value_name = "DIR|FILE.tar")]
    dir: PathBuf,
    /// Where to push it: [host[:port]/]repo[:tag].
    #[arg(value_name = "IMAGE_REF")]
    image: String,
    #[command(flatten)]
    output: OutputArgs,
}

/// Where `push` reads blobs from: a layout directory or a tar archive.
pub trait Blobs {
    /// A small blob (a manifest or config) whole, checked against `digest`.
    fn read(&self, digest: &Digest) -> anyhow::Result<Vec<u8>>;
    /// A blob as a stream that fails if its content does not hash to `digest`, and its size.
    fn open(&self, digest: &Digest) -> anyhow::Result<(BlobStream, u64)>;
}

/// Everything a pull needs before blobs move: the top manifest, an index's children, and
/// the image manifests parsed.
pub struct Pulled {
    pub top: ServedManifest,
    pub children: Vec<ServedManifest>,
    pub images: Vec<Manifest>,
}

impl Pulled {
    /// Config and layer blobs, each once: platforms may share layers.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let unique: BTreeMap<&Digest, &Descriptor> = self
            .images
            .iter()
            .flat_map(|m| m.config.iter().chain(&m.layers))
            .map(|d| (&d.digest, d))
            .collect();
        unique.into_values().collect()
    }

    /// The descriptor `index.json` names the pulled image by, with its tag when it has one.
    pub fn index_entry(&self, image: &ImageRef, extra: &[(&str, String)]) -> Value {
        let mut descriptor = json!({
            "mediaType": self.top.media_type,
            "digest": self.top.digest.to_string(),
            "size": self.top.bytes.len(),
        });
        let mut annotations: BTreeMap<&str, String> = extra.iter().cloned().collect();
        if let Some(tag) = image.tag() {
            annotations.insert(REF_NAME, tag.as_str().to_owned());
        }
        if !annotations.is_empty() {
            descriptor["annotations"] = json!(annotations);
        }
        descriptor
    }
}

pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
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

pub fn pull(args: PullArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let image: ImageRef = args.image.parse()?;
    let client = flags.client(image.registry())?;
    let progress = Progress::new(args.output);
    let digest = if archive::is_archive(&args.dir) {
        block_on(archive::pull(&client, &image, &args.dir, &progress))??
    } else {
        block_on(pull_to_dir(&client, &image, &args.dir, &progress))??
    };
    let (copied, _, skipped) = progress.tally();
    progress.summary(&format!(
        "Pulled {} to {}: {copied} blobs downloaded, {skipped} already present",
        image.familiar(),
        args.dir.display()
    ));
    progress.print_result(&digest, &image.to_string());
    Ok(())
}

/// The top manifest and, for an index, every child manifest.
pub async fn fetch_manifests(client: &RegistryClient, image: &ImageRef) -> anyhow::Result<Pulled> {
    let repo = image.repository();
    let top = client
        .get_manifest(repo, &image.manifest_reference())
        .await?;
    let parsed = parse(&top.bytes, &top.media_type)?;
    if parsed.kind == ManifestKind::Image {
        return Ok(Pulled {
            top,
            children: vec![],
            images: vec![parsed],
        });
    }
    let (mut children, mut images) = (vec![], vec![]);
    for child in &parsed.manifests {
        let fetched = client
            .get_manifest(repo, &Reference::Digest(child.digest.clone()))
            .await?;
        images.push(parse(&fetched.bytes, &fetched.media_type)?);
        children.push(fetched);
    }
    Ok(Pulled {
        top,
        children,
        images,
    })
}

async fn pull_to_dir(
    client: &RegistryClient,
    image: &ImageRef,
    dir: &Path,
    progress: &Progress,
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

async fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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

/// Stream a blob to its file, verified as it streams; it appears under its name only
/// when complete and durable.
async fn download(
    client: &RegistryClient,
    repo: &RepoName,
    dir: &Path,
    blob: &Descriptor,
    progress: &Progress,
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

pub fn push(args: PushArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let image: ImageRef = args.image.parse()?;
    let client = flags.client(image.registry())?;
    let progress = Progress::new(args.output);
    let digest = if archive::is_archive(&args.dir) {
        block_on(archive::push(&client, &image, &args.dir, &progress))??
    } else {
        let layout = Layout::open(&args.dir, &image)?;
        block_on(push_image(
            &client,
            &image,
            &layout,
            &layout.chosen,
            &progress,
        ))??
    };
    let (copied, mounted, skipped) = progress.tally();
    progress.summary(&format!(
        "Pushed {} to {}: {copied} blobs uploaded, {mounted} mounted, {skipped} already present",
        args.dir.display(),
        image.familiar(),
    ));
    progress.print_result(&digest, &image.to_string());
    Ok(())
}

/// An OCI image layout directory and the image in it that the push names.
struct Layout {
    dir: PathBuf,
    chosen: Descriptor,
}

impl Layout {
    fn open(dir: &Path, image: &ImageRef) -> anyhow::Result<Layout> {
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
        Ok((archive::verified(stream, digest.clone(), what), size))
    }
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

/// Push the manifest `chosen` (an image or an index) with everything it references.
pub async fn push_image(
    client: &RegistryClient,
    image: &ImageRef,
    blobs: &dyn Blobs,
    chosen: &Descriptor,
    progress: &Progress,
) -> anyhow::Result<Digest> {
    let repo = image.repository();
    let top = blobs.read(&chosen.digest)?;
    let parsed = parse(&top, &chosen.media_type)?;
    if parsed.kind == ManifestKind::Index {
        for child in &parsed.manifests {
            let bytes = blobs.read(&child.digest)?;
            let manifest = parse(&bytes, &child.media_type)?;
            upload_image(client, repo, blobs, &manifest, progress).await?;
            let reference = Reference::Digest(child.digest.clone());
            client
                .put_manifest(repo, &reference, bytes, &child.media_type)
                .await?;
        }
    } else {
        upload_image(client, repo, blobs, &parsed, progress).await?;
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
    progress: &Progress,
) -> anyhow::Result<()> {
    // Each once: an old `docker save` repeats the same empty layer.
    let unique: BTreeMap<&Digest, &Descriptor> = manifest
        .config
        .iter()
        .chain(&manifest.layers)
        .map(|d| (&d.digest, d))
        .collect();
    futures::stream::iter(unique.into_values())
        .map(|d| upload(client, repo, blobs, &d.digest, progress))
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
    progress: &Progress,
) -> anyhow::Result<()> {
    if client.blob_exists(repo, digest).await? {
        progress.skipped(digest);
        return Ok(());
    }
    let (stream, size) = blobs.open(digest)?;
    let transfer = progress.start(digest, size);
    let session = client.start_upload(repo).await?;
    client
        .upload_blob(repo, session, digest, size, transfer.track(stream))
        .await?;
    transfer.done("uploaded");
    Ok(())
}
