//! The foundation of wharf's registry client: image references parsed as docker parses
//! them, credentials found where docker and watchtower find them, `WWW-Authenticate`
//! challenges, and a cache of Bearer tokens.

pub mod challenge;
pub mod client;
pub mod credentials;
pub mod image;
pub mod reference;
pub mod token_cache;

pub use credentials::{Credential, CredentialSource, Found, Origin, Secret};
pub use reference::{ImageRef, Registry};

pub use challenge::{BearerChallenge, Challenge};
pub use token_cache::{fetch_token, TokenCache, TokenKey};

pub use client::{ClientError, ClientOptions, RegistryClient};
