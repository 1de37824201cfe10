//! A container's dependants (links, network sharing, depends-on labels) around its
//! replacement: stopped before the swap, last first; started again after it, dependencies
//! first; recreated on the new container's network when they shared the old one's.

use std::collections::HashMap;

use crate::engine::{is_running, Engine};
use crate::order::Dependencies;
use crate::spec;
use crate::target::Target;
use crate::update::{self, Replaced, Timing};

/// The engine and stop timing the dependants of one session are handled with.
pub struct Dependants<'a> {
    pub engine: &'a Engine,
    pub timing: &'a Timing,
}

impl Dependants<'_> {
    /// Start again the dependants stopped for `replaced`, dependencies first. One that
    /// shared the network of a container that is gone now (replaced, not rolled back)
    /// could never start again: it is recreated on its successor's network, and started
    /// only if it ran. Returns what failed.
    pub async fn restart(
        &self,
        replaced: &Replaced,
        deps: &Dependencies,
        replaced_ids: &HashMap<String, String>,
    ) -> Vec<String> {
        // Old id → name of the containers gone this way, which their dependants follow.
        let mut gone = replaced_ids.clone();
        let stopped = &replaced.stopped_dependants;
        let idle = deps
            .dependants(&replaced.target.name)
            .into_iter()
            .filter(|name| !stopped.contains(name));
        let all = stopped
            .iter()
            .map(|n| (n.clone(), true))
            .chain(idle.map(|n| (n, false)));
        let mut trouble = Vec::new();
        for (name, ran) in all {
            let Ok(c) = self.engine.inspect_container(&name).await else {
                continue;
            };
            let Some(provider) = self.gone_provider(&c, &gone).await else {
                if ran {
                    self.start_all(std::slice::from_ref(&name), replaced_ids)
                        .await;
                }
                continue;
            };
            let target = Target {
                id: c.id.clone().unwrap_or_default(),
                name: name.clone(),
                inspect: c,
                was_running: ran,
            };
            match update::rejoin(self.engine, &target, &provider, self.timing).await {
                Ok(()) => {
                    tracing::info!(container = %name, network_of = %provider, "recreated on the new container's network");
                    gone.insert(target.id, name);
                }
                Err(why) => trouble.push(format!(
                    "{name}, which shares its network, could not be recreated on it: {why}"
                )),
            }
        }
        trouble
    }

    /// The name now holding the place of the container whose network `c` shares, if that
    /// container is gone (in `gone`, and not running: a rolled-back one runs again).
    async fn gone_provider(
        &self,
        c: &bollard::models::ContainerInspectResponse,
        gone: &HashMap<String, String>,
    ) -> Option<String> {
        let id = spec::network_provider(c)?;
        let name = gone.get(id)?;
        (!self.runs(id).await).then(|| name.clone())
    }

    async fn runs(&self, id: &str) -> bool {
        self.engine
            .inspect_container(id)
            .await
            .is_ok_and(|c| is_running(&c))
    }

    /// Stop running dependants, last first; returns the ones to start again afterwards:
    /// all that ran, since one whose stop failed may have stopped all the same.
    pub async fn stop(&self, target: &Target, deps: &Dependencies) -> Vec<String> {
        let mut stopped = Vec::new();
        for name in deps.dependants(&target.name).iter().rev() {
            let Ok(c) = self.engine.inspect_container(name).await else {
                continue;
            };
            if !is_running(&c) {
                continue;
            }
            let timeout = self.timing.stop_timeout;
            if let Err(e) = update::stop(self.engine, &c, timeout).await {
                tracing::warn!(container = %name, error = %e, "could not stop a dependant");
            }
            stopped.push(name.clone());
        }
        stopped.reverse();
        stopped
    }

    /// Start the named containers, dependencies first, skipping ones replaced this session.
    pub async fn start_all(&self, names: &[String], replaced_ids: &HashMap<String, String>) {
        for name in names {
            let Ok(c) = self.engine.inspect_container(name).await else {
                continue;
            };
            let id = c.id.clone().unwrap_or_default();
            let running = is_running(&c);
            if running || replaced_ids.contains_key(&id) {
                continue;
            }
            if let Err(e) = self.engine.start(&id).await {
                tracing::warn!(container = %name, error = %e, "could not restart a dependant");
            }
        }
    }
}
