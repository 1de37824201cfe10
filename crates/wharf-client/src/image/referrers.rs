//! Referrers go along with a copy (`wharf copy --referrers`, replication): signatures,
//! SBOMs and attestations attached to an image, found through the referrers API (or its
//! tag fallback) and under cosign's tags (`sha256-<hex>.sig`, `.att`, `.sbom`), copied
//! under the same digests and tags, as `regctl image copy --referrers` does. The
//! referrers of an index's children and of the referrers themselves (a signed SBOM)
//! follow too, to a bounded depth.

use std::collections::HashSet;

use wharf_oci::{Digest, ManifestKind, Reference, Tag};

use super::copy::Copier;
use super::parse;

/// cosign's tag-form attachments: signatures, attestations, SBOMs.
const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];
/// Referrers of referrers of…: a signature on an SBOM is depth 2.
const MAX_DEPTH: usize = 4;
/// More referrers than this for one copy is a runaway, not an image.
const MAX_COPIED: usize = 10_000;

impl Copier<'_> {
    /// Copy everything attached to `digest` (already copied to DST); returns how many
    /// manifests went.
    pub async fn copy_referrers(&self, digest: &Digest) -> anyhow::Result<usize> {
        let src = &self.src;
        let mut queue = vec![(digest.clone(), 0usize)];
        let top = src
            .client
            .get_manifest(&src.repo, &Reference::Digest(digest.clone()))
            .await?;
        let top = parse(&top.bytes, &top.media_type)?;
        if top.kind == ManifestKind::Index {
            queue.extend(top.manifests.iter().map(|c| (c.digest.clone(), 0)));
        }
        let mut seen = HashSet::new();
        let mut copied = 0;
        while let Some((subject, depth)) = queue.pop() {
            if !seen.insert(subject.clone()) {
                continue;
            }
            copied += self.copy_cosign_tags(&subject).await?;
            if depth >= MAX_DEPTH {
                continue;
            }
            for referrer in src.client.referrers(&src.repo, &subject).await? {
                let at = Reference::Digest(referrer.digest.clone());
                self.run(&at, &at, None).await?;
                copied += 1;
                anyhow::ensure!(
                    copied <= MAX_COPIED,
                    "more than {MAX_COPIED} referrers under {digest}; stopped"
                );
                queue.push((referrer.digest, depth + 1));
            }
        }
        Ok(copied)
    }

    async fn copy_cosign_tags(&self, subject: &Digest) -> anyhow::Result<usize> {
        let mut copied = 0;
        for suffix in COSIGN_SUFFIXES {
            let tag = format!(
                "{}-{}.{suffix}",
                subject.algorithm().as_str(),
                subject.hex()
            );
            let Ok(tag) = tag.parse::<Tag>() else {
                continue;
            };
            let at = Reference::Tag(tag);
            if self
                .src
                .client
                .manifest_if_any(&self.src.repo, &at)
                .await?
                .is_some()
            {
                self.run(&at, &at, None).await?;
                copied += 1;
            }
        }
        Ok(copied)
    }
}
