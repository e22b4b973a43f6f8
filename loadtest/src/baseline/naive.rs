//! `myriad-load baseline-server --naive`: the broadcast server people write
//! first, kept to show what the strong one's choices buy. Each connection has
//! a reader task and a writer task joined by a bounded queue (full: the
//! message is skipped for that connection), and every broadcast clones the
//! whole list of senders out of its lock before queueing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::BaselineArgs;

type Peers = Arc<Mutex<Vec<(u64, mpsc::Sender<Message>)>>>;

fn leave(peers: &Peers, id: u64) {
    peers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(p, _)| *p != id);
}

pub async fn serve(args: &BaselineArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    eprintln!(
        "baseline-server (naive) listening on ws://{addr}/ ({})",
        if args.echo { "echo" } else { "broadcast" }
    );
    let peers: Peers = Arc::default();
    let ids = AtomicU64::new(0);
    let accept = async {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    eprintln!("baseline-server accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let peers = Arc::clone(&peers);
            let (queue, echo) = (args.queue, args.echo);
            tokio::spawn(async move {
                // Registered before the handshake: a client that has its 101 gets
                // every later broadcast (what arrives meanwhile waits in its queue).
                let (tx, mut rx) = mpsc::channel::<Message>(queue.max(1));
                peers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((id, tx.clone()));
                let config = WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(0);
                let Ok(ws) =
                    tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
                else {
                    leave(&peers, id);
                    return;
                };
                let (mut sink, mut source) = ws.split();
                let writer = tokio::spawn(async move {
                    while let Some(first) = rx.recv().await {
                        if sink.feed(first).await.is_err() {
                            return;
                        }
                        while let Ok(more) = rx.try_recv() {
                            if sink.feed(more).await.is_err() {
                                return;
                            }
                        }
                        if sink.flush().await.is_err() {
                            return;
                        }
                    }
                });
                while let Some(Ok(msg)) = source.next().await {
                    if let Message::Text(_) = msg {
                        if echo {
                            if tx.try_send(msg).is_err() {
                                break;
                            }
                            continue;
                        }
                        // Clone the senders out so the lock is not held while queueing.
                        let targets: Vec<_> = peers
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .iter()
                            .map(|(_, t)| t.clone())
                            .collect();
                        for t in targets {
                            // A full queue: that reader is too slow and misses
                            // this message (the loader counts it as lost).
                            let _ = t.try_send(msg.clone());
                        }
                    }
                }
                leave(&peers, id);
                drop(tx);
                writer.abort();
            });
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
