//! Manifests: reading through the cache, and the rules of a put.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use wharf_oci::{Digest, ErrorCode, Manifest, Reference, RepoName, Tag};

use super::events::envelope::PUSH;
use super::events::Origin;
use super::{Core, Error, Result};
use crate::store::{ManifestRecord, StoreError};

/// Manifests over this size are refused, as Distribution and the spec's 4 MiB guidance do.
pub const MANIFEST_LIMIT: usize = 4 * 1024 * 1024;

pub struct ManifestContent {
    pub digest: Digest,
    pub bytes: Bytes,
    pub media_type: Arc<str>,
}

/// What a stored manifest put tells the client.
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// What the stored manifest is, for its push event.
    pub media_type: Arc<str>,
    pub size: u64,
    /// What it references, for events that include references.
    pub references: Vec<wharf_oci::Descriptor>,
}

impl Core {
    /// The manifest `reference` names in `repo` as stored, or None.
    pub async fn stored_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestContent>> {
        let meta = &self.store.meta;
        let digest = match reference {
            // A tag whose manifest left the repository serves nothing, as in Distribution.
            Reference::Tag(t) => match meta.resolve_tag(repo, t).await? {
                Some(d) if meta.manifest_linked(repo, &d).await? => Some(d),
                _ => None,
            },
            Reference::Digest(d) => meta.manifest_linked(repo, d).await?.then(|| d.clone()),
        };
        let Some(digest) = digest else {
            return Ok(None);
        };
        if let Some((bytes, media_type)) = self.manifests.get(&digest) {
            return Ok(Some(ManifestContent {
                digest,
                bytes,
                media_type,
            }));
        }
        let Some(bytes) = self.store.blobs.get(&digest, MANIFEST_LIMIT as u64).await? else {
            return Ok(None);
        };
        let media_type: Arc<str> = Manifest::parse(&bytes, None)
            .map(|m| m.media_type)
            .unwrap_or_else(|_| wharf_oci::media_type::OCI_MANIFEST.to_owned())
            .into();
        self.manifests
            .insert(digest.clone(), bytes.clone(), media_type.clone());
        Ok(Some(ManifestContent {
            digest,
            bytes,
            media_type,
        }))
    }

    /// Store a manifest under `reference`: it must parse, match a digest reference, and
    /// name only blobs and manifests this repository already has.
    pub(super) async fn store_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest> {
        let manifest = Manifest::parse(&bytes, content_type)
            .map_err(|e| Error::refused(ErrorCode::ManifestInvalid, e.to_string()))?;
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &bytes);
                if &actual != d {
                    return Err(Error::refused(
                        ErrorCode::DigestInvalid,
                        format!("manifest body has digest {actual}, not {d} as the URL says"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        let record = ManifestRecord::of(&manifest, digest.clone(), bytes.len() as u64);
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        let (needed, foreign) = self.referenced_closure(&record).await?;
        let references = super::events::envelope::references(&manifest);
        let reports = self.reports(|e| {
            let size = bytes.len() as u64;
            let mt = manifest.media_type.as_str();
            let mut event = o.manifest(PUSH, repo, mt, &digest, size, tag.map(Tag::as_str));
            if e.include_references {
                event.target.references = references.clone();
            }
            vec![event]
        });
        // An immutable tag's check and put run alone across every process, so that of
        // racing first pushes exactly one digest wins (taken before the writer lock).
        let _tag = match tag {
            Some(t) => self.immutable_tag_lock(repo, t).await?,
            None => None,
        };
        {
            // Check, retain and publish under the writer lock, so that a collection either
            // saw this manifest or sees everything it needs retained after its mark began,
            // and a concurrent delete cannot slip between the check and the put.
            let _writing = self.store.locks.writer().await?;
            if let Some(t) = tag {
                self.check_tag_mutable(repo, t, Some(&digest)).await?;
            }
            let meta = &self.store.meta;
            let missing = meta
                .missing_links(repo, &record.blobs, &record.children)
                .await?;
            if let Some(first) = missing.first() {
                return Err(not_in_repo(repo, first));
            }
            let all: Vec<Digest> = needed.iter().chain(&foreign).cloned().collect();
            let gone = self.store.blobs.retain(&all).await?;
            if let Some(first) = gone.iter().find(|d| needed.contains(*d)) {
                return Err(not_in_repo(repo, first));
            }
            // A review queue that collected a blob since the check above says so here.
            let published = self.publish_pushed(repo, &record, bytes.clone(), tag, &reports);
            match published.await {
                Err(Error::Store(StoreError::BlobUnknown(d))) => return Err(not_in_repo(repo, &d)),
                other => other?,
            }
        }
        let media_type: Arc<str> = manifest.media_type.as_str().into();
        let size = bytes.len() as u64;
        self.manifests
            .insert(digest.clone(), bytes, media_type.clone());
        Ok(PutManifest {
            digest,
            subject: manifest.subject.map(|s| s.digest),
            media_type,
            size,
            references,
        })
    }

    /// Everything a manifest keeps alive: its blobs, and its child manifests with all
    /// theirs, so that a collection racing an index put cannot take a child's layers.
    /// Returns (blobs it needs, foreign layers it names).
    async fn referenced_closure(
        &self,
        record: &ManifestRecord,
    ) -> Result<(HashSet<Digest>, Vec<Digest>)> {
        let mut needed: HashSet<Digest> = record.blobs.iter().cloned().collect();
        let mut foreign = record.foreign.clone();
        let mut seen = HashSet::new();
        let mut queue: Vec<Digest> = record.children.clone();
        while let Some(child) = queue.pop() {
            if !seen.insert(child.clone()) {
                continue;
            }
            needed.insert(child.clone());
            if let Some(r) = self.store.meta.manifest_record(&child).await? {
                needed.extend(r.blobs);
                foreign.extend(r.foreign);
                queue.extend(r.children);
            }
        }
        Ok((needed, foreign))
    }

    /// Delete a tag, or a manifest with every tag on it. False if there was none.
    pub(super) async fn remove_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<bool> {
        let _writing = self.store.locks.writer().await?;
        match reference {
            Reference::Tag(t) => self.check_tag_mutable(repo, t, None).await?,
            Reference::Digest(d) => self.check_manifest_deletable(repo, d).await?,
        }
        let meta = &self.store.meta;
        Ok(match reference {
            Reference::Tag(t) => {
                let reports = self.reports(|_| vec![o.tag_deleted(repo, t.as_str())]);
                meta.delete_tag_reporting(repo, t, &reports).await?
            }
            Reference::Digest(d) => {
                let reports = self.reports(|_| vec![o.deleted(repo, d)]);
                meta.delete_manifest_reporting(repo, d, &reports).await?
            }
        })
    }
}

impl Core {
    /// The one way a manifest is published: its bytes (when not stored yet), then its
    /// record and tag. Call under the writer lock, with what it references retained.
    pub(super) async fn publish_manifest(
        &self,
        repo: &RepoName,
        record: &ManifestRecord,
        bytes: Option<Bytes>,
        tag: Option<&Tag>,
    ) -> Result<()> {
        if let Some(bytes) = bytes {
            self.store.blobs.put(&record.digest, bytes).await?;
        }
        let now = self.store.put_time().await?;
        self.store.meta.put_manifest(repo, record, tag, now).await?;
        Ok(())
    }

    /// [`Core::publish_manifest`] for a client's push, whose blobs were found linked.
    async fn publish_pushed(
        &self,
        repo: &RepoName,
        record: &ManifestRecord,
        bytes: Bytes,
        tag: Option<&Tag>,
        reports: &[Vec<u8>],
    ) -> Result<()> {
        self.store.blobs.put(&record.digest, bytes).await?;
        let now = self.store.put_time().await?;
        self.store
            .meta
            .put_pushed_manifest_reporting(repo, record, tag, now, reports)
            .await?;
        Ok(())
    }
}

fn not_in_repo(repo: &RepoName, digest: &Digest) -> Error {
    Error::refused(
        ErrorCode::ManifestBlobUnknown,
        format!("{digest} is not in repository {repo}: push it first"),
    )
    .detail(json!({ "digest": digest }))
}
