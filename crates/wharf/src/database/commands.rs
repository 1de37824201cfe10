//! The database subcommands' work: a runtime, a pool, the library call, the output.

use anyhow::Context;
use wharf_registry::config::Config;
use wharf_registry::store::postgres::{self, migrate, DatabaseConfig};
use wharf_registry::store::StoreError;

use super::{DatabaseCommand, MigrateCommand};
use crate::maintenance::{load_config, StoreArgs};

pub(super) fn run(cmd: DatabaseCommand) -> anyhow::Result<()> {
    match cmd {
        DatabaseCommand::Migrate(MigrateCommand::Up(args)) => migrate_up(&args),
        DatabaseCommand::Migrate(MigrateCommand::Down(args)) => migrate_down(&args),
        DatabaseCommand::Migrate(MigrateCommand::Status(args)) => migrate_status(&args),
        DatabaseCommand::Import(args) => import(&args),
    }
}

fn database(config: &Config) -> anyhow::Result<DatabaseConfig> {
    config.database.clone().context(
        "the configuration enables no database: set database.enabled: true with host, user and \
         dbname (or REGISTRY_DATABASE_ENABLED, _HOST, _USER, _DBNAME)",
    )
}

/// A database error with what to check: the address for an unreachable server, the
/// credentials for a refused login.
fn explain(db: &DatabaseConfig, e: StoreError) -> anyhow::Error {
    let mut text = e.to_string();
    if let StoreError::Unavailable(_) = &e {
        // A pool says only that it timed out; one more try names the cause.
        let cause = runtime()
            .ok()
            .and_then(|rt| rt.block_on(postgres::probe(db)).err());
        if let Some(cause) = cause {
            text = cause;
        }
    }
    let hint = match &e {
        _ if text.contains("password authentication") || text.contains("role \"") => {
            "check database.user and database.password".to_owned()
        }
        StoreError::Unavailable(_) => {
            return anyhow::anyhow!(
                "cannot reach PostgreSQL at {}:{}: {text}; is it running? check database.host and database.port",
                db.host,
                db.port
            )
        }
        _ if text.contains("does not exist") => {
            format!("create database {} or fix database.dbname", db.dbname)
        }
        _ => return anyhow::anyhow!("{text}"),
    };
    anyhow::anyhow!("{text}: {hint}")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The database's pool, on a runtime of its own (a pool needs one to be created in).
fn pool(
    args: &StoreArgs,
) -> anyhow::Result<(DatabaseConfig, postgres::PgPool, tokio::runtime::Runtime)> {
    let db = database(&load_config(args)?)?;
    let rt = runtime()?;
    let pool = {
        let _in = rt.enter();
        db.lazy_pool().map_err(anyhow::Error::msg)?
    };
    Ok((db, pool, rt))
}

fn migrate_up(args: &StoreArgs) -> anyhow::Result<()> {
    let (db, pool, rt) = pool(args)?;
    rt.block_on(migrate::up(&pool))
        .map_err(|e| explain(&db, e))?;
    let status = rt
        .block_on(migrate::status(&pool))
        .map_err(|e| explain(&db, e))?;
    print_status(&status, args.json)
}

fn migrate_down(args: &StoreArgs) -> anyhow::Result<()> {
    let (db, pool, rt) = pool(args)?;
    let reverted = rt
        .block_on(migrate::down(&pool))
        .map_err(|e| explain(&db, e))?;
    match reverted {
        Some(v) => println!("reverted migration {v}"),
        None => println!("no migration is applied"),
    }
    Ok(())
}

fn migrate_status(args: &StoreArgs) -> anyhow::Result<()> {
    let (db, pool, rt) = pool(args)?;
    let status = rt
        .block_on(migrate::status(&pool))
        .map_err(|e| explain(&db, e))?;
    print_status(&status, args.json)
}

fn print_status(status: &[migrate::MigrationStatus], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(status)?);
        return Ok(());
    }
    for m in status {
        let state = if m.applied { "applied" } else { "pending" };
        println!("{:04} {:<20} {state}", m.version, m.description);
    }
    Ok(())
}

fn import(args: &StoreArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let db = database(&config)?;
    let rt = runtime()?;
    // The storage as it is, without the database: its link files are what is imported.
    let source = rt
        .block_on(wharf_registry::store::open(&config.storage, None, false))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let target = {
        let _in = rt.enter();
        postgres::open_meta(&db, source.blobs.clone()).map_err(|e| explain(&db, e))?
    };
    let report = rt
        .block_on(postgres::import(&*source.meta, &target))
        .map_err(|e| explain(&db, e))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    for s in &report.skipped {
        println!("skipped: {s}");
    }
    println!(
        "imported {} repositories, {} blob links, {} manifests and {} tags from {} in {:.1}s",
        report.repositories,
        report.blob_links,
        report.manifests,
        report.tags,
        source.describe,
        report.seconds
    );
    println!(
        "queued for garbage review: {} unreferenced blobs, {} untagged manifests",
        report.queued_blobs, report.queued_manifests
    );
    Ok(())
}
