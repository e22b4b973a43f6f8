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
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
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
    #[error("your address is connecting too fast (accept_rate_per_ip)")]
    IpRate,
}

impl Shed {
    pub const ALL: [Shed; 5] = [
        Shed::MaxConnections,
        Shed::PerIp,
        Shed::AcceptRate,
        Shed::Memory,
        Shed::IpRate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Shed::MaxConnections => "max_connections",
            Shed::PerIp => "per_ip",
            Shed::AcceptRate => "accept_rate",
            Shed::Memory => "memory",
            Shed::IpRate => "accept_rate_per_ip",
        }
    }

    /// Seconds a client should wait before retrying.
    pub fn retry_after(self) -> u32 {
        match self {
            Shed::AcceptRate | Shed::IpRate => 1,
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
    /// `accept_rate_per_ip`: one client churning upgrades must not spend the
    /// node-wide accept rate of everyone else. Keyed by `client_key`.
    accept_per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
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

/// The address per-client limits count by: an IPv4 address, or an IPv6 /64
/// (one customer line or host usually holds a whole /64, so per-address limits
/// would be trivial to evade with IPv6).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
    }
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
        let accept_per_ip = NonZeroU32::new(config.accept_rate_per_ip).map(|rate| {
            let burst = NonZeroU32::new(config.accept_burst_per_ip).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Admission {
            accept_per_ip,
            max_connections: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            memory_high_watermark: config
                .memory_high_watermark
                .resolve(process::memory_limit())
                .unwrap_or(0),
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
        let ip = client_key(ip);
        if self.over_memory() {
            return Err(Shed::Memory);
        }
        // Per client before the node-wide bucket: a refused churner does not
        // spend everyone's tokens.
        if let Some(limiter) = &self.accept_per_ip {
            if limiter.check_key(&ip).is_err() {
                return Err(Shed::IpRate);
            }
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

    /// Forget per-client rate state that is back to full (call periodically:
    /// the keyed bucket would otherwise keep one entry per address ever seen).
    pub fn sweep(&self) {
        if let Some(limiter) = &self.accept_per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
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

    /// The memory watermark in bytes (0: off), for the metric.
    pub fn watermark_bytes(&self) -> u64 {
        self.memory_high_watermark
    }

    fn over_memory(&self) -> bool {
        if self.memory_high_watermark == 0 {
            return false;
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        let last = self.rss_sampled_ms.load(Ordering::Relaxed);
        if last == u64::MAX || now_ms.saturating_sub(last) >= RSS_SAMPLE_EVERY.as_millis() as u64 {
            if let Some(used) = process::memory_in_use() {
                self.rss.store(used, Ordering::Relaxed);
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
        let adm = admission(|c| {
            c.memory_high_watermark = crate::config::units::MemoryWatermark::Bytes(1)
        });
        assert_eq!(adm.admit(A).err(), Some(Shed::Memory));
        assert!(adm.overloaded());
    }

    #[test]
    fn a_percentage_watermark_applies_to_the_memory_limit() {
        use crate::config::units::MemoryWatermark;
        // A millionth of this machine's memory is far below this process's use.
        let adm = admission(|c| c.memory_high_watermark = MemoryWatermark::Percent(0.0001));
        assert!(adm.watermark_bytes() > 0);
        assert_eq!(adm.admit(A).err(), Some(Shed::Memory));
        let adm = admission(|c| c.memory_high_watermark = MemoryWatermark::Percent(100.0));
        assert_eq!(adm.watermark_bytes(), process::memory_limit().unwrap());
        assert!(adm.admit(A).is_ok(), "all of it is never reached by a test");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn one_client_churning_does_not_spend_the_others_share() {
        let config = Config {
            accept_rate: 1000,
            accept_burst: 1000,
            accept_rate_per_ip: 1,
            accept_burst_per_ip: 3,
            ..Config::default()
        };
        let a = Admission::new(&config);
        let churner: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(a.admit(churner).unwrap());
        }
        assert_eq!(a.admit(churner).err(), Some(Shed::IpRate));
        assert!(a.admit(other).is_ok(), "another client is unaffected");
        a.sweep();
    }
}
