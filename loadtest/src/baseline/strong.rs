//! The strong baseline: what a careful plain tokio-tungstenite broadcast
//! server looks like.
//!
//! - One task per connection: it reads the socket and writes its queue in one
//!   `select!`, so there is no second task (and no second wake) per delivery.
//! - One shared frame per broadcast: the text is a `Utf8Bytes` (reference
//!   counted), cloned per connection without copying the payload.
//! - The subscriber table is read under a read lock while queueing; no copy of
//!   it is made per message.
//! - A bounded queue per connection (full: that connection misses the message,
//!   the loader counts it as lost), drained in batches: every queued frame is
//!   fed, then one flush writes them with as few syscalls as the write buffer
//!   allows.
//! - Small buffers: a 1 KiB read buffer (clients send little) and a 64 KiB
//!   write buffer that only fills during a batch.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::BaselineArgs;

type Table = Arc<RwLock<HashMap<u64, mpsc::Sender<Message>>>>;

/// Frames drained from the queue per batch before the flush.
const BATCH: usize = 256;

pub async fn serve(args: &BaselineArgs) -> anyhow::Result<()> {
    let table: Table = Arc::default();
    let (queue, echo) = (args.queue.max(1), args.echo);
    super::accept_loop(args, "", |stream, id| {
        connection(stream, id, Arc::clone(&table), queue, echo)
    })
    .await
}

async fn connection(stream: TcpStream, id: u64, table: Table, queue: usize, echo: bool) {
    // Registered before the handshake: a client that has its 101 gets every
    // later broadcast (what arrives meanwhile waits in its queue).
    let (tx, mut rx) = mpsc::channel::<Message>(queue);
    if !echo {
        write(&table).insert(id, tx.clone());
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(64 << 10)
        .max_write_buffer_size(1 << 20);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        write(&table).remove(&id);
        return;
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                let mut failed = false;
                for frame in batch.drain(..) {
                    if ws.feed(frame).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || ws.flush().await.is_err() {
                    break;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(msg @ Message::Text(_))) => {
                    if echo {
                        let _ = tx.try_send(msg);
                    } else {
                        broadcast(&table, msg);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    write(&table).remove(&id);
}

/// Queue `msg` for every connection; a full queue skips that connection.
fn broadcast(table: &Table, msg: Message) {
    let peers = table.read().unwrap_or_else(|p| p.into_inner());
    for tx in peers.values() {
        let _ = tx.try_send(msg.clone());
    }
}

fn write(table: &Table) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, mpsc::Sender<Message>>> {
    table.write().unwrap_or_else(|p| p.into_inner())
}
