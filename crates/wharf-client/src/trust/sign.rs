//! `wharf sign`: a cosign key-based signature pushed next to the image, under the
//! `sha256-<hex>.sig` tag (cosign's default, adding to the signatures already there), or
//! as an OCI 1.1 referrer in the form `cosign sign --registry-referrers-mode=oci-1-1`
//! writes (the same signature image with `config.mediaType`
//! `application/vnd.dev.cosign.artifact.sig.v1+json` and a `subject`; cosign 3 writes it
//! in that mode with `--new-bundle-format=false`). cosign 3's default, a Sigstore bundle
//! referrer holding a DSSE in-toto statement, is another format, not written here.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use wharf_oci::media_type as mt;
use wharf_oci::{Descriptor, Digest, Manifest, Reference, RepoName, Tag};

use super::cosign::{
    payload, signature_manifest, signature_tag, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE,
};
use super::PrivateKey;
use crate::client::ClientError;
use crate::{ImageRef, RegistryClient};

/// Where a signature went.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signed manifest's digest.
    pub digest: Digest,
    /// The signature manifest's digest.
    pub signature: Digest,
    /// The tag it was stored under, for the tag form.
    pub tag: Option<String>,
}

/// cosign's `docker-reference`: the repository's full name, Docker Hub as
/// `index.docker.io` (go-containerregistry's name for it).
pub fn docker_reference(image: &ImageRef) -> String {
    let host = if image.registry().is_docker_hub() {
        "index.docker.io"
    } else {
        image.registry().as_str()
    };
    format!("{host}/{}", image.repository())
}

/// Sign `digest` (a manifest or an index) in `image`'s repository with `key`.
pub async fn sign(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
    key: &PrivateKey,
    referrer: bool,
) -> Result<Signed, ClientError> {
    let repo = image.repository();
    let payload = payload(&docker_reference(image), digest);
    let signature = B64.encode(key.sign_cosign(&payload));
    let layer = Descriptor {
        media_type: SIMPLE_SIGNING_MEDIA_TYPE.to_owned(),
        digest: Digest::sha256_of(&payload),
        size: payload.len() as u64,
        artifact_type: None,
        annotations: Some(BTreeMap::from([(
            SIGNATURE_ANNOTATION.to_owned(),
            signature,
        )])),
        urls: None,
        platform: None,
    };
    push_blob(client, repo, payload).await?;
    if referrer {
        let target = client
            .get_manifest(repo, &Reference::Digest(digest.clone()))
            .await?;
        let subject = Descriptor {
            media_type: target.media_type,
            digest: digest.clone(),
            size: target.bytes.len() as u64,
            artifact_type: None,
            annotations: None,
            urls: None,
            platform: None,
        };
        let (config, manifest) = signature_manifest(&[layer], Some(&subject));
        push_blob(client, repo, config).await?;
        let at = Reference::Digest(Digest::sha256_of(&manifest));
        let stored = client
            .put_manifest(repo, &at, manifest, mt::OCI_MANIFEST)
            .await?;
        return Ok(Signed {
            digest: digest.clone(),
            signature: stored,
            tag: None,
        });
    }
    let tag = signature_tag(digest);
    let reference = Reference::Tag(tag.parse::<Tag>().map_err(|e| ClientError::BadResponse {
        registry: client.registry().to_string(),
        what: format!("signature tag {tag}"),
        detail: e.to_string(),
    })?);
    // cosign adds to the signatures already under the tag rather than replacing them.
    let mut layers = match client.manifest_if_any(repo, &reference).await? {
        Some(existing) => Manifest::parse(&existing.bytes, None)
            .map(|m| m.layers)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    layers.retain(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE);
    if !layers.contains(&layer) {
        layers.push(layer);
    }
    let (config, manifest) = signature_manifest(&layers, None);
    push_blob(client, repo, config).await?;
    let stored = client
        .put_manifest(repo, &reference, manifest, mt::OCI_MANIFEST)
        .await?;
    Ok(Signed {
        digest: digest.clone(),
        signature: stored,
        tag: Some(tag),
    })
}

/// A small blob, skipped when the repository has it.
async fn push_blob(
    client: &RegistryClient,
    repo: &RepoName,
    bytes: Vec<u8>,
) -> Result<(), ClientError> {
    let digest = Digest::sha256_of(&bytes);
    if client.blob_exists(repo, &digest).await? {
        return Ok(());
    }
    let session = client.start_upload(repo).await?;
    let size = bytes.len() as u64;
    let body = futures::stream::once(async move { Ok(bytes::Bytes::from(bytes)) });
    client
        .upload_blob(repo, session, &digest, size, Box::pin(body))
        .await
}
