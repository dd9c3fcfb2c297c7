//! A stream that first gives back bytes already read from it.
//!
//! Each step of the handshake reads frames into a buffer, and a single TCP read may carry more
//! than the reply it waits for: nsqd writes its snappy-compressed `OK` right behind the
//! IDENTIFY JSON (`nsqd/protocol_v2.go`, `IDENTIFY`). The NSQ client guide warns that those
//! bytes must reach the next layer ("read-to-empty as you negotiate features"), so the next
//! layer reads through a `Rewind` seeded with them.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Yields `prefix` first, then reads from the inner stream. Writes go straight through.
#[derive(Debug)]
pub(crate) struct Rewind<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Rewind<S> {
    /// Wraps `inner` so that reads return `prefix` before anything from `inner`.
    pub(crate) fn new(prefix: BytesMut, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn yields_the_prefix_then_the_stream() {
        let (client, mut server) = duplex(64);
        let mut rewind = Rewind::new(BytesMut::from(&b"abcdef"[..]), client);
        server.write_all(b"ghi").await.unwrap();
        drop(server);

        let mut small = [0u8; 4];
        assert_eq!(rewind.read(&mut small).await.unwrap(), 4);
        assert_eq!(&small, b"abcd");
        let mut rest = Vec::new();
        rewind.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"efghi");
    }

    #[tokio::test]
    async fn an_empty_prefix_reads_straight_through_and_writes_pass() {
        let (client, mut server) = duplex(64);
        let mut rewind = Rewind::new(BytesMut::new(), client);
        rewind.write_all(b"ping").await.unwrap();
        rewind.flush().await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").await.unwrap();
        rewind.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }

    proptest::proptest! {
        #[test]
        fn any_split_of_prefix_and_stream_reads_back_in_order(
            prefix in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            read_size in 1usize..50,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(async {
                let (client, mut server) = duplex(512);
                server.write_all(&tail).await.unwrap();
                drop(server);
                let mut rewind = Rewind::new(BytesMut::from(&prefix[..]), client);
                let mut got = Vec::new();
                let mut chunk = vec![0u8; read_size];
                loop {
                    let n = rewind.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break got;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
            });
            let mut expected = prefix.clone();
            expected.extend_from_slice(&tail);
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
