//! Deleting a whole repository, which registry:2 never offered (Distribution #2747): its
//! tags, manifests and blob links go, then its name from the catalog; the blobs stay for
//! garbage collection, which frees whatever no other repository links.

use wharf_oci::{RepoName, Tag};

use super::events::Origin;
use super::service::RepositoryDeleted;
use super::{Core, Error, Result};

impl Core {
    /// Under the writer lock, so that a push racing the delete either lands before it
    /// (and is deleted) or after it (and starts the repository again).
    pub(super) async fn remove_repository(
        &self,
        o: &Origin,
        repo: &RepoName,
    ) -> Result<Option<RepositoryDeleted>> {
        let meta = &self.store.meta;
        let _writing = self.store.locks.writer().await?;
        if !meta.repo_exists(repo).await? {
            return Ok(None);
        }
        let tags: Vec<String> = meta
            .tag_targets(repo)
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        // Every immutable tag is checked before anything is deleted: all or nothing.
        for name in &tags {
            if let Ok(tag) = name.parse::<Tag>() {
                self.check_tag_mutable(repo, &tag, None)
                    .await
                    .map_err(|e| not_deleted(repo, e))?;
            }
        }
        let mut manifests = Vec::new();
        for (digest, _) in meta.list_manifests(repo).await? {
            if meta.delete_manifest(repo, &digest).await? {
                manifests.push(digest);
            }
        }
        for digest in meta.list_blob_links(repo).await? {
            meta.unlink_blob(repo, &digest).await?;
        }
        // The delete's events ride in its last step: an acknowledged delete has them.
        let reports = self.reports(|_| manifests.iter().map(|m| o.deleted(repo, m)).collect());
        meta.forget_repository_reporting(repo, &reports).await?;
        Ok(Some(RepositoryDeleted {
            repository: repo.to_string(),
            manifests,
            tags,
        }))
    }
}

fn not_deleted(repo: &RepoName, e: Error) -> Error {
    match e {
        Error::Refused {
            code,
            message,
            detail,
        } => Error::Refused {
            code,
            message: format!(
                "repository {repo} was not deleted: {message}; remove the immutable rule or delete the other tags first"
            ),
            detail,
        },
        other => other,
    }
}
