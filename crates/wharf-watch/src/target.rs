//! A watched container as the session found it: its name, its inspect, and what it was
//! created from.

use bollard::models::{ContainerInspectResponse, ImageConfig};

use crate::engine::Engine;
use crate::labels::Labels;

/// A container the session may replace, as found at the start of the session.
#[derive(Clone)]
pub struct Target {
    pub id: String,
    pub name: String,
    pub inspect: ContainerInspectResponse,
    pub was_running: bool,
}

impl Target {
    pub fn labels(&self) -> Labels<'_> {
        labels_of(&self.inspect)
    }

    pub fn image_id(&self) -> &str {
        self.inspect.image.as_deref().unwrap_or("")
    }

    /// The image reference it was created from, as the user wrote it (`app:latest`).
    pub fn reference(&self) -> &str {
        self.inspect
            .config
            .as_ref()
            .and_then(|c| c.image.as_deref())
            .unwrap_or_default()
    }

    /// The configuration of the image it runs, whose defaults a replacement leaves out.
    pub async fn image_config(&self, engine: &Engine) -> ImageConfig {
        engine
            .inspect_image(self.image_id())
            .await
            .ok()
            .and_then(|i| i.config)
            .unwrap_or_default()
    }
}

pub(crate) fn labels_of(container: &ContainerInspectResponse) -> Labels<'_> {
    static EMPTY: std::sync::OnceLock<std::collections::HashMap<String, String>> =
        std::sync::OnceLock::new();
    let labels = container
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .unwrap_or_else(|| EMPTY.get_or_init(Default::default));
    Labels(labels)
}
