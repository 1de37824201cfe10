//! `wharf_trust_*`: what the trust rules decided, for `http.debug.prometheus`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

/// Counters since start.
#[derive(Debug, Default)]
pub struct TrustMetrics {
    /// Pulls a rule covered, by rule, mode and verdict.
    pulls: Mutex<HashMap<(String, &'static str, &'static str), u64>>,
    /// Verifications run (cache misses).
    verifications: AtomicU64,
    /// Verdicts found in the cache.
    cache_hits: AtomicU64,
}

impl TrustMetrics {
    pub(super) fn pull(&self, rule: &str, mode: &'static str, verdict: &'static str) {
        let mut pulls = wharf_oci::sync::lock(&self.pulls);
        *pulls.entry((rule.to_owned(), mode, verdict)).or_default() += 1;
    }

    pub(super) fn verified(&self) {
        self.verifications.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    n: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(n);
    let mut m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m.encode_family(&labels.to_vec())?)
}

impl Collector for TrustMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let pulls: Vec<_> = wharf_oci::sync::lock(&self.pulls)
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        for ((rule, mode, verdict), n) in pulls {
            let labels = [
                ("rule", rule.as_str()),
                ("mode", mode),
                ("verdict", verdict),
            ];
            counter(
                &mut e,
                "wharf_trust_pulls",
                "Manifest pulls a trust rule covered, by rule, mode and verdict (verified, unverified, exempt).",
                &labels,
                n,
            )?;
        }
        let r = Ordering::Relaxed;
        counter(
            &mut e,
            "wharf_trust_verifications",
            "Signature verifications run (verdicts not found in the cache).",
            &[],
            self.verifications.load(r),
        )?;
        counter(
            &mut e,
            "wharf_trust_cache_hits",
            "Verdicts served from the cache, keyed by the digest's signature tag and referrers.",
            &[],
            self.cache_hits.load(r),
        )
    }
}
