//! Just enough of the image and index models to validate a pushed manifest, find what it
//! references and answer the referrers API. The registry stores the client's exact bytes;
//! these types are a read-only view of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media_type as mt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    /// Whether an index entry is for `os/architecture[/variant]` (a variant of `None`
    /// matches any).
    pub fn is_for_platform(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let field = |key: &str| {
            self.platform
                .as_ref()
                .and_then(|p| p.get(key))
                .and_then(|v| v.as_str())
        };
        field("os") == Some(os)
            && field("architecture") == Some(architecture)
            && variant.is_none_or(|v| field("variant") == Some(v))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image (or artifact) manifest: a config and layers.
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("schemaVersion must be 2 (schema1 manifests are deprecated and not accepted)")]
    SchemaVersion,
    #[error("mediaType {body:?} in the manifest does not match Content-Type {header:?}")]
    MediaTypeMismatch { body: String, header: String },
    #[error("manifest has neither a config nor a manifests list")]
    Shape,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest's media type: its own `mediaType`, else the upload's Content-Type, else
    /// the OCI type its shape implies.
    pub media_type: String,
    pub kind: ManifestKind,
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<BTreeMap<String, String>>,
}

fn is_manifest_type(t: &str) -> bool {
    matches!(
        t,
        mt::OCI_MANIFEST | mt::OCI_INDEX | mt::DOCKER_MANIFEST | mt::DOCKER_MANIFEST_LIST
    )
}

impl Manifest {
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(ManifestError::SchemaVersion);
        }
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| is_manifest_type(c));
        if let (Some(body), Some(header)) = (&raw.media_type, header) {
            if body != header {
                return Err(ManifestError::MediaTypeMismatch {
                    body: body.clone(),
                    header: header.to_owned(),
                });
            }
        }
        let kind = match (&raw.manifests, &raw.config) {
            (Some(_), None) => ManifestKind::Index,
            (None, Some(_)) => ManifestKind::Image,
            _ => return Err(ManifestError::Shape),
        };
        let implied = match kind {
            ManifestKind::Image => mt::OCI_MANIFEST,
            ManifestKind::Index => mt::OCI_INDEX,
        };
        let media_type = raw
            .media_type
            .or_else(|| header.map(str::to_owned))
            .unwrap_or_else(|| implied.to_owned());
        Ok(Manifest {
            media_type,
            kind,
            artifact_type: raw.artifact_type,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            annotations: raw.annotations,
        })
    }

    /// Blobs this manifest needs in its repository. Foreign layers (with `urls`) are fetched
    /// from elsewhere by clients, so they need not be present, as in Distribution.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Digest> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|l| {
                !(l.media_type == mt::DOCKER_FOREIGN_LAYER
                    || l.urls.as_ref().is_some_and(|u| !u.is_empty()))
            }))
            .map(|d| &d.digest)
    }

    /// Foreign layers: named, but fetched from their `urls`, so a registry may or may not
    /// hold them. A registry that does must keep them as long as the manifest.
    pub fn foreign_blobs(&self) -> impl Iterator<Item = &Digest> {
        self.layers
            .iter()
            .filter(|l| {
                l.media_type == mt::DOCKER_FOREIGN_LAYER
                    || l.urls.as_ref().is_some_and(|u| !u.is_empty())
            })
            .map(|d| &d.digest)
    }

    /// Child manifests an index needs in its repository.
    pub fn required_manifests(&self) -> impl Iterator<Item = &Digest> {
        self.manifests.iter().map(|d| &d.digest)
    }

    /// The artifact type the referrers API reports: `artifactType`, else the config's media type.
    pub fn referrer_artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.as_str()))
    }

    /// This manifest as an entry of a referrers index.
    pub fn referrer_descriptor(&self, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest,
            size,
            artifact_type: self.referrer_artifact_type().map(str::to_owned),
            annotations: self.annotations.clone(),
            urls: None,
            platform: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{CFG}","size":0}},"layers":[]{extra}}}"#,
            mt::OCI_MANIFEST,
            mt::OCI_CONFIG
        )
    }

    #[test]
    fn parses_image_and_lists_blobs() {
        let m = Manifest::parse(image("").as_bytes(), Some(mt::OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().count(), 1);
        assert_eq!(m.referrer_artifact_type(), Some(mt::OCI_CONFIG));
    }

    #[test]
    fn rejects_mismatched_content_type_and_bad_shape() {
        let err = Manifest::parse(image("").as_bytes(), Some(mt::DOCKER_MANIFEST)).unwrap_err();
        assert!(matches!(err, ManifestError::MediaTypeMismatch { .. }));
        assert_eq!(
            Manifest::parse(br#"{"schemaVersion":2}"#, None),
            Err(ManifestError::Shape)
        );
        assert_eq!(
            Manifest::parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::SchemaVersion)
        );
        assert!(matches!(
            Manifest::parse(b"nope", None),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"x/y","subject":{{"mediaType":"{}","digest":"{CFG}","size":1}}"#,
            mt::OCI_MANIFEST
        );
        let m = Manifest::parse(image(&extra).as_bytes(), None).unwrap();
        assert_eq!(m.subject.unwrap().digest.to_string(), CFG);
        assert_eq!(m.artifact_type.as_deref(), Some("x/y"));
    }
}
