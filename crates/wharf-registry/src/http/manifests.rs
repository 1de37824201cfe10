//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::StatusCode;
use serde_json::json;
use wharf_oci::{Digest, ErrorCode, Manifest, Reference, RepoName};

use super::error::{ApiError, ApiResult};
use super::response::{bytes_response, empty, RespExt, DOCKER_CONTENT_DIGEST, OCI_SUBJECT};
use super::{AppState, Req};
use crate::store::ManifestRecord;

/// Manifests over this size are refused, as Distribution and the spec's 4 MiB guidance do.
pub const MANIFEST_LIMIT: usize = 4 * 1024 * 1024;
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Manifest bytes and media types by digest. Content-addressed, so an entry is never stale;
/// whether a repository may serve it is still checked on every request.
#[derive(Default)]
pub struct ManifestCache {
    entries: DashMap<Digest, (Bytes, Arc<str>)>,
    bytes: AtomicUsize,
}

impl ManifestCache {
    fn get(&self, d: &Digest) -> Option<(Bytes, Arc<str>)> {
        self.entries.get(d).map(|e| e.clone())
    }

    fn insert(&self, d: Digest, bytes: Bytes, media_type: Arc<str>) {
        let size = bytes.len();
        if self.bytes.fetch_add(size, Ordering::Relaxed) + size > CACHE_BYTES {
            // Crude but bounded: start over rather than track recency on the hot path.
            self.entries.clear();
            self.bytes.store(size, Ordering::Relaxed);
        }
        self.entries.insert(d, (bytes, media_type));
    }
}

fn unknown(repo: &RepoName, reference: &Reference) -> ApiError {
    ApiError::new(ErrorCode::ManifestUnknown)
        .detail(json!({ "name": repo.as_str(), "reference": reference.to_string() }))
}

pub async fn get(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
    head: bool,
) -> ApiResult {
    let digest = match reference {
        Reference::Tag(t) => state.meta.resolve_tag(repo, t).await?,
        Reference::Digest(d) => state
            .meta
            .manifest_linked(repo, d)
            .await?
            .then(|| d.clone()),
    }
    .ok_or_else(|| unknown(repo, reference))?;
    let (bytes, media_type) = match state.manifests.get(&digest) {
        Some(hit) => hit,
        None => {
            let bytes = state
                .blobs
                .get(&digest, MANIFEST_LIMIT as u64)
                .await?
                .ok_or_else(|| unknown(repo, reference))?;
            let media_type: Arc<str> = Manifest::parse(&bytes, None)
                .map(|m| m.media_type)
                .unwrap_or_else(|_| wharf_oci::media_type::OCI_MANIFEST.to_owned())
                .into();
            state
                .manifests
                .insert(digest.clone(), bytes.clone(), media_type.clone());
            (bytes, media_type)
        }
    };
    let digest_text = digest.to_string();
    let resp = if head {
        empty(StatusCode::OK)
            .with(CONTENT_LENGTH, &bytes.len().to_string())
            .with(CONTENT_TYPE, &media_type)
    } else {
        bytes_response(StatusCode::OK, &media_type, bytes)
    };
    Ok(resp
        .with(DOCKER_CONTENT_DIGEST, &digest_text)
        .with(ETAG, &format!("\"{digest_text}\"")))
}

pub async fn put(state: &AppState, repo: &RepoName, reference: &Reference, req: Req) -> ApiResult {
    let content_type = req.header(CONTENT_TYPE).map(str::to_owned);
    let bytes = req.collect(MANIFEST_LIMIT).await?;
    let manifest = Manifest::parse(&bytes, content_type.as_deref())
        .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid).message(e.to_string()))?;
    let digest = match reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &bytes);
            if &actual != d {
                return Err(ApiError::new(ErrorCode::DigestInvalid).message(format!(
                    "manifest body has digest {actual}, not {d} as the URL says"
                )));
            }
            actual
        }
        Reference::Tag(_) => Digest::sha256_of(&bytes),
    };
    require_references(state, repo, &manifest).await?;
    state.blobs.put(&digest, bytes.clone()).await?;
    let record = ManifestRecord {
        digest: digest.clone(),
        blobs: manifest.required_blobs().cloned().collect(),
        children: manifest.required_manifests().cloned().collect(),
        referrer: manifest.subject.as_ref().map(|s| {
            (
                s.digest.clone(),
                manifest.referrer_descriptor(digest.clone(), bytes.len() as u64),
            )
        }),
    };
    let tag = match reference {
        Reference::Tag(t) => Some(t),
        Reference::Digest(_) => None,
    };
    state.meta.put_manifest(repo, &record, tag).await?;
    state
        .manifests
        .insert(digest.clone(), bytes, manifest.media_type.as_str().into());
    let mut resp = empty(StatusCode::CREATED)
        .location(&format!("/v2/{repo}/manifests/{digest}"))
        .with(DOCKER_CONTENT_DIGEST, &digest.to_string());
    if let Some(subject) = &manifest.subject {
        resp = resp.with(OCI_SUBJECT, &subject.digest.to_string());
    }
    Ok(resp)
}

/// Every blob and child manifest must already be in this repository (a subject need not be).
async fn require_references(
    state: &AppState,
    repo: &RepoName,
    manifest: &Manifest,
) -> ApiResult<()> {
    for blob in manifest.required_blobs() {
        if !state.meta.blob_linked(repo, blob).await? || state.blobs.stat(blob).await?.is_none() {
            return Err(ApiError::new(ErrorCode::ManifestBlobUnknown)
                .message(format!(
                    "blob {blob} is not in repository {repo}: push it first"
                ))
                .detail(json!({ "digest": blob })));
        }
    }
    for child in manifest.required_manifests() {
        if !state.meta.manifest_linked(repo, child).await? {
            return Err(ApiError::new(ErrorCode::ManifestBlobUnknown)
                .message(format!(
                    "manifest {child} is not in repository {repo}: push it first"
                ))
                .detail(json!({ "digest": child })));
        }
    }
    Ok(())
}

pub async fn delete(state: &AppState, repo: &RepoName, reference: &Reference) -> ApiResult {
    if !state.delete_enabled {
        return Err(ApiError::new(ErrorCode::Unsupported)
            .message("deletes are disabled: set storage.delete.enabled (REGISTRY_STORAGE_DELETE_ENABLED=true)"));
    }
    let deleted = match reference {
        Reference::Tag(t) => state.meta.delete_tag(repo, t).await?,
        Reference::Digest(d) => state.meta.delete_manifest(repo, d).await?,
    };
    if !deleted {
        return Err(unknown(repo, reference));
    }
    Ok(empty(StatusCode::ACCEPTED))
}
