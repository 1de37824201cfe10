//! Verdicts, cached per rule and digest, keyed by what the signatures are now.
//!
//! A verdict can only change when the digest's cosign signature tag or its referrers
//! change. Each lookup reads both from the store (a tag link and the referrers index, which
//! every replica shares) and the cached verdict counts only if they are what they were when
//! it was reached: a signature added, replaced or deleted through any replica makes the
//! entry miss, so no replica can serve from a stale verdict and none needs telling.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use wharf_oci::{Descriptor, Digest};

use super::Finding;

/// Entries kept before the cache starts over (bounded memory, no recency tracking on the
/// hot path).
const MAX_ENTRIES: usize = 50_000;

/// What a digest's signatures are now: the signature tag's target and a hash of the
/// referrers list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SigState {
    pub tag: Option<Digest>,
    pub referrers: [u8; 32],
}

impl SigState {
    pub fn new(tag: Option<Digest>, referrers: &[Descriptor]) -> SigState {
        let mut digests: Vec<String> = referrers.iter().map(|r| r.digest.to_string()).collect();
        digests.sort_unstable();
        let mut h = Sha256::new();
        for d in digests {
            h.update(d.as_bytes());
            h.update(b"\n");
        }
        SigState {
            tag,
            referrers: h.finalize().into(),
        }
    }

    /// Whether anything signs the digest at all, for messages and the UI.
    pub fn is_empty(&self) -> bool {
        self.tag.is_none() && self.referrers == SigState::new(None, &[]).referrers
    }
}

#[derive(Default)]
pub(super) struct VerdictCache {
    entries: Mutex<HashMap<(usize, Digest), (SigState, Finding)>>,
}

impl VerdictCache {
    pub fn get(&self, rule: usize, digest: &Digest, state: &SigState) -> Option<Finding> {
        let entries = wharf_oci::sync::lock(&self.entries);
        let (at, finding) = entries.get(&(rule, digest.clone()))?;
        (at == state).then(|| finding.clone())
    }

    pub fn put(&self, rule: usize, digest: Digest, state: SigState, finding: Finding) {
        let mut entries = wharf_oci::sync::lock(&self.entries);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert((rule, digest), (state, finding));
    }
}

/// The indexes each child manifest was seen in. Content-addressed, so never stale: an
/// index lists the same children forever. Whether the index still verifies is checked
/// afresh (through the verdict cache) each time a child is pulled.
#[derive(Default)]
pub(super) struct Parents {
    of: Mutex<HashMap<Digest, Vec<Digest>>>,
}

impl Parents {
    pub fn note(&self, index: &Digest, children: impl IntoIterator<Item = Digest>) {
        let mut of = wharf_oci::sync::lock(&self.of);
        if of.len() >= MAX_ENTRIES {
            of.clear();
        }
        for child in children {
            let parents = of.entry(child).or_default();
            if !parents.contains(index) {
                parents.push(index.clone());
            }
        }
    }

    pub fn of(&self, child: &Digest) -> Vec<Digest> {
        wharf_oci::sync::lock(&self.of)
            .get(child)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn a_changed_signature_tag_or_referrer_misses() {
        let cache = VerdictCache::default();
        let before = SigState::new(Some(d('a')), &[]);
        cache.put(
            0,
            d('1'),
            before.clone(),
            Finding::Unverified("no signature".into()),
        );
        assert!(cache.get(0, &d('1'), &before).is_some());
        assert!(cache.get(1, &d('1'), &before).is_none(), "another rule");
        let retagged = SigState::new(Some(d('b')), &[]);
        assert!(cache.get(0, &d('1'), &retagged).is_none());
        let referrer = Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: d('c'),
            size: 1,
            artifact_type: None,
            annotations: None,
            urls: None,
            platform: None,
        };
        let referred = SigState::new(Some(d('a')), &[referrer]);
        assert!(cache.get(0, &d('1'), &referred).is_none());
        assert!(SigState::new(None, &[]).is_empty());
        assert!(!referred.is_empty());
    }
}
