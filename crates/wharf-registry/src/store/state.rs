//! State that is not content, shared by every process that serves one store: today the
//! failed-login counts replicas share.
//!
//! The traits live here, below `auth`, `registry` and the front ends, so that a backend
//! implements them without reaching up into the code that uses them.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

/// Failed-login counts kept where every replica sees them (the login limiter's).
#[async_trait]
pub trait SharedFailures: Send + Sync {
    /// Failures of the pair within the last `window`.
    async fn failures(&self, ip: IpAddr, user: &str, window: Duration) -> Result<u32, String>;
    async fn failed(&self, ip: IpAddr, user: &str, window: Duration) -> Result<(), String>;
    async fn succeeded(&self, ip: IpAddr, user: &str) -> Result<(), String>;
}
