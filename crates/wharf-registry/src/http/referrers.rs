//! `GET /v2/<name>/referrers/<digest>`: manifests whose `subject` is the digest, as an OCI
//! index, optionally filtered by `artifactType`.

use http::StatusCode;
use serde_json::json;
use wharf_oci::media_type::OCI_INDEX;
use wharf_oci::{Digest, RepoName};

use super::error::ApiResult;
use super::response::{bytes_response, RespExt, OCI_FILTERS_APPLIED};
use super::{AppState, Req};
use crate::registry::events::Origin;

pub async fn get(
    state: &AppState,
    repo: &RepoName,
    subject: &Digest,
    req: &Req,
    origin: &Origin,
) -> ApiResult {
    let mut manifests = state.registry.referrers(origin, repo, subject).await?;
    let filter = req.query("artifactType").filter(|t| !t.is_empty());
    if let Some(t) = filter {
        manifests.retain(|d| d.artifact_type.as_deref() == Some(t));
    }
    manifests.sort_by(|a, b| a.digest.cmp(&b.digest));
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let resp = bytes_response(
        StatusCode::OK,
        OCI_INDEX,
        serde_json::to_vec(&index).expect("serialisable").into(),
    );
    Ok(match filter {
        Some(_) => resp.with(OCI_FILTERS_APPLIED, "artifactType"),
        None => resp,
    })
}
