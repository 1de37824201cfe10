//! The wharf registry: the OCI Distribution API (`http`) over two narrow storage traits
//! (`store`), so that a new backend is a new module and the HTTP layer never changes.

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
