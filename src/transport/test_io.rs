//! In-memory streams for the wrapper tests: a reader that hands out bytes in scripted pieces
//! (with a `Pending` before each), a writer that takes a few bytes at a time, and data.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Returns `Pending` (waking itself at once) before each piece, then the piece, then EOF.
pub(crate) struct ChunkedReader {
    pieces: VecDeque<Vec<u8>>,
    yielded: bool,
}

impl ChunkedReader {
    /// Splits `data` at `cuts` (positions, any order, out-of-range ones ignored).
    pub(crate) fn split(data: &[u8], cuts: &[usize]) -> Self {
        let mut cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c < data.len()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = VecDeque::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([data.len()]) {
            pieces.push_back(data[start..cut].to_vec());
            start = cut;
        }
        Self {
            pieces,
            yielded: false,
        }
    }
}

impl AsyncRead for ChunkedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // An empty piece would read as EOF; skip those.
        while let Some(piece) = self.pieces.front_mut() {
            if piece.is_empty() {
                self.pieces.pop_front();
                continue;
            }
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                self.pieces.pop_front();
                self.yielded = false;
            }
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(Ok(()))
    }
}

/// Accepts at most `per_write` bytes per call and is `Pending` on every other call.
pub(crate) struct TrickleWriter {
    pub(crate) written: Vec<u8>,
    per_write: usize,
    stall: bool,
    pub(crate) flushes: usize,
}

impl TrickleWriter {
    pub(crate) fn new(per_write: usize) -> Self {
        Self {
            written: Vec::new(),
            per_write,
            stall: false,
            flushes: 0,
        }
    }
}

impl AsyncWrite for TrickleWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stall = !self.stall;
        if self.stall {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf.len().min(self.per_write);
        self.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A reader that never yields anything and never ends, like a peer gone quiet.
pub(crate) struct Silent;

impl AsyncRead for Silent {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

/// Joins a reader and a writer into one stream.
pub(crate) struct Joined<R, W> {
    pub(crate) reader: R,
    pub(crate) writer: W,
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for Joined<R, W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for Joined<R, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

/// Deterministic bytes that are half compressible text, half noise.
pub(crate) fn mixed_data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let text = b"nsq message body with some repetition ";
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if (i / 4096) % 2 == 0 {
                text[i % text.len()]
            } else {
                state as u8
            }
        })
        .collect()
}

/// Deterministic incompressible bytes.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Runs a future to completion on a fresh current-thread runtime (for proptest bodies).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(future)
}
