//! Failed-login throttling per account and per client IP address.
//!
//! A fixed window per key: after `limit` failures within `window`, attempts on that key are
//! refused until the window that began with the first failure ends. Entries whose window has
//! ended are purged by [`Throttle::purge`], which the server calls periodically, so memory stays
//! bounded by the failures of one window.

use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

struct Counter<K: Eq + Hash> {
    limit: u32,
    entries: DashMap<K, Window>,
}

impl<K: Eq + Hash> Counter<K> {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            entries: DashMap::new(),
        }
    }

    fn is_blocked(&self, key: &K, now: Instant, window: Duration) -> bool {
        self.entries
            .get(key)
            .is_some_and(|w| now.duration_since(w.started) < window && w.failures >= self.limit)
    }

    fn record(&self, key: K, now: Instant, window: Duration) {
        let mut entry = self.entries.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(entry.started) >= window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    fn purge(&self, now: Instant, window: Duration) {
        self.entries
            .retain(|_, w| now.duration_since(w.started) < window);
    }
}

pub struct Throttle {
    window: Duration,
    accounts: Counter<String>,
    addresses: Counter<IpAddr>,
}

impl Throttle {
    pub fn new(per_account: u32, per_ip: u32, window: Duration) -> Self {
        Self {
            window,
            accounts: Counter::new(per_account),
            addresses: Counter::new(per_ip),
        }
    }

    pub fn is_blocked(&self, username: Option<&str>, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.addresses.is_blocked(&ip, now, self.window)
            || username.is_some_and(|u| self.accounts.is_blocked(&u.to_owned(), now, self.window))
    }

    pub fn record_failure(&self, username: Option<&str>, ip: IpAddr) {
        let now = Instant::now();
        self.addresses.record(ip, now, self.window);
        if let Some(u) = username {
            self.accounts.record(u.to_owned(), now, self.window);
        }
    }

    pub fn purge(&self) {
        let now = Instant::now();
        self.accounts.purge(now, self.window);
        self.addresses.purge(now, self.window);
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_per_account_and_per_ip() {
        let t = Throttle::new(2, 3, Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other_ip: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(!t.is_blocked(Some("alice"), ip));
        t.record_failure(Some("alice"), ip);
        assert!(!t.is_blocked(Some("alice"), ip));
        t.record_failure(Some("alice"), ip);
        assert!(t.is_blocked(Some("alice"), other_ip), "account limit");
        assert!(!t.is_blocked(Some("bob"), ip));
        t.record_failure(Some("bob"), ip);
        assert!(t.is_blocked(Some("carol"), ip), "address limit");
        assert!(!t.is_blocked(Some("carol"), other_ip));
    }

    #[test]
    fn window_end_unblocks_and_purges() {
        let t = Throttle::new(1, 10, Duration::from_millis(0));
        let ip: IpAddr = "::1".parse().unwrap();
        t.record_failure(Some("alice"), ip);
        assert!(!t.is_blocked(Some("alice"), ip));
        t.purge();
        assert!(t.accounts.entries.is_empty());
        assert!(t.addresses.entries.is_empty());
    }
}
