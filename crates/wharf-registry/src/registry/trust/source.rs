//! The registry's own store (through the service below events and pull counts) as a
//! [`SignatureSource`] for wharf-client's verification.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use wharf_client::trust::{self, Refusal, SignatureSource, TrustError, TrustRoots, Verdict};
use wharf_oci::{Descriptor, Digest, Reference, RepoName};

use super::Finding;
use crate::registry::events::Origin;
use crate::registry::service::{BlobSource, Service};
use crate::registry::Core;

pub(super) struct ServiceSource<'a> {
    service: &'a dyn Service,
    /// Where stored blobs' bytes are read (the service answers only where they are).
    core: &'a Arc<Core>,
    /// The referrers of the digest being verified, read already to key the cache: a
    /// filesystem store may rebuild its referrers index on each read just after a push.
    known: (&'a Digest, &'a [Descriptor]),
}

impl<'a> ServiceSource<'a> {
    pub fn new(
        service: &'a dyn Service,
        core: &'a Arc<Core>,
        known: (&'a Digest, &'a [Descriptor]),
    ) -> Self {
        ServiceSource {
            service,
            core,
            known,
        }
    }
}

fn failed(e: impl std::fmt::Display) -> TrustError {
    TrustError::Source(e.to_string())
}

fn repo_name(repo: &str) -> Result<RepoName, TrustError> {
    repo.parse().map_err(failed)
}

fn too_large(what: String, size: u64, max: u64) -> TrustError {
    TrustError::TooLarge { what, size, max }
}

#[async_trait]
impl SignatureSource for ServiceSource<'_> {
    async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, String)>, TrustError> {
        let repo = repo_name(repo)?;
        let reference: Reference = reference.parse().map_err(failed)?;
        let o = Origin::method("GET");
        let served = self.service.manifest(&o, &repo, &reference).await;
        Ok(served
            .map_err(failed)?
            .map(|s| (s.content.bytes.to_vec(), s.content.media_type.to_string())))
    }

    async fn referrers(&self, repo: &str, digest: &Digest) -> Result<Vec<Descriptor>, TrustError> {
        if digest == self.known.0 {
            return Ok(self.known.1.to_vec());
        }
        let repo = repo_name(repo)?;
        let o = Origin::method("GET");
        self.service
            .referrers(&o, &repo, digest)
            .await
            .map_err(failed)
    }

    async fn blob(&self, repo: &str, digest: &Digest, max: u64) -> Result<Vec<u8>, TrustError> {
        let name = repo_name(repo)?;
        let o = Origin::method("GET");
        let what = || format!("blob {digest} in {repo}");
        match self
            .service
            .blob(&o, &name, digest, true)
            .await
            .map_err(failed)?
        {
            None => Err(TrustError::Source(format!(
                "{} is not in the registry",
                what()
            ))),
            Some(found) if found.size() > max => Err(too_large(what(), found.size(), max)),
            Some(BlobSource::Stored(_)) => {
                let bytes = self
                    .core
                    .store
                    .blobs
                    .get(digest, max)
                    .await
                    .map_err(failed)?;
                bytes
                    .map(|b| b.to_vec())
                    .ok_or_else(|| TrustError::Source(format!("{} vanished", what())))
            }
            Some(BlobSource::Filling(size, mut stream)) => {
                let mut out = Vec::with_capacity(size as usize);
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk.map_err(failed)?);
                    if out.len() as u64 > max {
                        return Err(too_large(what(), out.len() as u64, max));
                    }
                }
                Ok(out)
            }
        }
    }
}

/// wharf-client's verdict, in the layer's terms, and whether it may be cached: a verdict
/// reached because the store failed to answer is not one on the signatures.
pub(super) async fn verdict(
    source: &ServiceSource<'_>,
    repo: &RepoName,
    digest: &Digest,
    roots: &TrustRoots,
) -> (Finding, bool) {
    match trust::verify(source, repo.as_str(), digest, roots).await {
        Verdict::Verified { by, form } => {
            let form = form.to_string();
            (Finding::Verified { by, form }, true)
        }
        Verdict::Refused(r) => {
            let store_failed =
                matches!(&r, Refusal::Invalid(why) if why.starts_with("reading signatures"));
            (Finding::Unverified(r.to_string()), !store_failed)
        }
    }
}
