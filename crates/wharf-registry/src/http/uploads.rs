//! Blob uploads: `POST` (start, monolithic with `?digest=`, or mount with `?mount=&from=`),
//! `PATCH` (chunks, checked against `Content-Range`), `PUT ?digest=` (finish), `GET`
//! (status) and `DELETE` (cancel) on `/v2/<name>/blobs/uploads/[<uuid>]`.

use http::header::CONTENT_LENGTH;
use http::StatusCode;
use uuid::Uuid;
use wharf_oci::{Digest, ErrorCode, RepoName};

use super::error::{digest_invalid, ApiError, ApiResult};
use super::response::{empty, Resp, RespExt, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID};
use super::{AppState, Req};
use crate::registry::events::Origin;

/// The upload's URL, carrying registry:2's signed `_state` (name, id, offset), which
/// Distribution requires and checks; wharf itself reads the state from the store.
fn upload_location(state: &AppState, repo: &RepoName, id: Uuid, size: u64) -> String {
    use hmac::Mac;
    let message = serde_json::json!({
        "Name": repo.as_str(),
        "UUID": id.to_string(),
        "Offset": size,
        "StartedAt": "0001-01-01T00:00:00Z",
    })
    .to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&state.upload_secret)
        .expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    let mut token = mac.finalize().into_bytes().to_vec();
    token.extend_from_slice(message.as_bytes());
    use base64::Engine;
    let token = base64::engine::general_purpose::URL_SAFE.encode(token);
    format!("/v2/{repo}/blobs/uploads/{id}?_state={token}")
}

/// The upload's `Range`: registry:2 answers `0-<last byte>`, and `0-0` while empty.
fn progress(state: &AppState, repo: &RepoName, id: Uuid, size: u64, status: StatusCode) -> Resp {
    empty(status)
        .location(&upload_location(state, repo, id, size))
        .with(
            http::header::RANGE,
            &format!("0-{}", size.saturating_sub(1)),
        )
        .with(DOCKER_UPLOAD_UUID, &id.to_string())
}

fn created(repo: &RepoName, digest: &Digest) -> Resp {
    empty(StatusCode::CREATED)
        .location(&format!("/v2/{repo}/blobs/{digest}"))
        .with(DOCKER_CONTENT_DIGEST, &digest.to_string())
}

fn digest_param(req: &Req, key: &str) -> ApiResult<Option<Digest>> {
    req.query(key)
        .map(|d| d.parse().map_err(digest_invalid))
        .transpose()
}

/// The start offset a chunk claims with `Content-Range: <start>-<end>` (with or without
/// `bytes=`/`bytes `), checked against its `Content-Length` when both are given.
fn chunk_start(req: &Req) -> ApiResult<Option<u64>> {
    let Some(header) = req.header(http::header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let spec = header
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches(['=', ' ']);
    let spec = spec.split('/').next().unwrap_or("");
    let bad = || {
        ApiError::new(ErrorCode::RangeInvalid)
            .message(format!("Content-Range {header:?} is not <start>-<end>"))
    };
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if end < start {
        return Err(bad());
    }
    if let Some(len) = req
        .header(CONTENT_LENGTH)
        .and_then(|l| l.parse::<u64>().ok())
    {
        if len != end - start + 1 {
            return Err(ApiError::new(ErrorCode::RangeInvalid).message(format!(
                "Content-Range {header:?} does not match Content-Length {len}"
            )));
        }
    }
    Ok(Some(start))
}

pub async fn start(state: &AppState, repo: &RepoName, req: Req, origin: &Origin) -> ApiResult {
    let registry = &state.registry;
    if let Some(digest) = digest_param(&req, "mount")? {
        // Mounting reads the source: only from a repository the caller may pull.
        let from = req
            .query("from")
            .and_then(|f| f.parse::<RepoName>().ok())
            .filter(|f| {
                state
                    .auth
                    .allowed(&req.identity, f.as_str())
                    .contains(crate::auth::policy::Actions::PULL)
            });
        if let Some(from) = from {
            if registry
                .mount(origin, repo, &digest, &from)
                .await?
                .is_some()
            {
                return Ok(created(repo, &digest));
            }
        }
        // Not mountable: the spec says to fall back to a regular upload session.
        let id = registry.start_upload(origin, repo).await?;
        return Ok(progress(state, repo, id, 0, StatusCode::ACCEPTED));
    }
    match digest_param(&req, "digest")? {
        None => {
            let id = registry.start_upload(origin, repo).await?;
            Ok(progress(state, repo, id, 0, StatusCode::ACCEPTED))
        }
        // One request, one blob: no upload session to create and tear down.
        Some(digest) => {
            let length = req.header(CONTENT_LENGTH).and_then(|l| l.parse().ok());
            let body = req.into_stream();
            registry
                .put_blob(origin, repo, &digest, length, body)
                .await?;
            Ok(created(repo, &digest))
        }
    }
}

pub async fn status(state: &AppState, repo: &RepoName, id: Uuid, origin: &Origin) -> ApiResult {
    let size = state.registry.upload_size(origin, repo, id).await?;
    Ok(progress(state, repo, id, size, StatusCode::NO_CONTENT))
}

/// Append the request's body at the offset its `Content-Range` claims, if any.
async fn append_chunk(
    state: &AppState,
    repo: &RepoName,
    id: Uuid,
    req: Req,
    origin: &Origin,
) -> ApiResult<u64> {
    let at = chunk_start(&req)?;
    let body = req.into_stream();
    Ok(state.registry.append(origin, repo, id, at, body).await?)
}

pub async fn patch(
    state: &AppState,
    repo: &RepoName,
    id: Uuid,
    req: Req,
    origin: &Origin,
) -> ApiResult {
    let size = append_chunk(state, repo, id, req, origin).await?;
    Ok(progress(state, repo, id, size, StatusCode::ACCEPTED))
}

pub async fn put(
    state: &AppState,
    repo: &RepoName,
    id: Uuid,
    req: Req,
    origin: &Origin,
) -> ApiResult {
    let digest = digest_param(&req, "digest")?.ok_or_else(|| {
        ApiError::new(ErrorCode::DigestInvalid).message("PUT to finish an upload needs ?digest=")
    })?;
    let has_body = req.header(CONTENT_LENGTH).is_none_or(|l| l != "0");
    if has_body {
        append_chunk(state, repo, id, req, origin).await?;
    }
    state
        .registry
        .finish_upload(origin, repo, id, &digest)
        .await?;
    Ok(created(repo, &digest))
}

pub async fn cancel(state: &AppState, repo: &RepoName, id: Uuid, origin: &Origin) -> ApiResult {
    state.registry.cancel_upload(origin, repo, id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
