//! The service: what the registry does, apart from HTTP. The API, the web UI and the
//! maintenance commands all go through [`Registry`], the only door; nothing above this
//! module touches the store.
//!
//! Inside, a [`Core`] implements every operation over the store (uploads, manifests,
//! governance, GC, scrub, retention), and cross-cutting behaviour wraps it as layers
//! ([`service::Layer`]): the pull-through cache (`proxy`) and event emission (`events`).

pub mod audit;
mod base;
mod cache;
mod door;
pub mod events;
mod flight;
pub mod gc;
pub mod gc_queue;
#[cfg(test)]
mod govern_races;
pub mod governance;
pub mod jobs;
pub mod listing;
pub mod manifests;
pub mod proxy;
pub mod pulls;
pub mod quotas;
pub mod replication;
pub mod reports;
mod repositories;
pub mod retention;
pub mod scrub;
pub mod service;
mod signouts;
mod tokens;
pub mod trust;
mod uploads;

use serde_json::Value;
use wharf_oci::ErrorCode;

/// What the service's answers carry from the store: front ends name these types through
/// the service, never the store.
pub use crate::store::{BlobRead, ByteStream, Page, StoreError};
pub use base::{Core, Rules};
pub use cache::ManifestCache;
pub use door::{Registry, RegistryBuilder, StorageSummary};
pub use manifests::{ManifestContent, PutManifest};
pub use service::{BlobSource, Layer, RepositoryDeleted, Served, Service};
pub use tokens::{Actor, AuditQuery};

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
