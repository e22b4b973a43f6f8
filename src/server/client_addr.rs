//! The client's address as the node should count it: the TCP peer, or — when
//! the peer is one of `trusted_proxies` — the address that proxy put in
//! `X-Forwarded-For`. Per-address caps and rates, logs and the session's peer
//! all use it. Headers from anyone else are ignored: a client cannot choose
//! its own address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::config::Cidr;

/// Longest `X-Forwarded-For` value read (a proxy chain is a few entries).
const MAX_XFF: usize = 1024;

/// The client behind `peer`: with `peer` a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy (entries left of
/// it were written by the client and prove nothing).
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> SocketAddr {
    if !trusted.iter().any(|c| c.contains(peer.ip())) {
        return peer;
    }
    let Some(xff) = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= MAX_XFF)
    else {
        return peer;
    };
    for entry in xff.rsplit(',') {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            return peer; // a malformed hop: trust nothing further left
        };
        if !trusted.iter().any(|c| c.contains(ip)) {
            return SocketAddr::new(ip, 0);
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn only_trusted_proxies_speak_for_a_client() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let h = headers("198.51.100.7, 10.9.9.9");
        assert_eq!(
            client_addr(proxy, &h, &trusted).ip().to_string(),
            "198.51.100.7"
        );
        assert_eq!(
            client_addr(stranger, &h, &trusted),
            stranger,
            "not a proxy: ignored"
        );
        // A client's own forged entry, left of the real one, is not taken.
        let h = headers("1.1.1.1, 198.51.100.7");
        assert_eq!(
            client_addr(proxy, &h, &trusted).ip().to_string(),
            "198.51.100.7"
        );
        assert_eq!(client_addr(proxy, &headers("garbage"), &trusted), proxy);
        assert_eq!(client_addr(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
