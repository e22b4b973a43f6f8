//! Binding the listeners: through socket2 so the public listener's accept
//! queue is `listen_backlog` (tokio's `TcpListener::bind` always asks for
//! 128, which a reconnect storm overflows: clients then wait for SYN
//! retransmits of 1 s, 3 s, 7 s...). The kernel caps the queue at
//! `net.core.somaxconn`; the effective size is logged and exported.
//!
//! Owns nothing after start; never accepts.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// What the public listener's accept queue really is: the configured
/// backlog, capped by the kernel.
pub fn effective_backlog(configured: u32, somaxconn: Option<u32>) -> u32 {
    somaxconn.map_or(configured, |cap| configured.min(cap))
}

/// A listening socket on `addr` with an accept queue of `backlog`.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio's bind: a restarted node rebinds while its old connections
    // sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_caps_the_backlog() {
        assert_eq!(effective_backlog(4096, Some(128)), 128);
        assert_eq!(effective_backlog(100, Some(4096)), 100);
        assert_eq!(effective_backlog(4096, None), 4096);
    }

    #[tokio::test]
    async fn the_socket_listens_with_the_asked_backlog() {
        let l = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 77).unwrap();
        let port = l.local_addr().unwrap().port();
        // `ss` shows a listening socket's backlog as its Send-Q.
        let Ok(out) = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
        else {
            panic!("ss (iproute2) is needed: scripts/test.sh installs it");
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let send_q: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(send_q.get(2), Some(&"77"), "{text}");
    }
}
