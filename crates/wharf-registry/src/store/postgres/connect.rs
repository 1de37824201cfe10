//! Pools and connections: everything that needs sqlx, behind the `postgres` feature.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;

use super::{limits, DatabaseConfig, PgLocks, PgMetaStore};
use crate::store::StoreError;

/// Connections per pool when `pool.maxopen` is not set.
const DEFAULT_MAX_OPEN: u32 = 10;

impl DatabaseConfig {
    pub fn connect_options(&self) -> Result<PgConnectOptions, String> {
        let sslmode = PgSslMode::from_str(&self.sslmode).map_err(|_| {
            format!(
                "database.sslmode: {:?} is not one of disable, allow, prefer, require, verify-ca, verify-full",
                self.sslmode
            )
        })?;
        let mut o = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.dbname)
            .ssl_mode(sslmode)
            .application_name("wharf");
        if let Some(p) = &self.password {
            o = o.password(p);
        }
        if let Some(c) = &self.sslrootcert {
            o = o.ssl_root_cert(c);
        }
        if let Some(c) = &self.sslcert {
            o = o.ssl_client_cert(c);
        }
        if let Some(k) = &self.sslkey {
            o = o.ssl_client_key(k);
        }
        Ok(o)
    }

    /// A pool that connects on first use, so a server starts while the database is down.
    pub fn lazy_pool(&self) -> Result<PgPool, String> {
        Ok(self.lazy_pool_with(self.connect_options()?))
    }

    fn lazy_pool_with(&self, options: PgConnectOptions) -> PgPool {
        self.pool_options().connect_lazy_with(options)
    }

    fn pool_options(&self) -> PgPoolOptions {
        let mut p = PgPoolOptions::new()
            .max_connections(self.pool.max_open.unwrap_or(DEFAULT_MAX_OPEN).max(1))
            .min_connections(0)
            .acquire_timeout(self.connect_timeout)
            // A connection the server dropped (a restart) is found before a query uses it.
            .test_before_acquire(true);
        if let Some(t) = self.pool.max_lifetime {
            p = p.max_lifetime(t);
        }
        if let Some(t) = self.pool.max_idle_time {
            p = p.idle_timeout(t);
        }
        p
    }
}

/// Connect once, outside any pool, for the cause a pool's timeout hides ("connection
/// refused", "password authentication failed").
pub async fn probe(config: &DatabaseConfig) -> Result<(), String> {
    use sqlx::Connection;
    let options = config.connect_options()?;
    match tokio::time::timeout(
        config.connect_timeout,
        sqlx::PgConnection::connect_with(&options),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {:?} (database.connecttimeout)",
            config.connect_timeout
        )),
    }
}

/// What a database error means to a client: unreachable or overloaded is a 503 the
/// client may retry; anything else is a fault of this store.
pub(crate) fn store_error(what: &str, e: sqlx::Error) -> StoreError {
    if is_unavailable(&e) {
        return StoreError::Unavailable(format!("{what}: {e}"));
    }
    StoreError::Io(std::io::Error::other(format!("{what}: {e}")))
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        // 08: connection exception; 53: insufficient resources; 57P: the server is
        // shutting down or restarting.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")),
        sqlx::Error::Migrate(m) => match &**m {
            sqlx::migrate::MigrateError::Execute(e) => is_unavailable(e),
            _ => false,
        },
        _ => false,
    }
}

/// The PostgreSQL side of a store: advisory locks (on their own pool: a held lock keeps
/// its connection, which must not starve the queries its holder still makes), then the
/// metadata, which reads manifests' bytes from `blobs`. Both connect lazily.
pub fn open_locks(config: &DatabaseConfig) -> Result<PgLocks, StoreError> {
    use sqlx::ConnectOptions;
    // A lock statement that waits behind a collector is no slow query worth a warning.
    let options = config
        .connect_options()
        .map_err(StoreError::NotAStore)?
        .disable_statement_logging();
    // A lock wait abandoned midway (its request cancelled) still ends in a granted lock on
    // a connection that goes back to the pool: nothing leaves the pool holding one.
    let pool_of = |options| {
        config
            .pool_options()
            .after_release(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("SELECT pg_advisory_unlock_all()").await?;
                    Ok(true)
                })
            })
            .connect_lazy_with(options)
    };
    let keyed = pool_of(options.clone());
    Ok(PgLocks::new(pool_of(options), keyed, config.describe()))
}

/// Failed-login counters every replica shares (a pool of their own: logins must not wait
/// behind metadata queries).
pub fn open_failures(config: &DatabaseConfig) -> Result<limits::PgFailures, StoreError> {
    let pool = config.lazy_pool().map_err(StoreError::NotAStore)?;
    Ok(limits::PgFailures::new(pool))
}

pub fn open_meta(
    config: &DatabaseConfig,
    blobs: std::sync::Arc<dyn crate::store::BlobStore>,
) -> Result<PgMetaStore, StoreError> {
    let pool = config.lazy_pool().map_err(StoreError::NotAStore)?;
    Ok(PgMetaStore::new(pool, blobs, config.describe()))
}

/// Tokens and the audit log, on a pool of their own (a login must not wait behind
/// metadata queries).
pub fn open_identity(config: &DatabaseConfig) -> Result<super::identity::PgIdentity, StoreError> {
    let pool = config.lazy_pool().map_err(StoreError::NotAStore)?;
    Ok(super::identity::PgIdentity::new(pool, config.describe()))
}

/// Quota figures and small records (reports, sign-out stamps), on a pool of their own: a
/// quota check must not wait behind the metadata queries of uploads in flight.
pub fn open_govern(config: &DatabaseConfig) -> Result<super::govern::PgGovern, StoreError> {
    let pool = config.lazy_pool().map_err(StoreError::NotAStore)?;
    Ok(super::govern::PgGovern::new(pool, config.describe()))
}
