//! Sending what this registry holds to one target: a tag (its manifest, the children of
//! an index, every blob, and the referrers: signatures, SBOMs), a manifest pushed by
//! digest, a delete. Each blob is asked for first (HEAD), mounted from another repository
//! there when this process sent it there before, and sent only when the target lacks it.

use anyhow::Context;
use futures::TryStreamExt;
use wharf_client::client::{BlobStream, Mount};
use wharf_client::ClientError;
use wharf_oci::{Descriptor, Digest, Manifest, ManifestKind, Reference, RepoName, Tag};

use super::target::Target;
use crate::registry::{ManifestContent, Registry};

/// Blobs sent to a target at once.
const PARALLEL_BLOBS: usize = 4;
/// How deep referrers of referrers go (a signature of an SBOM of an image).
const REFERRER_DEPTH: usize = 2;

/// What replicating a tag did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target now holds the digest under the tag.
    Sent,
    /// It held it already.
    Same,
    /// The tag here has moved on (or gone) since the event: a later event carries it.
    Superseded,
    /// The target's tag is a concurrent push there that wins the conflict rule.
    Kept(Digest),
}

/// Cosign's tag schema (`sha256-<hex>.sig`, `.att`, `.sbom`) and OCI's referrers tag
/// fallback (`sha256-<hex>`): signatures that go along whatever the tag filter.
pub fn is_referrer_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-")
        .is_some_and(|rest| rest.len() >= 64 && rest[..64].bytes().all(|b| b.is_ascii_hexdigit()))
}

pub struct Push<'a> {
    pub registry: &'a Registry,
    pub target: &'a Target,
}

impl Push<'_> {
    /// The target's digest for `repo:tag`, None when it has none.
    pub async fn target_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<Digest>, ClientError> {
        let reference = Reference::Tag(tag.clone());
        Ok(self
            .target
            .client
            .head_manifest(repo, &reference)
            .await?
            .digest)
    }

    /// Make the target's `repo:tag` what it is here. `force` (reconcile) overwrites a
    /// peer's concurrent push; replication settles it by the conflict rule.
    pub async fn tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expected: Option<&Digest>,
        force: bool,
    ) -> anyhow::Result<Outcome> {
        let here = self
            .registry
            .stored_manifest(repo, &Reference::Tag(tag.clone()))
            .await
            .map_err(|e| anyhow::anyhow!("reading {repo}:{tag} here: {e}"))?;
        let Some(content) = here else {
            return Ok(Outcome::Superseded);
        };
        if expected.is_some_and(|d| *d != content.digest) {
            return Ok(Outcome::Superseded);
        }
        let there = self.target_tag(repo, tag).await?;
        if there.as_ref() == Some(&content.digest) {
            // Referrers may have come since (a signature pushed after the image).
            self.referrers(repo, &content.digest, 0).await?;
            return Ok(Outcome::Same);
        }
        if let Some(theirs) = there.filter(|_| self.target.peer && !force) {
            if self
                .concurrent_winner(repo, &content.digest, &theirs)
                .await?
                == theirs
            {
                return Ok(Outcome::Kept(theirs));
            }
        }
        self.manifest(repo, &Reference::Tag(tag.clone()), &content, 0)
            .await?;
        Ok(Outcome::Sent)
    }

    /// The conflict rule of active-active replication. A tag the peer holds at a digest
    /// this registry has in the repository is stale there: ours goes. A digest this
    /// registry never held is a push on the peer that has not come here yet, concurrent
    /// with ours: the higher digest wins, on both sides alike, so both converge on it
    /// whatever order the two replications run in.
    async fn concurrent_winner(
        &self,
        repo: &RepoName,
        ours: &Digest,
        theirs: &Digest,
    ) -> anyhow::Result<Digest> {
        let known = self
            .registry
            .stored_manifest(repo, &Reference::Digest(theirs.clone()))
            .await
            .map_err(|e| anyhow::anyhow!("reading {repo}@{theirs} here: {e}"))?
            .is_some();
        if known || ours.to_string() > theirs.to_string() {
            Ok(ours.clone())
        } else {
            Ok(theirs.clone())
        }
    }

    /// A manifest pushed by digest: sent when it refers to a subject (a signature, an
    /// SBOM); an index's children go with their index, not alone.
    pub async fn by_digest(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<bool> {
        let reference = Reference::Digest(digest.clone());
        let Some(content) = self
            .registry
            .stored_manifest(repo, &reference)
            .await
            .map_err(|e| anyhow::anyhow!("reading {repo}@{digest} here: {e}"))?
        else {
            return Ok(false);
        };
        let parsed = Manifest::parse(&content.bytes, Some(&content.media_type))
            .with_context(|| format!("{repo}@{digest} is not a manifest wharf can send"))?;
        if parsed.subject.is_none() {
            return Ok(false);
        }
        self.manifest(repo, &reference, &content, REFERRER_DEPTH)
            .await?;
        Ok(true)
    }

    /// Send `content` to be stored under `reference`, after everything it refers to.
    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content: &ManifestContent,
        depth: usize,
    ) -> anyhow::Result<()> {
        let parsed =
            Manifest::parse(&content.bytes, Some(&content.media_type)).with_context(|| {
                format!("{repo}@{} is not a manifest wharf can send", content.digest)
            })?;
        if parsed.kind == ManifestKind::Index {
            for child in &parsed.manifests {
                self.child(repo, child).await?;
            }
        } else {
            self.blobs(repo, &parsed).await?;
        }
        self.target
            .client
            .put_manifest(repo, reference, content.bytes.to_vec(), &content.media_type)
            .await?;
        self.referrers(repo, &content.digest, depth).await
    }

    /// The manifest `digest` as stored here, when the target lacks it (None when the
    /// target has it, or this registry does not).
    async fn wanted_there(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> anyhow::Result<Option<ManifestContent>> {
        let reference = Reference::Digest(digest.clone());
        let there = self.target.client.head_manifest(repo, &reference).await?;
        if there.digest.is_some() {
            return Ok(None);
        }
        self.registry
            .stored_manifest(repo, &reference)
            .await
            .map_err(|e| anyhow::anyhow!("reading {repo}@{digest} here: {e}"))
    }

    /// An index's child, unless the target has it; one this registry lacks (an index
    /// synced for some platforms only) is left out, and the target refuses the index if
    /// it insists on every child.
    async fn child(&self, repo: &RepoName, child: &Descriptor) -> anyhow::Result<()> {
        let reference = Reference::Digest(child.digest.clone());
        let Some(content) = self.wanted_there(repo, &child.digest).await? else {
            return Ok(());
        };
        let parsed = Manifest::parse(&content.bytes, Some(&content.media_type))?;
        self.blobs(repo, &parsed).await?;
        self.target
            .client
            .put_manifest(
                repo,
                &reference,
                content.bytes.to_vec(),
                &content.media_type,
            )
            .await?;
        Ok(())
    }

    /// The manifests here whose subject is `digest`, each unless the target has it.
    async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        depth: usize,
    ) -> anyhow::Result<()> {
        if depth > REFERRER_DEPTH {
            return Ok(());
        }
        let found = self
            .registry
            .stored_referrers(repo, digest)
            .await
            .map_err(|e| anyhow::anyhow!("listing the referrers of {repo}@{digest}: {e}"))?;
        for r in found {
            let reference = Reference::Digest(r.digest.clone());
            let Some(content) = self.wanted_there(repo, &r.digest).await? else {
                continue;
            };
            Box::pin(self.manifest(repo, &reference, &content, depth + 1)).await?;
        }
        Ok(())
    }

    async fn blobs(&self, repo: &RepoName, manifest: &Manifest) -> anyhow::Result<()> {
        let blobs: Vec<&Descriptor> = manifest.config.iter().chain(&manifest.layers).collect();
        // A few at once; in fixed groups rather than a stream, whose closure a spawned
        // task cannot hold (its future would not be Send for every lifetime).
        for group in blobs.chunks(PARALLEL_BLOBS) {
            let mut sends = Vec::with_capacity(group.len());
            for d in group {
                sends.push(self.blob(repo, d));
            }
            futures::future::try_join_all(sends).await?;
        }
        Ok(())
    }

    async fn blob(&self, repo: &RepoName, blob: &Descriptor) -> anyhow::Result<()> {
        let client = &self.target.client;
        let digest = &blob.digest;
        if client.blob_exists(repo, digest).await? {
            self.target.remember(digest, repo);
            return Ok(());
        }
        let session = match self.target.sent_from(digest).filter(|from| from != repo) {
            Some(from) => match client.mount_blob(repo, digest, &from).await? {
                Mount::Mounted => {
                    self.target.remember(digest, repo);
                    return Ok(());
                }
                Mount::Session(url) => url,
            },
            None => client.start_upload(repo).await?,
        };
        let read = self
            .registry
            .read_blob(digest, None)
            .await
            .map_err(|e| anyhow::anyhow!("reading blob {digest} here: {e}"))?;
        let what = format!("blob {digest}");
        let body: BlobStream = Box::pin(read.body.map_err(move |e| ClientError::Request {
            url: what.clone(),
            detail: e.to_string(),
        }));
        client
            .upload_blob(repo, session, digest, read.size, body)
            .await?;
        self.target.remember(digest, repo);
        Ok(())
    }

    /// A tag deleted here: deleted there, unless it has been pushed again here since.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> anyhow::Result<bool> {
        let here = self
            .registry
            .stored_manifest(repo, &Reference::Tag(tag.clone()))
            .await
            .map_err(|e| anyhow::anyhow!("reading {repo}:{tag} here: {e}"))?;
        if here.is_some() {
            return Ok(false);
        }
        self.target.client.delete_tag(repo, tag.as_str()).await?;
        Ok(true)
    }

    /// A manifest deleted here (with its tags): deleted there, if there.
    pub async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<bool> {
        let here = self
            .registry
            .stored_manifest(repo, &Reference::Digest(digest.clone()))
            .await
            .map_err(|e| anyhow::anyhow!("reading {repo}@{digest} here: {e}"))?;
        if here.is_some() {
            return Ok(false);
        }
        match self.target.client.delete_manifest(repo, digest).await {
            Ok(()) | Err(ClientError::NotFound { .. }) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cosign_and_referrers_fallback_tags_are_recognised() {
        let hex = "a".repeat(64);
        assert!(super::is_referrer_tag(&format!("sha256-{hex}.sig")));
        assert!(super::is_referrer_tag(&format!("sha256-{hex}")));
        assert!(!super::is_referrer_tag("sha256-abc.sig"));
        assert!(!super::is_referrer_tag("v1"));
    }
}
