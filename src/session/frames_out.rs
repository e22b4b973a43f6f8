//! A batch of outbound data frames, written straight to the socket.
//!
//! tungstenite copies every message into its own write buffer before the
//! socket sees it. Here each frame's WebSocket header is built on the stack
//! and sent beside the shared payload in one vectored write per
//! [`CHUNK`] frames, so a broadcast's bytes go from the one shared copy to the
//! kernel. Streams that cannot write vectored (in-memory pipes, some
//! wrappers) get the frames gathered into one buffer and one write instead.
//!
//! Server frames are unmasked, unfragmented and uncompressed (RFC 6455 §5.2:
//! FIN, opcode, 7/16/64-bit length). Only data frames go this way; control
//! frames (pongs, the close) stay with tungstenite, whose buffer the session
//! flushes before each batch so the two never interleave inside a frame.
//! This module owns the framing of those bytes and nothing else: it must
//! never read, and never write anything but whole frames in batch order.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use smallvec::SmallVec;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::pubsub::mailbox::Outbound;

/// Frames whose headers and slices a write keeps on the stack (a paced
/// write carries about ten): only a larger backlog allocates for them.
const INLINE: usize = 16;

/// Frames per vectored write at most: 1024 slices, Linux's `IOV_MAX`. A
/// backlog of a slow reader goes out in as few syscalls as a copying writer
/// with a large buffer would use.
pub const CHUNK: usize = 512;

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const FIN: u8 = 0x80;

/// The header of an unmasked, final data frame: the bytes and how many of
/// the ten are used.
pub fn header(frame: &Outbound) -> ([u8; 10], usize) {
    let opcode = match frame {
        Outbound::Text(_) => OP_TEXT,
        Outbound::Binary(_) => OP_BINARY,
    };
    let len = frame.len();
    let mut h = [0u8; 10];
    h[0] = FIN | opcode;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(len) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

fn payload(frame: &Outbound) -> &[u8] {
    match frame {
        Outbound::Text(t) => t.as_bytes(),
        Outbound::Binary(b) => b,
    }
}

/// Write every frame of `batch` in order, then flush; returns the messages
/// and payload bytes written. Frames leave `batch` once their chunk is
/// written. `sent` counts the bytes of the chunk at the front of `batch`
/// already on the wire (0 between chunks): a future dropped mid-write (a
/// write timeout, an overflow, a hard stop) leaves it there, and
/// [`finish_partial`] completes the half-sent frame before anything else
/// (the close frame) may follow it.
pub async fn write<S>(
    io: &mut S,
    batch: &mut VecDeque<Outbound>,
    sent: &mut usize,
) -> io::Result<(u64, u64)>
where
    S: AsyncWrite + Unpin,
{
    finish_partial(io, batch, sent).await?;
    let vectored = io.is_write_vectored();
    let chunk = batch.len().min(CHUNK);
    let mut headers: SmallVec<[([u8; 10], usize); INLINE]> = SmallVec::with_capacity(chunk);
    let mut gathered = Vec::new();
    let (mut messages, mut bytes) = (0u64, 0u64);
    while !batch.is_empty() {
        let n = batch.len().min(CHUNK);
        headers.clear();
        headers.extend(batch.iter().take(n).map(header));
        if vectored {
            let mut slices: SmallVec<[IoSlice<'_>; 2 * INLINE]> = SmallVec::with_capacity(2 * n);
            for ((h, used), frame) in headers.iter().zip(batch.iter()) {
                slices.push(IoSlice::new(&h[..*used]));
                slices.push(IoSlice::new(payload(frame)));
            }
            let mut rest = &mut slices[..];
            // Drop empty payloads' slices up front: a zero-length slice at
            // the head would make a write of "nothing" look like a stall.
            IoSlice::advance_slices(&mut rest, 0);
            while !rest.is_empty() {
                let written = io.write_vectored(rest).await?;
                if written == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                *sent += written;
                IoSlice::advance_slices(&mut rest, written);
            }
        } else {
            gathered.clear();
            for ((h, used), frame) in headers.iter().zip(batch.iter()) {
                gathered.extend_from_slice(&h[..*used]);
                gathered.extend_from_slice(payload(frame));
            }
            while *sent < gathered.len() {
                let written = io.write(&gathered[*sent..]).await?;
                if written == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                *sent += written;
            }
        }
        for frame in batch.drain(..n) {
            messages += 1;
            bytes += frame.len() as u64;
        }
        *sent = 0;
    }
    io.flush().await?;
    Ok((messages, bytes))
}

/// After a write abandoned mid-chunk (`sent` > 0): drop the frames at the
/// front of `batch` that went out whole, and send the rest of the one that
/// went out in part, so the stream is at a frame boundary again. The frames
/// behind it stay in `batch`. Nothing to do when `sent` is 0.
pub async fn finish_partial<S>(
    io: &mut S,
    batch: &mut VecDeque<Outbound>,
    sent: &mut usize,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    if *sent == 0 {
        return Ok(());
    }
    while *sent > 0 {
        let Some(front) = batch.front() else {
            // Cannot happen: `sent` counts bytes of frames still in `batch`.
            *sent = 0;
            break;
        };
        let (h, used) = header(front);
        let whole = used + front.len();
        if *sent >= whole {
            *sent -= whole;
            batch.pop_front();
            continue;
        }
        while *sent < whole {
            let written = if *sent < used {
                io.write(&h[*sent..used]).await?
            } else {
                io.write(&payload(front)[*sent - used..]).await?
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            *sent += written;
        }
        batch.pop_front();
        *sent = 0;
    }
    io.flush().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;

    #[test]
    fn headers_use_the_shortest_length_form() {
        let text = |n: usize| Outbound::Text("x".repeat(n).into());
        assert_eq!(header(&text(0)), ([0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0], 2));
        assert_eq!(header(&text(125)).0[..2], [0x81, 125]);
        assert_eq!(
            header(&text(126)),
            ([0x81, 126, 0, 126, 0, 0, 0, 0, 0, 0], 4)
        );
        assert_eq!(header(&text(65535)).0[..4], [0x81, 126, 0xff, 0xff]);
        let big = header(&Outbound::Binary(Bytes::from(vec![0u8; 65536])));
        assert_eq!(big, ([0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0], 10));
    }

    /// A stream that takes at most `limit` bytes per write and `budget` in
    /// all (then is pending until given more), vectored or not.
    struct TestStream {
        out: Vec<u8>,
        limit: usize,
        budget: usize,
        vectored: bool,
    }

    impl TestStream {
        fn new(limit: usize, vectored: bool) -> TestStream {
            TestStream {
                out: Vec::new(),
                limit,
                budget: usize::MAX,
                vectored,
            }
        }

        fn take<'a>(
            &mut self,
            bufs: impl IntoIterator<Item = &'a [u8]>,
        ) -> std::task::Poll<io::Result<usize>> {
            let mut left = self.limit.min(self.budget);
            if left == 0 {
                return std::task::Poll::Pending;
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
                if left == 0 {
                    break;
                }
            }
            self.budget -= n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for TestStream {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.take([buf])
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            self.take(bufs.iter().map(|b| &**b))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// What tungstenite itself would put on the wire for the same messages.
    fn tungstenite_bytes(frames: &[Outbound]) -> Vec<u8> {
        use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
        let mut ws = WebSocket::from_raw_socket(io::Cursor::new(Vec::new()), Role::Server, None);
        for f in frames {
            ws.write(f.clone().into_message()).unwrap();
        }
        ws.flush().unwrap();
        ws.get_ref().get_ref().clone()
    }

    #[tokio::test]
    async fn partial_vectored_and_gathered_writes_put_the_same_bytes_as_tungstenite() {
        let mut frames: Vec<Outbound> = Vec::new();
        for i in 0..(CHUNK + 7) {
            let n = [0, 1, 125, 126, 300, 70_000][i % 6];
            frames.push(if i % 3 == 0 {
                Outbound::Binary(Bytes::from(vec![i as u8; n]))
            } else {
                Outbound::Text("é".repeat(n / 2).into())
            });
        }
        let expected = tungstenite_bytes(&frames);
        for (vectored, limit) in [(true, 7), (true, 1 << 20), (false, 5), (false, 1 << 20)] {
            let mut io = TestStream::new(limit, vectored);
            let mut batch: VecDeque<Outbound> = frames.iter().cloned().collect();
            let mut sent = 0;
            let (messages, _) = write(&mut io, &mut batch, &mut sent).await.unwrap();
            assert_eq!(sent, 0);
            assert_eq!(messages as usize, frames.len());
            assert!(batch.is_empty());
            assert!(
                io.out == expected,
                "vectored {vectored}, {limit} bytes per write"
            );
        }
    }

    #[tokio::test]
    async fn a_write_abandoned_inside_a_frame_is_completed_to_a_frame_boundary() {
        use std::future::Future;
        let frames: Vec<Outbound> = ["a", "b", "c"]
            .iter()
            .map(|c| Outbound::Text(c.repeat(300).into()))
            .collect();
        let whole = tungstenite_bytes(&frames);
        let one = whole.len() / 3;
        let mut io = TestStream::new(usize::MAX, true);
        io.budget = one + 98;
        let mut batch: VecDeque<Outbound> = frames.iter().cloned().collect();
        let mut sent = 0;
        {
            let write = std::pin::pin!(write(&mut io, &mut batch, &mut sent));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(
                write.poll(&mut cx).is_pending(),
                "stalls inside the second frame"
            );
        }
        assert_eq!(sent, one + 98);
        io.budget = usize::MAX;
        finish_partial(&mut io, &mut batch, &mut sent)
            .await
            .unwrap();
        assert_eq!(sent, 0);
        assert!(io.out == whole[..2 * one], "the first two frames, whole");
        assert_eq!(batch.len(), 1, "the third was never started and stays");
        write(&mut io, &mut batch, &mut sent).await.unwrap();
        assert!(io.out == whole);
    }
}
