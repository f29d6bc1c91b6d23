//! Who may open a connection: bounds on connections that have not bound a resource yet, in
//! total and per address, so that silent or slow connections from one place cannot take every
//! slot, and a clean refusal at the limit instead of a connection left hanging.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use ipnet::IpNet;

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
    per_ip: DashMap<IpAddr, usize>,
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

    /// Counts a new connection from `ip`, or says why it is refused.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<LoggingIn, Refusal> {
        let ip = canonical(ip);
        let limit = self.per_ip_limit(ip);
        {
            let mut count = self.per_ip.entry(ip).or_insert(0);
            if *count >= limit {
                return Err(Refusal::TooManyFromAddress);
            }
            if self.total.fetch_add(1, Ordering::Relaxed) >= self.limits.max_unauthenticated {
                self.total.fetch_sub(1, Ordering::Relaxed);
                return Err(Refusal::Busy);
            }
            *count += 1;
        }
        Ok(LoggingIn {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections negotiating now.
    pub fn negotiating(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for LoggingIn {
    fn drop(&mut self) {
        let admission = &self.admission;
        admission.total.fetch_sub(1, Ordering::Relaxed);
        admission.per_ip.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
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
        let _second = a.admit(ip).unwrap();
        assert_eq!(a.admit(ip).err(), Some(Refusal::TooManyFromAddress));
        // The same address seen through a dual-stack socket.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(a.admit(mapped).err(), Some(Refusal::TooManyFromAddress));
        drop(first);
        let _third = a.admit(ip).unwrap();
        let nat: IpAddr = "10.1.1.1".parse().unwrap();
        let _n: Vec<_> = (0..3).map(|_| a.admit(nat).unwrap()).collect();
        assert_eq!(a.negotiating(), 5);
        assert_eq!(a.admit(nat).err(), Some(Refusal::Busy));
        drop(_n);
        assert_eq!(a.negotiating(), 2);
        assert!(!a.per_ip.contains_key(&nat));
    }
}
