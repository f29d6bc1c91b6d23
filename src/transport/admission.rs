//! Who may open a connection: bounds on connections that have not bound a resource yet, in
//! total and per address, so that silent or slow connections from one place cannot take every
//! slot, and a clean refusal at the limit instead of a connection left hanging.
//!
//! At an address's limit the newcomer is not refused while some connection from that address
//! has not progressed yet (no stream header, no TLS handshake): the oldest of those is closed
//! and the newcomer takes its place. A school's pupils share one address; one of them opening
//! silent connections must outpace the timeouts to keep the others out, and cannot.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dashmap::DashMap;
use ipnet::IpNet;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct AdmissionLimits {
    /// Connections still negotiating (TLS, SASL, binding), in total.
    pub max_unauthenticated: usize,
    /// The same from one address.
    pub max_unauthenticated_per_ip: usize,
    /// The same from one address of a network shared by many users.
    pub max_unauthenticated_per_nat_ip: usize,
    pub nat_networks: Vec<IpNet>,
}

pub struct Admission {
    limits: AdmissionLimits,
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, Address>,
}

/// The connections negotiating from one address.
#[derive(Default)]
struct Address {
    count: usize,
    /// Those that have not progressed yet, oldest first: the ones a newcomer may replace.
    silent: VecDeque<Arc<Attempt>>,
}

/// One negotiating connection, as its address's entry knows it. One small allocation per
/// connection, freed once it is bound: a `Notify` and a flag rather than a cancellation token,
/// whose tree node would cost more.
#[derive(Default)]
struct Attempt {
    /// Notified when a newcomer from the same address takes its place; the permit waits for
    /// the connection if it is not waiting at that moment.
    eviction: Notify,
    /// Evicted, so taken out of its address's count already: its drop must not count it again.
    evicted: AtomicBool,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server has as many negotiating connections as it takes.
    Busy,
    /// This address has as many negotiating connections as it may.
    TooManyFromAddress,
}

impl Refusal {
    /// The limit met, as the metrics name it.
    pub fn limit(self) -> &'static str {
        match self {
            Refusal::Busy => "max_negotiating",
            Refusal::TooManyFromAddress => "max_negotiating_per_ip",
        }
    }
}

/// A connection counted as negotiating, until it binds a resource or ends (on drop).
pub struct LoggingIn {
    admission: Arc<Admission>,
    ip: IpAddr,
    attempt: Arc<Attempt>,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
        }
    }

    fn per_ip_limit(&self, ip: IpAddr) -> usize {
        if self.limits.nat_networks.iter().any(|n| n.contains(&ip)) {
            self.limits.max_unauthenticated_per_nat_ip
        } else {
            self.limits.max_unauthenticated_per_ip
        }
    }

    /// Counts a new connection from `ip`, or says why it is refused. At the address's limit,
    /// the oldest connection from it that has not progressed is evicted for the newcomer.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<LoggingIn, Refusal> {
        let ip = canonical(ip);
        let limit = self.per_ip_limit(ip);
        let attempt = Arc::new(Attempt::default());
        {
            let mut address = self.per_ip.entry(ip).or_default();
            if address.count >= limit {
                let Some(oldest) = address.silent.pop_front() else {
                    return Err(Refusal::TooManyFromAddress);
                };
                oldest.evicted.store(true, Ordering::Relaxed);
                oldest.eviction.notify_one();
                address.count -= 1;
                // Its task ends soon and gives back its place in the total then.
            }
            if self.total.fetch_add(1, Ordering::Relaxed) >= self.limits.max_unauthenticated {
                self.total.fetch_sub(1, Ordering::Relaxed);
                return Err(Refusal::Busy);
            }
            address.count += 1;
            address.silent.push_back(attempt.clone());
        }
        Ok(LoggingIn {
            admission: self.clone(),
            ip,
            attempt,
        })
    }

    /// Connections negotiating now.
    pub fn negotiating(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl LoggingIn {
    /// The connection has shown it is a client (a stream header, a finished TLS handshake):
    /// no newcomer may take its place any more.
    pub fn progressed(&self) {
        if let Some(mut address) = self.admission.per_ip.get_mut(&self.ip) {
            address.silent.retain(|a| !Arc::ptr_eq(a, &self.attempt));
        }
    }

    /// Resolves when a newcomer from the same address has taken this connection's place: the
    /// connection must close. One waiter at a time.
    pub async fn evicted(&self) {
        if self.is_evicted() {
            return;
        }
        self.attempt.eviction.notified().await;
    }

    pub fn is_evicted(&self) -> bool {
        self.attempt.evicted.load(Ordering::Relaxed)
    }
}

impl Drop for LoggingIn {
    fn drop(&mut self) {
        let admission = &self.admission;
        admission.total.fetch_sub(1, Ordering::Relaxed);
        if self.is_evicted() {
            return;
        }
        admission.per_ip.remove_if_mut(&self.ip, |_, address| {
            address.count -= 1;
            address.silent.retain(|a| !Arc::ptr_eq(a, &self.attempt));
            address.count == 0
        });
    }
}

/// An IPv4 client reaching a dual-stack listener shows up as `::ffff:a.b.c.d`: one address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Arc<Admission> {
        Arc::new(Admission::new(AdmissionLimits {
            max_unauthenticated: 5,
            max_unauthenticated_per_ip: 2,
            max_unauthenticated_per_nat_ip: 4,
            nat_networks: vec!["10.0.0.0/8".parse().unwrap()],
        }))
    }

    #[test]
    fn per_address_then_total_and_released_on_drop() {
        let a = admission();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = a.admit(ip).unwrap();
        first.progressed();
        let second = a.admit(ip).unwrap();
        second.progressed();
        assert_eq!(a.admit(ip).err(), Some(Refusal::TooManyFromAddress));
        // The same address seen through a dual-stack socket.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(a.admit(mapped).err(), Some(Refusal::TooManyFromAddress));
        drop(first);
        let _third = a.admit(ip).unwrap();
        let nat: IpAddr = "10.1.1.1".parse().unwrap();
        let _n: Vec<_> = (0..3).map(|_| a.admit(nat).unwrap()).collect();
        _n.iter().for_each(LoggingIn::progressed);
        assert_eq!(a.negotiating(), 5);
        assert_eq!(a.admit(nat).err(), Some(Refusal::Busy));
        drop(_n);
        assert_eq!(a.negotiating(), 2);
        assert!(!a.per_ip.contains_key(&nat));
    }

    #[test]
    fn at_the_limit_the_oldest_silent_connection_makes_room() {
        let a = admission();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let silent = a.admit(ip).unwrap();
        let talking = a.admit(ip).unwrap();
        talking.progressed();
        // The newcomer replaces the silent one, which is told to close.
        let newcomer = a.admit(ip).unwrap();
        assert!(silent.is_evicted());
        assert!(!talking.is_evicted());
        assert_eq!(a.per_ip.get(&ip).unwrap().count, 2);
        // The evicted one ending does not count twice.
        drop(silent);
        assert_eq!(a.per_ip.get(&ip).unwrap().count, 2);
        // Both left have progressed: now the limit refuses.
        newcomer.progressed();
        assert_eq!(a.admit(ip).err(), Some(Refusal::TooManyFromAddress));
        drop((talking, newcomer));
        assert!(!a.per_ip.contains_key(&ip));
        assert_eq!(a.negotiating(), 0);
    }

    #[tokio::test]
    async fn an_evicted_connection_is_woken_whether_or_not_it_was_waiting() {
        let a = admission();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let waiting = a.admit(ip).unwrap();
        let later = a.admit(ip).unwrap();
        let wait = waiting.evicted();
        tokio::pin!(wait);
        assert!(futures::poll!(&mut wait).is_pending());
        let _newcomer = a.admit(ip).unwrap();
        assert!(futures::poll!(&mut wait).is_ready());
        // Evicted while not waiting: the next wait ends at once.
        let _another = a.admit(ip).unwrap();
        assert!(later.is_evicted());
        let wait = later.evicted();
        tokio::pin!(wait);
        assert!(futures::poll!(&mut wait).is_ready());
    }
}
