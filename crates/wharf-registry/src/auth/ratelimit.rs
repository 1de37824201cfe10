//! Failed logins are limited per client address and user name: after `MAX_FAILURES` within
//! `WINDOW`, that pair is refused without checking the password until the window ends.
//! Other clients and users are unaffected. With a metadata database the counts are shared
//! by every replica ([`SharedFailures`]); while it cannot be reached, each process counts
//! on its own rather than not at all.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub use crate::store::state::SharedFailures;

const MAX_FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
const TRACKED_LIMIT: usize = 100_000;

struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Default)]
pub struct FailureLimiter {
    windows: DashMap<(IpAddr, String), Window>,
    shared: Option<Arc<dyn SharedFailures>>,
}

impl FailureLimiter {
    /// Count in `shared` from now on, and in this process only while it fails.
    pub fn share(&mut self, shared: Arc<dyn SharedFailures>) {
        self.shared = Some(shared);
    }

    pub async fn is_blocked(&self, ip: IpAddr, user: &str) -> bool {
        if let Some(shared) = &self.shared {
            match shared.failures(ip, user, WINDOW).await {
                Ok(n) => return n >= MAX_FAILURES,
                Err(e) => {
                    tracing::warn!(error = %e, "shared login failure counts unavailable; counting locally")
                }
            }
        }
        self.blocked(ip, user)
    }

    pub async fn record_failure(&self, ip: IpAddr, user: &str) {
        if let Some(shared) = &self.shared {
            match shared.failed(ip, user, WINDOW).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "shared login failure counts unavailable; counting locally")
                }
            }
        }
        self.failed(ip, user)
    }

    pub async fn record_success(&self, ip: IpAddr, user: &str) {
        if let Some(shared) = &self.shared {
            let _ = shared.succeeded(ip, user).await;
        }
        self.succeeded(ip, user)
    }

    pub fn blocked(&self, ip: IpAddr, user: &str) -> bool {
        self.windows
            .get(&(ip, user.to_owned()))
            .is_some_and(|w| w.failures >= MAX_FAILURES && w.started.elapsed() < WINDOW)
    }

    pub fn failed(&self, ip: IpAddr, user: &str) {
        if self.windows.len() >= TRACKED_LIMIT {
            self.windows.retain(|_, w| w.started.elapsed() < WINDOW);
        }
        let mut w = self.windows.entry((ip, user.to_owned())).or_insert(Window {
            started: Instant::now(),
            failures: 0,
        });
        if w.started.elapsed() >= WINDOW {
            *w = Window {
                started: Instant::now(),
                failures: 0,
            };
        }
        w.failures += 1;
    }

    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        self.windows.remove(&(ip, user.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_one_pair_after_repeated_failures() {
        let l = FailureLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert!(!l.blocked(a, "u"));
            l.failed(a, "u");
        }
        assert!(l.blocked(a, "u"));
        assert!(!l.blocked(b, "u"), "another client");
        assert!(!l.blocked(a, "v"), "another user");
        l.succeeded(a, "u");
        assert!(!l.blocked(a, "u"));
    }
}
