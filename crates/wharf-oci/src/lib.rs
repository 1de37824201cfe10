//! Types shared by every part of wharf: what a digest, a repository name, a tag, an image
//! reference and a manifest are, and the error codes the distribution spec defines; and the
//! few pure helpers every crate shares, so each is written once: `units` (Go durations, byte
//! sizes for people) and `sync` (the lock-poisoning policy). Nothing here performs I/O, so
//! everything here is cheap to test exhaustively.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media_type;
pub mod name;
pub mod sync;
pub mod units;

pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::ErrorCode;
pub use manifest::{Descriptor, Manifest, ManifestKind};
pub use name::{Reference, RepoName, Tag};
