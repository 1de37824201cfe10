//! `wharf garbage-collect`, `wharf scrub` and `wharf retention`: the store's upkeep, with
//! registry:2's arguments (`registry garbage-collect [--dry-run] [--delete-untagged]
//! config.yml`). All may run while `wharf serve` processes use the same store.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use wharf_oci::units::{human_bytes, parse_duration};
use wharf_registry::config::{self, Config};
use wharf_registry::registry::gc::{GcOptions, GcReport};
use wharf_registry::registry::gc_queue::DrainOptions;
use wharf_registry::registry::scrub::{ScrubOptions, ScrubReport};
use wharf_registry::registry::Registry;
use wharf_registry::store::queue::Due;

#[derive(Args)]
pub struct StoreArgs {
    /// A registry:2 config.yml; its storage (and REGISTRY_* variables) name the store.
    #[arg(value_name = "CONFIG", env = "REGISTRY_CONFIGURATION_PATH")]
    config: Option<PathBuf>,
    /// The storage root instead (storage.filesystem.rootdirectory).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The configuration the arguments name, with `--root` over its storage root.
pub(crate) fn load_config(args: &StoreArgs) -> anyhow::Result<Config> {
    let (mut config, _warnings) = config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(root) = &args.root {
        *config.storage.local_root_mut() = root.clone();
    }
    Ok(config)
}

#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only report what would be deleted.
    #[arg(short = 'd', long)]
    dry_run: bool,
    /// Also delete manifests no tag reaches (children of tagged indexes and referrers of
    /// kept manifests are kept).
    #[arg(short = 'm', long)]
    delete_untagged: bool,
    /// Keep content retained this recently (uploads whose manifest is still to come).
    /// Default: the config's gc.grace, else 1h. With a database: review rows queued at
    /// least this long ago, whatever their review_after.
    #[arg(long, value_parser = parse_duration)]
    grace: Option<Duration>,
    /// Mark and sweep the whole store even with a database (the review queues are what
    /// runs by default there): the safety net for orphans no queue saw.
    #[arg(long)]
    full: bool,
}

#[derive(Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Move corrupt blobs aside and remove what points at missing content.
    #[arg(long)]
    repair: bool,
}

#[derive(Args)]
pub struct RetentionArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only report what would be deleted.
    #[arg(short = 'd', long)]
    dry_run: bool,
}

/// The configured store and registry (recording in the audit log as `audit:` says), with
/// the runtime their backends were opened on.
pub(crate) fn open(
    args: &StoreArgs,
) -> anyhow::Result<(Registry, Config, tokio::runtime::Runtime)> {
    let config = load_config(args)?;
    let runtime = runtime()?;
    let store = runtime
        .block_on(wharf_registry::store::open(
            &config.storage,
            config.database.as_ref(),
            false,
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let audit = wharf_registry::registry::audit::Audit::from_config(&config.audit, &store);
    let registry = Registry::builder(store)
        .governance(Arc::new(config.governance.clone()))
        .audit(audit)
        .build();
    Ok((registry, config, runtime))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub fn garbage_collect(args: GcArgs) -> anyhow::Result<()> {
    let (registry, config, runtime) = open(&args.store)?;
    let opts = GcOptions {
        dry_run: args.dry_run,
        delete_untagged: args.delete_untagged
            || config.gc.as_ref().is_some_and(|g| g.delete_untagged),
        grace: args
            .grace
            .or(config.gc.as_ref().map(|g| g.grace))
            .unwrap_or(config::DEFAULT_GC_GRACE),
    };
    // The pull-through cache's retention and size cap: evicted manifests leave their blobs
    // to this collection.
    if let Some(proxy) = config.proxy.as_ref().filter(|_| !args.dry_run) {
        let evicted = runtime
            .block_on(registry.evict_cached(proxy))
            .map_err(|e| anyhow::anyhow!("evicting cached content failed: {e}"))?;
        if evicted.manifests > 0 && !args.store.json {
            println!(
                "evicted {} ({} of blobs)",
                count(evicted.manifests, "cached manifest", "cached manifests"),
                human_bytes(evicted.bytes)
            );
        }
    }
    if registry.has_review_queue() && !args.full {
        return drain(&registry, &runtime, &args, opts.delete_untagged);
    }
    let report = runtime
        .block_on(registry.collect_garbage(&opts))
        .map_err(|e| anyhow::anyhow!("garbage collection stopped, nothing more deleted: {e}"))?;
    if args.store.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_gc(&report, opts.grace);
    }
    Ok(())
}

/// With a database: review what the queues hold and is due, rather than mark the store.
fn drain(
    registry: &Registry,
    runtime: &tokio::runtime::Runtime,
    args: &GcArgs,
    delete_untagged: bool,
) -> anyhow::Result<()> {
    let opts = DrainOptions {
        dry_run: args.dry_run,
        delete_untagged,
        due: match args.grace {
            Some(g) => Due::QueuedBefore(g),
            None => Due::Now,
        },
    };
    let r = runtime
        .block_on(registry.drain_review_queues(&opts))
        .map_err(|e| anyhow::anyhow!("garbage review stopped (what it left stays queued): {e}"))?;
    if args.store.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let verb = if r.dry_run {
        "eligible for deletion"
    } else {
        "deleted"
    };
    for m in &r.manifests {
        println!("{}: manifest {verb}: {}", m.repository, m.digest);
    }
    for b in &r.blobs {
        println!("blob {verb}: {} ({} bytes)", b.digest, b.size);
    }
    println!(
        "review queues: {} rows reviewed; {} manifests and {} blobs {verb}, {} freed{}; {} blobs referenced again and kept",
        r.reviewed,
        r.manifests.len(),
        r.blobs.len(),
        human_bytes(r.bytes_freed),
        if r.dry_run { " once deleted" } else { "" },
        r.blobs_rescued,
    );
    Ok(())
}

fn print_gc(r: &GcReport, grace: Duration) {
    let verb = if r.dry_run {
        "eligible for deletion"
    } else {
        "deleted"
    };
    for m in &r.manifests {
        println!("{}: manifest {verb}: {}", m.repository, m.digest);
    }
    for b in &r.blobs {
        println!("blob {verb}: {} ({} bytes)", b.digest, b.size);
    }
    for repo in &r.repositories_removed {
        println!("{repo}: repository removed: nothing is left in it");
    }
    let held = if r.blobs_held + r.manifests_held == 0 {
        format!("nothing held by the grace period ({})", humantime(grace))
    } else {
        format!(
            "{} and {} kept: they were pushed within the grace period ({}), as an upload whose manifest is still to come would be. Run again after {}, or pass --grace 0s when nothing is pushing",
            count(r.blobs_held, "unreferenced blob", "unreferenced blobs"),
            count(r.manifests_held, "untagged manifest", "untagged manifests"),
            humantime(grace),
            humantime(grace),
        )
    };
    println!(
        "{}, {} and {} marked; {} and {} {verb}, {} freed{}; {held}",
        count(r.repositories, "repository", "repositories"),
        count(r.manifests_marked, "manifest", "manifests"),
        count(r.blobs_marked, "blob", "blobs"),
        count(r.manifests.len(), "manifest", "manifests"),
        count(r.blobs.len(), "blob", "blobs"),
        human_bytes(r.bytes_freed),
        if r.dry_run { " once deleted" } else { "" },
    );
}

/// `1 blob`, `2 blobs`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Apply the config's `retention:` rules once; the blobs freed are garbage collection's.
pub fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    let (registry, config, runtime) = open(&args.store)?;
    if config.governance.retention.is_none() {
        anyhow::bail!("the config has no `retention:` rules (see README: Governance)");
    }
    let report = runtime
        .block_on(registry.apply_retention(args.dry_run))
        .map_err(|e| anyhow::anyhow!("retention stopped: {e}"))?;
    if args.store.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for t in &report.tags {
        println!("{}: {verb} tag {} ({})", t.repository, t.tag, t.digest);
    }
    for m in &report.manifests {
        println!("{}: {verb} untagged manifest {}", m.repository, m.digest);
    }
    println!(
        "{verb} {} tags and {} untagged manifests; {} tags kept as immutable{}",
        report.tags.len(),
        report.manifests.len(),
        report.immutable_kept,
        if report.dry_run {
            ""
        } else {
            "; run `wharf garbage-collect` to free their blobs"
        }
    );
    Ok(())
}

pub fn scrub(args: ScrubArgs) -> anyhow::Result<()> {
    let (registry, config, runtime) = open(&args.store)?;
    let bar = progress_bar(args.store.json);
    let (b1, b2) = (bar.clone(), bar.clone());
    let opts = ScrubOptions {
        repair: args.repair,
        stale_uploads: config
            .upload_purging
            .as_ref()
            .map_or(Duration::from_secs(168 * 3600), |p| p.age),
        progress: Some(Box::new(move |n| b1.inc(n))),
        total: Some(Box::new(move |n| b2.set_length(n))),
    };
    let report = runtime
        .block_on(registry.scrub(&opts))
        .map_err(|e| anyhow::anyhow!("scrub stopped: {e}"))
        .context("the store was left as it was found, apart from repairs already reported")?;
    bar.finish_and_clear();
    if args.store.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_scrub(&report, args.repair);
    }
    let unrepaired = report
        .findings
        .iter()
        .filter(|f| f.kind.is_problem() && f.repaired.is_none())
        .count();
    if unrepaired > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn progress_bar(json: bool) -> Arc<indicatif::ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return Arc::new(indicatif::ProgressBar::hidden());
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "scrubbing {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("a valid template"),
    );
    Arc::new(bar)
}

fn print_scrub(r: &ScrubReport, repair: bool) {
    let mut findings: Vec<_> = r.findings.iter().collect();
    findings.sort_by(|a, b| (&a.repository, &a.subject).cmp(&(&b.repository, &b.subject)));
    for f in findings {
        let place = f.repository.as_deref().unwrap_or("(blobs)");
        let kind = serde_json::to_value(f.kind).unwrap_or_default();
        let kind = kind.as_str().unwrap_or("finding").replace('_', " ");
        let severity = if f.kind.is_problem() {
            "problem"
        } else {
            "garbage"
        };
        print!("{place}: {severity}: {kind} {}: {}", f.subject, f.detail);
        match &f.repaired {
            Some(what) => println!(" [repaired: {what}]"),
            None => println!(),
        }
    }
    let problems = r.problems();
    println!(
        "{} blobs ({}) re-hashed in {} repositories: {} problems{}, {} garbage",
        r.blobs_checked,
        human_bytes(r.bytes_checked),
        r.repositories,
        problems,
        if repair && problems > 0 {
            " (repaired where possible)"
        } else {
            ""
        },
        r.findings.len() - problems,
    );
}
