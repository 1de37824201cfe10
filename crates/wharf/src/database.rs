//! `wharf database migrate up|down|status` and `wharf database import`: the metadata
//! database's schema, and indexing a registry:2 storage root into it (GitLab container
//! registry's `registry database migrate` and `import`).

use clap::Subcommand;

use crate::maintenance::StoreArgs;

#[cfg(feature = "postgres")]
mod commands;

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
    #[cfg(feature = "postgres")]
    return commands::run(cmd);
    #[cfg(not(feature = "postgres"))]
    {
        // Kept as a subcommand, so that this build says what it lacks instead of "unknown".
        let _ = cmd;
        anyhow::bail!(wharf_registry::store::built_without(
            "postgres",
            "a metadata database"
        ))
    }
}
