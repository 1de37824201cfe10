//! The storage health verdict: written by the health check (`debug::check_storage`), read by
//! every API request (which answers 503 while it fails) and by the debug listener. A leaf, so
//! that the API and the debug listener each depend on it rather than on each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use wharf_oci::sync::{read, write};

/// What the health checks found: the failing check (named as registry:2 names it,
/// `storagedriver_` and the driver) and why.
#[derive(Default)]
pub struct Health {
    failing: RwLock<Option<(String, String)>>,
    /// Read by every API request: a flag, not the lock.
    unhealthy: AtomicBool,
}

impl Health {
    pub fn status(&self) -> Option<(String, String)> {
        read(&self.failing).clone()
    }

    pub fn is_unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::Relaxed)
    }

    pub fn set(&self, failing: Option<(String, String)>) {
        self.unhealthy.store(failing.is_some(), Ordering::Relaxed);
        *write(&self.failing) = failing;
    }
}
