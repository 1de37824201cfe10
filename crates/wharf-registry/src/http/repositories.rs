//! `DELETE /wharf/v1/repositories/<name>`: delete a whole repository. The OCI spec has no
//! such route, so it lives outside `/v2/`, under wharf's own prefix, as Harbor's
//! (`/api/v2.0/projects/{p}/repositories/{r}`) and GitLab's (`/registry/repositories/:id`)
//! live under theirs. It authenticates as `/v2/` does and needs the `delete` action.

use http::StatusCode;
use serde_json::json;
use wharf_oci::{ErrorCode, RepoName};

use super::error::{ApiError, ApiResult};
use super::response::json_response;
use super::AppState;
use crate::registry::events::Origin;

/// Where the route lives.
pub const PREFIX: &str = "/wharf/v1/repositories/";

pub async fn delete(state: &AppState, repo: &RepoName, origin: &Origin) -> ApiResult {
    match state.registry.delete_repository(origin, repo).await? {
        Some(deleted) => Ok(json_response(StatusCode::ACCEPTED, &deleted)),
        None => Err(ApiError::new(ErrorCode::NameUnknown)
            .message(format!("repository {repo} is not known to this registry"))
            .detail(json!({ "name": repo.as_str() }))),
    }
}
