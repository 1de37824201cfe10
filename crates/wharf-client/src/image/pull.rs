//! The manifests of a pull, fetched before any blob moves.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use wharf_oci::{Descriptor, Digest, Manifest, ManifestKind, Reference};

use super::{parse, REF_NAME};
use crate::client::Manifest as ServedManifest;
use crate::{ImageRef, RegistryClient};

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
