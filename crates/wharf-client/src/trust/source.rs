//! Signatures read from a registry over HTTP, with the client's credentials and token
//! cache: what `wharf verify` and `wharf watch` use.

use wharf_oci::{Descriptor, Digest, Reference, RepoName};

use super::{SignatureSource, TrustError};
use crate::RegistryClient;

/// A [`SignatureSource`] over one registry.
pub struct RegistrySource<'a> {
    pub client: &'a RegistryClient,
}

fn repo_name(repo: &str) -> Result<RepoName, TrustError> {
    repo.parse()
        .map_err(|e| TrustError::Source(format!("repository {repo:?}: {e}")))
}

fn source(e: crate::ClientError) -> TrustError {
    TrustError::Source(e.to_string())
}

#[async_trait::async_trait]
impl SignatureSource for RegistrySource<'_> {
    async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, String)>, TrustError> {
        let repo = repo_name(repo)?;
        let reference: Reference = reference
            .parse()
            .map_err(|e| TrustError::Source(format!("reference {reference:?}: {e}")))?;
        let found = self
            .client
            .manifest_if_any(&repo, &reference)
            .await
            .map_err(source)?;
        Ok(found.map(|m| (m.bytes, m.media_type)))
    }

    async fn referrers(&self, repo: &str, digest: &Digest) -> Result<Vec<Descriptor>, TrustError> {
        let repo = repo_name(repo)?;
        self.client.referrers(&repo, digest).await.map_err(source)
    }

    async fn blob(&self, repo: &str, digest: &Digest, max: u64) -> Result<Vec<u8>, TrustError> {
        let repo = repo_name(repo)?;
        match self
            .client
            .blob_bounded(&repo, digest, max)
            .await
            .map_err(source)?
        {
            Ok(bytes) => Ok(bytes),
            Err(size) => Err(TrustError::TooLarge {
                what: format!("blob {repo}@{digest}"),
                size,
                max,
            }),
        }
    }
}
