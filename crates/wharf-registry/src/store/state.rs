//! State that is not content, behind one seam: the event log with its delivery cursors and
//! leases, small records (job reports, UI sign-out stamps), and the failed-login counts
//! replicas share. The filesystem keeps it under `_wharf/` beside registry:2's tree
//! (`store::fs::FsState`); a database can keep it in tables, so every method that may
//! wait on one is async and fails with a [`StoreError`](super::StoreError).
//!
//! The traits live here, below `auth`, `registry` and the front ends, so that a backend
//! implements them without reaching up into the code that uses them.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::{Guard, StoreResult};

/// A small record wharf keeps about itself, named by what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// What a background job's runs did, by job (`gc`, `scrub`, `retention`).
    Report(&'a str),
    /// When a user last signed out of the UI, by user name.
    SignedOut(&'a str),
}

/// Small records, read and replaced whole. A put is durable when it returns.
#[async_trait]
pub trait Records: Send + Sync + 'static {
    async fn get(&self, record: Record<'_>) -> StoreResult<Option<Vec<u8>>>;
    async fn put(&self, record: Record<'_>, bytes: Vec<u8>) -> StoreResult<()>;
}

/// The ordered event log every process on the store shares: events numbered from 1 with no
/// holes but at its trimmed start (and where a crash lost one before it was durable), each
/// endpoint's delivery cursor, and a lease so that one process delivers to an endpoint.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Store one event durably; its number.
    async fn append(&self, event: Vec<u8>) -> StoreResult<u64>;
    /// Store `events` durably, in order and numbered consecutively; their numbers.
    async fn append_batch(&self, events: Vec<Vec<u8>>) -> StoreResult<Vec<u64>> {
        let mut seqs = Vec::with_capacity(events.len());
        for e in events {
            seqs.push(self.append(e).await?);
        }
        Ok(seqs)
    }
    /// Queue `events` now, to be stored durably, in order, before anything appended
    /// after them; the future resolves once they are. None where the log has no queue
    /// (callers then append and wait).
    fn append_queued(
        &self,
        _events: Vec<Vec<u8>>,
    ) -> Option<futures::future::BoxFuture<'static, StoreResult<Vec<u64>>>> {
        None
    }
    /// The event numbered `seq`, if it is (still) in the log.
    async fn read(&self, seq: u64) -> StoreResult<Option<Vec<u8>>>;
    /// The highest number in the log (0 when empty), other processes' appends included.
    async fn newest(&self) -> StoreResult<u64>;
    /// The first number at or above `seq` that is in the log: where a reader goes on when
    /// `seq` is missing below the newest (trimmed, or lost to a crash).
    async fn first_from(&self, seq: u64) -> StoreResult<Option<u64>>;
    /// Remove events beyond the newest `keep` that are older than `age`, never one above
    /// `delivered` (an endpoint still needs it) and never the newest (it carries the count).
    /// Returns how many went.
    async fn trim(&self, keep: usize, age: Duration, delivered: u64) -> StoreResult<usize>;
    /// The last event delivered to `endpoint`; None before its first delivery.
    async fn cursor(&self, endpoint: &str) -> StoreResult<Option<u64>>;
    async fn save_cursor(&self, endpoint: &str, seq: u64) -> StoreResult<()>;
    /// The right to deliver to `endpoint`, held until the guard drops (or its holder dies);
    /// None while another process holds it.
    async fn try_lease(&self, endpoint: &str) -> StoreResult<Option<Guard>>;
    /// Wake-ups as other processes append, where the store can push them (PostgreSQL's
    /// `LISTEN`); the stream ends when the connection does. None: callers poll.
    async fn listen(&self) -> StoreResult<Option<BoxStream<'static, ()>>> {
        Ok(None)
    }
}

/// How many times each repository was pulled (a manifest read for an image, as Docker Hub
/// counts), kept where every process on the store adds to the same figures. Callers add in
/// batches: a pull never waits for this.
#[async_trait]
pub trait PullCounts: Send + Sync + 'static {
    /// Add `n` pulls to each repository named, durably when it returns.
    async fn add_pulls(&self, counts: &[(String, u64)]) -> StoreResult<()>;
    /// The stored counts of `repos`, in their order (0 for one never pulled).
    async fn pulls(&self, repos: &[String]) -> StoreResult<Vec<u64>>;
}

/// Everything behind the seam, as one store provides it.
pub trait State: Records + EventLog {}

impl<T: Records + EventLog + ?Sized> State for T {}

/// Tokens and the audit log, as one store keeps them.
pub trait IdentityState: Tokens + AuditLog {}

impl<T: Tokens + AuditLog + ?Sized> IdentityState for T {}

/// Failed-login counts kept where every replica sees them (the login limiter's).
#[async_trait]
pub trait SharedFailures: Send + Sync {
    /// Failures of the pair within the last `window`.
    async fn failures(&self, ip: IpAddr, user: &str, window: Duration) -> Result<u32, String>;
    async fn failed(&self, ip: IpAddr, user: &str, window: Duration) -> Result<(), String>;
    async fn succeeded(&self, ip: IpAddr, user: &str) -> Result<(), String>;
}

/// A robot or personal access token as stored: never its secret, only the secret's
/// SHA-256 (see `auth::robots` for why a fast hash is the right one here).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    /// The user name docker sends with it.
    pub name: String,
    /// The signed-in user who made it for themselves; None for a robot an admin made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The owner's directory groups (LDAP, OIDC) when the token was made, that `access:`
    /// rules name: the owner's rights at use are counted with them, as in their session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_groups: Vec<String>,
    /// `repository-glob:actions`, e.g. `team/*:pull,push`: all the token may do.
    pub scopes: Vec<String>,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// Unix seconds.
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
}

/// Robot and personal tokens, where every replica reads them.
#[async_trait]
pub trait Tokens: Send + Sync + 'static {
    /// Store a new token; false when the name is taken (by a revoked token too, so that
    /// a name in the audit log means one token).
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<bool>;
    async fn token(&self, name: &str) -> StoreResult<Option<TokenRecord>>;
    /// Every token, sorted by name.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Mark revoked at `at` (unix seconds); false when there is no such token.
    async fn revoke_token(&self, name: &str, at: u64) -> StoreResult<bool>;
    /// Record a use at `at` (callers throttle these writes).
    async fn token_used(&self, name: &str, at: u64) -> StoreResult<()>;
}

/// One thing someone did, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// RFC 3339, UTC.
    pub time: String,
    /// Who: a user, a token's name, `-` for anonymous, `wharf` for the registry's own jobs.
    pub actor: String,
    /// The client's address, or the host that ran a command.
    pub source: String,
    pub action: String,
    pub target: String,
    /// `ok`, `denied`, `failed: ...`.
    pub outcome: String,
}

/// The hash-chained audit log: each stored line is an entry sealed to the line before it
/// (`store::auditchain`). Appends are serialized across every process on the store.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Seal and append `entries` in order, durably; the lines stored.
    async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<Vec<String>>;
    /// Every stored line, in stored order.
    async fn audit_lines(&self) -> StoreResult<Vec<String>>;
    /// The last sequence number and hash appended, as recorded beside the lines: what
    /// shows that records were cut from the end.
    async fn audit_head(&self) -> StoreResult<Option<(u64, String)>>;
}

/// The figures of exact quotas: for each quota (named by a key its rule derives), the
/// blobs charged to it, each once with its size, and their total. A caller holds the
/// quota's [`Locks::exclusive`](super::Locks::exclusive) lock from a read to the write
/// that depends on it, so that racing pushes are charged one after the other. A failure
/// between a charge and the link it pays for leaves the figure high, never low: a push
/// can be refused early, never admitted over the limit; `wharf scrub` recounts.
#[async_trait]
pub trait QuotaLedger: Send + Sync + 'static {
    /// The bytes charged; None before the quota was first counted.
    async fn usage(&self, quota: &str) -> StoreResult<Option<u64>>;
    /// Whether `digest` is charged already (linked in one of the quota's repositories).
    async fn charged(&self, quota: &str, digest: &wharf_oci::Digest) -> StoreResult<bool>;
    /// Charge a blob that is not charged yet: the usage grows by `size`.
    async fn charge(&self, quota: &str, digest: &wharf_oci::Digest, size: u64) -> StoreResult<()>;
    /// Replace the quota's figures with a recount: exactly `blobs` are charged. Returns
    /// the usage it replaced (None if there was none).
    async fn replace(
        &self,
        quota: &str,
        blobs: &[(wharf_oci::Digest, u64)],
    ) -> StoreResult<Option<u64>>;
}

/// Records from one backend and the event log from another: with a database, records are
/// rows every replica reads, while the event log stays where the store keeps it.
pub struct SplitState {
    pub records: std::sync::Arc<dyn Records>,
    pub log: std::sync::Arc<dyn EventLog>,
}

#[async_trait]
impl Records for SplitState {
    async fn get(&self, record: Record<'_>) -> StoreResult<Option<Vec<u8>>> {
        self.records.get(record).await
    }
    async fn put(&self, record: Record<'_>, bytes: Vec<u8>) -> StoreResult<()> {
        self.records.put(record, bytes).await
    }
}

#[async_trait]
impl EventLog for SplitState {
    async fn append(&self, event: Vec<u8>) -> StoreResult<u64> {
        self.log.append(event).await
    }
    async fn read(&self, seq: u64) -> StoreResult<Option<Vec<u8>>> {
        self.log.read(seq).await
    }
    async fn newest(&self) -> StoreResult<u64> {
        self.log.newest().await
    }
    async fn first_from(&self, seq: u64) -> StoreResult<Option<u64>> {
        self.log.first_from(seq).await
    }
    async fn trim(&self, keep: usize, age: Duration, delivered: u64) -> StoreResult<usize> {
        self.log.trim(keep, age, delivered).await
    }
    async fn cursor(&self, endpoint: &str) -> StoreResult<Option<u64>> {
        self.log.cursor(endpoint).await
    }
    async fn save_cursor(&self, endpoint: &str, seq: u64) -> StoreResult<()> {
        self.log.save_cursor(endpoint, seq).await
    }
    async fn try_lease(&self, endpoint: &str) -> StoreResult<Option<Guard>> {
        self.log.try_lease(endpoint).await
    }
}
