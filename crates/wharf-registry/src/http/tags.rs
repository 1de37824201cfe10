//! `GET /v2/<name>/tags/list`: tags in lexical order, paginated with `n` and `last`.

use http::StatusCode;
use serde_json::json;
use wharf_oci::{ErrorCode, RepoName};

use super::error::{ApiError, ApiResult};
use super::response::{json_response, RespExt};
use super::{AppState, Req};
use crate::registry::events::Origin;

/// `n` and `last` from the query. A bad `n` is the client's error, not a silent default.
pub fn pagination(req: &Req) -> ApiResult<(Option<usize>, Option<&str>)> {
    let n = match req.query("n") {
        None | Some("") => None,
        Some(s) => Some(s.parse::<usize>().map_err(|_| {
            ApiError::new(ErrorCode::Unsupported)
                .message(format!("n={s:?} is not a non-negative integer"))
                .status(StatusCode::BAD_REQUEST)
        })?),
    };
    Ok((n, req.query("last").filter(|l| !l.is_empty())))
}

pub fn next_link(path: &str, n: usize, last: &str) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    format!("<{path}?{query}>; rel=\"next\"")
}

pub async fn list(state: &AppState, repo: &RepoName, req: &Req, origin: &Origin) -> ApiResult {
    let (n, last) = pagination(req)?;
    let page = state.registry.tags(origin, repo, last, n).await?;
    let page = page.ok_or_else(|| {
        ApiError::new(ErrorCode::NameUnknown).detail(json!({ "name": repo.as_str() }))
    })?;
    let mut resp = json_response(
        StatusCode::OK,
        &json!({ "name": repo.as_str(), "tags": page.items }),
    );
    if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
        resp = resp.with(
            http::header::LINK,
            &next_link(&format!("/v2/{repo}/tags/list"), n, last),
        );
    }
    Ok(resp)
}
