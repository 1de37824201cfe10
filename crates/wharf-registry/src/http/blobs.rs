//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`, with single `Range` requests.

use std::ops::RangeInclusive;

use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE};
use http::{HeaderValue, Response, StatusCode};
use serde_json::json;
use wharf_oci::{Digest, ErrorCode, RepoName};

use super::error::{ApiError, ApiResult};
use super::response::{empty, streaming, Resp, RespExt, DOCKER_CONTENT_DIGEST};
use super::{AppState, Req};
use crate::registry::events::Origin;
use crate::registry::{BlobSource, ByteStream};

/// A `Range: bytes=...` header as an inclusive range within `size`. Err for unsatisfiable.
fn parse_range(header: &str, size: u64) -> Result<Option<RangeInclusive<u64>>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multipart ranges: serve the whole blob, as RFC 9110 allows
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let start: u64 = a.parse().map_err(|_| ())?;
            let end = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                b.parse::<u64>()
                    .map_err(|_| ())?
                    .min(size.saturating_sub(1))
            };
            start..=end
        }
        (true, false) => {
            let suffix: u64 = b.parse().map_err(|_| ())?;
            if suffix == 0 {
                return Err(());
            }
            size.saturating_sub(suffix)..=size.saturating_sub(1)
        }
        (true, true) => return Err(()),
    };
    if size == 0 || range.start() > range.end() || *range.start() >= size {
        return Err(());
    }
    Ok(Some(range))
}

pub async fn get(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    req: &Req,
    head: bool,
    origin: &Origin,
) -> ApiResult {
    let unknown = || ApiError::new(ErrorCode::BlobUnknown).detail(json!({ "digest": digest }));
    let registry = &state.registry;
    let size = match registry.blob(origin, repo, digest, !head).await? {
        None => return Err(unknown()),
        Some(BlobSource::Filling(size, body)) => return Ok(filling(digest, size, body, head)),
        Some(BlobSource::Stored(size)) => size,
    };
    if !head {
        if let Some(url) = registry.blob_redirect(digest).await? {
            return Ok(empty(StatusCode::TEMPORARY_REDIRECT)
                .with(http::header::LOCATION, &url)
                .with(DOCKER_CONTENT_DIGEST, &digest.to_string()));
        }
    }
    let range = match req.header(RANGE).map(|h| parse_range(h, size)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(r))) => Some(r),
        Some(Err(())) => {
            return Ok(ApiError::new(ErrorCode::RangeInvalid)
                .into_response()
                .with(CONTENT_RANGE, &format!("bytes */{size}")));
        }
    };
    let partial = range.is_some();
    let mut resp = if head {
        let len = range.as_ref().map_or(size, |r| r.end() - r.start() + 1);
        empty(StatusCode::OK).with(CONTENT_LENGTH, &len.to_string())
    } else {
        let read = registry.read_blob(digest, range.clone()).await?;
        let len = if read.size == 0 {
            0
        } else {
            read.range.end() - read.range.start() + 1
        };
        let mut r = Response::new(streaming(read.body));
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
        r
    };
    if let Some(r) = range.filter(|_| partial) {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp = resp.with(
            CONTENT_RANGE,
            &format!("bytes {}-{}/{size}", r.start(), r.end()),
        );
    }
    Ok(resp
        .with(CONTENT_TYPE, wharf_oci::media_type::OCTET_STREAM)
        .with(DOCKER_CONTENT_DIGEST, &digest.to_string())
        .with(ETAG, &format!("\"{digest}\""))
        .with(ACCEPT_RANGES, "bytes"))
}

/// A blob still arriving from a proxy upstream: the whole of it (a range is answered
/// with everything, as RFC 9110 allows), streamed as it comes.
fn filling(digest: &Digest, size: u64, body: ByteStream, head: bool) -> Resp {
    let mut resp = match head {
        true => empty(StatusCode::OK),
        false => Response::new(streaming(body)),
    };
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(size));
    resp.with(CONTENT_TYPE, wharf_oci::media_type::OCTET_STREAM)
        .with(DOCKER_CONTENT_DIGEST, &digest.to_string())
        .with(ETAG, &format!("\"{digest}\""))
}

/// Unlinks the blob from this repository, as Distribution does; the bytes go at GC.
pub async fn delete(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    origin: &Origin,
) -> ApiResult {
    if !state.registry.delete_blob(origin, repo, digest).await? {
        return Err(ApiError::new(ErrorCode::BlobUnknown).detail(json!({ "digest": digest })));
    }
    Ok(empty(StatusCode::ACCEPTED).with(DOCKER_CONTENT_DIGEST, &digest.to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some(0..=9)));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some(90..=99)));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some(90..=99)));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some(50..=99)));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Err(()));
        assert_eq!(parse_range("bytes=x-1", 100), Err(()));
        assert_eq!(parse_range("items=1-2", 100), Ok(None));
    }
}
