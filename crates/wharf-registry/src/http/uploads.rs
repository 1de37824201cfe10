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

fn upload_location(repo: &RepoName, id: Uuid) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// The upload's `Range`: registry:2 answers `0-<last byte>`, and `0-0` while empty.
fn progress(repo: &RepoName, id: Uuid, size: u64, status: StatusCode) -> Resp {
    empty(status)
        .location(&upload_location(repo, id))
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

async fn finish(state: &AppState, repo: &RepoName, id: Uuid, digest: &Digest) -> ApiResult {
    state.blobs.commit(repo, id, digest).await?;
    state.meta.link_blob(repo, digest).await?;
    Ok(created(repo, digest))
}

pub async fn start(state: &AppState, repo: &RepoName, req: Req) -> ApiResult {
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
        if let Some(resp) = try_mount(state, repo, &digest, from).await? {
            return Ok(resp);
        }
        // Not mountable: the spec says to fall back to a regular upload session.
        let id = state.blobs.start_upload(repo).await?;
        return Ok(progress(repo, id, 0, StatusCode::ACCEPTED));
    }
    match digest_param(&req, "digest")? {
        None => {
            let id = state.blobs.start_upload(repo).await?;
            Ok(progress(repo, id, 0, StatusCode::ACCEPTED))
        }
        // One request, one blob: no upload session to create and tear down.
        Some(digest) => {
            state.blobs.put_stream(&digest, req.into_stream()).await?;
            state.meta.link_blob(repo, &digest).await?;
            Ok(created(repo, &digest))
        }
    }
}

async fn try_mount(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    from: Option<RepoName>,
) -> ApiResult<Option<Resp>> {
    let Some(from) = from else {
        return Ok(None);
    };
    if !state.meta.blob_linked(&from, digest).await? || state.blobs.stat(digest).await?.is_none() {
        return Ok(None);
    }
    state.meta.link_blob(repo, digest).await?;
    Ok(Some(created(repo, digest)))
}

pub async fn status(state: &AppState, repo: &RepoName, id: Uuid) -> ApiResult {
    let size = state.blobs.upload_size(repo, id).await?;
    Ok(progress(repo, id, size, StatusCode::NO_CONTENT))
}

pub async fn patch(state: &AppState, repo: &RepoName, id: Uuid, req: Req) -> ApiResult {
    let at = chunk_start(&req)?;
    let size = state.blobs.append(repo, id, at, req.into_stream()).await?;
    Ok(progress(repo, id, size, StatusCode::ACCEPTED))
}

pub async fn put(state: &AppState, repo: &RepoName, id: Uuid, req: Req) -> ApiResult {
    let digest = digest_param(&req, "digest")?.ok_or_else(|| {
        ApiError::new(ErrorCode::DigestInvalid).message("PUT to finish an upload needs ?digest=")
    })?;
    let has_body = req.header(CONTENT_LENGTH).is_none_or(|l| l != "0");
    if has_body {
        let at = chunk_start(&req)?;
        state.blobs.append(repo, id, at, req.into_stream()).await?;
    }
    finish(state, repo, id, &digest).await
}

pub async fn cancel(state: &AppState, repo: &RepoName, id: Uuid) -> ApiResult {
    state.blobs.cancel(repo, id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
