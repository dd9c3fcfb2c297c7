//! Snappy, framing format, as nsqd speaks it after `"snappy": true` in IDENTIFY.
//!
//! nsqd wraps its connection in golang/snappy's `NewReader` and `NewBufferedWriter`
//! (`nsqd/client_v2.go`, `UpgradeSnappy`): a stream identifier chunk, then chunks of at most
//! 64 KiB of data, each compressed (type 0x00) or stored (type 0x01) and carrying the masked
//! CRC-32C of the uncompressed bytes (google/snappy `framing_format.txt`).
//!
//! Writes are buffered into 64 KiB blocks and only framed when a block is full or on
//! `poll_flush`, which pushes every compressed byte to the inner stream: a frame left in a
//! buffer is a message that waits for the next heartbeat (nsq#532).

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{crc32c::masked_crc32c, io_util};

/// The first chunk of every stream: type 0xff, length 6, `sNaPpY`.
pub(crate) const STREAM_IDENTIFIER: &[u8; 10] = b"\xff\x06\x00\x00sNaPpY";

/// The most uncompressed data one chunk may carry (framing_format.txt, section 4.2).
const MAX_BLOCK: usize = 65_536;
const CHUNK_HEADER: usize = 4;
const CHECKSUM: usize = 4;
/// `snap::raw::max_compress_len(MAX_BLOCK)`: 32 + n + n/6, golang's `maxEncodedLenOfMaxBlockSize`.
const MAX_COMPRESSED_BLOCK: usize = 32 + MAX_BLOCK + MAX_BLOCK / 6;
/// The largest body of a data chunk; anything larger is rejected before it is buffered.
const MAX_CHUNK_BODY: usize = CHECKSUM + MAX_COMPRESSED_BLOCK;

const CHUNK_COMPRESSED: u8 = 0x00;
const CHUNK_UNCOMPRESSED: u8 = 0x01;
const CHUNK_STREAM_IDENTIFIER: u8 = 0xff;

/// How much to read from the inner stream at once.
const READ_SIZE: usize = 16 * 1024;

fn corrupt(what: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snappy: {}", what.into()),
    )
}

/// A snappy-framed stream over `S`: reads decompress, writes compress. Usable on either end
/// of a connection.
pub(crate) struct SnappyStream<S> {
    inner: S,
    reader: FrameReader,
    writer: FrameWriter,
}

impl<S> SnappyStream<S> {
    /// Wraps `inner`; the stream identifier goes out with the first flush.
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            reader: FrameReader::default(),
            writer: FrameWriter::default(),
        }
    }
}

impl<S> std::fmt::Debug for SnappyStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnappyStream")
            .field("buffered_in", &self.reader.raw.len())
            .field(
                "buffered_out",
                &(self.writer.pending.len() + self.writer.out.len()),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct FrameReader {
    /// Framed bytes read from the inner stream and not yet parsed.
    raw: BytesMut,
    /// Data of the last chunk, not yet handed out.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Bytes of a padding or skippable chunk still to drop.
    skip: usize,
    seen_identifier: bool,
    inner_eof: bool,
    decoder: snap::raw::Decoder,
}

impl FrameReader {
    /// Parses one chunk out of `raw` if it is complete. `Ok(false)`: more bytes are needed
    /// (and `raw` has room reserved for them).
    fn parse_chunk(&mut self) -> io::Result<bool> {
        if self.skip > 0 {
            let n = self.skip.min(self.raw.len());
            self.raw.advance(n);
            self.skip -= n;
            return Ok(self.skip == 0);
        }
        let Some(header) = self.raw.get(..CHUNK_HEADER) else {
            return Ok(false);
        };
        let kind = header[0];
        let len =
            usize::from(header[1]) | usize::from(header[2]) << 8 | usize::from(header[3]) << 16;
        if !self.seen_identifier && kind != CHUNK_STREAM_IDENTIFIER {
            return Err(corrupt("stream does not start with the stream identifier"));
        }
        match kind {
            CHUNK_STREAM_IDENTIFIER if len != STREAM_IDENTIFIER.len() - CHUNK_HEADER => {
                Err(corrupt(format!("stream identifier chunk of length {len}")))
            }
            CHUNK_COMPRESSED | CHUNK_UNCOMPRESSED
                if !(CHECKSUM..=MAX_CHUNK_BODY).contains(&len) =>
            {
                Err(corrupt(format!("data chunk of length {len}")))
            }
            // Reserved unskippable chunks (section 4.5).
            0x02..=0x7f => Err(corrupt(format!(
                "reserved unskippable chunk type {kind:#04x}"
            ))),
            // Padding and reserved skippable chunks (sections 4.4, 4.6): dropped as they arrive.
            0x80..=0xfe => {
                self.raw.advance(CHUNK_HEADER);
                self.skip = len;
                Ok(true)
            }
            _ if self.raw.len() < CHUNK_HEADER + len => {
                self.raw.reserve(CHUNK_HEADER + len - self.raw.len());
                Ok(false)
            }
            CHUNK_STREAM_IDENTIFIER => {
                if self.raw[..STREAM_IDENTIFIER.len()] != STREAM_IDENTIFIER[..] {
                    return Err(corrupt("bad stream identifier"));
                }
                self.raw.advance(STREAM_IDENTIFIER.len());
                self.seen_identifier = true;
                Ok(true)
            }
            _ => {
                let chunk = self.raw.split_to(CHUNK_HEADER + len);
                self.decode_data(kind, &chunk[CHUNK_HEADER..])?;
                Ok(true)
            }
        }
    }

    fn decode_data(&mut self, kind: u8, body: &[u8]) -> io::Result<()> {
        let (checksum, data) = body.split_at(CHECKSUM);
        let checksum = u32::from_le_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]);
        self.plain.clear();
        self.plain_pos = 0;
        if kind == CHUNK_COMPRESSED {
            let len = snap::raw::decompress_len(data).map_err(|e| corrupt(e.to_string()))?;
            if len > MAX_BLOCK {
                return Err(corrupt(format!("chunk decompresses to {len} bytes")));
            }
            self.plain.resize(len, 0);
            let n = self
                .decoder
                .decompress(data, &mut self.plain)
                .map_err(|e| corrupt(e.to_string()))?;
            self.plain.truncate(n);
        } else {
            if data.len() > MAX_BLOCK {
                return Err(corrupt(format!(
                    "uncompressed chunk of {} bytes",
                    data.len()
                )));
            }
            self.plain.extend_from_slice(data);
        }
        if masked_crc32c(&self.plain) != checksum {
            self.plain.clear();
            return Err(corrupt("checksum mismatch"));
        }
        Ok(())
    }

    fn poll_read<S: AsyncRead + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.plain_pos < self.plain.len() {
                let n = (self.plain.len() - self.plain_pos).min(buf.remaining());
                buf.put_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
                self.plain_pos += n;
                return Poll::Ready(Ok(()));
            }
            if self.parse_chunk()? {
                continue;
            }
            if self.inner_eof {
                if self.raw.is_empty() && self.skip == 0 {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "snappy: stream ended inside a chunk",
                )));
            }
            // parse_chunk reserved room for the rest of the chunk it is waiting for.
            let want = READ_SIZE.max(self.raw.capacity() - self.raw.len());
            let n = ready!(io_util::poll_read_more(inner, cx, &mut self.raw, want))?;
            self.inner_eof = n == 0;
        }
    }
}

struct FrameWriter {
    /// Data written but not yet framed (at most one block).
    pending: Vec<u8>,
    /// Framed bytes not yet accepted by the inner stream.
    out: Vec<u8>,
    out_pos: usize,
    encoder: snap::raw::Encoder,
}

impl Default for FrameWriter {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            out: STREAM_IDENTIFIER.to_vec(),
            out_pos: 0,
            encoder: snap::raw::Encoder::new(),
        }
    }
}

impl FrameWriter {
    /// Frames `pending` into `out` as one chunk, stored when compression saves less than
    /// 12.5%, as golang/snappy's writer decides.
    fn frame_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        let data_len = self.pending.len();
        let checksum = masked_crc32c(&self.pending);
        let header_at = self.out.len();
        let data_at = header_at + CHUNK_HEADER + CHECKSUM;
        self.out
            .resize(data_at + snap::raw::max_compress_len(data_len), 0);
        let compressed = self
            .encoder
            .compress(&self.pending, &mut self.out[data_at..])
            .map_err(|e| io::Error::other(format!("snappy: {e}")))?;
        let kind = if compressed >= data_len - data_len / 8 {
            self.out.truncate(data_at);
            self.out.extend_from_slice(&self.pending);
            CHUNK_UNCOMPRESSED
        } else {
            self.out.truncate(data_at + compressed);
            CHUNK_COMPRESSED
        };
        // At most CHECKSUM + MAX_COMPRESSED_BLOCK: fits the 24-bit length.
        let body_len = (self.out.len() - data_at + CHECKSUM).to_le_bytes();
        let checksum = checksum.to_le_bytes();
        self.out[header_at..data_at].copy_from_slice(&[
            kind,
            body_len[0],
            body_len[1],
            body_len[2],
            checksum[0],
            checksum[1],
            checksum[2],
            checksum[3],
        ]);
        self.pending.clear();
        Ok(())
    }

    fn poll_drain<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(io_util::poll_write_all(
            inner,
            cx,
            &self.out,
            &mut self.out_pos
        ))?;
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.pending.len() >= MAX_BLOCK {
            // Backpressure: at most one framed block waits for the inner stream.
            ready!(self.poll_drain(inner, cx))?;
            self.frame_pending()?;
        }
        let n = buf.len().min(MAX_BLOCK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        self.frame_pending()?;
        ready!(self.poll_drain(inner, cx))?;
        Pin::new(inner).poll_flush(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SnappyStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.reader.poll_read(&mut this.inner, cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SnappyStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.writer.poll_write(&mut this.inner, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.writer.poll_flush(&mut this.inner, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.writer.poll_flush(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "snappy_tests.rs"]
mod tests;
