//! The OCI 1.1 referrers API (`GET /v2/<name>/referrers/<digest>`), with the spec's
//! fallback for registries without it: the index under the tag `sha256-<hex>`. Also
//! small bounded reads that signature checks need.

use futures::StreamExt;
use serde::Deserialize;
use wharf_oci::{Descriptor, Digest, Reference, RepoName, Tag};

use super::{ClientError, Manifest, RegistryClient};

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl RegistryClient {
    /// Every manifest whose `subject` is `digest` in `repo` (all pages).
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<Descriptor>, ClientError> {
        let what = format!("the referrers of {repo}@{digest}");
        let scopes = vec![format!("repository:{repo}:pull")];
        let path = format!("/v2/{repo}/referrers/{digest}");
        let pages = match self.paginate(&path, &scopes, &what).await {
            Ok(pages) => pages,
            // No referrers API (registry:2, older registries): the tag schema.
            Err(ClientError::NotFound { .. }) => return self.referrers_by_tag(repo, digest).await,
            Err(e) => return Err(e),
        };
        let mut found = Vec::new();
        for page in pages {
            let index: Index = self.json(&page, &what)?;
            found.extend(index.manifests);
        }
        Ok(found)
    }

    /// The referrers tag schema: an index tagged `<alg>-<hex>`.
    async fn referrers_by_tag(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<Descriptor>, ClientError> {
        let tag = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
        let Ok(tag) = tag.parse::<Tag>() else {
            return Ok(Vec::new());
        };
        match self.manifest_if_any(repo, &Reference::Tag(tag)).await? {
            Some(m) => Ok(serde_json::from_slice::<Index>(&m.bytes)
                .map(|i| i.manifests)
                .unwrap_or_default()),
            None => Ok(Vec::new()),
        }
    }

    /// A manifest, or `None` when the registry has none under that reference.
    pub async fn manifest_if_any(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Manifest>, ClientError> {
        match self.get_manifest(repo, reference).await {
            Ok(m) => Ok(Some(m)),
            Err(ClientError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A blob read whole, refused once it passes `max` bytes (`Ok(Err(size))`), and
    /// checked against its digest.
    pub async fn blob_bounded(
        &self,
        repo: &RepoName,
        digest: &Digest,
        max: u64,
    ) -> Result<Result<Vec<u8>, u64>, ClientError> {
        let (mut stream, length) = self.blob_stream(repo, digest).await?;
        if let Some(length) = length.filter(|l| *l > max) {
            return Ok(Err(length));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() as u64 > max {
                return Ok(Err(bytes.len() as u64));
            }
        }
        Ok(Ok(bytes))
    }
}
