//! What the controller and its agents say to each other: JSON text messages over one
//! WebSocket that the agent opened. The controller decides (it sends `Request`s); the
//! agent carries them out on its own engine and answers each by its id, and tells what
//! it runs when it connects.

use serde::{Deserialize, Serialize};

use crate::events::Pushed;
use crate::report::SessionReport;
use crate::session::Watcher;

/// The path agents connect to on the controller's `--agents-listen` address.
pub const CONNECT_PATH: &str = "/v1/agents/connect";

/// What a host is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Check and update (all containers, or those using `images`); `queue`: wait for a
    /// session under way rather than answer `Busy`.
    Session {
        images: Option<Vec<String>>,
        queue: bool,
    },
    /// Check, change nothing.
    Check { images: Option<Vec<String>> },
    /// Images were pushed: update the containers that use them, if any.
    Pushed { pushed: Vec<PushedWire> },
    /// What runs there now.
    Containers,
    /// Everything the dashboard shows of the host: containers, held updates, histories.
    View,
    /// Recreate `name` on an earlier image (`to`, else the one before).
    Rollback { name: String, to: Option<String> },
    /// Approve `name`'s held update, then update it.
    Approve { name: String },
}

/// A pushed tag as it travels: the image and the digest the push announced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushedWire {
    pub image: String,
    pub digest: Option<String>,
}

impl From<&Pushed> for PushedWire {
    fn from(p: &Pushed) -> PushedWire {
        PushedWire {
            image: p.image.clone(),
            digest: p.digest.as_ref().map(|d| d.to_string()),
        }
    }
}

impl PushedWire {
    fn into_pushed(self) -> Pushed {
        Pushed {
            image: self.image,
            digest: self.digest.and_then(|d| d.parse().ok()),
        }
    }
}

/// A host's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Report(SessionReport),
    /// A session was under way and the command did not queue behind it.
    Busy,
    /// Nothing to do: no container there uses the pushed images.
    Idle,
    Containers(Vec<ContainerInfo>),
    View(HostView),
    /// A rollback done: the change, as the history records it.
    Change(crate::history::Change),
    Error(String),
}

/// What the dashboard shows of one host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostView {
    pub containers: Vec<ContainerInfo>,
    pub pending: Vec<PendingInfo>,
    /// The history of each container that has one.
    pub history: Vec<crate::session::HistoryView>,
}

/// An update held for an approval or a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingInfo {
    pub container: String,
    pub image: String,
    pub digest: String,
    /// `approval` or `window`.
    pub waiting_for: String,
    pub opens_at: Option<String>,
}

/// One container, as the dashboard lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub name: String,
    /// The reference it was started from.
    pub image: String,
    pub image_id: String,
    /// created, running, exited…
    pub state: String,
}

/// Controller → agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    Request { id: u64, command: Command },
}

/// Agent → controller.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromAgent {
    /// First message: what the agent runs.
    Hello {
        version: String,
        engine: String,
        containers: Vec<ContainerInfo>,
    },
    Reply {
        id: u64,
        reply: Reply,
    },
}

/// Carry out `command` on `watcher`'s engine: the one place both a local host and an
/// agent do it, so both behave alike.
pub async fn execute(watcher: &Watcher, command: Command) -> Reply {
    match command {
        Command::Session { images, queue } => {
            let images = images.as_deref();
            match queue {
                true => Reply::Report(watcher.session(images).await),
                false => match watcher.try_session(images).await {
                    Some(report) => Reply::Report(report),
                    None => Reply::Busy,
                },
            }
        }
        Command::Check { images } => Reply::Report(watcher.check_only(images.as_deref()).await),
        Command::Pushed { pushed } => {
            let pushed: Vec<Pushed> = pushed.into_iter().map(PushedWire::into_pushed).collect();
            pushed_here(watcher, pushed).await
        }
        Command::Containers => match containers(watcher).await {
            Ok(list) => Reply::Containers(list),
            Err(e) => Reply::Error(e),
        },
        Command::View => match view(watcher).await {
            Ok(v) => Reply::View(v),
            Err(e) => Reply::Error(e),
        },
        Command::Rollback { name, to } => {
            let reason = "requested from the dashboard or the controller";
            match watcher.rollback(&name, to.as_deref(), reason).await {
                Ok(change) => Reply::Change(change),
                Err(e) => Reply::Error(e.to_string()),
            }
        }
        Command::Approve { name } => match watcher.approve(&name, None) {
            Ok((image, _)) if image.is_empty() => Reply::Idle,
            Ok((image, _)) => Reply::Report(watcher.session(Some(&[image])).await),
            Err(e) => Reply::Error(e),
        },
    }
}

/// The host as the dashboard shows it.
async fn view(watcher: &Watcher) -> Result<HostView, String> {
    let containers = containers(watcher).await?;
    let pending = watcher
        .pending()
        .into_iter()
        .map(|h| PendingInfo {
            container: h.container,
            image: h.image,
            digest: h.digest,
            waiting_for: serde_json::to_value(h.waiting_for)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            opens_at: h.opens_at,
        })
        .collect();
    let history = containers
        .iter()
        .map(|c| watcher.history(&c.name))
        .filter(|h| !h.changes.is_empty() || !h.kept.is_empty())
        .collect();
    Ok(HostView {
        containers,
        pending,
        history,
    })
}

/// A push: a check of the containers using the pushed images, unless none does.
async fn pushed_here(watcher: &Watcher, pushed: Vec<Pushed>) -> Reply {
    let images: Vec<String> = pushed.iter().map(|p| p.image.clone()).collect();
    match watcher.used(&images).await {
        Ok(used) if used.is_empty() => {
            tracing::info!(images = %images.join(", "), "push event ignored: no watched container uses this image");
            Reply::Idle
        }
        Ok(used) => {
            tracing::info!(images = %used.join(", "), "push event: checking the containers that use it");
            let announced: Vec<Pushed> = pushed
                .into_iter()
                .filter(|p| used.contains(&p.image))
                .collect();
            watcher.expect(&announced);
            Reply::Report(watcher.session(Some(&used)).await)
        }
        Err(e) => {
            tracing::warn!(error = %e, "push event not acted on: cannot list the containers; the schedule will check");
            Reply::Error(e.to_string())
        }
    }
}

/// The engine's containers, stopped ones too.
pub async fn containers(watcher: &Watcher) -> Result<Vec<ContainerInfo>, String> {
    let list = watcher
        .engine()
        .list_containers(true)
        .await
        .map_err(|e| e.to_string())?;
    let mut out: Vec<ContainerInfo> = list
        .into_iter()
        .map(|c| ContainerInfo {
            name: c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            image: c.image.unwrap_or_default(),
            image_id: c.image_id.unwrap_or_default(),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_shape_on_the_wire() {
        let request = ToAgent::Request {
            id: 7,
            command: Command::Pushed {
                pushed: vec![PushedWire {
                    image: "reg:5000/app:1".into(),
                    digest: None,
                }],
            },
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(text.contains(r#""type":"request""#) && text.contains(r#""op":"pushed""#));
        let back: ToAgent = serde_json::from_str(&text).unwrap();
        let ToAgent::Request { id, .. } = back;
        assert_eq!(id, 7);
        let reply = FromAgent::Reply {
            id: 7,
            reply: Reply::Busy,
        };
        let text = serde_json::to_string(&reply).unwrap();
        assert!(matches!(
            serde_json::from_str::<FromAgent>(&text).unwrap(),
            FromAgent::Reply {
                id: 7,
                reply: Reply::Busy
            }
        ));
    }
}
