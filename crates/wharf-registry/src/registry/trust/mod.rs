//! Signature policy as a layer (`trust:`): a pull of a manifest in a repository a rule
//! covers is served only when a trusted signature covers its digest (`enforce`), or served
//! with a warning header, a log line and a metric when none does (`warn`).
//!
//! The layer sits outside events and pull counts, so a refused pull is neither an event
//! nor a pull. It reads the manifest and its signatures from the service *below* those
//! layers (the pull-through cache or the core): the registry's own reads are no client's
//! pulls, and on a mirror they make the cache fetch the signature with the manifest.
//! Verification itself is wharf-client's (`wharf_client::trust`), over a
//! [`SignatureSource`](wharf_client::trust::SignatureSource) of that service.

mod artifact;
mod cache;
mod metrics;
mod source;

use std::sync::Arc;

use async_trait::async_trait;
use wharf_client::trust::TrustRoots;
use wharf_oci::manifest::{Manifest, ManifestKind};
use wharf_oci::{Digest, ErrorCode, Reference, RepoName};

pub use self::artifact::{is_artifact, is_signature_tag};
use self::cache::{Parents, SigState, VerdictCache};
pub use self::metrics::TrustMetrics;
use self::source::ServiceSource;
use super::events::Origin;
use super::service::{Layer, Served, Service};
use super::{Core, Error, ManifestContent, Result};
use crate::config::trust::{TrustMode, TrustRule};

/// Tags read when looking for a verified index that lists a manifest pulled by digest and
/// not seen in an index before (another replica served the index).
const PARENT_SCAN_TAGS: usize = 200;

/// What a rule found for a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A trusted signature covers it: by which key or certificate subject, in which form.
    Verified { by: String, form: String },
    /// A signature, an attestation or another artifact: pulled without one.
    Exempt,
    /// Why not: "no signature", "signed by an untrusted key", …
    Unverified(String),
}

/// A rule with its keys and roots loaded.
struct Rule {
    config: TrustRule,
    label: String,
    roots: TrustRoots,
}

/// The `trust:` rules, their cache and their counters.
pub struct Trust {
    rules: Vec<Rule>,
    /// Where stored signature blobs are read.
    core: Arc<Core>,
    cache: VerdictCache,
    parents: Parents,
    pub metrics: Arc<TrustMetrics>,
}

/// What a page shows about a digest: the rule that covers its repository, and what the
/// rule found (or, with no rule, only whether anything signs it).
pub struct TrustStatus {
    pub rule: Option<(String, TrustMode)>,
    pub finding: Option<Finding>,
    /// Whether a cosign signature tag or referrers exist for the digest.
    pub signed: bool,
}

/// The rules with their keys and roots loaded, before the registry they guard is built.
pub struct TrustRules {
    rules: Vec<Rule>,
    pub metrics: Arc<TrustMetrics>,
}

impl TrustRules {
    /// Load every rule's keys and roots; None without rules. A key or root file that
    /// cannot be read or parsed stops the start, naming the rule.
    pub fn load(rules: &[TrustRule]) -> anyhow::Result<Option<TrustRules>> {
        if rules.is_empty() {
            return Ok(None);
        }
        let mut loaded = Vec::new();
        for (i, config) in rules.iter().enumerate() {
            let roots = TrustRoots::load(&config.keys, &config.roots)
                .map_err(|e| anyhow::anyhow!("trust.{i} ({}): {e}", config.label()))?;
            loaded.push(Rule {
                label: config.label(),
                config: config.clone(),
                roots,
            });
        }
        Ok(Some(TrustRules {
            rules: loaded,
            metrics: Arc::default(),
        }))
    }
}

impl Trust {
    pub(in crate::registry) fn new(rules: TrustRules, core: Arc<Core>) -> Trust {
        Trust {
            rules: rules.rules,
            core,
            cache: VerdictCache::default(),
            parents: Parents::default(),
            metrics: rules.metrics,
        }
    }

    /// The first rule that covers `repo`, as `access:` picks its rule.
    fn rule_for(&self, repo: &RepoName) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.config.matches(repo.as_str()))
    }

    /// What `rule` says of `content`, pulled as `reference`.
    async fn decide(
        &self,
        source: &dyn Service,
        rule: usize,
        repo: &RepoName,
        reference: &Reference,
        content: &ManifestContent,
    ) -> Result<Finding> {
        if is_signature_tag(reference) {
            return Ok(Finding::Exempt);
        }
        let finding = self.judge(source, rule, repo, content).await?;
        if !matches!(finding, Finding::Unverified(_)) {
            return Ok(finding);
        }
        // Parsed only when unsigned: a signed image's pull costs no JSON parse.
        if is_artifact(&content.bytes, &content.media_type) {
            return Ok(Finding::Exempt);
        }
        if !matches!(reference, Reference::Digest(_)) {
            return Ok(finding);
        }
        // A platform's manifest, pulled by digest after its index: the index's signature
        // covers it.
        let mut parents = self.parents.of(&content.digest);
        if parents.is_empty() {
            parents = self.scan_parents(source, repo, &content.digest).await?;
        }
        for parent in parents {
            let Some(index) = read(source, repo, &Reference::Digest(parent.clone())).await? else {
                continue;
            };
            if let Finding::Verified { by, form } = self.judge(source, rule, repo, &index).await? {
                let form = format!("{form}, on its index {parent}");
                return Ok(Finding::Verified { by, form });
            }
        }
        Ok(finding)
    }

    /// Verify `content`'s digest under `rule`, or find the verdict in the cache.
    async fn judge(
        &self,
        source: &dyn Service,
        rule: usize,
        repo: &RepoName,
        content: &ManifestContent,
    ) -> Result<Finding> {
        let digest = &content.digest;
        let (state, referrers) = sig_state(source, repo, digest).await?;
        if let Some(found) = self.cache.get(rule, digest, &state) {
            self.metrics.hit();
            return Ok(found);
        }
        self.metrics.verified();
        let (finding, cacheable) = match state.is_empty() {
            true => (Finding::Unverified("no signature".into()), true),
            false => {
                let src = ServiceSource::new(source, &self.core, (digest, &referrers));
                source::verdict(&src, repo, digest, &self.rules[rule].roots).await
            }
        };
        if matches!(finding, Finding::Verified { .. }) {
            if let Ok(m) = Manifest::parse(&content.bytes, Some(&content.media_type)) {
                if m.kind == ManifestKind::Index {
                    self.parents
                        .note(digest, m.manifests.into_iter().map(|c| c.digest));
                }
            }
        }
        if cacheable {
            self.cache.put(rule, digest.clone(), state, finding.clone());
        }
        Ok(finding)
    }

    /// The indexes among the repository's first tags that list `child`.
    async fn scan_parents(
        &self,
        source: &dyn Service,
        repo: &RepoName,
        child: &Digest,
    ) -> Result<Vec<Digest>> {
        let o = Origin::method("GET");
        let Some(page) = source.tags(&o, repo, None, Some(PARENT_SCAN_TAGS)).await? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for tag in page.items {
            if is_signature_tag(&Reference::Tag(match tag.parse() {
                Ok(t) => t,
                Err(_) => continue,
            })) {
                continue;
            }
            let Ok(reference) = tag.parse::<Reference>() else {
                continue;
            };
            let Some(m) = read(source, repo, &reference).await? else {
                continue;
            };
            let Ok(parsed) = Manifest::parse(&m.bytes, Some(&m.media_type)) else {
                continue;
            };
            if parsed.manifests.iter().any(|c| &c.digest == child) {
                self.parents
                    .note(&m.digest, parsed.manifests.into_iter().map(|c| c.digest));
                found.push(m.digest);
            }
        }
        Ok(found)
    }

    /// What the rules say of a stored digest, for a page.
    pub async fn status(
        &self,
        source: &dyn Service,
        repo: &RepoName,
        content: &ManifestContent,
    ) -> Result<TrustStatus> {
        let signed = !sig_state(source, repo, &content.digest).await?.0.is_empty();
        let Some((i, rule)) = self.rule_for(repo) else {
            return Ok(TrustStatus {
                rule: None,
                finding: None,
                signed,
            });
        };
        let reference = Reference::Digest(content.digest.clone());
        let finding = self.decide(source, i, repo, &reference, content).await?;
        Ok(TrustStatus {
            rule: Some((rule.label.clone(), rule.config.mode)),
            finding: Some(finding),
            signed,
        })
    }
}

/// A manifest as the service below serves it, read for the registry's own purposes.
async fn read(
    source: &dyn Service,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Option<ManifestContent>> {
    let o = Origin::method("GET");
    Ok(source
        .manifest(&o, repo, reference)
        .await?
        .map(|s| s.content))
}

/// The digest's signature tag and referrers now.
async fn sig_state(
    source: &dyn Service,
    repo: &RepoName,
    digest: &Digest,
) -> Result<(SigState, Vec<wharf_oci::Descriptor>)> {
    let o = Origin::method("GET");
    let tag: Reference = format!("{}-{}.sig", digest.algorithm().as_str(), digest.hex())
        .parse()
        .map_err(|_| Error::refused(ErrorCode::DigestInvalid, "digest too long for a tag"))?;
    let (sig, referrers) = tokio::join!(
        source.manifest(&o, repo, &tag),
        source.referrers(&o, repo, digest)
    );
    let (sig, referrers) = (sig?.map(|s| s.content.digest), referrers?);
    Ok((SigState::new(sig, &referrers), referrers))
}

/// The layer: manifest reads in covered repositories are judged; everything else, and
/// every write, goes inward untouched (a verdict is keyed by the signatures as they are
/// when it is read, so a write needs no invalidation here; see `cache`).
pub struct TrustLayer {
    inner: Arc<dyn Service>,
    /// The service below events and pull counts, for the registry's own reads.
    source: Arc<dyn Service>,
    trust: Arc<Trust>,
}

impl TrustLayer {
    pub fn new(inner: Arc<dyn Service>, source: Arc<dyn Service>, trust: Arc<Trust>) -> Self {
        TrustLayer {
            inner,
            source,
            trust,
        }
    }

    /// Refuse under `enforce`; count, log and describe the pull for a header otherwise.
    ///
    /// A `HEAD` is answered under `enforce` too, with the header: it carries the digest
    /// and no content, and signing needs it (cosign, notation and `wharf sign` resolve a
    /// tag to the digest they sign with a `HEAD`, before any signature exists). The `GET`
    /// that would deliver the manifest is what is refused, and what docker prints.
    fn apply(
        &self,
        head: bool,
        rule: &Rule,
        repo: &RepoName,
        reference: &Reference,
        digest: &Digest,
        finding: &Finding,
    ) -> Result<Option<String>> {
        let mode = rule.config.mode;
        let (verdict, header) = match finding {
            Finding::Verified { by, .. } => ("verified", format!("verified; by=\"{}\"", quote(by))),
            Finding::Exempt => ("exempt", "exempt; signature or referrer artifact".into()),
            Finding::Unverified(why) => ("unverified", format!("unverified; {why}")),
        };
        if !head {
            self.trust.metrics.pull(&rule.label, mode.as_str(), verdict);
        }
        let Finding::Unverified(why) = finding else {
            return Ok(Some(header));
        };
        if mode == TrustMode::Warn || head {
            if !head {
                tracing::warn!(repository = %repo, reference = %reference, %digest, rule = %rule.label, reason = %why, "served an image no trusted signature covers (trust rule in warn mode)");
            }
            return Ok(Some(format!("{header}; rule=\"{}\"", quote(&rule.label))));
        }
        let named = match reference {
            Reference::Tag(t) => format!("{repo}:{t} ({digest})"),
            Reference::Digest(_) => format!("{repo}@{digest}"),
        };
        Err(Error::refused(
            ErrorCode::Denied,
            format!(
                "trust rule \"{}\" refuses {named}: {why}; sign it with `wharf sign --key cosign.key {repo}@{digest}` using a key the rule trusts",
                rule.label
            ),
        )
        .detail(serde_json::json!({ "rule": rule.label, "reason": why, "digest": digest.to_string() })))
    }
}

/// A value fit for a quoted header parameter.
fn quote(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' || !c.is_ascii() { '?' } else { c })
        .collect()
}

#[async_trait]
impl Layer for TrustLayer {
    fn inner(&self) -> &dyn Service {
        &*self.inner
    }

    async fn manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Served>> {
        let Some((i, rule)) = self.trust.rule_for(repo) else {
            return self.inner.manifest(o, repo, reference).await;
        };
        let source = &*self.source;
        let Some(first) = read(source, repo, reference).await? else {
            return self.inner.manifest(o, repo, reference).await;
        };
        let finding = self
            .trust
            .decide(source, i, repo, reference, &first)
            .await?;
        let head = o.request.method == "HEAD";
        let mut header = self.apply(head, rule, repo, reference, &first.digest, &finding)?;
        let Some(mut served) = self.inner.manifest(o, repo, reference).await? else {
            return Ok(None);
        };
        if served.content.digest != first.digest {
            // The tag moved between the two reads: judge what is actually served.
            let again = self
                .trust
                .decide(source, i, repo, reference, &served.content)
                .await?;
            header = self.apply(head, rule, repo, reference, &served.content.digest, &again)?;
        }
        served.trust = header;
        Ok(Some(served))
    }
}
