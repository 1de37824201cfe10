//! A watched container as the session found it: its name, its inspect, and what it was
//! created from.

use bollard::models::{ContainerInspectResponse, ImageConfig};

use crate::engine::Engine;
use wharf_client::ImageRef;

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

/// The id of the container we run in: docker bind-mounts `/etc/hostname` and friends
/// from `…/containers/<id>/`, which shows in our mount table whatever the hostname is.
pub(crate) fn own_container_id() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    container_id_in(&mounts)
}

fn container_id_in(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let (_, rest) = line.split_once("/containers/")?;
        let id = rest.split('/').next()?;
        (id.len() == 64 && is_image_id(id)).then(|| id.to_owned())
    })
}

/// A container's image reference, unless it is not one a registry can be asked about.
pub(crate) fn parse_reference(reference: &str) -> Result<ImageRef, String> {
    if reference.starts_with("sha256:") || is_image_id(reference) {
        return Err("started from an image id, not a reference: nothing to check".into());
    }
    let image: ImageRef = reference.parse().map_err(|e| format!("{e}"))?;
    if image.digest().is_some() {
        return Err("pinned by digest: nothing to check".into());
    }
    Ok(image)
}

/// A bare 64-hex image id, which docker accepts where a reference goes.
fn is_image_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `?image=a,b` of the HTTP API: containers whose image is listed; an entry without a
/// tag matches every tag of its repository.
/// One that follows tags (`follows`) matches whatever the tag.
pub(crate) fn filter_images(
    watched: Vec<Target>,
    only: Option<&[String]>,
    follows: impl Fn(&Target) -> bool,
) -> Vec<Target> {
    let Some(only) = only.filter(|o| !o.is_empty()) else {
        return watched;
    };
    let wanted: Vec<(ImageRef, bool)> = only
        .iter()
        .filter_map(|s| Some((s.parse().ok()?, has_tag(s))))
        .collect();
    watched
        .into_iter()
        .filter(|t| {
            let Ok(image) = t.reference().parse::<ImageRef>() else {
                return false;
            };
            wanted.iter().any(|(w, tagged)| {
                crate::identity::same_registry(w.registry(), image.registry())
                    && w.repository() == image.repository()
                    && (!tagged || w.tag() == image.tag() || follows(t))
            })
        })
        .collect()
}

fn has_tag(reference: &str) -> bool {
    reference
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_pinned_digests_are_not_checked() {
        assert!(parse_reference(&"a".repeat(64)).is_err());
        assert!(parse_reference(&format!("sha256:{}", "a".repeat(64))).is_err());
        let pinned = format!("localhost:5000/app@sha256:{}", "b".repeat(64));
        assert!(parse_reference(&pinned).unwrap_err().contains("pinned"));
        assert!(parse_reference("localhost:5000/app").is_ok());
    }

    #[test]
    fn our_own_container_is_found_in_the_mount_table() {
        let id = "c".repeat(64);
        let mountinfo = format!("1 2 0:1 / / rw - overlay overlay rw\n3 1 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n");
        assert_eq!(container_id_in(&mountinfo), Some(id));
        assert_eq!(
            container_id_in("1 2 0:1 / / rw - ext4 /dev/sda1 rw\n"),
            None
        );
    }

    #[test]
    fn tags_are_told_from_ports() {
        assert!(has_tag("localhost:5000/app:1"));
        assert!(!has_tag("localhost:5000/app"));
        assert!(!has_tag("busybox"));
    }
}
