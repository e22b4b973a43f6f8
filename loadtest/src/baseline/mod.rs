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

/// Bind `args.listen` and hand every accepted connection (TCP_NODELAY set)
/// with its id to `connection`, spawned; runs until `--run-for` (if given).
async fn accept_loop<F, Fut>(args: &BaselineArgs, label: &str, connection: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream, u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
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
