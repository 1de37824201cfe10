//! The registry's settings. Loading registry:2's `config.yml` fills the same struct.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `http.addr`.
    pub addr: SocketAddr,
    /// `storage.filesystem.rootdirectory`: holds `docker/registry/v2/`.
    pub root: PathBuf,
    /// `storage.delete.enabled`: registry:2 refuses deletes unless this is set.
    pub delete_enabled: bool,
    /// `storage.maintenance.uploadpurging`: None disables it.
    pub upload_purging: Option<UploadPurging>,
}

/// registry:2's defaults: uploads older than a week are removed once a day.
#[derive(Debug, Clone)]
pub struct UploadPurging {
    pub age: Duration,
    pub interval: Duration,
}

impl Default for UploadPurging {
    fn default() -> Self {
        UploadPurging {
            age: Duration::from_secs(168 * 3600),
            interval: Duration::from_secs(24 * 3600),
        }
    }
}

impl Config {
    pub fn new(root: PathBuf) -> Config {
        Config {
            addr: SocketAddr::from(([0, 0, 0, 0], 5000)),
            root,
            delete_enabled: false,
            upload_purging: Some(UploadPurging::default()),
        }
    }
}
