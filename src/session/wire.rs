//! The connection's stream, live or parked.
//!
//! Live: tungstenite's codec over the stream, boxed so that a parked session
//! does not carry its size. Parked: the bare stream, with no codec, no read
//! buffer and no waker proxies; an idle session is then little more than its
//! stream, its mailbox and its handler's state (BENCHMARKS.md, memory per idle
//! session). Broadcasts are written in either form, since `frames_out` writes
//! the stream itself; the first inbound byte unparks.
//!
//! Owns when parking is safe and the moves between the two forms. It must
//! never park a codec that holds what the bare stream cannot carry: part of a
//! frame, an open fragmented message, or a frame it owes the client (a pong).

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::lazy_read::LazyRead;
use super::websocket_config;
use crate::config::Config;
use crate::metrics::Metrics;

pub(super) enum Wire<T> {
    Live(Box<WebSocketStream<LazyRead<T>>>),
    Parked(LazyRead<T>, ParkedMark),
    /// Only inside a move between the two; left behind if a codec could not
    /// be built (it always can), when the session ends as if the peer left.
    Gone,
}

/// Counts a session as parked for as long as it exists.
pub(super) struct ParkedMark(Arc<Metrics>);

impl ParkedMark {
    fn new(metrics: &Arc<Metrics>) -> ParkedMark {
        metrics.sessions_parked.increment(1.0);
        metrics.session_parks.increment(1);
        ParkedMark(Arc::clone(metrics))
    }
}

impl Drop for ParkedMark {
    fn drop(&mut self) {
        self.0.sessions_parked.decrement(1.0);
    }
}

impl<T> Wire<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(ws: WebSocketStream<LazyRead<T>>) -> Wire<T> {
        Wire::Live(Box::new(ws))
    }

    #[cfg(test)]
    pub fn is_live(&self) -> bool {
        matches!(self, Wire::Live(_))
    }

    /// The next inbound message. A parked wire waits for bytes on the bare
    /// stream and unparks when they come (`config` builds the codec again).
    pub fn poll_inbound(
        &mut self,
        cx: &mut Context<'_>,
        config: &Config,
    ) -> Poll<Option<Result<Message, WsError>>> {
        if let Wire::Parked(stream, _) = self {
            match stream.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(true)) => self.unpark(config),
                // What tungstenite says of a stream that ends outside a
                // close handshake.
                Poll::Ready(Ok(false)) => {
                    return Poll::Ready(Some(Err(WsError::Protocol(
                        ProtocolError::ResetWithoutClosingHandshake,
                    ))))
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(WsError::Io(err)))),
            }
        }
        match self {
            Wire::Live(ws) => ws.poll_next_unpin(cx),
            Wire::Parked(..) => Poll::Pending,
            Wire::Gone => Poll::Ready(Some(Err(gone()))),
        }
    }

    /// Park, if the codec holds nothing. Call only right after
    /// `poll_inbound` returned pending in the same pass: the codec has then
    /// handed out every whole frame it had, so a stream at a frame edge
    /// means an empty read buffer. Returns whether the wire is parked now.
    pub fn try_park(&mut self, cx: &mut Context<'_>, metrics: &Arc<Metrics>) -> bool {
        let Wire::Live(ws) = self else {
            return matches!(self, Wire::Parked(..));
        };
        if !ws.get_ref().at_rest() {
            return false;
        }
        // A pong tungstenite owes (or any frame it queued) must be out.
        if !matches!(ws.poll_flush_unpin(cx), Poll::Ready(Ok(()))) {
            return false;
        }
        if let Wire::Live(ws) = std::mem::replace(self, Wire::Gone) {
            *self = Wire::Parked(ws.into_inner(), ParkedMark::new(metrics));
        }
        true
    }

    /// The codec, unparking first if need be (the close handshake needs it).
    pub fn live(&mut self, config: &Config) -> Option<&mut WebSocketStream<LazyRead<T>>> {
        if matches!(self, Wire::Parked(..)) {
            self.unpark(config);
        }
        match self {
            Wire::Live(ws) => Some(ws),
            _ => None,
        }
    }

    /// Flush what the codec queued (a live wire's pongs and close echoes);
    /// a parked wire has nothing queued.
    pub async fn flush(&mut self) -> Result<(), WsError> {
        match self {
            Wire::Live(ws) => ws.flush().await,
            Wire::Parked(..) => Ok(()),
            Wire::Gone => Err(gone()),
        }
    }

    /// The bare stream, for writing frames past the codec (`frames_out`).
    pub fn stream(&mut self) -> io::Result<&mut LazyRead<T>> {
        match self {
            Wire::Live(ws) => Ok(ws.get_mut()),
            Wire::Parked(stream, _) => Ok(stream),
            Wire::Gone => Err(io::Error::other("connection codec lost")),
        }
    }

    fn unpark(&mut self, config: &Config) {
        if let Wire::Parked(stream, mark) = std::mem::replace(self, Wire::Gone) {
            drop(mark);
            if let Some(ws) = codec(stream, config) {
                *self = Wire::Live(Box::new(ws));
            }
        }
    }
}

/// tungstenite's codec over `stream`, as a server, with the config's limits.
/// Built without I/O, so the future `from_raw_socket` returns is ready at its
/// first poll; None would mean it was not (it always is).
pub fn codec<T>(stream: LazyRead<T>, config: &Config) -> Option<WebSocketStream<LazyRead<T>>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(stream, Role::Server, Some(websocket_config(config)))
        .now_or_never()
}

fn gone() -> WsError {
    WsError::Io(io::Error::other("connection codec lost"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures_util::SinkExt;
    use std::task::Waker;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (
        Wire<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = WebSocketStream::from_raw_socket(LazyRead::new(a), Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (Wire::new(server), client)
    }

    fn metrics() -> Arc<Metrics> {
        Metrics::new()
    }

    /// Polls the wire's inbound side once with a waker that does nothing.
    fn poll_once(
        wire: &mut Wire<tokio::io::DuplexStream>,
    ) -> Poll<Option<Result<Message, WsError>>> {
        let mut cx = Context::from_waker(Waker::noop());
        wire.poll_inbound(&mut cx, &Config::default())
    }

    fn park(wire: &mut Wire<tokio::io::DuplexStream>, m: &Arc<Metrics>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        wire.try_park(&mut cx, m)
    }

    async fn next(wire: &mut Wire<tokio::io::DuplexStream>) -> Message {
        std::future::poll_fn(|cx| wire.poll_inbound(cx, &Config::default()))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn a_parked_wire_unparks_on_the_next_message_and_reads_it_whole() {
        let m = metrics();
        let (mut wire, mut client) = pair().await;
        client.send(Message::text("one")).await.unwrap();
        assert_eq!(next(&mut wire).await, Message::text("one"));
        assert!(poll_once(&mut wire).is_pending());
        assert!(park(&mut wire, &m), "at a frame edge with nothing owed");
        assert!(!wire.is_live());
        assert!(m.render().contains("myriad_sessions_parked 1"));
        client.send(Message::text("two")).await.unwrap();
        client.send(Message::binary(vec![7u8; 3000])).await.unwrap();
        assert_eq!(next(&mut wire).await, Message::text("two"));
        assert!(wire.is_live());
        assert!(m.render().contains("myriad_sessions_parked 0"));
        assert_eq!(next(&mut wire).await, Message::binary(vec![7u8; 3000]));
    }

    #[tokio::test]
    async fn a_wire_inside_a_frame_or_a_fragmented_message_stays_live() {
        let m = metrics();
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut wire =
            Wire::new(WebSocketStream::from_raw_socket(LazyRead::new(a), Role::Server, None).await);
        // Half a masked text frame "hello".
        let frame = [0x81u8, 0x85, 0, 0, 0, 0, b'h', b'e', b'l', b'l', b'o'];
        b.write_all(&frame[..7]).await.unwrap();
        tokio::task::yield_now().await;
        assert!(poll_once(&mut wire).is_pending());
        assert!(!park(&mut wire, &m), "part of a frame is in the codec");
        b.write_all(&frame[7..]).await.unwrap();
        assert_eq!(next(&mut wire).await, Message::text("hello"));
        // A first fragment without FIN, then the rest after the park attempt.
        b.write_all(&[0x01, 0x82, 0, 0, 0, 0, b'a', b'b'])
            .await
            .unwrap();
        assert!(poll_once(&mut wire).is_pending());
        assert!(!park(&mut wire, &m), "a fragmented message is open");
        b.write_all(&[0x80, 0x81, 0, 0, 0, 0, b'c']).await.unwrap();
        assert_eq!(next(&mut wire).await, Message::text("abc"));
        assert!(poll_once(&mut wire).is_pending());
        assert!(park(&mut wire, &m));
        assert!(m.render().contains("myriad_session_parks_total 1"));
    }

    #[tokio::test]
    async fn a_parked_wire_answers_pings_after_unparking_and_writes_while_parked() {
        let m = metrics();
        let (mut wire, mut client) = pair().await;
        assert!(poll_once(&mut wire).is_pending());
        assert!(park(&mut wire, &m));
        // Written past the codec while parked: the client reads a frame.
        let frame = [0x81u8, 0x02, b'h', b'i'];
        wire.stream().unwrap().write_all(&frame).await.unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), Message::text("hi"));
        client
            .send(Message::Ping(vec![1u8, 2].into()))
            .await
            .unwrap();
        assert_eq!(
            next(&mut wire).await,
            Message::Ping(vec![1u8, 2].into()),
            "tungstenite hands pings out and queues the pong"
        );
        wire.flush().await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Pong(vec![1u8, 2].into())
        );
    }

    #[tokio::test]
    async fn a_parked_wire_reports_the_end_of_the_stream_as_a_reset() {
        let m = metrics();
        let (mut wire, client) = pair().await;
        assert!(poll_once(&mut wire).is_pending());
        assert!(park(&mut wire, &m));
        drop(client);
        let end = std::future::poll_fn(|cx| wire.poll_inbound(cx, &Config::default())).await;
        assert!(matches!(
            end,
            Some(Err(WsError::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )))
        ));
        drop(wire);
        assert!(m.render().contains("myriad_sessions_parked 0"));
    }
}
