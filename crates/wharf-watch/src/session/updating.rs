//! The updating half of a session: pull, swap, confirm or roll back, clean up.

// The session's own vocabulary, shared by its halves.
use super::*;

impl Watcher {
    /// Pull the checked digest and swap the container. `Ok(None)`: the pulled image is
    /// the one already running (the engine had recorded no digest for it).
    pub(super) async fn update(
        &self,
        c: &Checked,
        deps: &Dependencies,
        pulled: &mut HashMap<String, Result<String, String>>,
        replaced_ids: &mut HashMap<String, String>,
    ) -> Result<Option<Replaced>, NotReplaced> {
        let image_id = self.new_image(c, pulled).await?;
        if image_id == c.target.image_id() && !checking::moved(c) {
            return Ok(None);
        }
        tracing::info!(container = %c.target.name, image = %c.reference, id = %image_id, "new image ready; replacing the container");
        let old_image = c.target.image_config(&self.engine).await;
        let target = self.relabelled(&c.target, &image_id).await;
        let stopped = self.dependants().stop(&c.target, deps).await;
        let result = update::replace(
            &self.engine,
            &target,
            &old_image,
            &c.reference,
            &image_id,
            &self.settings.timing,
        )
        .await;
        match result {
            Ok(mut replaced) => {
                replaced_ids.insert(c.target.id.clone(), c.target.name.clone());
                replaced.stopped_dependants = stopped;
                Ok(Some(replaced))
            }
            Err(e) => {
                self.dependants().start_all(&stopped, replaced_ids).await;
                Err(e)
            }
        }
    }

    /// The checked image's local id: the one named locally (no-pull), or the checked
    /// digest, pulled once per reference per session.
    pub(super) async fn new_image(
        &self,
        c: &Checked,
        pulled: &mut HashMap<String, Result<String, String>>,
    ) -> Result<String, NotReplaced> {
        match (&c.local, &c.image, &c.latest) {
            (Some(Ok(local)), _, _) => Ok(local.clone()),
            (None, Ok(image), Some(Ok(digest))) => match pulled.get(&image.to_string()) {
                Some(result) => result.clone(),
                None => {
                    let result = self.pull(image, digest).await;
                    pulled.insert(image.to_string(), result.clone());
                    result
                }
            }
            .map_err(NotReplaced::Failed),
            _ => Err(NotReplaced::Failed("nothing to update to".into())),
        }
    }

    /// Pull exactly the checked digest, with the check's credentials.
    pub(super) async fn pull(&self, image: &ImageRef, digest: &Digest) -> Result<String, String> {
        let credentials = self
            .registries
            .docker_credentials(image.registry())
            .await
            .map_err(|e| e.to_string())?;
        self.engine
            .pull_checked(image, digest, credentials)
            .await
            .map_err(|e| e.to_string())
    }

    /// After a replacement: the grace period, rollback if needed, dependants restarted.
    pub(super) async fn finish(
        &self,
        replaced: &Replaced,
        deps: &Dependencies,
        replaced_ids: &HashMap<String, String>,
        line: &mut ContainerReport,
    ) {
        let confirmed = update::confirm(&self.engine, replaced, &self.settings.timing).await;
        if confirmed.is_ok() {
            self.record_update(replaced, line);
        }
        if let Err(undone) = confirmed {
            match undone {
                Unconfirmed::RolledBack(why) => {
                    self.remember_rollback(&replaced.target, line, why, &replaced.image_id);
                }
                Unconfirmed::Down(why) => {
                    line.outcome = Outcome::Failed;
                    line.detail = Some(why.clone());
                    self.remember(&replaced.target, line, why);
                }
            }
        }
        let trouble = self
            .dependants()
            .restart(replaced, deps, replaced_ids)
            .await;
        if !trouble.is_empty() {
            let detail = line.detail.take().into_iter().chain(trouble);
            line.detail = Some(detail.collect::<Vec<_>>().join("; "));
        }
    }

    /// The new container would not start: the old one runs again.
    pub(super) fn rolled_back(
        &self,
        c: &Checked,
        line: &mut ContainerReport,
        why: String,
        tried: String,
    ) {
        self.remember_rollback(&c.target, line, why, &tried);
    }

    /// A rolled-back line: says which image runs again, and remembers the one that
    /// failed so no check tries it again until the tag moves.
    fn remember_rollback(
        &self,
        target: &Target,
        line: &mut ContainerReport,
        why: String,
        tried: &str,
    ) {
        self.record_auto_rollback(target, line, &why, tried);
        let running = running_image(target, line);
        line.outcome = Outcome::RolledBack;
        line.detail = Some(format!("{why}; rolled back: {running} runs again"));
        tracing::warn!(container = %line.name, image = %line.image, failed = line.new_digest.as_deref().unwrap_or("?"), %running, "rolled back: the old container runs again; this image is not retried until the tag moves");
        self.remember(target, line, why);
    }

    fn remember(&self, target: &Target, line: &ContainerReport, why: String) {
        let Some(digest) = line.new_digest.clone() else {
            return;
        };
        let rejection = Rejection {
            container_id: target.id.clone(),
            digest,
            image: line.image.clone(),
            running: running_image(target, line),
            reason: why,
            at: now(),
        };
        self.rejections.insert(&line.name, rejection);
    }

    /// Remove old images nothing uses any more.
    pub(super) async fn cleanup(&self, checked: &[Checked], lines: &[ContainerReport]) {
        let updated: HashSet<&str> = lines
            .iter()
            .filter(|l| l.outcome == Outcome::Updated)
            .map(|l| l.name.as_str())
            .collect();
        let kept = self.fleet.history.protected();
        let old_images: HashSet<String> = checked
            .iter()
            .filter(|c| updated.contains(c.target.name.as_str()))
            .flat_map(|c| {
                // Images that left the kept window with this update go now too.
                let earlier = self.fleet.history.mentioned(&c.target.name);
                earlier.into_iter().chain([c.target.image_id().to_owned()])
            })
            .filter(|id| !kept.contains(id))
            .collect();
        if !kept.is_empty() {
            tracing::debug!(
                kept = kept.len(),
                "earlier images kept for rollbacks (--keep-previous)"
            );
        }
        let in_use: HashSet<String> = match self.engine.list_containers(true).await {
            Ok(list) => list.into_iter().filter_map(|c| c.image_id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cleanup skipped: cannot list containers");
                return;
            }
        };
        for id in old_images.difference(&in_use) {
            let names = match self.engine.inspect_image(id).await {
                Ok(image) => repositories(&image),
                Err(e) if crate::engine::is_not_found(&e) => continue,
                Err(e) => {
                    tracing::warn!(image = %id, error = %e, "old image kept: cannot inspect it");
                    continue;
                }
            };
            match self.engine.remove_image(id, names.len() > 1).await {
                Ok(()) => {
                    tracing::info!(image = %id, names = %names.join(", "), "removed the old image")
                }
                Err(e) if crate::engine::is_not_found(&e) => {}
                // Taken by a container created since the list above: it stays, rightly.
                Err(crate::engine::EngineError::Api {
                    status: Some(409),
                    detail,
                    ..
                }) => tracing::info!(image = %id, %detail, "old image kept: in use"),
                Err(e) => tracing::warn!(image = %id, error = %e, "old image kept"),
            }
        }
    }
}

/// What a rolled-back container runs: its image's registry digest when known, else its id.
fn running_image(target: &Target, line: &ContainerReport) -> String {
    line.old_digest
        .clone()
        .unwrap_or_else(|| target.image_id().to_owned())
}

/// The repositories naming an image, by tag or by digest, each once.
fn repositories(image: &bollard::models::ImageInspect) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let tags = image.repo_tags.iter().flatten();
    for reference in tags.chain(image.repo_digests.iter().flatten()) {
        let repo = match reference.split_once('@') {
            Some((repo, _)) => repo,
            // The tag follows the last colon that is not part of a registry port.
            None => match reference.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => repo,
                _ => reference,
            },
        };
        if !names.iter().any(|n| n == repo) {
            names.push(repo.to_owned());
        }
    }
    names
}
