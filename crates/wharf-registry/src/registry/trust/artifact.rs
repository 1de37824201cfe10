//! Which manifests a trust rule does not ask a signature of: the signatures themselves and
//! other artifacts that refer to an image (SBOMs, attestations), which clients fetch to
//! verify; nothing a container engine could run.

use wharf_oci::manifest::{Manifest, ManifestKind};
use wharf_oci::Reference;

/// Whether `reference` is one of cosign's tags for a digest's signature, attestation or
/// SBOM (`sha256-<hex>.sig`), or the OCI referrers tag schema's fallback (`sha256-<hex>`).
pub fn is_signature_tag(reference: &Reference) -> bool {
    let Reference::Tag(tag) = reference else {
        return false;
    };
    let tag = tag.to_string();
    let Some(rest) = tag.strip_prefix("sha256-") else {
        return false;
    };
    let (hex, suffix) = rest.split_at(rest.len().min(64));
    hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && (suffix.is_empty() || suffix.starts_with('.'))
}

/// Whether the manifest is an artifact rather than an image: no layer a container engine
/// would unpack (cosign's simple-signing layers, a Notation envelope, an empty config with
/// an `artifactType`), or a referrer of another manifest (`subject`) that is not itself a
/// runnable image. An index is an artifact only when it has a subject.
pub fn is_artifact(bytes: &[u8], media_type: &str) -> bool {
    let Ok(m) = Manifest::parse(bytes, Some(media_type)) else {
        // Not a manifest the registry could have stored as an image: nothing to run.
        return false;
    };
    match m.kind {
        ManifestKind::Index => m.subject.is_some(),
        ManifestKind::Image => !m.layers.iter().any(|l| is_filesystem_layer(&l.media_type)),
    }
}

/// Layer types docker, containerd and podman unpack into a root filesystem.
fn is_filesystem_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_tags_and_the_referrers_fallback_tag_are_signature_tags() {
        let hex = "a".repeat(64);
        for t in [
            format!("sha256-{hex}.sig"),
            format!("sha256-{hex}.att"),
            format!("sha256-{hex}"),
        ] {
            assert!(is_signature_tag(&t.parse().unwrap()), "{t}");
        }
        for t in [
            "latest".to_owned(),
            format!("sha256-{}", "a".repeat(63)),
            format!("sha256-{hex}x"),
        ] {
            assert!(!is_signature_tag(&t.parse().unwrap()), "{t}");
        }
    }

    #[test]
    fn signatures_are_artifacts_and_images_are_not() {
        let d = format!("sha256:{}", "b".repeat(64));
        let manifest = |layer: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":2}},"layers":[{{"mediaType":"{layer}","digest":"{d}","size":2}}]}}"#
            )
        };
        let oci = "application/vnd.oci.image.manifest.v1+json";
        let sig = manifest("application/vnd.dev.cosign.simplesigning.v1+json");
        assert!(is_artifact(sig.as_bytes(), oci));
        let image = manifest("application/vnd.oci.image.layer.v1.tar+gzip");
        assert!(!is_artifact(image.as_bytes(), oci));
        let docker = manifest("application/vnd.docker.image.rootfs.diff.tar.gzip");
        assert!(!is_artifact(docker.as_bytes(), oci));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{oci}","digest":"{d}","size":2}}]}}"#
        );
        assert!(!is_artifact(
            index.as_bytes(),
            "application/vnd.oci.image.index.v1+json"
        ));
    }
}
