//! The wharf registry, a drop-in for Distribution (registry:2). The OCI Distribution API
//! (`http`) and the web UI (`ui`) call one service, `registry::Registry`, which holds the
//! rules (uploads, manifests, deletes, the pull-through proxy, events, governance) and runs
//! the maintenance jobs (garbage collection, scrub, retention). Below it, `store` is narrow
//! traits (blobs, metadata, locks) over registry:2's layout on a filesystem or S3, with the
//! metadata optionally in PostgreSQL. `config` reads registry:2's config.yml and
//! `REGISTRY_*`, `auth` is htpasswd, tokens and access policies, and `server` wires it all
//! and serves. The layers and the rules between them: docs/architecture.md.

pub mod auth;
pub mod config;
pub mod debug;
pub mod health;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;
pub mod tls;
pub mod ui;

pub use config::Config;
pub use server::serve;
