//! The checking half of a session: what each watched container runs, and what its
//! registry has now.

// The session's own vocabulary, shared by its halves.
use super::*;

impl Watcher {
    /// One HEAD per distinct reference, however many containers use it.
    pub(super) async fn check(&self, watched: Vec<Target>) -> Vec<Checked> {
        let mut checked: Vec<Checked> = Vec::new();
        let mut latest: HashMap<String, Result<Digest, String>> = HashMap::new();
        for target in watched {
            let reference = target.reference().to_owned();
            let image = parse_reference(&reference);
            let mut c = Checked {
                target,
                reference,
                image,
                old_digest: None,
                latest: None,
                local: None,
                note: None,
            };
            if c.target
                .labels()
                .no_pull(self.settings.no_pull, self.settings.label_take_precedence)
            {
                c.local = Some(self.local_image(&c.reference).await);
            } else if let Err(why) = self.follow_tags(&mut c).await {
                c.latest = Some(Err(why));
            } else if let Ok(image) = &c.image {
                let key = image.to_string();
                if !latest.contains_key(&key) {
                    let result = self.settled_digest(image).await;
                    latest.insert(key.clone(), result);
                }
                c.latest = latest.get(&key).cloned();
                c.old_digest = self.old_digest(&c.target, image, c.latest.as_ref()).await;
            }
            checked.push(c);
        }
        checked
    }

    /// The digest `image` has now. registry:2 sends a push event as soon as the manifest
    /// is stored and moves the tag just after, so a check set off by the event may see
    /// the tag's old digest: when an event announced another digest, the HEAD is asked
    /// again a few times, a moment apart (then the registry's answer stands: the tag may
    /// have moved on since).
    pub(super) async fn settled_digest(&self, image: &ImageRef) -> Result<Digest, String> {
        let wanted = lock(&self.expected).remove(&crate::identity::image_key(image));
        let mut result = self.registries.latest_digest(image).await;
        let Some(wanted) = wanted else {
            return result.map_err(|e| e.to_string());
        };
        for wait in [100, 250, 500, 1000, 2000] {
            match &result {
                Ok(d) if d != &wanted => {
                    tracing::debug!(%image, now = %d, pushed = %wanted, "the tag has not reached the pushed digest yet; asking again");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    result = self.registries.latest_digest(image).await;
                }
                _ => break,
            }
        }
        result.map_err(|e| e.to_string())
    }

    /// A container with a tag-following policy is checked under the tag it moves to, if
    /// its policy finds one: that reference becomes its image when it is updated.
    pub(super) async fn follow_tags(&self, c: &mut Checked) -> Result<(), String> {
        let Some(policy) = Policy::of(c.target.labels().0, &self.settings.policy)? else {
            return Ok(());
        };
        let Ok(image) = &c.image else { return Ok(()) };
        let followed = policy::follow(&self.registries, &self.sightings, &policy, image).await?;
        c.note = followed.note;
        if let Some(to) = followed.to {
            tracing::info!(container = %c.target.name, from = %c.reference, to = %to.familiar(), "a newer tag matches its policy");
            c.reference = to.familiar();
            c.image = Ok(to);
        }
        Ok(())
    }

    /// Whether `t` follows tags: then a push of any tag of its repository concerns it.
    pub(super) fn follows_tags(&self, t: &Target) -> bool {
        matches!(Policy::of(t.labels().0, &self.settings.policy), Ok(Some(_)))
    }

    /// The id of the image `reference` names on the engine now.
    pub(super) async fn local_image(&self, reference: &str) -> Result<String, String> {
        let image = self
            .engine
            .inspect_image(reference)
            .await
            .map_err(|e| format!("no-pull: {reference} is not on the engine: {e}"))?;
        image
            .id
            .ok_or_else(|| format!("the engine reported no id for {reference}"))
    }

    /// The recorded digest equal to the registry's, if any; else one of the recorded ones.
    pub(super) async fn old_digest(
        &self,
        target: &Target,
        image: &ImageRef,
        latest: Option<&Result<Digest, String>>,
    ) -> Option<Digest> {
        let inspected = self.engine.inspect_image(target.image_id()).await.ok()?;
        let recorded = recorded_digests(&inspected, image);
        match latest {
            Some(Ok(d)) if recorded.contains(d) => Some(d.clone()),
            _ => recorded.into_iter().next(),
        }
    }

    pub(super) fn line(&self, c: &Checked) -> ContainerReport {
        let mut line = ContainerReport {
            name: c.target.name.clone(),
            image: c.reference.clone(),
            old_digest: c.old_digest.as_ref().map(|d| d.to_string()),
            new_digest: None,
            outcome: Outcome::Skipped,
            detail: None,
            host: None,
        };
        if let Some(local) = &c.local {
            match local {
                Ok(id) if id == c.target.image_id() => line.outcome = Outcome::Fresh,
                Ok(id) => {
                    line.outcome = Outcome::Stale;
                    line.new_digest = Some(id.clone());
                    line.detail = Some(format!(
                        "no-pull: {} is now the local image {id}",
                        c.reference
                    ));
                    self.unless_rejected(&c.target, &mut line);
                }
                Err(why) => {
                    line.outcome = Outcome::Failed;
                    line.detail = Some(why.clone());
                }
            }
            return line;
        }
        match (&c.image, &c.latest) {
            (Err(why), _) => line.detail = Some(why.clone()),
            (Ok(_), Some(Ok(latest))) => {
                line.new_digest = Some(latest.to_string());
                line.outcome = if c.old_digest.as_ref() == Some(latest) {
                    Outcome::Fresh
                } else {
                    Outcome::Stale
                };
                if line.outcome == Outcome::Fresh && moved(c) {
                    // The new tag names the image it runs: the container moves to the
                    // tag (so later moves start from it), with no new image.
                    line.outcome = Outcome::Stale;
                    line.detail = Some(format!(
                        "same image, reference updated: {} -> {} ({latest})",
                        c.target.reference(),
                        c.reference
                    ));
                }
                self.unless_rejected(&c.target, &mut line);
            }
            (Ok(_), Some(Err(why))) => {
                line.outcome = Outcome::Failed;
                line.detail = Some(why.clone());
            }
            (Ok(_), None) => {}
        }
        if line.detail.is_none() {
            line.detail.clone_from(&c.note);
        }
        line
    }

    /// A stale line whose new image was rolled back before is not tried again until the
    /// tag moves; a remembered rollback whose tag has moved (or whose container was
    /// recreated by someone else) is forgotten.
    pub(super) fn unless_rejected(&self, target: &Target, line: &mut ContainerReport) {
        let Some(r) = self.rejections.get(&line.name) else {
            return;
        };
        if r.container_id != target.id || line.new_digest.as_deref() != Some(r.digest.as_str()) {
            tracing::info!(container = %line.name, rolled_back = %r.digest, now = line.new_digest.as_deref().unwrap_or("?"), "the tag moved since the rollback: its new image will be tried");
            self.rejections.remove(&line.name);
            return;
        }
        if line.outcome != Outcome::Stale {
            return;
        }
        let detail = format!(
            "{} was rolled back ({}); not retried until {} moves to another image ({} runs)",
            r.digest, r.reason, line.image, r.running
        );
        tracing::info!(container = %line.name, image = %line.image, rolled_back = %r.digest, running = %r.running, "skipped: an update to this image was rolled back before; not retried until the tag moves");
        line.outcome = Outcome::Skipped;
        line.detail = Some(detail);
    }
}

/// Whether a tag-following policy moved the container to another reference.
pub(super) fn moved(c: &Checked) -> bool {
    c.reference != c.target.reference()
}
