//! Signature checks before an update: a container is never recreated on a digest no
//! trusted signature covers.
//!
//! Which containers are checked, and against what:
//! - the label `wharf.watch.verify`: a cosign public key's path, or the name of a rule in
//!   the file `--trust FILE` gives (the `trust:` list of a wharf config, which may be the
//!   registry's own `config.yml`; a rule's `keys:` and `roots:` are used);
//! - `--verify KEY`: a key every watched container's new image must be signed with
//!   (a label names another key or rule for its container).
//!
//! Signatures are read through the same [`Registries`] client as the image, so the
//! check's credentials and token cache serve them too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use wharf_client::trust::{self, RegistrySource, TrustRoots, Verdict};
use wharf_client::ImageRef;
use wharf_oci::sync::lock;
use wharf_oci::Digest;

use crate::check::Registries;

/// The label naming a key or a rule.
pub const VERIFY: &str = "wharf.watch.verify";

/// The `--verify` key and the `--trust` file's rules, loaded at start; keys named by
/// labels are loaded on first use and kept.
#[derive(Default)]
pub struct Verification {
    default: Option<(String, TrustRoots)>,
    rules: HashMap<String, TrustRoots>,
    keys: Mutex<HashMap<String, TrustRoots>>,
}

#[derive(Deserialize)]
struct TrustFile {
    #[serde(default)]
    trust: Vec<FileRule>,
}

#[derive(Deserialize)]
struct FileRule {
    name: Option<String>,
    #[serde(default)]
    keys: Vec<PathBuf>,
    #[serde(default)]
    roots: Vec<PathBuf>,
}

impl Verification {
    /// Load `--verify KEY` and the named rules of `--trust FILE`. A file that cannot be
    /// read stops the start: a watcher that meant to verify must not update unchecked.
    pub fn load(key: Option<&Path>, trust_file: Option<&Path>) -> anyhow::Result<Verification> {
        let mut v = Verification::default();
        if let Some(key) = key {
            let roots = TrustRoots::load(&[key.to_owned()], &[])
                .map_err(|e| anyhow::anyhow!("--verify: {e}"))?;
            v.default = Some((key.display().to_string(), roots));
        }
        if let Some(path) = trust_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--trust {}: {e}", path.display()))?;
            let file: TrustFile = serde_norway::from_str(&text)
                .map_err(|e| anyhow::anyhow!("--trust {}: {e}", path.display()))?;
            for (i, rule) in file.trust.into_iter().enumerate() {
                let Some(name) = rule.name else { continue };
                let roots = TrustRoots::load(&rule.keys, &rule.roots).map_err(|e| {
                    anyhow::anyhow!("--trust {}: trust.{i} ({name}): {e}", path.display())
                })?;
                v.rules.insert(name, roots);
            }
        }
        Ok(v)
    }

    /// Whether any container could need a check.
    pub fn is_configured(&self) -> bool {
        self.default.is_some() || !self.rules.is_empty()
    }

    /// What `labels` ask a new image to be verified with: a rule's name or a key path
    /// from the label, else `--verify`; None when nothing is asked.
    fn roots_for(
        &self,
        labels: &HashMap<String, String>,
    ) -> Result<Option<(String, TrustRoots)>, String> {
        let Some(value) = labels
            .get(VERIFY)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
        else {
            return Ok(self.default.clone());
        };
        if let Some(roots) = self.rules.get(value) {
            return Ok(Some((format!("trust rule \"{value}\""), roots.clone())));
        }
        if let Some(roots) = lock(&self.keys).get(value) {
            return Ok(Some((value.to_owned(), roots.clone())));
        }
        let roots = TrustRoots::load(&[PathBuf::from(value)], &[]).map_err(|e| {
            format!(
                "{VERIFY}={value} is neither a rule in the --trust file nor a readable key: {e}"
            )
        })?;
        lock(&self.keys).insert(value.to_owned(), roots.clone());
        Ok(Some((value.to_owned(), roots)))
    }

    /// None when `digest` may be run (verified, or nothing asks); else why not, for the
    /// report and the notification.
    pub async fn refusal(
        &self,
        registries: &Registries,
        labels: &HashMap<String, String>,
        image: &ImageRef,
        digest: &Digest,
    ) -> Option<String> {
        let (label, roots) = match self.roots_for(labels) {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(why) => return Some(format!("not updated: {why}")),
        };
        let client = match registries.client(image.registry()).await {
            Ok(c) => c,
            Err(e) => {
                return Some(format!(
                    "not updated: cannot read the signatures of {digest}: {e}"
                ))
            }
        };
        let source = RegistrySource { client: &client };
        let repo = image.repository().as_str();
        match trust::verify(&source, repo, digest, &roots).await {
            Verdict::Verified { by, form } => {
                tracing::info!(%image, %digest, %by, %form, "the new image's signature verifies");
                None
            }
            Verdict::Refused(why) => Some(format!(
                "not updated: {image}@{digest} does not verify under {label}: {why}; the container keeps its image"
            )),
        }
    }
}
