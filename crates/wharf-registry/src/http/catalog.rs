//! `GET /v2/_catalog`: repository names, paginated with `n` and `last`.

use http::StatusCode;
use serde_json::json;

use super::error::ApiResult;
use super::response::{json_response, RespExt};
use super::tags::{next_link, pagination};
use super::{AppState, Req};
use crate::registry::events::Origin;

pub async fn get(state: &AppState, req: &Req, origin: &Origin) -> ApiResult {
    let (n, last) = pagination(req)?;
    // Show only what the caller may pull.
    let who = &req.identity;
    let may_pull = |r: &str| {
        state
            .auth
            .listable(who, r)
            .contains(crate::auth::policy::Actions::PULL)
    };
    let filter: Option<&(dyn Fn(&str) -> bool + Sync)> = if state.auth.enabled() {
        Some(&may_pull)
    } else {
        None
    };
    let page = state.registry.catalog(origin, last, n, filter).await?;
    let mut resp = json_response(StatusCode::OK, &json!({ "repositories": page.items }));
    if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
        resp = resp.with(http::header::LINK, &next_link("/v2/_catalog", n, last));
    }
    Ok(resp)
}
