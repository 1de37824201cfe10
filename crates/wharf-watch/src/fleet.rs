//! What a watcher keeps beyond one check: each container's update history and kept
//! images, updates held for an approval or a maintenance window, the clock the windows
//! are read by, and how compose projects are kept intact. One per Docker host.

use std::path::PathBuf;
use std::sync::Arc;

use crate::history::History;
use crate::hold::{Clock, Holds};
use crate::window::Window;

pub struct Fleet {
    pub history: History,
    pub holds: Holds,
    /// Shared by every host's watcher: one test clock moves them all.
    pub clock: Arc<Clock>,
    /// `--window`: when updates may run, unless a container's label says otherwise.
    pub windows: Vec<Window>,
    /// `--keep-previous`: earlier images kept per container for rollbacks.
    pub keep_previous: usize,
    /// The docker-compose binary asked for a compose service's new config hash.
    pub compose: Option<PathBuf>,
    /// The engine's address as docker-compose reaches it (`DOCKER_HOST`).
    pub docker_host: Option<String>,
}

impl Fleet {
    /// Nothing kept on disk, no windows, the system clock: a watcher as before.
    pub fn in_memory() -> Fleet {
        Fleet {
            history: History::in_memory(None),
            holds: Holds::open(None, None, None),
            clock: Arc::new(Clock::system()),
            windows: Vec::new(),
            keep_previous: 0,
            compose: None,
            docker_host: None,
        }
    }
}
