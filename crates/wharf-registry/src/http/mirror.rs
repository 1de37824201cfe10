//! The transparent mirror at the edge: a request for `team/app` with `?ns=ghcr.io` is
//! served as the cache's `ghcr.io/team/app` (see `registry::proxy::hosts`). Renamed before
//! authorization, so that access rules and token scopes name what is actually served.

use wharf_oci::{ErrorCode, RepoName};

use super::error::ApiError;
use super::{AppState, Req, Route};

/// `route` with its repository renamed for the upstream the request's `?ns=` picks.
pub(super) fn rename(state: &AppState, route: Route, req: &Req) -> Result<Route, ApiError> {
    let Some(hosts) = state.registry.mirror_hosts() else {
        return Ok(route);
    };
    let Some(repo) = mirrored(&route) else {
        return Ok(route);
    };
    let renamed = match hosts.local_name(repo, req.query("ns")) {
        Ok(Some(name)) => name,
        Ok(None) => return Ok(route),
        Err(unknown) => {
            return Err(ApiError::new(ErrorCode::NameUnknown)
                .message(unknown.to_string())
                .detail(serde_json::json!({ "name": repo.as_str(), "ns": unknown.0 })))
        }
    };
    Ok(match route {
        Route::Tags(_) => Route::Tags(renamed),
        Route::Manifest(_, r) => Route::Manifest(renamed, r),
        Route::BadReference(_, why) => Route::BadReference(renamed, why),
        Route::Blob(_, d) => Route::Blob(renamed, d),
        Route::Uploads(_) => Route::Uploads(renamed),
        Route::Upload(_, id) => Route::Upload(renamed, id),
        Route::Referrers(_, d) => Route::Referrers(renamed, d),
        other => other,
    })
}

/// The repository of a route that a mirror serves: the Distribution API's, not wharf's
/// own `/wharf/v1/repositories/` (which names the cache's repositories as they are).
fn mirrored(route: &Route) -> Option<&RepoName> {
    match route {
        Route::Repository(_) => None,
        other => other.repo(),
    }
}
