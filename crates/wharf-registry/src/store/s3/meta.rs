//! Repository metadata as registry:2 keeps it in a bucket: link objects under
//! `repositories/<name>/`. Listings walk the bucket, as Distribution's do; the PostgreSQL
//! metadata store is what answers them from indexes.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use wharf_oci::{Descriptor, Digest, Manifest, RepoName, Tag};

use super::bucket::{Bucket, Object};
use crate::store::{paginate, BlobStore, ManifestRecord, MetaStore, Page, StoreError, StoreResult};

const CONCURRENCY: usize = 8;

pub struct S3MetaStore {
    bucket: Arc<Bucket>,
    blobs: Arc<dyn BlobStore>,
}

impl S3MetaStore {
    pub fn new(bucket: Arc<Bucket>, blobs: Arc<dyn BlobStore>) -> S3MetaStore {
        S3MetaStore { bucket, blobs }
    }

    /// A directory of the layout as a listing prefix.
    fn prefix(&self, dir: String) -> String {
        dir + "/"
    }

    async fn link(&self, key: &str) -> StoreResult<Option<Digest>> {
        let Some(bytes) = self.bucket.get(key).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        text.trim()
            .parse()
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: key.to_owned(),
                why: format!("{e}"),
            })
    }

    async fn put_link(&self, key: &str, d: &Digest) -> StoreResult<()> {
        self.bucket.put(key, Bytes::from(d.to_string())).await
    }

    /// `<prefix><alg>/<hex>/link` objects as digests, with when each was written.
    async fn digest_links(&self, prefix: &str) -> StoreResult<Vec<(Digest, SystemTime)>> {
        Ok(self
            .bucket
            .list(prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(prefix)?.strip_suffix("/link")?;
                let (alg, hex) = rest.split_once('/')?;
                Some((format!("{alg}:{hex}").parse().ok()?, o.modified))
            })
            .collect())
    }

    /// Every tag's `current/link` object, by tag name.
    async fn current_links(&self, repo: &RepoName) -> StoreResult<Vec<(String, Object)>> {
        let prefix = self.prefix(self.bucket.layout.tags(repo));
        Ok(self
            .bucket
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let name = o
                    .key
                    .strip_prefix(&prefix)?
                    .strip_suffix("/current/link")?
                    .to_owned();
                (!name.contains('/')).then_some((name, o))
            })
            .collect())
    }

    async fn remove_tag(&self, repo: &RepoName, tag: &str) -> StoreResult<bool> {
        let Ok(tag) = tag.parse::<Tag>() else {
            return Ok(false);
        };
        let dir = self.prefix(self.bucket.layout.tag_dir(repo, &tag));
        Ok(self.bucket.delete_prefix(&dir).await? > 0)
    }
}

#[async_trait]
impl MetaStore for S3MetaStore {
    async fn repo_exists(&self, repo: &RepoName) -> StoreResult<bool> {
        self.bucket
            .any_under(&self.prefix(self.bucket.layout.repo(repo)))
            .await
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<()> {
        let key = self.bucket.layout.layer_link(repo, digest);
        self.put_link(&key, digest).await
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        let key = self.bucket.layout.layer_link(repo, digest);
        Ok(self.bucket.head(&key).await?.is_some())
    }

    async fn missing_links(
        &self,
        repo: &RepoName,
        blobs: &[Digest],
        manifests: &[Digest],
    ) -> StoreResult<Vec<Digest>> {
        let layout = &self.bucket.layout;
        let keys: Vec<(Digest, String)> = blobs
            .iter()
            .map(|d| (d.clone(), layout.layer_link(repo, d)))
            .chain(
                manifests
                    .iter()
                    .map(|d| (d.clone(), layout.revision_link(repo, d))),
            )
            .collect();
        let missing: Vec<Option<Digest>> = stream::iter(keys)
            .map(|(d, key)| async move {
                Ok::<_, StoreError>(self.bucket.head(&key).await?.is_none().then_some(d))
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        Ok(missing.into_iter().flatten().collect())
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        let key = self.bucket.layout.layer_link(repo, digest);
        if self.bucket.head(&key).await?.is_none() {
            return Ok(false);
        }
        self.bucket.delete(&key).await?;
        Ok(true)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
        // Each link object's LastModified is its put time, from the bucket's clock, which
        // `BlobStore::now` reads too.
        _now: SystemTime,
    ) -> StoreResult<()> {
        let layout = &self.bucket.layout;
        // An index retains its children's revisions (rewritten, so newly dated), so a
        // collection racing this put does not take a child only this index keeps.
        for child in &manifest.children {
            self.put_link(&layout.revision_link(repo, child), child)
                .await?;
        }
        let d = &manifest.digest;
        // Rewritten even when present: when it was written is when the manifest was last
        // put, which garbage collection's untagged sweep checks.
        self.put_link(&layout.revision_link(repo, d), d).await?;
        if let Some(t) = tag {
            self.put_link(&layout.tag_index(repo, t, d), d).await?;
            // `current` last: the tag moves only once everything it needs is there.
            self.put_link(&layout.tag_current(repo, t), d).await?;
        }
        Ok(())
    }

    async fn manifest_linked(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        let key = self.bucket.layout.revision_link(repo, digest);
        Ok(self.bucket.head(&key).await?.is_some())
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<Digest>> {
        self.link(&self.bucket.layout.tag_current(repo, tag)).await
    }

    async fn tag_pushed(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<SystemTime>> {
        let key = self.bucket.layout.tag_current(repo, tag);
        Ok(self.bucket.head(&key).await?.map(|(_, t)| t))
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> StoreResult<bool> {
        let key = self.bucket.layout.revision_link(repo, digest);
        if self.bucket.head(&key).await?.is_none() {
            return Ok(false);
        }
        // As Distribution: the tags pointing at it go too, first, so that a failure in
        // between leaves an untagged manifest, never a tag without its manifest.
        for (name, target) in self.tag_targets(repo).await? {
            if target.as_ref() == Ok(digest) {
                self.remove_tag(repo, &name).await?;
            }
        }
        self.bucket.delete(&key).await?;
        Ok(true)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<bool> {
        self.remove_tag(repo, tag.as_str()).await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> StoreResult<Option<Page>> {
        let mut names: Vec<String> = self
            .current_links(repo)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if names.is_empty() && !self.repo_exists(repo).await? {
            return Ok(None);
        }
        names.sort_unstable();
        Ok(Some(paginate(names.into_iter(), last, n)))
    }

    async fn list_repos(&self, last: Option<&str>, n: Option<usize>) -> StoreResult<Page> {
        // Distribution's walk: a repository is a path holding `_layers` or `_manifests`.
        let root = self.prefix(self.bucket.layout.repositories());
        let mut names: Vec<String> = self
            .bucket
            .list(&root)
            .await?
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(&root)?;
                let at = rest
                    .find("/_layers/")
                    .or_else(|| rest.find("/_manifests/"))?;
                Some(rest[..at].to_owned())
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        Ok(paginate(names.into_iter(), last, n))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> StoreResult<Vec<Descriptor>> {
        // No index in the bucket: every manifest of the repository is read.
        let mut out = Vec::new();
        for (digest, _) in self.list_manifests(repo).await? {
            let Some(bytes) = self
                .blobs
                .get(&digest, crate::store::MANIFEST_LIMIT)
                .await?
            else {
                continue;
            };
            let Ok(manifest) = Manifest::parse(&bytes, None) else {
                continue;
            };
            if manifest
                .subject
                .as_ref()
                .is_some_and(|s| &s.digest == subject)
            {
                out.push(manifest.referrer_descriptor(digest, bytes.len() as u64));
            }
        }
        Ok(out)
    }

    async fn list_manifests(&self, repo: &RepoName) -> StoreResult<Vec<(Digest, SystemTime)>> {
        self.digest_links(&self.prefix(self.bucket.layout.revisions(repo)))
            .await
    }

    async fn tag_targets(
        &self,
        repo: &RepoName,
    ) -> StoreResult<Vec<(String, Result<Digest, String>)>> {
        let links = self.current_links(repo).await?;
        stream::iter(links)
            .map(|(name, o)| async move {
                let target = match self.link(&o.key).await {
                    Ok(Some(d)) => Ok(d),
                    Ok(None) => Err("its current/link is missing".to_owned()),
                    Err(StoreError::Corrupt { why, .. }) => Err(why),
                    Err(e) => return Err(e),
                };
                Ok((name, target))
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    }

    async fn tag_pushes(&self, repo: &RepoName) -> StoreResult<Vec<(String, Digest, SystemTime)>> {
        let links = self.current_links(repo).await?;
        let found: Vec<Option<(String, Digest, SystemTime)>> = stream::iter(links)
            .map(|(name, o)| async move {
                Ok::<_, StoreError>(match self.link(&o.key).await {
                    Ok(Some(d)) => Some((name, d, o.modified)),
                    Ok(None) | Err(StoreError::Corrupt { .. }) => None,
                    Err(e) => return Err(e),
                })
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn list_blob_links(&self, repo: &RepoName) -> StoreResult<Vec<Digest>> {
        let prefix = self.prefix(self.bucket.layout.layers(repo));
        Ok(self
            .digest_links(&prefix)
            .await?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    async fn manifest_record(&self, digest: &Digest) -> StoreResult<Option<ManifestRecord>> {
        crate::store::read_manifest_record(&*self.blobs, digest).await
    }

    async fn delete_manifest_unless_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        since: SystemTime,
    ) -> StoreResult<bool> {
        let layout = &self.bucket.layout;
        let key = layout.revision_link(repo, digest);
        match self.bucket.head(&key).await? {
            Some((_, t)) if t < since => {}
            _ => return Ok(false),
        }
        let tags = self.tag_targets(repo).await?;
        // A tag that came to point at it since the mark keeps it too.
        if tags.iter().any(|(_, t)| t.as_ref() == Ok(digest)) {
            return Ok(false);
        }
        self.bucket.delete(&key).await?;
        // Distribution's untagged sweep also drops the tags' history entries for it.
        let history: Vec<String> = tags
            .iter()
            .filter_map(|(name, _)| name.parse::<Tag>().ok())
            .map(|t| layout.tag_index(repo, &t, digest))
            .collect();
        self.bucket.delete_many(history).await?;
        Ok(true)
    }

    async fn delete_tag_link(&self, repo: &RepoName, tag: &str) -> StoreResult<bool> {
        self.remove_tag(repo, tag).await
    }

    async fn forget_repository(&self, repo: &RepoName) -> StoreResult<()> {
        let base = self.prefix(self.bucket.layout.repo(repo));
        for own in ["_manifests/", "_layers/"] {
            self.bucket.delete_prefix(&format!("{base}{own}")).await?;
        }
        Ok(())
    }
}
