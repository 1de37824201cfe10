//! `wharf pull REF DIR` into an OCI image layout and `wharf push DIR REF` back out: blobs
//! stream between the registry and `DIR/blobs/<alg>/<hex>` files, never whole in memory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use wharf_client::client::{BlobStream, ClientError};
use wharf_client::{ImageRef, RegistryClient};
use wharf_oci::{Descriptor, Digest, Manifest, ManifestKind, Reference, RepoName};

use crate::client_args::{block_on, ClientFlags};

/// Blobs moved at once, as in `wharf copy`.
const PARALLEL_BLOBS: usize = 4;
/// The annotation an OCI layout uses to name an image, as skopeo and docker write it.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Args)]
pub struct PullArgs {
    /// The image to pull: [host[:port]/]repo[:tag][@digest].
    #[arg(value_name = "IMAGE_REF")]
    image: String,
    /// The OCI image layout directory to write (created if missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Args)]
pub struct PushArgs {
    /// An OCI image layout directory holding one image (or one named by REF's tag).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Where to push it: [host[:port]/]repo[:tag].
    #[arg(value_name = "IMAGE_REF")]
    image: String,
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex())
}

fn parse(bytes: &[u8], media_type: &str) -> anyhow::Result<Manifest> {
    Manifest::parse(bytes, Some(media_type))
        .context("not an image manifest or index wharf can handle")
}

pub fn pull(args: PullArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let image: ImageRef = args.image.parse()?;
    let client = flags.client(image.registry())?;
    let repo = image.repository();
    let dir = args.dir;
    let digest = block_on(async {
        let top = client
            .get_manifest(repo, &image.manifest_reference())
            .await?;
        let parsed = parse(&top.bytes, &top.media_type)?;
        let mut images = vec![];
        if parsed.kind == ManifestKind::Index {
            for child in &parsed.manifests {
                let reference = Reference::Digest(child.digest.clone());
                let fetched = client.get_manifest(repo, &reference).await?;
                images.push(parse(&fetched.bytes, &fetched.media_type)?);
                write_file(&blob_path(&dir, &fetched.digest), &fetched.bytes).await?;
            }
        } else {
            images.push(parsed);
        }
        // Platforms may share layers: each is fetched once (and never twice at once).
        let blobs: std::collections::BTreeSet<&Digest> = images
            .iter()
            .flat_map(|m| m.config.iter().chain(&m.layers))
            .map(|d| &d.digest)
            .collect();
        futures::stream::iter(blobs)
            .map(|d| download(&client, repo, &dir, d))
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect::<Vec<()>>()
            .await?;
        write_file(&blob_path(&dir, &top.digest), &top.bytes).await?;
        let mut descriptor = json!({
            "mediaType": top.media_type,
            "digest": top.digest.to_string(),
            "size": top.bytes.len(),
        });
        if let Reference::Tag(tag) = image.manifest_reference() {
            descriptor["annotations"] = json!({ REF_NAME: tag.as_str() });
        }
        let index = json!({ "schemaVersion": 2, "manifests": [descriptor] });
        write_file(&dir.join("index.json"), &serde_json::to_vec_pretty(&index)?).await?;
        write_file(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .await?;
        anyhow::Ok(top.digest)
    })??;
    println!("{digest}");
    Ok(())
}

async fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    tokio::fs::write(path, bytes)
        .await
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Stream a blob to its file through a temporary name, so a broken download never
/// leaves a file that looks complete.
async fn download(
    client: &RegistryClient,
    repo: &RepoName,
    dir: &Path,
    digest: &Digest,
) -> anyhow::Result<()> {
    let path = blob_path(dir, digest);
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Ok(());
    }
    let partial = path.with_extension("partial");
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let (mut stream, _) = client.blob_stream(repo, digest).await?;
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?)
            .await
            .with_context(|| format!("cannot write {}", partial.display()))?;
    }
    file.flush().await?;
    tokio::fs::rename(&partial, &path)
        .await
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn push(args: PushArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let image: ImageRef = args.image.parse()?;
    let client = flags.client(image.registry())?;
    let dir = args.dir;
    let index_path = dir.join("index.json");
    let index: Value = serde_json::from_slice(
        &std::fs::read(&index_path)
            .with_context(|| format!("cannot read {}; is {} an OCI image layout (as `wharf pull` or `skopeo copy oci:` write)?", index_path.display(), dir.display()))?,
    )
    .with_context(|| format!("{} is not valid JSON", index_path.display()))?;
    let entries: Vec<Descriptor> =
        serde_json::from_value(index.get("manifests").cloned().unwrap_or(Value::Null))
            .with_context(|| format!("{} has no manifests list", index_path.display()))?;
    let tag = image.tag().map(|t| t.as_str().to_owned());
    let chosen = match entries.as_slice() {
        [one] => one,
        many => many
            .iter()
            .find(|d| {
                let name = d.annotations.as_ref().and_then(|a| a.get(REF_NAME));
                name.is_some() && name.cloned() == tag
            })
            .with_context(|| {
                format!(
                    "{} holds {} images; name one with IMAGE_REF's tag (its {REF_NAME})",
                    dir.display(),
                    many.len()
                )
            })?,
    };
    let repo = image.repository();
    let digest = block_on(async {
        let top = std::fs::read(blob_path(&dir, &chosen.digest))?;
        let parsed = parse(&top, &chosen.media_type)?;
        if parsed.kind == ManifestKind::Index {
            for child in &parsed.manifests {
                let bytes = std::fs::read(blob_path(&dir, &child.digest))?;
                upload_image(&client, repo, &dir, &parse(&bytes, &child.media_type)?).await?;
                client
                    .put_manifest(
                        repo,
                        &Reference::Digest(child.digest.clone()),
                        bytes,
                        &child.media_type,
                    )
                    .await?;
            }
        } else {
            upload_image(&client, repo, &dir, &parsed).await?;
        }
        client
            .put_manifest(repo, &image.manifest_reference(), top, &chosen.media_type)
            .await?;
        anyhow::Ok(chosen.digest.clone())
    })??;
    println!("{digest}");
    Ok(())
}

async fn upload_image(
    client: &RegistryClient,
    repo: &RepoName,
    dir: &Path,
    manifest: &Manifest,
) -> anyhow::Result<()> {
    let blobs: Vec<&Descriptor> = manifest.config.iter().chain(&manifest.layers).collect();
    futures::stream::iter(blobs)
        .map(|d| upload(client, repo, dir, d))
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Upload a blob file unless the registry has it; the registry checks its digest.
async fn upload(
    client: &RegistryClient,
    repo: &RepoName,
    dir: &Path,
    blob: &Descriptor,
) -> anyhow::Result<()> {
    if client.blob_exists(repo, &blob.digest).await? {
        return Ok(());
    }
    let path = blob_path(dir, &blob.digest);
    let file = tokio::fs::File::open(&path).await.with_context(|| {
        format!(
            "cannot read {}: the layout is missing a blob",
            path.display()
        )
    })?;
    let size = file.metadata().await?.len();
    let url = path.display().to_string();
    let stream: BlobStream = Box::pin(tokio_util::io::ReaderStream::new(file).map(move |r| {
        r.map_err(|e| ClientError::Request {
            url: url.clone(),
            detail: e.to_string(),
        })
    }));
    let session = client.start_upload(repo).await?;
    client
        .upload_blob(repo, session, &blob.digest, size, stream)
        .await?;
    Ok(())
}
