//! `myriad-load baseline-server --naive`: the broadcast server people write
//! first, kept to show what the strong one's choices buy. Each connection has
//! a reader task and a writer task joined by a bounded queue (full: the
//! message is skipped for that connection), and every broadcast clones the
//! whole list of senders out of its lock before queueing.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
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
    let peers: Peers = Arc::default();
    let (queue, echo) = (args.queue.max(1), args.echo);
    super::accept_loop(args, " (naive)", |stream, id| {
        connection(stream, id, Arc::clone(&peers), queue, echo)
    })
    .await
}

async fn connection(stream: TcpStream, id: u64, peers: Peers, queue: usize, echo: bool) {
    // Registered before the handshake: a client that has its 101 gets every
    // later broadcast (what arrives meanwhile waits in its queue).
    let (tx, mut rx) = mpsc::channel::<Message>(queue);
    peers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((id, tx.clone()));
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
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
                // A full queue: that reader is too slow and misses this
                // message (the loader counts it as lost).
                let _ = t.try_send(msg.clone());
            }
        }
    }
    leave(&peers, id);
    drop(tx);
    writer.abort();
}
