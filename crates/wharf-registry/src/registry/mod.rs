//! The service layer: what the registry does, apart from HTTP. The API handlers, the
//! maintenance commands (garbage collection, scrub) and later front ends all call this,
//! never the store directly for anything that has rules.

mod cache;
pub mod events;
pub mod gc;
pub mod governance;
pub mod manifests;
pub mod proxy;
pub mod reports;
pub mod retention;
pub mod scrub;
mod signouts;
mod uploads;

use std::sync::Arc;

use serde_json::Value;
use wharf_oci::ErrorCode;

pub use cache::ManifestCache;
pub use manifests::{ManifestContent, PutManifest};

use self::events::Events;
use crate::config::governance::Governance;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// A registry over its store.
pub struct Registry {
    pub store: Store,
    pub manifests: ManifestCache,
    /// The pull-through cache, when `proxy:` names upstreams.
    pub proxy: Option<proxy::Proxy>,
    /// Where events go; None where nothing listens (maintenance commands).
    pub events: Option<Arc<Events>>,
    pub metrics: Arc<Metrics>,
    /// Retention, immutable tags and quotas; empty unless configured.
    pub governance: Arc<Governance>,
    sizes: governance::SizeCache,
}

impl Registry {
    pub fn new(store: Store) -> Registry {
        Registry {
            store,
            manifests: ManifestCache::default(),
            proxy: None,
            events: None,
            metrics: Arc::default(),
            governance: Arc::default(),
            sizes: governance::SizeCache::default(),
        }
    }

    /// Whether an event of `action` would be recorded, so callers build only those.
    pub fn wants_event(&self, action: &str) -> bool {
        self.events.as_ref().is_some_and(|e| e.wants(action))
    }

    pub async fn emit(&self, events: Vec<events::Event>) {
        if let Some(e) = &self.events {
            e.emit(events).await;
        }
    }
}

/// Why an operation was refused: a spec error code with what to tell the client, or the
/// store's failure.
#[derive(Debug)]
pub enum Error {
    Refused {
        code: ErrorCode,
        message: String,
        detail: Option<Value>,
    },
    Store(StoreError),
    /// A pull-through upstream failed, with the status to pass on (429, 502...).
    Upstream {
        code: ErrorCode,
        status: u16,
        message: String,
    },
}

impl Error {
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Refused {
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn detail(self, value: Value) -> Error {
        match self {
            Error::Refused { code, message, .. } => Error::Refused {
                code,
                message,
                detail: Some(value),
            },
            other => other,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Store(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Refused { code, message, .. } => write!(f, "{}: {message}", code.as_str()),
            Error::Store(e) => e.fmt(f),
            Error::Upstream { message, .. } => f.write_str(message),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
