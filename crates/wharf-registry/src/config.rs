//! The registry's settings. Loading registry:2's `config.yml` fills the same struct.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Config {
    /// `http.addr`.
    pub addr: SocketAddr,
    /// `storage.filesystem.rootdirectory`: holds `docker/registry/v2/`.
    pub root: PathBuf,
    /// `storage.delete.enabled`: registry:2 refuses deletes unless this is set.
    pub delete_enabled: bool,
}

impl Config {
    pub fn new(root: PathBuf) -> Config {
        Config {
            addr: SocketAddr::from(([0, 0, 0, 0], 5000)),
            root,
            delete_enabled: false,
        }
    }
}
