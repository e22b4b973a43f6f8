//! Who may connect right now: the node-wide session cap, the per-IP cap, the
//! accept rate, and the memory watermark. A cheap synchronous decision made
//! before the upgrade (nothing is allocated for a refused client), with its own
//! refusal type that renders as 503 + Retry-After. An admitted session owns its
//! `Permit` until it ends; dropping the permit gives the slot back.
//!
//! Never blocks, never touches sessions; counters are atomics and a sharded map.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::Config;
use crate::process;

/// How often the process RSS is re-read for the watermark.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Why a connection was shed; each is a `reason` of `myriad_shed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Shed {
    #[error("server at its connection limit (max_connections)")]
    MaxConnections,
    #[error("too many connections from your address (max_connections_per_ip)")]
    PerIp,
    #[error("server is accepting connections too fast (accept_rate)")]
    AcceptRate,
    #[error("server memory above its high watermark (memory_high_watermark)")]
    Memory,
}

impl Shed {
    pub const ALL: [Shed; 4] = [
        Shed::MaxConnections,
        Shed::PerIp,
        Shed::AcceptRate,
        Shed::Memory,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Shed::MaxConnections => "max_connections",
            Shed::PerIp => "per_ip",
            Shed::AcceptRate => "accept_rate",
            Shed::Memory => "memory",
        }
    }

    /// Seconds a client should wait before retrying.
    pub fn retry_after(self) -> u32 {
        match self {
            Shed::AcceptRate => 1,
            Shed::MaxConnections | Shed::PerIp | Shed::Memory => 5,
        }
    }
}

pub struct Admission {
    max_connections: usize,
    max_per_ip: usize,
    memory_high_watermark: u64,
    active: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    accept: Option<DefaultDirectRateLimiter>,
    /// Last sampled RSS and when (ms since `started`).
    rss: AtomicU64,
    rss_sampled_ms: AtomicU64,
    started: Instant,
}

/// An admitted session's slot; dropping it frees the slot.
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.active.fetch_sub(1, Ordering::AcqRel);
        if self.admission.max_per_ip > 0 {
            if let Some(mut n) = self.admission.per_ip.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
            }
            self.admission.per_ip.remove_if(&self.ip, |_, n| *n == 0);
        }
    }
}

impl Admission {
    pub fn new(config: &Config) -> Arc<Admission> {
        let accept = NonZeroU32::new(config.accept_rate).map(|rate| {
            let burst = NonZeroU32::new(config.accept_burst).unwrap_or(rate);
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Admission {
            max_connections: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            memory_high_watermark: config.memory_high_watermark,
            active: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            accept,
            rss: AtomicU64::new(0),
            rss_sampled_ms: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        })
    }

    /// Admit one connection from `ip`, or say why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Shed> {
        if self.over_memory() {
            return Err(Shed::Memory);
        }
        // Reserve a node slot first (a shared counter used as a lock: the
        // fetch_add decides, no check-then-act race).
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        if self.max_connections > 0 && before >= self.max_connections {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(Shed::MaxConnections);
        }
        if self.max_per_ip > 0 {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                drop(n);
                self.active.fetch_sub(1, Ordering::AcqRel);
                return Err(Shed::PerIp);
            }
            *n += 1;
        }
        let permit = Permit {
            admission: Arc::clone(self),
            ip,
        };
        if let Some(limiter) = &self.accept {
            if limiter.check().is_err() {
                return Err(Shed::AcceptRate); // dropping the permit undoes the counts
            }
        }
        Ok(permit)
    }

    /// Sessions currently admitted.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// True while new clients should go elsewhere (connection cap or memory):
    /// `/readyz` answers 503 then.
    pub fn overloaded(&self) -> bool {
        (self.max_connections > 0 && self.active() >= self.max_connections) || self.over_memory()
    }

    fn over_memory(&self) -> bool {
        if self.memory_high_watermark == 0 {
            return false;
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        let last = self.rss_sampled_ms.load(Ordering::Relaxed);
        if last == u64::MAX || now_ms.saturating_sub(last) >= RSS_SAMPLE_EVERY.as_millis() as u64 {
            if let Some(rss) = process::resident_bytes() {
                self.rss.store(rss, Ordering::Relaxed);
            }
            self.rss_sampled_ms.store(now_ms, Ordering::Relaxed);
        }
        self.rss.load(Ordering::Relaxed) > self.memory_high_watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(tweak: impl FnOnce(&mut Config)) -> Arc<Admission> {
        let mut c = Config {
            accept_rate: 0,
            ..Config::default()
        };
        tweak(&mut c);
        Admission::new(&c)
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn node_cap_and_release() {
        let adm = admission(|c| c.max_connections = 2);
        let p1 = adm.admit(A).unwrap();
        let _p2 = adm.admit(B).unwrap();
        assert_eq!(adm.admit(A).err(), Some(Shed::MaxConnections));
        assert!(adm.overloaded());
        drop(p1);
        assert!(!adm.overloaded());
        assert!(adm.admit(A).is_ok());
    }

    #[test]
    fn per_ip_cap() {
        let adm = admission(|c| c.max_connections_per_ip = 1);
        let p = adm.admit(A).unwrap();
        assert_eq!(adm.admit(A).err(), Some(Shed::PerIp));
        assert!(adm.admit(B).is_ok());
        drop(p);
        assert!(adm.admit(A).is_ok());
        assert_eq!(adm.active(), 0, "permits were dropped");
    }

    #[test]
    fn accept_rate_burst() {
        let adm = admission(|c| {
            c.accept_rate = 1;
            c.accept_burst = 2;
        });
        let _a = adm.admit(A).unwrap();
        let _b = adm.admit(A).unwrap();
        assert_eq!(adm.admit(A).err(), Some(Shed::AcceptRate));
        assert_eq!(adm.active(), 2, "a shed connection holds no slot");
    }

    #[test]
    fn memory_watermark() {
        let adm = admission(|c| c.memory_high_watermark = 1);
        assert_eq!(adm.admit(A).err(), Some(Shed::Memory));
        assert!(adm.overloaded());
    }
}
