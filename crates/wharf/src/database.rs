//! `wharf database migrate up|down|status` and `wharf database import`: the metadata
//! database's schema, and indexing a registry:2 storage root into it (GitLab container
//! registry's `registry database migrate` and `import`).

use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use wharf_oci::RepoName;
use wharf_registry::config::Config;
use wharf_registry::store::postgres::{self, migrate, DatabaseConfig, PgMetaStore};
use wharf_registry::store::{MetaStore, StoreError};

use crate::maintenance::{load_config, StoreArgs};

#[derive(Subcommand)]
pub enum DatabaseCommand {
    /// Apply, revert or list the schema's migrations.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Index an existing registry:2 storage root (repositories, blob links, manifests,
    /// tags with their push times) into the database. Safe to run again.
    Import(StoreArgs),
}

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Apply every pending migration.
    Up(StoreArgs),
    /// Revert the newest applied migration (its tables and their rows are dropped).
    Down(StoreArgs),
    /// List the migrations this wharf knows and whether the database has them.
    Status(StoreArgs),
}

pub fn run(cmd: DatabaseCommand) -> anyhow::Result<()> {
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

#[derive(Default, Serialize)]
struct ImportReport {
    repositories: usize,
    blob_links: usize,
    manifests: usize,
    tags: usize,
    /// What could not be imported, and why (manifests whose bytes are gone or do not
    /// parse, tags to such manifests): `wharf scrub` names the same.
    skipped: Vec<String>,
    seconds: f64,
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
        .block_on(copy_all(&*source.meta, &target))
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
    Ok(())
}

/// Repositories imported at once: each costs a few listings of the storage (S3 round
/// trips), so one at a time spends the import waiting.
const IMPORT_CONCURRENCY: usize = 16;

async fn copy_all(
    source: &dyn MetaStore,
    target: &PgMetaStore,
) -> Result<ImportReport, StoreError> {
    use futures::{StreamExt, TryStreamExt};
    let started = Instant::now();
    target.migrate().await?;
    let names = source.list_repos(None, None).await?.items;
    let reports: Vec<ImportReport> = futures::stream::iter(names)
        .map(|name| async move {
            let mut report = ImportReport::default();
            match name.parse::<RepoName>() {
                Ok(repo) => {
                    copy_repo(source, target, &repo, &mut report).await?;
                    report.repositories += 1;
                }
                Err(_) => report
                    .skipped
                    .push(format!("{name}: not a valid repository name")),
            }
            Ok::<_, StoreError>(report)
        })
        .buffer_unordered(IMPORT_CONCURRENCY)
        .try_collect()
        .await?;
    let mut report = ImportReport::default();
    for r in reports {
        report.repositories += r.repositories;
        report.blob_links += r.blob_links;
        report.manifests += r.manifests;
        report.tags += r.tags;
        report.skipped.extend(r.skipped);
    }
    report.skipped.sort();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn copy_repo(
    source: &dyn MetaStore,
    target: &PgMetaStore,
    repo: &RepoName,
    report: &mut ImportReport,
) -> Result<(), StoreError> {
    let links = source.list_blob_links(repo).await?;
    target.import_links(repo, &links).await?;
    report.blob_links += links.len();
    for (digest, put) in source.list_manifests(repo).await? {
        match source.manifest_record(&digest).await {
            Ok(Some(record)) => {
                target.put_manifest_at(repo, &record, None, put).await?;
                report.manifests += 1;
            }
            Ok(None) => report
                .skipped
                .push(format!("{repo}: manifest {digest}: its bytes are missing")),
            Err(StoreError::Corrupt { why, .. }) => report
                .skipped
                .push(format!("{repo}: manifest {digest}: {why}")),
            Err(e) => return Err(e),
        }
    }
    for (tag, digest, pushed) in source.tag_pushes(repo).await? {
        if target.import_tag(repo, &tag, &digest, pushed).await? {
            report.tags += 1;
        } else {
            report.skipped.push(format!(
                "{repo}:{tag}: points at {digest}, which was not imported"
            ));
        }
    }
    Ok(())
}
