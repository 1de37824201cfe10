//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::StatusCode;
use serde_json::json;
use wharf_oci::{ErrorCode, Reference, RepoName};

use super::error::{ApiError, ApiResult};
use super::response::{bytes_response, empty, RespExt, DOCKER_CONTENT_DIGEST, OCI_SUBJECT};
use super::{AppState, Req};
use crate::registry::events::envelope::{PULL, PUSH};
use crate::registry::events::Origin;
use crate::registry::manifests::MANIFEST_LIMIT;

fn tag_of(reference: &Reference) -> Option<&str> {
    match reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
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
    origin: &Origin,
) -> ApiResult {
    let route = state.registry.proxy.as_ref().and_then(|p| p.route(repo));
    let (m, warning) = match route {
        Some(route) => {
            let served = state
                .registry
                .proxied_manifest(repo, reference, &route)
                .await?
                .ok_or_else(|| unknown(repo, reference))?;
            (served.content, served.warning)
        }
        None => {
            let m = state.registry.manifest(repo, reference).await?;
            (m.ok_or_else(|| unknown(repo, reference))?, None)
        }
    };
    // Distribution reports a HEAD as a pull too: both read the manifest.
    if state.registry.wants_event(PULL) {
        let size = m.bytes.len() as u64;
        let e = origin.manifest(
            PULL,
            repo,
            &m.media_type,
            &m.digest,
            size,
            tag_of(reference),
        );
        state.registry.emit(vec![e]).await;
    }
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
        .put_manifest(repo, reference, content_type.as_deref(), bytes)
        .await?;
    let e = origin.manifest(
        PUSH,
        repo,
        &put.media_type,
        &put.digest,
        put.size,
        tag_of(reference),
    );
    state.registry.emit(vec![e]).await;
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
    if !state.delete_enabled {
        return Err(ApiError::new(ErrorCode::Unsupported)
            .message("deletes are disabled: set storage.delete.enabled (REGISTRY_STORAGE_DELETE_ENABLED=true)"));
    }
    if !state.registry.delete_manifest(repo, reference).await? {
        return Err(unknown(repo, reference));
    }
    let e = match reference {
        Reference::Tag(t) => origin.tag_deleted(repo, t.as_str()),
        Reference::Digest(d) => origin.deleted(repo, d),
    };
    state.registry.emit(vec![e]).await;
    Ok(empty(StatusCode::ACCEPTED))
}
