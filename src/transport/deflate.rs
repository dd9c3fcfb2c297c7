//! Raw deflate, as nsqd speaks it after `"deflate": true` in IDENTIFY.
//!
//! nsqd wraps its connection in Go's `compress/flate` reader and writer (no zlib header) and
//! calls the writer's `Flush` after every batch of frames, which emits a sync flush: the block
//! ends on a byte boundary followed by the empty stored block `00 00 ff ff`
//! (`nsqd/client_v2.go`, `UpgradeDeflate`). This stream does the same on `poll_flush`, so
//! nothing written waits in the compressor.
//!
//! Memory is bounded: decompressed bytes go straight into the caller's buffer, and at most
//! `READ_SIZE` compressed bytes are buffered on the read side.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, BytesMut};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::io_util;

/// How much compressed input to read from the inner stream at once.
const READ_SIZE: usize = 16 * 1024;
/// How much input one `poll_write` takes, so one call's output stays small.
const MAX_WRITE: usize = 32 * 1024;
/// Compressed bytes allowed to wait for the inner stream before `poll_write` waits too.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// Room kept free in the output buffer for each call into the compressor: more than
/// miniz_oxide's internal output buffer (85 KiB) plus one write, so that a call never stops
/// with output held back inside the compressor.
const OUT_SPARE: usize = 128 * 1024;
/// Room for one call into the decompressor: what one `poll_read` returns at most.
const INFLATE_CHUNK: usize = 32 * 1024;
/// The empty stored block that ends a sync flush.
const SYNC_MARKER: &[u8] = b"\x00\x00\xff\xff";
/// Sync-flush calls that made no progress before giving up instead of spinning.
const MAX_IDLE_FLUSH_CALLS: usize = 4;

fn corrupt(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("deflate: {e}"))
}

/// A raw-deflate stream over `S`: reads inflate, writes deflate. Usable on either end.
pub(crate) struct DeflateStream<S> {
    inner: S,
    decompress: Decompress,
    /// Compressed bytes read from the inner stream and not yet inflated.
    raw: BytesMut,
    inner_eof: bool,
    stream_end: bool,
    /// Where each call into the decompressor writes, zeroed once (see `deflate_scratch`).
    inflate_scratch: Box<[u8]>,
    compress: Compress,
    /// Where each call into the compressor writes: `OUT_SPARE` bytes, zeroed once. flate2's
    /// miniz_oxide backend zero-fills all the room it is handed on every call
    /// (`initialize_buffer` in flate2's `ffi/mod.rs`), so compressing straight into `out`
    /// with `OUT_SPARE` reserved cleared 128 KiB per call, several times per awaited PUB
    /// (~12% of its CPU in perf). Copying out the few bytes produced costs next to nothing.
    deflate_scratch: Box<[u8]>,
    /// Deflated bytes not yet accepted by the inner stream.
    out: Vec<u8>,
    out_pos: usize,
    /// Input went into the compressor since the last sync flush.
    unflushed: bool,
}

impl<S> DeflateStream<S> {
    /// Wraps `inner`, compressing writes at `level` (clamped to 1..=9, the range nsqd allows).
    pub(crate) fn new(inner: S, level: u32) -> Self {
        Self {
            inner,
            decompress: Decompress::new(false),
            raw: BytesMut::new(),
            inner_eof: false,
            stream_end: false,
            inflate_scratch: vec![0; INFLATE_CHUNK].into_boxed_slice(),
            compress: Compress::new(flate2::Compression::new(level.clamp(1, 9)), false),
            deflate_scratch: vec![0; OUT_SPARE].into_boxed_slice(),
            out: Vec::new(),
            out_pos: 0,
            unflushed: false,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
    {
        ready!(io_util::poll_write_all(
            &mut self.inner,
            cx,
            &self.out,
            &mut self.out_pos
        ))?;
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Runs the compressor once over `input` (possibly empty), appending to `out`.
    /// Returns how many input bytes it consumed and how many it produced.
    fn deflate(&mut self, input: &[u8], flush: FlushCompress) -> io::Result<(usize, usize)> {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        let (before_in, before_out) = (self.compress.total_in(), self.compress.total_out());
        self.compress
            .compress(input, &mut self.deflate_scratch, flush)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        // Both deltas are bounded by the slices passed in, so they fit in usize.
        let consumed = (self.compress.total_in() - before_in) as usize;
        let produced = (self.compress.total_out() - before_out) as usize;
        let output = self.deflate_scratch.get(..produced).unwrap_or_default();
        self.out.extend_from_slice(output);
        Ok((consumed, produced))
    }

    /// Z_SYNC_FLUSH, as Go's `flate.Writer.Flush`. "The output did not fill the buffer" does
    /// not mean the flush is done with miniz_oxide: a call that starts by draining output it
    /// held back returns before flushing (fastly/pushpin#48307 hit the same). So this calls
    /// until the output ends with the sync marker, which every completed sync flush does.
    fn sync_flush(&mut self) -> io::Result<()> {
        let mut idle_calls = 0;
        loop {
            let (_, produced) = self.deflate(&[], FlushCompress::Sync)?;
            if produced > 0 && self.out[self.out_pos..].ends_with(SYNC_MARKER) {
                return Ok(());
            }
            idle_calls = if produced == 0 { idle_calls + 1 } else { 0 };
            if idle_calls >= MAX_IDLE_FLUSH_CALLS {
                return Err(io::Error::other("deflate: the sync flush did not complete"));
            }
        }
    }
}

impl<S> std::fmt::Debug for DeflateStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateStream")
            .field("buffered_in", &self.raw.len())
            .field("buffered_out", &(self.out.len() - self.out_pos))
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeflateStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.stream_end {
                // A final block ends the deflate stream; nsqd never sends one.
                return Poll::Ready(Ok(()));
            }
            // Inflate even without new input: the decompressor may hold output from before.
            let (before_in, before_out) = (this.decompress.total_in(), this.decompress.total_out());
            // Into the scratch rather than `buf.initialize_unfilled()`, which zero-fills all
            // of the caller's spare room on every call.
            let room = buf.remaining().min(this.inflate_scratch.len());
            let scratch = this.inflate_scratch.get_mut(..room).unwrap_or_default();
            let status = this
                .decompress
                .decompress(&this.raw, scratch, FlushDecompress::None)
                .map_err(corrupt)?;
            let consumed = (this.decompress.total_in() - before_in) as usize;
            let produced = (this.decompress.total_out() - before_out) as usize;
            this.raw.advance(consumed);
            buf.put_slice(this.inflate_scratch.get(..produced).unwrap_or_default());
            this.stream_end = status == Status::StreamEnd;
            if produced > 0 {
                return Poll::Ready(Ok(()));
            }
            if consumed > 0 || this.stream_end {
                continue;
            }
            if !this.raw.is_empty() {
                // Input and room for output, yet no progress: never spin on it.
                return Poll::Ready(Err(corrupt("the decompressor made no progress")));
            }
            if this.inner_eof {
                return Poll::Ready(Ok(()));
            }
            let n = ready!(io_util::poll_read_more(
                &mut this.inner,
                cx,
                &mut this.raw,
                READ_SIZE
            ))?;
            this.inner_eof = n == 0;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeflateStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.out.len() - this.out_pos >= OUT_HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        let input = &buf[..buf.len().min(MAX_WRITE)];
        let mut taken = 0;
        while taken < input.len() {
            let (consumed, produced) = this.deflate(&input[taken..], FlushCompress::None)?;
            if consumed == 0 && produced == 0 {
                return Poll::Ready(Err(io::Error::other(
                    "deflate: the compressor made no progress",
                )));
            }
            taken += consumed;
        }
        this.unflushed = true;
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unflushed {
            this.sync_flush()?;
            this.unflushed = false;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "deflate_tests.rs"]
mod tests;
