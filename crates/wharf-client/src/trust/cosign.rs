//! cosign's key-based signature format: the simple-signing payload, the signature image
//! stored under `sha256-<hex>.sig` (or as an OCI 1.1 referrer), and its verification.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use wharf_oci::media_type as mt;
use wharf_oci::{Descriptor, Digest, Manifest};

use super::Refusal;
use super::{
    SignatureForm, SignatureInfo, SignatureSource, TrustError, TrustRoots, Verdict,
    MAX_SIGNATURE_BYTES, MAX_SIGNATURE_LAYERS,
};

/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding the base64 signature on that layer.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `config.mediaType` (so the referrers API's artifact type) of cosign's OCI 1.1
/// signature referrer (`cosign sign --registry-referrers-mode=oci-1-1`).
pub const SIG_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The `type` every cosign image signature's payload carries.
const PAYLOAD_TYPE: &str = "cosign container image signature";

/// cosign's signature tag for a digest: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algorithm().as_str(), digest.hex())
}

/// The simple-signing payload cosign signs: the image's name (without tag or digest, as
/// `docker-reference`) and its manifest digest. Key order and spacing follow cosign's
/// Go encoder, so a payload made here is byte-for-byte what cosign makes.
pub fn payload(docker_reference: &str, digest: &Digest) -> Vec<u8> {
    let body = json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A signature image: its config and manifest bytes, for `layers` (each the payload's
/// descriptor with its signature annotation). With `subject`, the OCI 1.1 referrer form.
pub fn signature_manifest(
    layers: &[Descriptor],
    subject: Option<&Descriptor>,
) -> (Vec<u8>, Vec<u8>) {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    // The config cosign writes for a signature image: an empty image whose rootfs lists
    // the payload layers.
    let config = json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let config_type = if subject.is_some() {
        SIG_ARTIFACT_TYPE
    } else {
        mt::OCI_CONFIG
    };
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "config": {
            "mediaType": config_type,
            "size": config.len(),
            "digest": Digest::sha256_of(&config).to_string(),
        },
        "layers": layers,
    });
    if let Some(subject) = subject {
        manifest["subject"] = json!({
            "mediaType": subject.media_type,
            "size": subject.size,
            "digest": subject.digest.to_string(),
        });
    }
    (config, serde_json::to_vec(&manifest).unwrap_or_default())
}

/// The signatures under the `.sig` tag.
pub(super) async fn from_tag(
    source: &dyn SignatureSource,
    repo: &str,
    digest: &Digest,
    roots: &TrustRoots,
) -> Result<Vec<SignatureInfo>, TrustError> {
    let Some((bytes, _)) = source.manifest(repo, &signature_tag(digest)).await? else {
        return Ok(Vec::new());
    };
    let at = Digest::sha256_of(&bytes);
    check_manifest(
        source,
        repo,
        digest,
        &bytes,
        at,
        SignatureForm::CosignTag,
        roots,
    )
    .await
}

/// The signatures in one cosign referrer.
pub(super) async fn from_referrer(
    source: &dyn SignatureSource,
    repo: &str,
    digest: &Digest,
    referrer: &Descriptor,
    roots: &TrustRoots,
) -> Result<Vec<SignatureInfo>, TrustError> {
    let at = referrer.digest.clone();
    let Some((bytes, _)) = source.manifest(repo, &at.to_string()).await? else {
        return Ok(Vec::new());
    };
    check_manifest(
        source,
        repo,
        digest,
        &bytes,
        at,
        SignatureForm::CosignReferrer,
        roots,
    )
    .await
}

async fn check_manifest(
    source: &dyn SignatureSource,
    repo: &str,
    digest: &Digest,
    bytes: &[u8],
    at: Digest,
    form: SignatureForm,
    roots: &TrustRoots,
) -> Result<Vec<SignatureInfo>, TrustError> {
    let info = |verdict: Verdict, signer: Option<String>, layer: usize| SignatureInfo {
        form,
        manifest: at.clone(),
        signer,
        verdict,
        details: BTreeMap::from([("layer".to_owned(), layer.to_string())]),
    };
    let refused = |why: String| vec![info(Verdict::Refused(Refusal::Invalid(why)), None, 0)];
    let manifest = match Manifest::parse(bytes, None) {
        Ok(m) => m,
        Err(e) => return Ok(refused(format!("signature manifest {at}: {e}"))),
    };
    if manifest.layers.len() > MAX_SIGNATURE_LAYERS {
        return Ok(refused(format!(
            "signature manifest {at} has {} layers; at most {MAX_SIGNATURE_LAYERS} are read",
            manifest.layers.len()
        )));
    }
    let mut found = Vec::new();
    for (i, layer) in manifest.layers.iter().enumerate() {
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            continue;
        }
        let (verdict, signer) = match check_layer(source, repo, digest, layer, roots).await? {
            Ok((by, signer)) => (Verdict::Verified { by, form }, Some(signer)),
            Err(refusal) => (Verdict::Refused(refusal), None),
        };
        found.push(info(verdict, signer, i));
    }
    if found.is_empty() {
        return Ok(refused(format!(
            "signature manifest {at} has no {SIMPLE_SIGNING_MEDIA_TYPE} layer"
        )));
    }
    Ok(found)
}

/// One payload layer: its signature under a trusted key, then its digest.
async fn check_layer(
    source: &dyn SignatureSource,
    repo: &str,
    digest: &Digest,
    layer: &Descriptor,
    roots: &TrustRoots,
) -> Result<Result<(String, String), Refusal>, TrustError> {
    let invalid = |why: String| Ok(Err(Refusal::Invalid(why)));
    let annotations = layer.annotations.as_ref();
    let Some(signature) = annotations.and_then(|a| a.get(SIGNATURE_ANNOTATION)) else {
        return invalid(format!(
            "payload layer {} has no {SIGNATURE_ANNOTATION} annotation",
            layer.digest
        ));
    };
    if signature.len() as u64 > MAX_SIGNATURE_BYTES {
        return invalid(format!(
            "the {SIGNATURE_ANNOTATION} annotation is {} bytes, more than {MAX_SIGNATURE_BYTES}",
            signature.len()
        ));
    }
    let Ok(signature) = B64.decode(signature.trim()) else {
        return invalid(format!(
            "the {SIGNATURE_ANNOTATION} annotation is not base64"
        ));
    };
    if layer.size > MAX_SIGNATURE_BYTES {
        return invalid(format!(
            "payload {} is {} bytes, more than {MAX_SIGNATURE_BYTES}",
            layer.digest, layer.size
        ));
    }
    let payload = match source.blob(repo, &layer.digest, MAX_SIGNATURE_BYTES).await {
        Ok(p) => p,
        Err(e @ TrustError::TooLarge { .. }) => return invalid(e.to_string()),
        Err(e) => return Err(e),
    };
    if Digest::of(layer.digest.algorithm(), &payload) != layer.digest {
        return invalid(format!(
            "payload {} does not hash to its digest",
            layer.digest
        ));
    }
    let Some(key) = roots
        .keys
        .iter()
        .find(|k| k.key.verify_cosign(&payload, &signature))
    else {
        return Ok(Err(Refusal::UntrustedKey));
    };
    let signed: Value = match serde_json::from_slice(&payload) {
        Ok(v) => v,
        Err(e) => return invalid(format!("payload is not JSON: {e}")),
    };
    let critical = &signed["critical"];
    if critical["type"].as_str() != Some(PAYLOAD_TYPE) {
        return invalid(format!("payload type is not {PAYLOAD_TYPE:?}"));
    }
    match critical["image"]["docker-manifest-digest"].as_str() {
        Some(named) if named == digest.to_string() => {
            Ok(Ok((key.label.clone(), key.label.clone())))
        }
        Some(_) => Ok(Err(Refusal::OtherDigest)),
        None => invalid("payload names no critical.image.docker-manifest-digest".into()),
    }
}
