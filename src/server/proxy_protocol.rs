//! The PROXY protocol (v1 text, v2 binary) a load balancer puts in front of
//! each connection, naming the client it accepted. With `proxy_protocol` on,
//! every connection must start with one (or it is closed, counted); the
//! address it names is the client's for admission, logs and the session.
//!
//! Reads exactly the header, never a byte of the HTTP request behind it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (the spec's bound).
const V1_MAX: usize = 107;
/// Longest v2 address block read (TLVs beyond the addresses are skipped).
const V2_MAX: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("connection did not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header")]
    Malformed,
    #[error("connection closed inside the PROXY header")]
    Closed,
}

/// Read the header from `io`: the client's address, or None for a header
/// that names none (v1 `UNKNOWN`, v2 `LOCAL`: a health check by the proxy
/// itself), then keep the TCP peer.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<SocketAddr>, ProxyError> {
    let mut first = [0u8; 12];
    read_exact(io, &mut first[..5]).await?;
    if &first[..5] == b"PROXY" {
        return read_v1(io).await;
    }
    read_exact(io, &mut first[5..]).await?;
    if first != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    read_v2(io).await
}

async fn read_exact<R: AsyncRead + Unpin>(io: &mut R, buf: &mut [u8]) -> Result<(), ProxyError> {
    io.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| ProxyError::Closed)
}

async fn read_v1<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<SocketAddr>, ProxyError> {
    // "PROXY" is read; the rest of the line, one byte at a time up to CRLF.
    let mut line = Vec::with_capacity(V1_MAX);
    line.extend_from_slice(b"PROXY");
    loop {
        let mut b = [0u8; 1];
        read_exact(io, &mut b).await?;
        line.push(b[0]);
        if line.ends_with(b"\r\n") {
            break;
        }
        if line.len() >= V1_MAX {
            return Err(ProxyError::Malformed);
        }
    }
    let text = std::str::from_utf8(&line[..line.len() - 2]).map_err(|_| ProxyError::Malformed)?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", "TCP4" | "TCP6", src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| ProxyError::Malformed)?;
            let port: u16 = sport.parse().map_err(|_| ProxyError::Malformed)?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(ProxyError::Malformed),
    }
}

async fn read_v2<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<SocketAddr>, ProxyError> {
    let mut head = [0u8; 4];
    read_exact(io, &mut head).await?;
    let (ver_cmd, family) = (head[0], head[1]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if ver_cmd >> 4 != 2 || len > V2_MAX {
        return Err(ProxyError::Malformed);
    }
    let mut body = vec![0u8; len];
    read_exact(io, &mut body).await?;
    if ver_cmd & 0x0f == 0 {
        return Ok(None); // LOCAL
    }
    match family >> 4 {
        // AF_INET: src(4) dst(4) sport(2) dport(2)
        1 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // AF_INET6: src(16) dst(16) sport(2) dport(2)
        2 if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        // AF_UNSPEC / AF_UNIX: no client address to use.
        0 | 3 => Ok(None),
        _ => Err(ProxyError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let mut io = bytes;
        let r = read_header(&mut io).await;
        (r, io.to_vec())
    }

    #[tokio::test]
    async fn v1_names_the_client_and_leaves_the_request_alone() {
        let (r, rest) =
            parse(b"PROXY TCP4 198.51.100.7 10.0.0.1 51000 80\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(r, Ok(Some("198.51.100.7:51000".parse().unwrap())));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (r, _) = parse(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(r, Ok(None));
        let (r, _) = parse(b"PROXY TCP4 nope 10.0.0.1 1 2\r\n").await;
        assert_eq!(r, Err(ProxyError::Malformed));
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(parse(&long).await.0, Err(ProxyError::Malformed));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n").await.0,
            Err(ProxyError::Missing)
        );
    }

    #[tokio::test]
    async fn v2_names_the_client() {
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 12]); // v2 PROXY, TCP over IPv4, 12 bytes
        v2.extend_from_slice(&[203, 0, 113, 5, 10, 0, 0, 1, 0xC3, 0x50, 0, 80]);
        v2.extend_from_slice(b"GET");
        let (r, rest) = parse(&v2).await;
        assert_eq!(r, Ok(Some("203.0.113.5:50000".parse().unwrap())));
        assert_eq!(rest, b"GET");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).await.0, Ok(None));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge).await.0, Err(ProxyError::Malformed));
    }
}
