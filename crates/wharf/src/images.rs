//! Read and delete commands: `tags`, `catalog`, `digest`, `inspect`, `delete`. Output is
//! plain lines (or JSON for inspect) so scripts can use it.

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use wharf_client::{ImageRef, RegistryClient};
use wharf_oci::{Manifest, ManifestKind, Reference};

use crate::client_args::{block_on, ClientFlags};

#[derive(Args)]
pub struct RefArg {
    /// An image reference as docker takes it: [host[:port]/]repo[:tag][@digest].
    #[arg(value_name = "IMAGE_REF")]
    image: String,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// An image reference as docker takes it: [host[:port]/]repo[:tag][@digest].
    #[arg(value_name = "IMAGE_REF", required_unless_present = "repository")]
    image: Option<String>,
    /// Delete this whole repository (host[:port]/name): every tag and manifest, and its
    /// name from the catalog. Needs a wharf registry, with deletes enabled.
    #[arg(long, value_name = "HOST/NAME", conflicts_with = "image")]
    repository: Option<String>,
}

#[derive(Args)]
pub struct HostArg {
    /// The registry: host[:port] (or http://host[:port] for plain http).
    #[arg(value_name = "HOST")]
    host: String,
}

fn parse(arg: &RefArg, flags: &ClientFlags) -> anyhow::Result<(ImageRef, RegistryClient)> {
    let image: ImageRef = arg.image.parse()?;
    let client = flags.client(image.registry())?;
    Ok((image, client))
}

pub fn tags(arg: RefArg, flags: &ClientFlags) -> anyhow::Result<()> {
    let (image, client) = parse(&arg, flags)?;
    for tag in block_on(client.list_tags(image.repository()))?? {
        println!("{tag}");
    }
    Ok(())
}

pub fn catalog(arg: HostArg, flags: &ClientFlags) -> anyhow::Result<()> {
    let client = flags.client_for_address(&arg.host)?;
    for repo in block_on(client.catalog())?? {
        println!("{repo}");
    }
    Ok(())
}

pub fn digest(arg: RefArg, flags: &ClientFlags) -> anyhow::Result<()> {
    let (image, client) = parse(&arg, flags)?;
    let digest = block_on(client.head_digest(image.repository(), &image.manifest_reference()))??;
    println!("{digest}");
    Ok(())
}

pub fn delete(arg: DeleteArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    if let Some(repository) = arg.repository {
        let image: ImageRef = repository.parse()?;
        let client = flags.client(image.registry())?;
        let answer = block_on(client.delete_repository(image.repository()))??;
        let manifests = serde_json::from_str::<Value>(&answer)
            .ok()
            .and_then(|v| v["manifests"].as_array().map(Vec::len))
            .unwrap_or(0);
        println!(
            "Deleted repository {} ({manifests} manifests); run garbage collection to free its blobs",
            image.repository()
        );
        return Ok(());
    }
    let image = arg.image.unwrap_or_default();
    let (image, client) = parse(&RefArg { image }, flags)?;
    block_on(async {
        // Registries delete by digest only; a tag is resolved first, as `regctl` does.
        let digest = match image.digest() {
            Some(d) => d.clone(),
            None => {
                client
                    .head_digest(image.repository(), &image.manifest_reference())
                    .await?
            }
        };
        client.delete_manifest(image.repository(), &digest).await?;
        println!("Deleted {}@{digest}", image.repository());
        anyhow::Ok(())
    })?
}

pub fn inspect(arg: RefArg, flags: &ClientFlags) -> anyhow::Result<()> {
    let (image, client) = parse(&arg, flags)?;
    let out = block_on(describe(&client, &image))??;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn describe(client: &RegistryClient, image: &ImageRef) -> anyhow::Result<Value> {
    let repo = image.repository();
    let fetched = client
        .get_manifest(repo, &image.manifest_reference())
        .await?;
    let manifest =
        Manifest::parse(&fetched.bytes, Some(&fetched.media_type)).with_context(|| {
            format!(
                "{} is not an image manifest or index wharf can read",
                image.familiar()
            )
        })?;
    let mut out = json!({
        "name": image.familiar(),
        "digest": fetched.digest.to_string(),
        "mediaType": fetched.media_type,
        "size": fetched.bytes.len(),
    });
    match manifest.kind {
        ManifestKind::Index => {
            let platforms: Vec<Value> = manifest
                .manifests
                .iter()
                .map(|m| {
                    let p = m.platform.clone().unwrap_or(Value::Null);
                    let mut entry = json!({
                        "digest": m.digest.to_string(),
                        "mediaType": m.media_type,
                    });
                    // As the manifest has them: a platform without a variant has none,
                    // not `"variant": null`.
                    for key in ["os", "architecture", "variant"] {
                        if let Some(v) = p.get(key).filter(|v| !v.is_null()) {
                            entry[key] = v.clone();
                        }
                    }
                    entry
                })
                .collect();
            out["platforms"] = Value::Array(platforms);
        }
        ManifestKind::Image => {
            if let Some(config) = &manifest.config {
                let bytes = client.get_blob(repo, &config.digest).await?;
                // Artifacts carry configs that are not image configs: show what is there.
                let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                out["config"] = json!(config.digest.to_string());
                for key in ["os", "architecture", "variant", "created"] {
                    if let Some(v) = parsed.get(key) {
                        out[key] = v.clone();
                    }
                }
            }
            let layers: Vec<Value> = manifest
                .layers
                .iter()
                .map(|l| json!({ "digest": l.digest.to_string(), "mediaType": l.media_type, "size": l.size }))
                .collect();
            out["layersSize"] = json!(manifest.layers.iter().map(|l| l.size).sum::<u64>());
            out["layers"] = Value::Array(layers);
        }
    }
    if let Reference::Tag(tag) = image.manifest_reference() {
        out["tag"] = json!(tag.as_str());
    }
    Ok(out)
}
