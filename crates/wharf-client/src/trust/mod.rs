//! Image signatures: what `wharf sign` writes, what `wharf verify`, the registry's
//! `trust:` rules and `wharf watch`'s `wharf.watch.verify` check.
//!
//! Two families are read, both found next to the image in its repository:
//! - **cosign, key-based**: a simple-signing payload naming the image's digest, signed
//!   with a public key's private half (ECDSA P-256, Ed25519 or RSA). It is stored either
//!   under cosign's tag `sha256-<hex>.sig` (one layer per signature, the signature in the
//!   layer's `dev.cosignproject.cosign/signature` annotation), or as an OCI 1.1 referrer in
//!   the form `cosign sign --registry-referrers-mode=oci-1-1` writes: the same manifest with
//!   `config.mediaType` `application/vnd.dev.cosign.artifact.sig.v1+json` and a `subject`.
//! - **Notation, X.509**: a referrer of artifact type `application/vnd.cncf.notary.signature`
//!   whose one layer is a JWS envelope (`application/jose+json`); its certificate chain
//!   (`x5c`) must lead to a configured root, every certificate in it within its validity
//!   period, and its payload's `targetArtifact.digest` must be the image's.
//!
//! Nothing here reaches the network by itself: signatures come through a
//! [`SignatureSource`] (a registry's own store, or a remote registry through
//! [`RegistrySource`]). Every size read is bounded, and a malformed signature is a
//! [`Refusal`], never a panic.

mod cosign;
mod keys;
mod notation;
mod private;
mod sign;
mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use wharf_oci::{Descriptor, Digest};

pub use cosign::{
    payload as cosign_payload, signature_manifest, signature_tag, SIGNATURE_ANNOTATION,
    SIG_ARTIFACT_TYPE, SIMPLE_SIGNING_MEDIA_TYPE,
};
pub use keys::PublicKey;
pub use notation::{NOTATION_ARTIFACT_TYPE, NOTATION_ENVELOPE_MEDIA_TYPE};
pub use private::{KeyFileError, PrivateKey};
pub use sign::{docker_reference, sign, Signed};
pub use source::RegistrySource;

/// Largest annotation, payload or envelope read from a signature: a simple-signing
/// payload is a few hundred bytes and a Notation envelope with its chain a few KiB.
pub const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
/// Largest number of layers read from one signature manifest. cosign adds one layer per
/// signature to the `.sig` tag; a manifest with more is refused rather than walked.
pub const MAX_SIGNATURE_LAYERS: usize = 100;
/// Largest number of signature referrers examined for one digest.
pub const MAX_SIGNATURE_REFERRERS: usize = 100;

/// What a verification trusts: cosign public keys and X.509 root certificates.
#[derive(Clone, Default)]
pub struct TrustRoots {
    keys: Vec<TrustedKey>,
    roots: Vec<notation::TrustedRoot>,
}

#[derive(Clone)]
struct TrustedKey {
    /// The file it came from (or a caller's label) and its fingerprint.
    label: String,
    key: PublicKey,
}

/// Why a trust store or key could not be used, or a signature source failed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {detail}", path.display())]
    BadFile { path: PathBuf, detail: String },
    /// The registry (or store) the signatures are read from failed: not a verdict on the
    /// image, so callers may retry.
    #[error("reading signatures: {0}")]
    Source(String),
    /// A blob or manifest bigger than the bound asked for.
    #[error("{what} is {size} bytes, more than the {max} a signature may take")]
    TooLarge { what: String, size: u64, max: u64 },
}

impl TrustRoots {
    /// Read cosign public keys (PEM) and X.509 root certificates (PEM, any number of
    /// certificates a file).
    pub fn load(keys: &[PathBuf], roots: &[PathBuf]) -> Result<TrustRoots, TrustError> {
        let mut trust = TrustRoots::default();
        for path in keys {
            let text = read(path)?;
            let key = PublicKey::from_pem(&text).map_err(|detail| bad(path, detail))?;
            trust.add_key(&path.display().to_string(), key);
        }
        for path in roots {
            let text = read(path)?;
            let added = notation::TrustedRoot::from_pem(&text).map_err(|d| bad(path, d))?;
            trust.roots.extend(added);
        }
        Ok(trust)
    }

    /// Trust `key`, named `label` (a path, a rule's name) in verdicts.
    pub fn add_key(&mut self, label: &str, key: PublicKey) {
        let label = format!("{label} ({})", short(&key.fingerprint()));
        self.keys.push(TrustedKey { label, key });
    }

    /// Trust the root certificates in a PEM text.
    pub fn add_roots_pem(&mut self, pem: &[u8]) -> Result<(), String> {
        self.roots.extend(notation::TrustedRoot::from_pem(pem)?);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.roots.is_empty()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TrustError> {
    std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })
}

fn bad(path: &Path, detail: String) -> TrustError {
    TrustError::BadFile {
        path: path.to_owned(),
        detail,
    }
}

/// `sha256:0123456789ab`: enough of a fingerprint to tell keys apart in a message.
fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(19)]
}

/// Where signatures come from: the registry's own store, or a remote registry through
/// the client ([`RegistrySource`]).
#[async_trait::async_trait]
pub trait SignatureSource: Send + Sync {
    /// A manifest by tag or digest, with its media type; `None` when there is none.
    async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, String)>, TrustError>;
    /// The referrers of `digest` (the OCI 1.1 referrers API, or its tag fallback).
    async fn referrers(&self, repo: &str, digest: &Digest) -> Result<Vec<Descriptor>, TrustError>;
    /// A blob, refused ([`TrustError::TooLarge`]) when bigger than `max` bytes.
    async fn blob(&self, repo: &str, digest: &Digest, max: u64) -> Result<Vec<u8>, TrustError>;
}

/// Which of the stored forms a signature has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureForm {
    /// cosign's `sha256-<hex>.sig` tag.
    CosignTag,
    /// cosign's OCI 1.1 referrer (`application/vnd.dev.cosign.artifact.sig.v1+json`).
    CosignReferrer,
    /// A Notation JWS envelope (`application/vnd.cncf.notary.signature`).
    Notation,
}

impl fmt::Display for SignatureForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureForm::CosignTag => "cosign signature (.sig tag)",
            SignatureForm::CosignReferrer => "cosign signature (OCI 1.1 referrer)",
            SignatureForm::Notation => "Notation signature (JWS, X.509)",
        })
    }
}

/// The outcome of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A trusted signature covers the digest: `by` is the key (its file and fingerprint)
    /// or the leaf certificate's subject.
    Verified {
        by: String,
        form: SignatureForm,
    },
    Refused(Refusal),
}

impl Verdict {
    pub fn is_verified(&self) -> bool {
        matches!(self, Verdict::Verified { .. })
    }
}

/// Why no trusted signature covers a digest. `Display` is what docker prints after a
/// registry's `DENIED`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoSignature,
    /// Signatures exist, but no trusted key or root verifies any of them (a tampered
    /// payload looks the same: its signature no longer verifies).
    UntrustedKey,
    /// A trusted signature names another digest.
    OtherDigest,
    /// A signature that cannot be read: too big, malformed, too many layers.
    Invalid(String),
    /// A certificate outside its validity period.
    Expired(String),
    /// A certificate chain that leads to no configured root.
    WrongRoot(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoSignature => f.write_str("no signature"),
            Refusal::UntrustedKey => f.write_str("signed by an untrusted key"),
            Refusal::OtherDigest => f.write_str("signature is for another digest"),
            Refusal::Invalid(why) => write!(f, "invalid signature: {why}"),
            Refusal::Expired(why) => write!(f, "certificate expired: {why}"),
            Refusal::WrongRoot(why) => write!(f, "certificate chain to an untrusted root: {why}"),
        }
    }
}

impl Refusal {
    /// Which refusal to report when several signatures fail: the most telling one.
    fn weight(&self) -> u8 {
        match self {
            Refusal::NoSignature => 0,
            Refusal::UntrustedKey => 1,
            Refusal::Invalid(_) => 2,
            Refusal::WrongRoot(_) => 3,
            Refusal::Expired(_) => 4,
            Refusal::OtherDigest => 5,
        }
    }
}

/// One signature found for a digest, for listings (the UI, `wharf verify`).
#[derive(Clone, Debug)]
pub struct SignatureInfo {
    pub form: SignatureForm,
    /// The signature manifest's digest (the `.sig` tag's manifest for cosign's tag form).
    pub manifest: Digest,
    /// Who signed: a trusted key's label, a certificate subject, or `None` when unknown.
    pub signer: Option<String>,
    /// Whether it verifies under the roots given.
    pub verdict: Verdict,
    /// Extra facts (the layer index, the signing time) as `name → value`.
    pub details: BTreeMap<String, String>,
}

/// Whether a trusted signature covers `digest` in `repo`: every stored form is tried, and
/// the first that verifies wins; otherwise the most telling refusal is returned. A source
/// that fails is a refusal too (`Invalid`), with its reason: enforcement must fail closed.
pub async fn verify(
    source: &dyn SignatureSource,
    repo: &str,
    digest: &Digest,
    roots: &TrustRoots,
) -> Verdict {
    match list_signatures(source, repo, digest, roots).await {
        Ok(found) => verdict_of(&found),
        Err(e) => Verdict::Refused(Refusal::Invalid(e.to_string())),
    }
}

/// The verdict of the signatures found: the first that verified, else the most telling
/// refusal (`NoSignature` when there are none).
pub fn verdict_of(signatures: &[SignatureInfo]) -> Verdict {
    let mut worst = Refusal::NoSignature;
    for signature in signatures {
        match &signature.verdict {
            verified @ Verdict::Verified { .. } => return verified.clone(),
            Verdict::Refused(r) if r.weight() > worst.weight() => worst = r.clone(),
            Verdict::Refused(_) => {}
        }
    }
    Verdict::Refused(worst)
}

/// Every signature found for `digest` in `repo`, each with its verdict under `roots`.
/// A source failure (the registry down) is an error; a bad signature is a verdict.
pub async fn list_signatures(
    source: &dyn SignatureSource,
    repo: &str,
    digest: &Digest,
    roots: &TrustRoots,
) -> Result<Vec<SignatureInfo>, TrustError> {
    let mut found = cosign::from_tag(source, repo, digest, roots).await?;
    let referrers = source.referrers(repo, digest).await?;
    let signatures = referrers.iter().filter(|d| {
        let t = d.artifact_type.as_deref();
        t == Some(SIG_ARTIFACT_TYPE) || t == Some(NOTATION_ARTIFACT_TYPE)
    });
    for descriptor in signatures.take(MAX_SIGNATURE_REFERRERS) {
        if descriptor.artifact_type.as_deref() == Some(NOTATION_ARTIFACT_TYPE) {
            found.push(notation::check(source, repo, digest, descriptor, roots).await?);
        } else {
            found.extend(cosign::from_referrer(source, repo, digest, descriptor, roots).await?);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
