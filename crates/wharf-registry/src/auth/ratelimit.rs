//! Failed logins are limited per client address and user name: after `MAX_FAILURES` within
//! `WINDOW`, that pair is refused without checking the password until the window ends.
//! Other clients and users are unaffected.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

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
}

impl FailureLimiter {
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
