//! How many costly things one account may ask for in a minute: roster and category changes,
//! contact requests, the directory toggle, messages kept for offline contacts, room history
//! loads, room invitations. Each is a database write or read, often an audit row; a pupil's
//! script must not turn them into a flood. A token bucket per account, refilled at
//! `per_minute` a minute, holding as many.

use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use dashmap::DashMap;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

pub struct WriteBudget {
    per_minute: f64,
    /// Keyed by a keyed hash of the username: most accounts that log in have an entry.
    accounts: DashMap<u64, Bucket>,
    hasher: RandomState,
}

impl WriteBudget {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            accounts: DashMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// Takes one write from `username`'s budget; `false` when it is spent.
    pub fn try_spend(&self, username: &str) -> bool {
        self.spend_at(username, Instant::now())
    }

    /// Takes `n` at once from `username`'s budget, or none when fewer are left.
    pub fn try_spend_many(&self, username: &str, n: u32) -> bool {
        self.spend_many_at(username, f64::from(n), Instant::now())
    }

    fn spend_at(&self, username: &str, now: Instant) -> bool {
        self.spend_many_at(username, 1.0, now)
    }

    fn spend_many_at(&self, username: &str, n: f64, now: Instant) -> bool {
        let mut bucket = self
            .accounts
            .entry(self.hasher.hash_one(username))
            .or_insert(Bucket {
                tokens: self.per_minute,
                refilled: now,
            });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_minute / 60.0).min(self.per_minute);
        bucket.refilled = now;
        if bucket.tokens < n {
            return false;
        }
        bucket.tokens -= n;
        true
    }

    /// Forgets the accounts whose budget is whole again.
    pub fn purge(&self) {
        let now = Instant::now();
        let per_minute = self.per_minute;
        self.accounts.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
            b.tokens + elapsed * per_minute / 60.0 < per_minute
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spent_then_refilled_per_account() {
        let budget = WriteBudget::new(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(budget.spend_at("lea", start));
        }
        assert!(!budget.spend_at("lea", start));
        assert!(budget.spend_at("hugo", start));
        // One write a twenty seconds.
        assert!(budget.spend_at("lea", start + Duration::from_secs(20)));
        assert!(!budget.spend_at("lea", start + Duration::from_secs(21)));
    }
}
