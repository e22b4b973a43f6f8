//! `myriad-load baseline-server`: the plain tokio-tungstenite broadcast
//! server every ratio in BENCHMARKS.md is measured against. The default is
//! the strong one (`strong`: one task per connection, a shared frame per
//! broadcast, batched writes with one flush, a bounded queue, small buffers);
//! `--naive` runs the shape people write first (`naive`), to show what those
//! choices buy. No protocol, no topics, no supervision in either: what is
//! left is the cost of WebSocket framing, syscalls and the scheduler.

mod naive;
mod strong;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};

use crate::cli::BaselineArgs;

pub async fn serve(args: BaselineArgs) -> anyhow::Result<()> {
    if args.naive {
        naive::serve(&args).await
    } else {
        strong::serve(&args).await
    }
}

/// The listen backlog: myriad's default `listen_backlog`, so a connect
/// benchmark compares servers, not how many SYNs each accept queue drops.
const BACKLOG: i32 = 4096;

/// A listener on `addr` (HOST:PORT, resolved) with [`BACKLOG`].
fn listen(addr: &str) -> anyhow::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = addr
        .to_socket_addrs()?
        .next()
        .context("the address resolves to nothing")?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into())?)
}

/// Bind `args.listen` and hand every accepted connection (TCP_NODELAY set)
/// with its id to `connection`, spawned; runs until `--run-for` (if given).
async fn accept_loop<F, Fut>(args: &BaselineArgs, label: &str, connection: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream, u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = listen(&args.listen).with_context(|| format!("binding {}", args.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    eprintln!(
        "baseline-server{label} listening on ws://{addr}/ ({})",
        if args.echo { "echo" } else { "broadcast" }
    );
    let accept = async {
        let mut next_id = 0u64;
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    eprintln!("baseline-server accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream, next_id));
            next_id += 1;
        }
    };
    match args.run_for {
        Some(d) => {
            let _ = tokio::time::timeout(d, accept).await;
        }
        None => accept.await,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_baseline_listens_with_myriads_backlog() {
        let l = listen("127.0.0.1:0").expect("a listener");
        let port = l.local_addr().expect("an address").port();
        // `ss` shows a listening socket's backlog as its Send-Q; the kernel
        // caps it at somaxconn.
        let out = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2): scripts/test.sh installs it");
        let text = String::from_utf8_lossy(&out.stdout);
        let somaxconn: i32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .expect("somaxconn")
            .trim()
            .parse()
            .expect("a number");
        let want = BACKLOG.min(somaxconn).to_string();
        assert_eq!(
            text.split_whitespace().nth(2),
            Some(want.as_str()),
            "{text}"
        );
    }
}
