//! `myriad config check`'s broker probe: can a TCP connection to the broker
//! URL's host and port be opened? Speaks no broker protocol and sends no
//! credentials; a failure is a warning (the broker may be down while the
//! configuration is being checked), never a configuration error.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Open (and close) a TCP connection to `url`'s host:port within `timeout`.
/// Unix-socket URLs are checked for the socket file instead.
pub fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let shown = crate::config::redacted_url(url);
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{shown:?}: no scheme"))?;
    if scheme == "unix" || scheme == "redis+unix" {
        let path = rest.split('?').next().unwrap_or(rest);
        return if std::path::Path::new(path).exists() {
            Ok(())
        } else {
            Err(format!("{shown:?}: no socket at {path}"))
        };
    }
    let default_port = match scheme {
        "nats" | "tls" => 4222,
        "redis+sentinel" | "rediss+sentinel" => 26379,
        _ => 6379,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    // NATS, Sentinel and Cluster URLs may list several servers; the first
    // one answering is enough.
    let mut last = format!("{shown:?}: no address");
    for one in hostport.split(',') {
        let addr = if one.starts_with('[') {
            match one.rsplit_once("]:") {
                Some(_) => one.to_owned(),
                None => format!("{one}:{default_port}"),
            }
        } else if one.contains(':') {
            one.to_owned()
        } else {
            format!("{one}:{default_port}")
        };
        let addrs = match addr.to_socket_addrs() {
            Ok(a) => a,
            Err(e) => {
                last = format!("{shown:?}: cannot resolve {addr}: {e}");
                continue;
            }
        };
        for sa in addrs {
            match TcpStream::connect_timeout(&sa, timeout) {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("{shown:?}: cannot connect to {sa}: {e}"),
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_answers_and_a_closed_one_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = Duration::from_secs(2);
        assert!(probe(&format!("redis://:pw@127.0.0.1:{port}/0"), t).is_ok());
        drop(listener);
        let err = probe(&format!("redis://:pw@127.0.0.1:{port}/0"), t).unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
        assert!(!err.contains("pw"), "credentials never shown: {err}");
        assert!(probe("unix:///nonexistent/redis.sock", t).is_err());
    }
}
