//! Failed-login throttling that slows guessing down without letting anyone lock a user out,
//! and whose answers never depend on whether a password was right.
//!
//! - Failures are counted per account *and address* (someone guessing Léa's password from
//!   one place does not lock Léa out from another) and per address (spraying many accounts).
//! - Past a key's budget, each judged attempt must wait an exponentially growing delay after
//!   that key's last failure (1 s, 2 s, 4 s… up to `max_delay`), instead of a hard lock.
//! - An attempt made while it must wait is not checked at all: it gets the same
//!   `temporary-auth-failure`, right password or not, and does not count.
//! - A school's pupils share one NAT address: the per-address budget is larger for the
//!   networks configured as such, and an account that logged in from an address before skips
//!   that address's budget, so a pupil spraying guesses from the school slows down strangers'
//!   accounts only.
//!
//! Counters are forgotten `window` after their last failure, known addresses after
//! `KNOWN_FOR`; [`Throttle::purge`], run periodically, keeps memory bounded by the failures of
//! one window and at most `MAX_KNOWN` known pairs.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ipnet::IpNet;

/// How long a successful login from an address vouches for it.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Known account+address pairs kept at most; past it, new ones are not remembered until the
/// next purge (a login from an unknown pair then only has the per-address budget).
const MAX_KNOWN: usize = 200_000;
/// The first delay once a budget is spent.
const FIRST_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

struct Counter<K: Eq + Hash> {
    entries: DashMap<K, Failures>,
}

impl<K: Eq + Hash> Counter<K> {
    fn new() -> Self {
        Self {
            entries: DashMap::new(),
        }
    }

    /// How long an attempt on `key` must still wait, given its budget.
    fn wait(&self, key: &K, budget: u32, limits: &Limits, now: Instant) -> Option<Duration> {
        let failures = *self.entries.get(key)?;
        if failures.count < budget || now.duration_since(failures.last) >= limits.window {
            return None;
        }
        let doublings = (failures.count - budget).min(16);
        let delay = FIRST_DELAY
            .saturating_mul(1 << doublings)
            .min(limits.max_delay);
        (failures.last + delay)
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
    }

    fn record(&self, key: K, limits: &Limits, now: Instant) {
        let mut entry = self.entries.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= limits.window {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    fn forget(&self, key: &K) {
        self.entries.remove(key);
    }

    fn purge(&self, now: Instant, window: Duration) {
        self.entries
            .retain(|_, f| now.duration_since(f.last) < window);
    }
}

/// The throttle's settings (`[auth]` in the configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Failures for one account from one address before delays start.
    pub per_account_and_address: u32,
    /// Failures from one address, whatever the accounts, before delays start.
    pub per_address: u32,
    /// The same, for addresses in `nat_networks`.
    pub per_nat_address: u32,
    pub nat_networks: Vec<IpNet>,
    /// Failures are forgotten this long after the last one.
    pub window: Duration,
    pub max_delay: Duration,
}

pub struct Throttle {
    limits: Limits,
    pairs: Counter<(String, IpAddr)>,
    addresses: Counter<IpAddr>,
    /// Account+address pairs that logged in successfully, and when last; keyed by a keyed
    /// hash of the pair, as every account that logs in has one.
    known: DashMap<u64, Instant>,
    hasher: RandomState,
}

/// Why an attempt is not checked: how long it must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins; try again in {} s", .0.as_secs().max(1))]
pub struct Throttled(pub Duration);

impl Throttle {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pairs: Counter::new(),
            addresses: Counter::new(),
            known: DashMap::new(),
            hasher: RandomState::new(),
        }
    }

    fn pair_key(&self, username: &str, ip: IpAddr) -> u64 {
        self.hasher.hash_one((username, ip))
    }

    fn address_budget(&self, ip: IpAddr) -> u32 {
        if self.limits.nat_networks.iter().any(|n| n.contains(&ip)) {
            self.limits.per_nat_address
        } else {
            self.limits.per_address
        }
    }

    /// Whether an attempt on `username` may be checked now. It is asked once the client named
    /// the account, so that accounts known at the address skip the address's budget.
    pub fn check(&self, username: Option<&str>, ip: IpAddr) -> Result<(), Throttled> {
        let now = Instant::now();
        let pair = username.map(|u| (u.to_owned(), ip));
        let known = username.is_some_and(|u| self.known.contains_key(&self.pair_key(u, ip)));
        let by_address = if known {
            None
        } else {
            self.addresses
                .wait(&ip, self.address_budget(ip), &self.limits, now)
        };
        let by_pair = pair.as_ref().and_then(|p| {
            self.pairs
                .wait(p, self.limits.per_account_and_address, &self.limits, now)
        });
        match by_address.max(by_pair) {
            Some(left) => Err(Throttled(left)),
            None => Ok(()),
        }
    }

    /// A judged attempt failed: wrong password, unknown account, or a malformed exchange.
    pub fn record_failure(&self, username: Option<&str>, ip: IpAddr) {
        let now = Instant::now();
        self.addresses.record(ip, &self.limits, now);
        if let Some(u) = username {
            self.pairs.record((u.to_owned(), ip), &self.limits, now);
        }
    }

    /// A login succeeded: the pair's failures are forgiven and the address is known for it.
    pub fn record_success(&self, username: &str, ip: IpAddr) {
        self.pairs.forget(&(username.to_owned(), ip));
        let key = self.pair_key(username, ip);
        if self.known.len() < MAX_KNOWN || self.known.contains_key(&key) {
            self.known.insert(key, Instant::now());
        }
    }

    pub fn purge(&self) {
        let now = Instant::now();
        self.pairs.purge(now, self.limits.window);
        self.addresses.purge(now, self.limits.window);
        self.known
            .retain(|_, last| now.duration_since(*last) < KNOWN_FOR);
    }

    pub fn window(&self) -> Duration {
        self.limits.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            per_account_and_address: 2,
            per_address: 3,
            per_nat_address: 6,
            nat_networks: vec!["10.0.0.0/8".parse().unwrap()],
            window: Duration::from_secs(300),
            max_delay: Duration::from_secs(60),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_pair_slows_down_without_touching_other_addresses() {
        let t = Throttle::new(limits());
        let here = ip("192.0.2.1");
        t.record_failure(Some("lea"), here);
        assert!(t.check(Some("lea"), here).is_ok());
        t.record_failure(Some("lea"), here);
        let Err(Throttled(wait)) = t.check(Some("lea"), here) else {
            panic!("the pair waits");
        };
        assert!(wait <= FIRST_DELAY);
        // Léa from elsewhere, and others from here, are not slowed down.
        assert!(t.check(Some("lea"), ip("192.0.2.2")).is_ok());
        assert!(t.check(Some("hugo"), here).is_ok());
    }

    #[test]
    fn delays_double_up_to_the_maximum() {
        let t = Throttle::new(limits());
        let here = ip("192.0.2.1");
        let mut last = Duration::ZERO;
        for _ in 0..12 {
            t.record_failure(Some("lea"), here);
            if let Err(Throttled(wait)) = t.check(Some("lea"), here) {
                assert!(wait >= last || wait > Duration::from_secs(59), "{wait:?}");
                last = wait;
            }
        }
        assert!(last > Duration::from_secs(59) && last <= Duration::from_secs(60));
    }

    #[test]
    fn an_address_spraying_accounts_waits_except_for_known_accounts() {
        let t = Throttle::new(limits());
        let school = ip("192.0.2.9");
        t.record_success("lea", school);
        for user in ["a", "b", "c"] {
            t.record_failure(Some(user), school);
        }
        assert!(t.check(None, school).is_err());
        assert!(t.check(Some("newcomer"), school).is_err());
        assert!(t.check(Some("lea"), school).is_ok(), "known here");
        // A NAT network has a larger budget.
        let nat = ip("10.1.2.3");
        for user in ["a", "b", "c", "d", "e"] {
            t.record_failure(Some(user), nat);
        }
        assert!(t.check(Some("newcomer"), nat).is_ok());
        t.record_failure(Some("f"), nat);
        assert!(t.check(Some("newcomer"), nat).is_err());
    }

    #[test]
    fn success_forgives_and_purge_forgets() {
        let mut limits = limits();
        limits.window = Duration::ZERO;
        let t = Throttle::new(limits);
        let here = ip("::1");
        t.record_failure(Some("lea"), here);
        t.record_success("lea", here);
        assert!(t.pairs.entries.is_empty());
        t.record_failure(Some("hugo"), here);
        t.purge();
        assert!(t.pairs.entries.is_empty());
        assert!(t.addresses.entries.is_empty());
        assert_eq!(t.known.len(), 1);
    }
}
