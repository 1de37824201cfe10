//! `wharf token` and `wharf audit`: robot tokens and the audit log of the store a config
//! names, run where `wharf serve` runs (they read and write its store or database).
//! Token secrets are printed once, alone on stdout, so that a script can capture them.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use wharf_oci::units::parse_duration;
use wharf_registry::registry::{Actor, AuditQuery};

use crate::maintenance::{open, StoreArgs};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token; prints its secret (the docker password) once, alone on stdout.
    Create(CreateArgs),
    /// List tokens: name, owner, scopes, expiry, last use, state (never secrets).
    List(StoreArgs),
    /// Revoke a token: every replica refuses it within a second.
    Revoke(RevokeArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// The token's name: the user name docker logs in with.
    #[arg(long)]
    name: String,
    /// `repositories:actions`, e.g. `team/*:pull,push`; repeatable. All the token may do.
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
    /// How long it lasts (`90d`, `12h`, `30m`); without it, until revoked.
    #[arg(long, value_parser = parse_lifetime)]
    expires: Option<Duration>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
pub struct RevokeArgs {
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    verify: Option<AuditCommand>,
    /// Records at or after this time (RFC 3339, e.g. 2026-12-07 or 2026-12-07T10:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Only this actor's records (a user or token name; `wharf` for jobs).
    #[arg(long)]
    actor: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; names the first record edited, removed or reordered.
    Verify(StoreArgs),
}

/// `90d`, or a Go duration (`2160h`).
fn parse_lifetime(text: &str) -> Result<Duration, String> {
    match text.strip_suffix('d').map(str::parse::<u64>) {
        // Ten years at most: a longer one is a typo, and would overflow the clock.
        Some(Ok(days)) if days <= 3_650 => Ok(Duration::from_secs(days * 86_400)),
        Some(Ok(_)) => Err(format!(
            "{text:?} is over ten years (3650d); choose a shorter expiry"
        )),
        Some(Err(_)) => Err(format!("{text:?} is not a number of days (e.g. 90d)")),
        None => parse_duration(text).map_err(|e| e.to_string()),
    }
}

/// Who runs the command, for the audit log: the login name, on this host.
fn operator() -> (String, String) {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "operator".into());
    (
        format!("{user} (cli)"),
        wharf_registry::registry::audit::hostname(),
    )
}

fn time(secs: Option<u64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s))
                .to_string()
        }
    }
}

pub fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    let (name, source) = operator();
    let who = Actor {
        name: &name,
        source: &source,
    };
    match cmd {
        TokenCommand::Create(a) => {
            let (registry, config, rt) = open(&a.store)?;
            if config.auth.is_none() {
                eprintln!("Warning: this config sets no `auth:`, so the registry is open and checks no token; add auth.htpasswd (with or without its token server) for tokens to matter.");
            }
            let made = rt.block_on(registry.create_token(who, &a.name, None, &a.scopes, a.expires));
            let (record, secret) = made.map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "Created token {} ({}), expires {}. Its secret is printed once: use it as the docker password with user name {}.",
                record.name,
                record.scopes.join(" "),
                time(record.expires),
                record.name
            );
            println!("{secret}");
        }
        TokenCommand::List(store) => {
            let (registry, _, rt) = open(&store)?;
            let tokens = rt
                .block_on(registry.list_tokens(None))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if store.json {
                println!("{}", serde_json::to_string(&tokens)?);
                return Ok(());
            }
            println!("NAME\tOWNER\tSCOPES\tCREATED\tEXPIRES\tLAST USED\tSTATE");
            let now = wharf_registry::auth::robots::now_secs();
            for t in tokens {
                let state = match wharf_registry::auth::robots::usable(&t, now) {
                    Ok(_) => "active".to_owned(),
                    Err(e) => e.to_string(),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{state}",
                    t.name,
                    t.owner.as_deref().unwrap_or("-"),
                    t.scopes.join(" "),
                    time(Some(t.created)),
                    time(t.expires),
                    time(t.last_used),
                );
            }
        }
        TokenCommand::Revoke(a) => {
            let (registry, _, rt) = open(&a.store)?;
            rt.block_on(registry.revoke_token(who, &a.name, None))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!("Revoked token {}", a.name);
        }
    }
    Ok(())
}

pub fn audit(args: AuditArgs) -> anyhow::Result<()> {
    if let Some(AuditCommand::Verify(store)) = args.verify {
        let (registry, _, rt) = open(&store)?;
        let verdict = rt
            .block_on(registry.verify_audit())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        return match verdict {
            Ok(n) => {
                println!("audit log intact: {n} records, each chained to the one before");
                Ok(())
            }
            Err(b) => bail!(
                "audit log broken at record {}: {} (records before it are intact)",
                b.position,
                b.why
            ),
        };
    }
    let since = args.since.map(|s| normalize_since(&s)).transpose()?;
    let query = AuditQuery {
        since,
        actor: args.actor,
    };
    let (registry, _, rt) = open(&args.store)?;
    let records = rt
        .block_on(registry.audit_records(&query))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for r in records {
        if args.store.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            let e = &r.entry;
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.seq, e.time, e.actor, e.source, e.action, e.target, e.outcome
            );
        }
    }
    Ok(())
}

/// A date alone means its midnight, UTC; a time is checked as RFC 3339.
fn normalize_since(text: &str) -> anyhow::Result<String> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    let t = humantime::parse_rfc3339_weak(full.trim_end_matches('Z')).with_context(|| {
        format!("--since {text:?}: use RFC 3339 (2026-12-07 or 2026-12-07T10:00:00Z)")
    })?;
    Ok(humantime::format_rfc3339_millis(t).to_string())
}
