//! The schema's migrations, embedded in the binary (no files to ship, no DATABASE_URL at
//! build time). sqlx's migrator holds `pg_advisory_lock` on a key derived from the
//! database name while it runs, so replicas starting together apply each migration once:
//! the others wait, then find nothing pending.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migrate, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::PgPool;

use super::store_error;
use crate::store::StoreResult;

/// (version, description, up, down)
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "metadata",
        include_str!("migrations/0001_metadata.up.sql"),
        include_str!("migrations/0001_metadata.down.sql"),
    ),
    (
        2,
        "login failures",
        include_str!("migrations/0002_login_failures.up.sql"),
        include_str!("migrations/0002_login_failures.down.sql"),
    ),
    (
        3,
        "gc review queues",
        include_str!("migrations/0003_gc_review_queues.up.sql"),
        include_str!("migrations/0003_gc_review_queues.down.sql"),
    ),
    (
        4,
        "tokens and audit",
        include_str!("migrations/0004_identity.up.sql"),
        include_str!("migrations/0004_identity.down.sql"),
    ),
    (
        6,
        "pull counts",
        include_str!("migrations/0006_pull_counts.up.sql"),
        include_str!("migrations/0006_pull_counts.down.sql"),
    ),
    (
        7,
        "events",
        include_str!("migrations/0007_events.up.sql"),
        include_str!("migrations/0007_events.down.sql"),
    ),
    (
        8,
        "quotas, records, listings",
        include_str!("migrations/0008_governance_state.up.sql"),
        include_str!("migrations/0008_governance_state.down.sql"),
    ),
    (
        9,
        "proxy tag checks",
        include_str!("migrations/0009_proxy_tag_checks.up.sql"),
        include_str!("migrations/0009_proxy_tag_checks.down.sql"),
    ),
];

#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        let mut all = Vec::new();
        for &(version, description, up, down) in MIGRATIONS {
            for (kind, sql) in [
                (MigrationType::ReversibleUp, up),
                (MigrationType::ReversibleDown, down),
            ] {
                all.push(Migration::new(
                    version,
                    Cow::Borrowed(description),
                    kind,
                    Cow::Borrowed(sql),
                    false,
                ));
            }
        }
        Box::pin(async move { Ok(all) })
    }
}

async fn migrator() -> StoreResult<Migrator> {
    Migrator::new(Embedded)
        .await
        .map_err(|e| store_error("embedded migrations", e.into()))
}

/// Apply every pending migration.
pub async fn up(pool: &PgPool) -> StoreResult<()> {
    migrator()
        .await?
        .run(pool)
        .await
        .map_err(|e| store_error("applying migrations", e.into()))
}

/// Revert the newest applied migration. Returns its version, or None if none was applied.
pub async fn down(pool: &PgPool) -> StoreResult<Option<i64>> {
    let applied: Vec<i64> = status(pool)
        .await?
        .into_iter()
        .filter(|m| m.applied)
        .map(|m| m.version)
        .collect();
    let Some(&newest) = applied.last() else {
        return Ok(None);
    };
    let target = applied.iter().rev().nth(1).copied().unwrap_or(0);
    migrator()
        .await?
        .undo(pool, target)
        .await
        .map_err(|e| store_error("reverting a migration", e.into()))?;
    Ok(Some(newest))
}

/// One migration this binary knows, and whether the database has it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub applied: bool,
}

pub async fn status(pool: &PgPool) -> StoreResult<Vec<MigrationStatus>> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| store_error("connecting", e))?;
    conn.ensure_migrations_table()
        .await
        .map_err(|e| store_error("reading migrations", e.into()))?;
    let applied = conn
        .list_applied_migrations()
        .await
        .map_err(|e| store_error("reading migrations", e.into()))?;
    Ok(MIGRATIONS
        .iter()
        .map(|&(version, description, _, _)| MigrationStatus {
            version,
            description: description.to_owned(),
            applied: applied.iter().any(|a| a.version == version),
        })
        .collect())
}
