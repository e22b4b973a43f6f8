//! A read side that costs nothing while a session is idle.
//!
//! tungstenite allocates its read buffer (`read_buffer_size`) up front and
//! keeps it for the connection's life: with many idle sessions that buffer is
//! the largest part of each. Here tungstenite gets a small buffer and this
//! wrapper reads the socket in chunks of up to [`READ_CHUNK`] into the stack,
//! hands over what was asked for, and keeps the rest in a spill buffer that is
//! allocated only while it holds bytes. Reads that fit the caller's buffer go
//! straight into it. One syscall per chunk, as with a large buffer; no memory
//! per idle session. Writes pass through untouched.
//!
//! It also follows the frame edges of what it hands over (`Boundary`), so the
//! session knows when tungstenite's codec holds nothing and may be dropped
//! while the session idles (`session::wire`), and it can wait for the next
//! bytes without a codec on top (`poll_fill`).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::boundary::Boundary;

/// Bytes read from the socket per syscall at most.
pub const READ_CHUNK: usize = 8 * 1024;

pub struct LazyRead<S> {
    inner: S,
    /// Read but not yet handed over; no allocation while empty.
    spill: BytesMut,
    /// Frame edges of the bytes handed over so far.
    boundary: Boundary,
}

impl<S> LazyRead<S> {
    pub fn new(inner: S) -> LazyRead<S> {
        LazyRead {
            inner,
            spill: BytesMut::new(),
            boundary: Boundary::default(),
        }
    }

    /// True when what was handed over ends on a frame edge outside any
    /// fragmented message: a reader that consumed it all holds nothing.
    pub fn at_rest(&self) -> bool {
        self.boundary.at_rest()
    }
}

impl<S: AsyncRead + Unpin> LazyRead<S> {
    /// Wait until bytes can be handed over, without handing any: Ready(true)
    /// when some are (read into the spill), Ready(false) at the end of the
    /// stream. What a parked session waits on instead of a codec's read.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !self.spill.is_empty() {
            return Poll::Ready(Ok(true));
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut tmp = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut tmp))?;
        let got = tmp.filled();
        if got.is_empty() {
            return Poll::Ready(Ok(false));
        }
        self.spill.extend_from_slice(got);
        Poll::Ready(Ok(true))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LazyRead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(this.hand_over(cx, buf))?;
        this.boundary.feed(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> LazyRead<S> {
    fn hand_over(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.spill.is_empty() {
            let n = self.spill.len().min(buf.remaining());
            buf.put_slice(&self.spill[..n]);
            self.spill.advance(n);
            if self.spill.is_empty() {
                // Give the allocation back: the session may now idle for hours.
                self.spill = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_CHUNK {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut tmp = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut tmp))?;
        let got = tmp.filled();
        let n = got.len().min(buf.remaining());
        buf.put_slice(&got[..n]);
        if n < got.len() {
            self.spill.extend_from_slice(&got[n..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LazyRead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_are_served_from_one_chunk_and_the_spill_is_freed() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&data).await.unwrap();
        let mut r = LazyRead::new(server);
        let mut got = Vec::new();
        let mut small = [0u8; 100];
        while got.len() < data.len() {
            let n = r.read(&mut small).await.unwrap();
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        assert!(r.spill.is_empty());
        assert_eq!(r.spill.capacity(), 0, "no allocation kept once drained");
    }

    #[tokio::test]
    async fn large_reads_bypass_the_spill() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[7u8; 20_000]).await.unwrap();
        drop(client);
        let mut r = LazyRead::new(server);
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 20_000);
    }
}
