//! Metadata in PostgreSQL, as GitLab's container registry keeps it: repositories, blob
//! links, manifests with what they reference, tags with push times. The bytes stay in the
//! configured blob store (uploads too, so every replica can continue any upload), and the
//! locks become advisory locks, so that several wharf processes on several hosts share one
//! registry. The schema and lock mapping are in `docs/storage.md`.
//!
//! The pools connect lazily: `wharf serve` starts while the database is down and answers
//! 503 until it is back. Pending migrations are applied the first time the database is
//! reached (see `migrate`).
//!
//! Without the `postgres` feature only the settings remain, so that a configuration still
//! parses into the same [`DatabaseConfig`] and the loader can say what the build lacks.

#[cfg(feature = "postgres")]
mod connect;
#[cfg(feature = "postgres")]
mod events;
#[cfg(feature = "postgres")]
mod govern;
#[cfg(feature = "postgres")]
mod identity;
#[cfg(feature = "postgres")]
mod import;
#[cfg(feature = "postgres")]
mod limits;
#[cfg(feature = "postgres")]
mod listing;
#[cfg(feature = "postgres")]
mod locks;
#[cfg(feature = "postgres")]
mod meta;
#[cfg(feature = "postgres")]
pub mod migrate;
#[cfg(feature = "postgres")]
mod pulls;
#[cfg(feature = "postgres")]
mod put;
#[cfg(feature = "postgres")]
mod queue;
#[cfg(feature = "postgres")]
mod tagchecks;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "postgres")]
pub(crate) use connect::store_error;
#[cfg(feature = "postgres")]
pub use connect::{open_failures, open_govern, open_identity, open_locks, open_meta, probe};
#[cfg(feature = "postgres")]
pub use import::{import, ImportReport};
#[cfg(feature = "postgres")]
pub use locks::PgLocks;
#[cfg(feature = "postgres")]
pub use meta::PgMetaStore;
#[cfg(feature = "postgres")]
pub use sqlx::PgPool;

/// `database:` as GitLab's container registry names it.
#[derive(Clone)]
pub struct DatabaseConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    /// libpq's names: disable, allow, prefer, require, verify-ca, verify-full.
    pub sslmode: String,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub sslrootcert: Option<PathBuf>,
    /// How long a query waits for a connection before it fails as unavailable (503).
    pub connect_timeout: Duration,
    pub pool: PoolConfig,
}

/// `database.pool`.
#[derive(Debug, Clone, Default)]
pub struct PoolConfig {
    /// `maxopen`: connections per pool (wharf keeps two: queries, and locks).
    pub max_open: Option<u32>,
    /// `maxlifetime`: a connection is closed once this old.
    pub max_lifetime: Option<Duration>,
    /// `maxidletime`: an idle connection is closed after this long.
    pub max_idle_time: Option<Duration>,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// The password stays out of logs and panics.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool", &self.pool)
            .finish()
    }
}

impl DatabaseConfig {
    /// Where the database is, for messages (never with credentials).
    pub fn describe(&self) -> String {
        format!(
            "PostgreSQL at {}:{} (database {})",
            self.host, self.port, self.dbname
        )
    }
}
