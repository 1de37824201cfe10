//! The session's fleet half: holding updates (approvals, windows), recording history, and
//! rolling a container back to an earlier image on request, through the same transactional
//! recreate an update uses (health-gated: a rollback that does not stay up is undone).

// The session's own vocabulary, shared by its halves.
use super::*;

use crate::history::{keep_of, Change, ChangeKind, ImageAt, Record};
use crate::hold::Held;

/// Why a rollback did not happen; `status` is the HTTP status the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no container is named {0} on this host: check the name with `docker ps -a`")]
    NoContainer(String),
    #[error("{0}")]
    NoTarget(String),
    #[error("{0}")]
    Failed(String),
    #[error("the Docker Engine: {0}")]
    Engine(String),
}

impl RollbackError {
    pub fn status(&self) -> u16 {
        match self {
            RollbackError::NoContainer(_) => 404,
            RollbackError::NoTarget(_) | RollbackError::Failed(_) => 409,
            RollbackError::Engine(_) => 502,
        }
    }
}

/// A container's history as the API and `wharf watch history` show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HistoryView {
    pub container: String,
    pub host: Option<String>,
    /// How many earlier images it keeps, and which they are (most recent first).
    pub keep: usize,
    pub kept: Vec<ImageAt>,
    /// Newest first.
    pub changes: Vec<Change>,
}

impl HistoryView {
    pub fn of(name: &str, host: Option<&str>, record: Record) -> HistoryView {
        let kept = record.kept();
        let mut changes = record.changes;
        changes.reverse();
        HistoryView {
            container: name.to_owned(),
            host: host.map(str::to_owned),
            keep: record.keep,
            kept,
            changes,
        }
    }
}

impl Watcher {
    /// `target` as it is to be recreated on `image_id`: compose labels brought up to date.
    pub(super) async fn relabelled(&self, target: &Target, image_id: &str) -> Target {
        crate::compose::relabel(
            target,
            image_id,
            self.fleet.compose.as_deref(),
            self.fleet.docker_host.as_deref(),
        )
        .await
    }

    /// The compose containers among `checked` put in their projects' dependency order,
    /// in the places they had (compose 1.29 labels no dependencies).
    pub(super) async fn compose_order(&self, checked: Vec<Checked>) -> Vec<Checked> {
        let targets: Vec<Target> = checked.iter().map(|c| c.target.clone()).collect();
        let ranks = crate::compose::service_ranks(
            &targets,
            self.fleet.compose.as_deref(),
            self.fleet.docker_host.as_deref(),
        )
        .await;
        if ranks.is_empty() {
            return checked;
        }
        let slots: Vec<usize> = (0..checked.len())
            .filter(|&i| ranks.contains_key(&checked[i].target.name))
            .collect();
        let mut items: Vec<Option<Checked>> = checked.into_iter().map(Some).collect();
        let mut ranked: Vec<Checked> = slots.iter().filter_map(|&i| items[i].take()).collect();
        ranked.sort_by_key(|c| ranks.get(&c.target.name).copied());
        for (slot, c) in slots.into_iter().zip(ranked) {
            items[slot] = Some(c);
        }
        items.into_iter().flatten().collect()
    }

    /// Whether a found update may run now (approval, window); if not, why it waits.
    pub(super) fn admit(&self, c: &Checked, line: &ContainerReport) -> Result<(), String> {
        let digest = line.new_digest.as_deref().unwrap_or_default();
        self.fleet.holds.admit(
            &c.target.name,
            &c.target.labels(),
            &c.reference,
            digest,
            &self.fleet.windows,
            self.fleet.clock.now(),
        )
    }

    fn keep(&self, target: &Target) -> usize {
        keep_of(target.labels().0, self.fleet.keep_previous)
    }

    /// An update that stood its grace period.
    pub(super) fn record_update(&self, replaced: &Replaced, line: &ContainerReport) {
        let target = &replaced.target;
        self.fleet.holds.done(&target.name);
        let change = Change {
            at: now(),
            kind: ChangeKind::Update,
            reference: line.image.clone(),
            from: ImageAt {
                id: target.image_id().to_owned(),
                digest: line.old_digest.clone(),
            },
            to: ImageAt {
                id: replaced.image_id.clone(),
                digest: line.new_digest.clone(),
            },
            reason: line.detail.clone(),
            host: None,
        };
        self.fleet
            .history
            .record(&target.name, self.keep(target), change);
    }

    /// An update undone because the new container failed: the history says why.
    pub(super) fn record_auto_rollback(
        &self,
        target: &Target,
        line: &ContainerReport,
        why: &str,
        tried: &str,
    ) {
        self.fleet.holds.done(&target.name);
        let change = Change {
            at: now(),
            kind: ChangeKind::AutoRollback,
            reference: line.image.clone(),
            from: ImageAt {
                id: target.image_id().to_owned(),
                digest: line.old_digest.clone(),
            },
            to: ImageAt {
                id: tried.to_owned(),
                digest: line.new_digest.clone(),
            },
            reason: Some(why.to_owned()),
            host: None,
        };
        self.fleet
            .history
            .record(&target.name, self.keep(target), change);
    }

    /// `name`'s history.
    pub fn history(&self, name: &str) -> HistoryView {
        let record = self.fleet.history.get(name);
        HistoryView::of(name, self.fleet.history.host(), record)
    }

    /// The updates waiting for an approval or a window.
    pub fn pending(&self) -> Vec<Held> {
        self.fleet.holds.list()
    }

    /// Approve `name`'s held update (to `digest`, or the one it waits with). Returns the
    /// image reference to check now, and the digest approved.
    pub fn approve(&self, name: &str, digest: Option<&str>) -> Result<(String, String), String> {
        self.fleet.holds.approve(name, digest)
    }

    /// Recreate `name` on an earlier image: `to` (a digest or image id from its history,
    /// or any digest of its repository), else the one it ran before. Waits for any
    /// session under way; the new container must stay up for the grace period, or the
    /// current one is put back. The image rolled away from is not updated to again
    /// until its tag moves.
    pub async fn rollback(
        &self,
        name: &str,
        to: Option<&str>,
        reason: &str,
    ) -> Result<Change, RollbackError> {
        let _one_at_a_time = self.running.lock().await;
        self.recover_now().await;
        let (all, _) = self
            .targets()
            .await
            .map_err(|e| RollbackError::Engine(e.to_string()))?;
        let target = all
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| RollbackError::NoContainer(name.to_owned()))?;
        let reference = target.reference().to_owned();
        let parsed = parse_reference(&reference).ok();
        let record = self.fleet.history.get(name);
        let goal = self.rollback_goal(&target, &record, to)?;
        let image_id = self.local_or_pulled(&goal, parsed.as_ref()).await?;
        let current = ImageAt {
            id: target.image_id().to_owned(),
            digest: match &parsed {
                Some(image) => self
                    .old_digest(&target, image, None)
                    .await
                    .map(|d| d.to_string()),
                None => None,
            },
        };
        let goal = ImageAt {
            id: image_id,
            ..goal
        };
        let deps = Dependencies::of(&all);
        let swapped = self.swap_to(&target, &reference, &goal, &deps).await;
        let change = Change {
            at: now(),
            kind: ChangeKind::Rollback,
            reference: reference.clone(),
            from: current.clone(),
            to: goal.clone(),
            reason: Some(reason.to_owned()),
            host: None,
        };
        match swapped {
            Ok(new_id) => {
                self.fleet
                    .history
                    .record(name, self.keep(&target), change.clone());
                self.reject_after_rollback(name, &new_id, &reference, &current, &goal);
                tracing::info!(container = %name, from = %current.id, to = %goal.id, "rolled back on request");
                Ok(change)
            }
            Err(why) => {
                let failed = Change {
                    kind: ChangeKind::AutoRollback,
                    reason: Some(format!("the requested rollback failed: {why}")),
                    ..change
                };
                self.fleet.history.record(name, self.keep(&target), failed);
                Err(RollbackError::Failed(format!(
                    "rolling {name} back to {} failed, and it runs {} again: {why}",
                    goal.digest.as_deref().unwrap_or(&goal.id),
                    current.digest.as_deref().unwrap_or(&current.id)
                )))
            }
        }
    }

    fn rollback_goal(
        &self,
        target: &Target,
        record: &Record,
        to: Option<&str>,
    ) -> Result<ImageAt, RollbackError> {
        let goal = match (record.rollback_target(to), to) {
            (Some(goal), _) => goal,
            // Not in the history (it was lost, or the image predates it): a digest can
            // still be pulled from the container's repository.
            (None, Some(digest)) if digest.parse::<Digest>().is_ok() => ImageAt {
                id: String::new(),
                digest: Some(digest.to_owned()),
            },
            (None, Some(other)) => {
                return Err(RollbackError::NoTarget(format!(
                    "{other} is not an image {} ran (see `wharf watch history {}`), nor a digest (sha256:…) to pull",
                    target.name, target.name
                )))
            }
            (None, None) => {
                return Err(RollbackError::NoTarget(format!(
                    "{} has no earlier image in its history: name one with --to sha256:…",
                    target.name
                )))
            }
        };
        if !goal.id.is_empty() && goal.id == target.image_id() {
            return Err(RollbackError::NoTarget(format!(
                "{} already runs {}",
                target.name,
                goal.digest.as_deref().unwrap_or(&goal.id)
            )));
        }
        Ok(goal)
    }

    /// The goal's local image id: on the engine still (kept), else pulled by digest.
    async fn local_or_pulled(
        &self,
        goal: &ImageAt,
        image: Option<&ImageRef>,
    ) -> Result<String, RollbackError> {
        if !goal.id.is_empty() && self.engine.inspect_image(&goal.id).await.is_ok() {
            return Ok(goal.id.clone());
        }
        let (Some(image), Some(digest)) = (image, goal.digest.as_deref()) else {
            return Err(RollbackError::NoTarget(format!(
                "the image {} is no longer on the engine and its registry digest is not known; raise --keep-previous to keep earlier images",
                goal.id
            )));
        };
        let digest: Digest = digest
            .parse()
            .map_err(|_| RollbackError::NoTarget(format!("{digest} is not a digest")))?;
        tracing::info!(%image, %digest, "the rollback image is not on the engine; pulling it by digest");
        self.pull(image, &digest)
            .await
            .map_err(|e| RollbackError::Failed(format!("pulling {image}@{digest}: {e}")))
    }

    /// Point the container's tag at the goal image and swap the container onto it,
    /// health-gated; the tag goes back if it does not stand. Returns the new container id.
    async fn swap_to(
        &self,
        target: &Target,
        reference: &str,
        goal: &ImageAt,
        deps: &Dependencies,
    ) -> Result<String, String> {
        let tagged = split_tag(reference);
        if let Some((repo, tag)) = &tagged {
            self.engine
                .tag(&goal.id, repo, tag)
                .await
                .map_err(|e| e.to_string())?;
        }
        let untag = || async {
            if let Some((repo, tag)) = &tagged {
                let _ = self.engine.tag(target.image_id(), repo, tag).await;
            }
        };
        let image = if tagged.is_some() {
            reference
        } else {
            &goal.id
        };
        let old_image = target.image_config(&self.engine).await;
        let relabelled = self.relabelled(target, &goal.id).await;
        let stopped = self.dependants().stop(target, deps).await;
        let timing = &self.settings.timing;
        let mut replaced_ids = HashMap::new();
        let replaced = match update::replace(
            &self.engine,
            &relabelled,
            &old_image,
            image,
            &goal.id,
            timing,
        )
        .await
        {
            Ok(replaced) => replaced,
            Err(
                NotReplaced::Failed(why) | NotReplaced::RolledBack(why) | NotReplaced::Skipped(why),
            ) => {
                self.dependants().start_all(&stopped, &replaced_ids).await;
                untag().await;
                return Err(why);
            }
        };
        let replaced = Replaced {
            stopped_dependants: stopped,
            ..replaced
        };
        replaced_ids.insert(target.id.clone(), target.name.clone());
        let confirmed = update::confirm(&self.engine, &replaced, timing).await;
        let trouble = self
            .dependants()
            .restart(&replaced, deps, &replaced_ids)
            .await;
        for t in trouble {
            tracing::warn!(container = %target.name, "{t}");
        }
        match confirmed {
            Ok(()) => Ok(replaced.new_id),
            Err(Unconfirmed::RolledBack(why) | Unconfirmed::Down(why)) => {
                untag().await;
                Err(why)
            }
        }
    }

    /// The image rolled away from is not updated to again until its tag moves, as after
    /// an automatic rollback; one rolled back to is no longer rejected.
    fn reject_after_rollback(
        &self,
        name: &str,
        new_id: &str,
        reference: &str,
        from: &ImageAt,
        to: &ImageAt,
    ) {
        self.rejections.remove(name);
        let Some(digest) = from
            .digest
            .clone()
            .filter(|d| Some(d) != to.digest.as_ref())
        else {
            return;
        };
        self.rejections.insert(
            name,
            Rejection {
                container_id: new_id.to_owned(),
                digest,
                image: reference.to_owned(),
                running: to.digest.clone().unwrap_or_else(|| to.id.clone()),
                reason: "rolled back on request".into(),
                at: now(),
            },
        );
    }
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); `latest` when untagged; `None` for a
/// digest-pinned reference or an image id, which name no tag to move.
fn split_tag(reference: &str) -> Option<(String, String)> {
    parse_reference(reference).ok()?;
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => Some((repo.to_owned(), tag.to_owned())),
        _ => Some((reference.to_owned(), "latest".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags_split_from_registry_ports() {
        let split = |r: &str| super::split_tag(r);
        assert_eq!(
            split("localhost:5000/app:1"),
            Some(("localhost:5000/app".into(), "1".into()))
        );
        assert_eq!(
            split("localhost:5000/app"),
            Some(("localhost:5000/app".into(), "latest".into()))
        );
        assert_eq!(split(&format!("app@sha256:{}", "a".repeat(64))), None);
    }
}
