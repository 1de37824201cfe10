//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::StatusCode;
use serde_json::json;
use wharf_oci::{ErrorCode, Reference, RepoName};

use super::error::{ApiError, ApiResult};
use super::response::{bytes_response, empty, RespExt, DOCKER_CONTENT_DIGEST, OCI_SUBJECT};
use super::{AppState, Req};
use crate::registry::events::Origin;
use crate::registry::manifests::MANIFEST_LIMIT;
use crate::registry::Served;

/// What a `trust:` rule found for the manifest served (`verified; by="…"`,
/// `unverified; no signature; rule="prod"`).
const WHARF_TRUST: http::HeaderName = http::HeaderName::from_static("wharf-trust");

fn unknown(repo: &RepoName, reference: &Reference) -> ApiError {
    ApiError::new(ErrorCode::ManifestUnknown)
        .detail(json!({ "name": repo.as_str(), "reference": reference.to_string() }))
}

pub async fn get(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
    head: bool,
    origin: &Origin,
) -> ApiResult {
    let served = state.registry.manifest(origin, repo, reference).await?;
    let Served {
        content: m,
        warning,
        trust,
    } = served.ok_or_else(|| unknown(repo, reference))?;
    let digest_text = m.digest.to_string();
    let resp = if head {
        empty(StatusCode::OK)
            .with(CONTENT_LENGTH, &m.bytes.len().to_string())
            .with(CONTENT_TYPE, &m.media_type)
    } else {
        bytes_response(StatusCode::OK, &m.media_type, m.bytes)
    };
    let resp = resp
        .with(DOCKER_CONTENT_DIGEST, &digest_text)
        .with(ETAG, &format!("\"{digest_text}\""));
    let resp = match trust {
        Some(t) => resp.with(WHARF_TRUST, &t),
        None => resp,
    };
    Ok(match warning {
        Some(w) => resp.with(http::header::WARNING, &w),
        None => resp,
    })
}

pub async fn put(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
    req: Req,
    origin: &Origin,
) -> ApiResult {
    let content_type = req.header(CONTENT_TYPE).map(str::to_owned);
    let bytes = req.collect(MANIFEST_LIMIT).await?;
    let put = state
        .registry
        .put_manifest(origin, repo, reference, content_type.as_deref(), bytes)
        .await?;
    let mut resp = empty(StatusCode::CREATED)
        .location(&format!("/v2/{repo}/manifests/{}", put.digest))
        .with(DOCKER_CONTENT_DIGEST, &put.digest.to_string());
    if let Some(subject) = &put.subject {
        resp = resp.with(OCI_SUBJECT, &subject.to_string());
    }
    Ok(resp)
}

pub async fn delete(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
    origin: &Origin,
) -> ApiResult {
    if !state
        .registry
        .delete_manifest(origin, repo, reference)
        .await?
    {
        return Err(unknown(repo, reference));
    }
    Ok(empty(StatusCode::ACCEPTED))
}
