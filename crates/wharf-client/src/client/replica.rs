//! What replication and sync ask of a registry beyond a copy: a tag's digest without an
//! error for "none", a tag delete, and the rate limit an
//! upstream announces (Docker Hub's `RateLimit-Remaining`), read from a HEAD that does
//! not count against it.

use std::time::Duration;

use reqwest::header::{HeaderName, ACCEPT};
use reqwest::{Method, StatusCode};
use wharf_oci::{Digest, Reference, RepoName};

use super::{ClientError, RegistryClient, MANIFEST_ACCEPT};

/// A manifest HEAD: what the reference names, and what the registry says of its limit.
#[derive(Debug, Clone, Default)]
pub struct Headed {
    /// None: the registry has no such manifest (404).
    pub digest: Option<Digest>,
    /// `RateLimit-Remaining`'s count (`76;w=21600` is 76), when sent.
    pub remaining: Option<u64>,
    /// `Retry-After` or the window of `RateLimit-Remaining` (`w=` seconds), when sent.
    pub retry_after: Option<Duration>,
}

impl RegistryClient {
    /// HEAD a manifest: its digest or None, and the rate-limit headers.
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Headed, ClientError> {
        let what = format!("manifest {repo}:{reference}");
        let headers: [(HeaderName, &str); 1] = [(ACCEPT, MANIFEST_ACCEPT)];
        let scopes = [format!("repository:{repo}:pull")];
        let path = format!("/v2/{repo}/manifests/{reference}");
        let response = self
            .send(Method::HEAD, &path, &scopes, &headers, &what)
            .await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let limit = header("ratelimit-remaining");
        let mut headed = Headed {
            remaining: limit
                .as_deref()
                .and_then(|v| v.split(';').next()?.trim().parse().ok()),
            retry_after: header("retry-after")
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs)
                .or_else(|| {
                    let window = limit.as_deref()?.split(';').nth(1)?;
                    let secs = window.trim().strip_prefix("w=")?.parse().ok()?;
                    Some(Duration::from_secs(secs))
                }),
            digest: None,
        };
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(headed);
        }
        let response = self.expect_success(response, &what).await?;
        headed.digest = match response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
        {
            Some(d) => Some(d),
            None => Some(self.get_manifest(repo, reference).await?.digest),
        };
        Ok(headed)
    }

    /// Delete a tag alone (OCI distribution 1.1); registries that cannot answer 400 or 405.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &str) -> Result<(), ClientError> {
        let what = format!("deleting tag {repo}:{tag}");
        let scopes = [format!("repository:{repo}:delete")];
        let path = format!("/v2/{repo}/manifests/{tag}");
        let response = self
            .send(Method::DELETE, &path, &scopes, &[], &what)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(()); // gone already: what the delete wanted
        }
        self.expect_success(response, &what).await.map(drop)
    }
}
