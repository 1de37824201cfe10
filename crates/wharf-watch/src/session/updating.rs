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
        if image_id == c.target.image_id() {
            return Ok(None);
        }
        tracing::info!(container = %c.target.name, image = %c.reference, id = %image_id, "new image ready; replacing the container");
        let old_image = c.target.image_config(&self.engine).await;
        let stopped = self.dependants().stop(&c.target, deps).await;
        let result = update::replace(
            &self.engine,
            &c.target,
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
        if let Err(undone) = update::confirm(&self.engine, replaced, &self.settings.timing).await {
            let (outcome, why) = match undone {
                Unconfirmed::RolledBack(why) => (Outcome::RolledBack, why),
                Unconfirmed::Down(why) => (Outcome::Failed, why),
            };
            line.outcome = outcome;
            line.detail = Some(why);
            if let Some(d) = &line.new_digest {
                if let Ok(d) = d.parse() {
                    lock(&self.rejected).insert(replaced.target.name.clone(), d);
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

    /// Remove old images nothing uses any more.
    pub(super) async fn cleanup(&self, checked: &[Checked], lines: &[ContainerReport]) {
        let updated: HashSet<&str> = lines
            .iter()
            .filter(|l| l.outcome == Outcome::Updated)
            .map(|l| l.name.as_str())
            .collect();
        let old_images: HashSet<String> = checked
            .iter()
            .filter(|c| updated.contains(c.target.name.as_str()))
            .map(|c| c.target.image_id().to_owned())
            .collect();
        let in_use: HashSet<String> = match self.engine.list_containers(true).await {
            Ok(list) => list.into_iter().filter_map(|c| c.image_id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cleanup skipped: cannot list containers");
                return;
            }
        };
        for id in old_images.difference(&in_use) {
            match self.engine.remove_image(id).await {
                Ok(()) => tracing::info!(image = %id, "removed the old image"),
                Err(e) => tracing::warn!(image = %id, error = %e, "old image kept"),
            }
        }
    }
}
