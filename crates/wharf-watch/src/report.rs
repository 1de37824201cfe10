//! What one check ("session") found and did, per container: the shared currency of the
//! notifiers, the HTTP API's metrics and the log.

use serde::Serialize;

/// What happened to one container in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The registry has nothing newer.
    Fresh,
    /// A newer image exists; the container is monitor-only, so nothing was changed.
    Stale,
    /// Recreated on the newer image.
    Updated,
    /// The new container exited or went unhealthy; the old one runs again.
    RolledBack,
    /// The check or the update failed; the old container is untouched or restored,
    /// unless the detail says that the service is down.
    Failed,
    /// Not checked: pinned by digest, a local image, or a pre-check hook said no.
    Skipped,
}

/// One container's line in the report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ContainerReport {
    /// The container name, without docker's leading `/`.
    pub name: String,
    /// The image reference the container was started from, as the user wrote it.
    pub image: String,
    /// The digest the running container's image has in the registry, when known.
    pub old_digest: Option<String>,
    /// The registry's digest for the reference now, when it was read.
    pub new_digest: Option<String>,
    pub outcome: Outcome,
    /// Why it failed, was rolled back or skipped: what and where, never a secret.
    pub detail: Option<String>,
    /// The Docker host it runs on, when the watcher manages several (`--host` given more
    /// than once, or agents): the name the fleet knows it by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl ContainerReport {
    /// `name`, or `name on host` in a fleet: how reports and notifications name it.
    pub fn label(&self) -> String {
        match &self.host {
            Some(host) => format!("{} on {host}", self.name),
            None => self.name.clone(),
        }
    }
}

/// One session: every container looked at, in the order they were handled.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct SessionReport {
    /// Seconds since the Unix epoch when the session started and ended.
    pub started: u64,
    pub finished: u64,
    pub containers: Vec<ContainerReport>,
}

impl SessionReport {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.containers
            .iter()
            .filter(|c| c.outcome == outcome)
            .count()
    }

    /// Containers scanned: every one whose image was compared with the registry.
    pub fn scanned(&self) -> usize {
        self.containers.len() - self.count(Outcome::Skipped)
    }

    /// Failed updates, including those rolled back (what the exit code and the failed
    /// metric count).
    pub fn failed(&self) -> usize {
        self.count(Outcome::Failed) + self.count(Outcome::RolledBack)
    }

    /// Whether anything is worth telling a person: an update, a newer image, a failure.
    pub fn is_noteworthy(&self) -> bool {
        self.containers
            .iter()
            .any(|c| !matches!(c.outcome, Outcome::Fresh | Outcome::Skipped))
    }

    /// A human summary, one line per noteworthy container: the body of Slack and email
    /// notifications.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "wharf watch: {} scanned, {} updated, {} failed, {} rolled back, {} with a newer image (monitor-only)\n",
            self.scanned(),
            self.count(Outcome::Updated),
            self.count(Outcome::Failed),
            self.count(Outcome::RolledBack),
            self.count(Outcome::Stale),
        );
        for c in self.containers.iter().filter(|c| {
            !matches!(c.outcome, Outcome::Fresh | Outcome::Skipped) || c.detail.is_some()
        }) {
            let old = short(c.old_digest.as_deref());
            let new = short(c.new_digest.as_deref());
            let verb = match c.outcome {
                Outcome::Fresh => "is up to date",
                Outcome::Stale => "has a newer image",
                Outcome::Updated => "updated",
                Outcome::RolledBack => "rolled back",
                Outcome::Failed => "failed",
                Outcome::Skipped => "skipped",
            };
            text.push_str(&format!(
                "- {} ({}) {verb}: {old} → {new}",
                c.label(),
                c.image
            ));
            if let Some(detail) = &c.detail {
                text.push_str(&format!(" — {detail}"));
            }
            text.push('\n');
        }
        text
    }
}

/// `sha256:0123456789ab` — enough to recognise a digest in a chat message.
fn short(digest: Option<&str>) -> String {
    match digest {
        Some(d) => d.chars().take(19).collect(),
        None => "?".to_owned(),
    }
}
