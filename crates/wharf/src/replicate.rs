//! `wharf replicate status|run|reconcile|sync [--dry-run] CONFIG`: replication by hand,
//! over the store the config names, beside (or without) serving processes. `reconcile`
//! compares every tag the rules cover with each target and converges the differences:
//! how a new or restored target is brought up to date.

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use wharf_registry::registry::replication::{Plan, Replication};
use wharf_registry::registry::Registry;

use crate::maintenance::{load_config, StoreArgs};

#[derive(Subcommand)]
pub enum ReplicateCommand {
    /// Each target's place in the event log, and the tags that differ there.
    Status(ReplicateArgs),
    /// Replicate the events not yet sent to each target, then stop.
    Run(ReplicateArgs),
    /// Compare every covered tag with each target (tags to digests) and converge them.
    Reconcile(ReplicateArgs),
    /// Run the `replication.sync` entries once.
    Sync(ReplicateArgs),
}

#[derive(Args)]
pub struct ReplicateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only this target (or sync entry).
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// Report what differs (reconcile) or would be copied (sync); change nothing.
    #[arg(short = 'd', long)]
    dry_run: bool,
}

pub fn replicate(cmd: ReplicateCommand) -> anyhow::Result<()> {
    let (args, what) = match &cmd {
        ReplicateCommand::Status(a) => (a, "status"),
        ReplicateCommand::Run(a) => (a, "run"),
        ReplicateCommand::Reconcile(a) => (a, "reconcile"),
        ReplicateCommand::Sync(a) => (a, "sync"),
    };
    let config = load_config(&args.store)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let state = wharf_registry::server::state_for(&config).await?;
        let registry = state.registry.clone();
        let replication = registry.replication().cloned().context(
            "the config has no `replication:` rules or sync entries (see docs/replication.md)",
        )?;
        let only = args.target.as_deref();
        match what {
            "status" => status(&registry, &replication, only, args.store.json).await,
            "run" => {
                let positions = replication.run_once(&registry, only).await?;
                print_json_or(args.store.json, &positions, |p| {
                    format!(
                        "{}: replicated up to event {} of {}",
                        p.target,
                        p.cursor.unwrap_or(0),
                        p.newest
                    )
                })
            }
            "reconcile" => {
                let plans = replication.reconcile(&registry, only, args.dry_run).await?;
                report_plans(&plans, args.dry_run, args.store.json)
            }
            _ => {
                let reports = replication.sync_once(&registry, only, args.dry_run).await?;
                if args.store.json {
                    println!("{}", serde_json::to_string(&reports)?);
                } else {
                    let verb = if args.dry_run { "would copy" } else { "copied" };
                    for r in &reports {
                        for c in &r.copied {
                            println!("{}: {verb} {c}", r.name);
                        }
                        for f in &r.failed {
                            println!("{}: failed {f}", r.name);
                        }
                        println!(
                            "{}: {} repositories, {verb} {} tags, {} unchanged, {} bytes fetched",
                            r.name,
                            r.repositories,
                            r.copied.len(),
                            r.unchanged,
                            r.bytes
                        );
                    }
                }
                let failed: usize = reports.iter().map(|r| r.failed.len()).sum();
                if failed > 0 {
                    anyhow::bail!("{failed} tags failed to sync (listed above)");
                }
                Ok(())
            }
        }
    })
}

async fn status(
    registry: &Arc<Registry>,
    replication: &Replication,
    only: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let positions = replication.positions(registry).await?;
    let plans = replication.reconcile(registry, only, true).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"positions": positions, "differences": plans})
        );
        return Ok(());
    }
    for p in positions
        .iter()
        .filter(|p| only.is_none_or(|o| o == p.target))
    {
        let cursor = p.cursor.map_or("never run".to_owned(), |c| c.to_string());
        println!(
            "{} ({}): cursor {cursor}, newest event {}, {} behind",
            p.target,
            p.url,
            p.newest,
            p.newest.saturating_sub(p.cursor.unwrap_or(0))
        );
    }
    report_plans(&plans, true, false)
}

fn report_plans(plans: &[Plan], dry_run: bool, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(plans)?);
    } else {
        for plan in plans {
            for d in &plan.differences {
                let there = d.target.as_deref().unwrap_or("missing");
                let verb = if dry_run { "differs" } else { "restored" };
                println!(
                    "{}: {}:{} {verb} (here {}, there {there})",
                    plan.target, d.repository, d.tag, d.source
                );
            }
            for f in &plan.failed {
                println!("{}: failed {f}", plan.target);
            }
            println!(
                "{}: {} tags compared, {} differ{}",
                plan.target,
                plan.compared,
                plan.differences.len(),
                if dry_run {
                    String::new()
                } else {
                    format!(", {} converged", plan.converged.len())
                }
            );
        }
    }
    let failed: usize = plans.iter().map(|p| p.failed.len()).sum();
    if failed > 0 {
        anyhow::bail!("{failed} tags failed to converge (listed above)");
    }
    Ok(())
}

fn print_json_or<T: serde::Serialize>(
    json: bool,
    items: &[T],
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(items)?);
    } else {
        for i in items {
            println!("{}", line(i));
        }
    }
    Ok(())
}
