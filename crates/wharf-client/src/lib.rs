//! wharf's registry client, used by the CLI, the updater and the registry's pull-through
//! cache: image references parsed as docker parses them; credentials found where docker and
//! watchtower find them (environment, config.json, credential helpers); `WWW-Authenticate`
//! challenges and a cache of Bearer tokens; `RegistryClient`, one registry over the
//! Distribution API with docker's TLS trust and streamed monolithic or chunked transfers;
//! and `image`: OCI image layouts, `docker save` archives and registry-to-registry copies.

pub mod challenge;
pub mod client;
pub mod credentials;
pub mod image;
pub mod reference;
pub mod token_cache;
pub mod trust;

pub use credentials::{Credential, CredentialSource, Found, Origin, Secret};
pub use reference::{ImageRef, Registry};

pub use challenge::{BearerChallenge, Challenge};
pub use token_cache::{fetch_token, TokenCache, TokenKey};

pub use client::{ClientError, ClientOptions, RegistryClient};
