//! Opening the configured store: the backend of `storage:`, with the metadata, locks and
//! state rows of `database:` over it when one is set.

use std::sync::Arc;

#[cfg(feature = "s3")]
use super::s3;
#[cfg(feature = "postgres")]
use super::state;
#[cfg(any(not(feature = "postgres"), not(feature = "s3")))]
use super::{built_without, StoreError};
use super::{fs, postgres, Locks, StorageConfig, Store, StoreResult};

/// Open the configured storage. `create` makes an empty filesystem root when there is none
/// (a server starting fresh); maintenance commands pass false, so that a mistyped root is
/// an error instead of an empty registry.
///
/// With `database`, repositories, links, manifests and tags live in PostgreSQL and the
/// locks are its advisory locks; the bytes (and uploads) stay in the configured storage.
/// Nothing connects yet: the database may be down, and requests get 503 until it is up.
pub async fn open(
    config: &StorageConfig,
    database: Option<&postgres::DatabaseConfig>,
    create: bool,
) -> StoreResult<Store> {
    let locks: Option<Arc<dyn Locks>> = match database {
        #[cfg(feature = "postgres")]
        Some(db) => Some(Arc::new(postgres::open_locks(db)?)),
        #[cfg(not(feature = "postgres"))]
        Some(_) => {
            return Err(StoreError::NotAStore(built_without(
                "postgres",
                "database:",
            )))
        }
        None => None,
    };
    let store = match config {
        StorageConfig::Filesystem { root } => fs::open_with(root, create, locks)?,
        #[cfg(feature = "s3")]
        StorageConfig::S3 { s3, .. } => s3::open(s3, locks).await?,
        #[cfg(not(feature = "s3"))]
        StorageConfig::S3 { .. } => {
            return Err(StoreError::NotAStore(built_without("s3", "storage.s3")))
        }
    };
    let mut store = store;
    if store.identity.is_none() {
        let dir = fs::Layout::new(config.local_root()).wharf_dir();
        store.identity = Some(Arc::new(fs::FsState::new(dir)));
    }
    if store.quotas.is_none() {
        let dir = fs::Layout::new(config.local_root())
            .wharf_dir()
            .join("quotas");
        store.quotas = Some(Arc::new(fs::FsQuotas::new(dir)));
    }
    #[cfg(feature = "postgres")]
    if let Some(db) = database {
        store.identity = Some(Arc::new(postgres::open_identity(db)?));
        let meta = Arc::new(postgres::open_meta(db, store.blobs.clone())?);
        store.meta = meta.clone();
        store.pulls = Some(meta.clone());
        store.events = Some(meta.clone());
        store.tag_checks = Some(meta);
        let govern = Arc::new(postgres::open_govern(db)?);
        store.quotas = Some(govern.clone());
        // Reports and sign-out stamps become rows; the event log stays where it was (on
        // S3, under this host's root, as the wiring would open it).
        let log: Arc<dyn state::EventLog> = match store.state.take() {
            Some(s) => s,
            None => Arc::new(fs::FsState::new(
                fs::Layout::new(config.local_root()).wharf_dir(),
            )),
        };
        store.state = Some(Arc::new(state::SplitState {
            records: govern,
            log,
        }));
        store.describe = format!("{} with metadata in {}", store.describe, db.describe());
        return Ok(store);
    }
    Ok(store)
}
