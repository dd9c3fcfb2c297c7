//! Poll helpers shared by the compression wrappers.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads at most `max` more bytes from `inner`, appending them to `buf`. `Ok(0)` is EOF.
pub(crate) fn poll_read_more<S: AsyncRead + Unpin>(
    inner: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    max: usize,
) -> Poll<io::Result<usize>> {
    let start = buf.len();
    // Zero-filled rather than uninitialised: the crate forbids `unsafe`, and zeroing 16 KiB
    // costs far less than the read itself.
    buf.resize(start + max, 0);
    let mut read_buf = ReadBuf::new(&mut buf[start..]);
    let result = Pin::new(inner).poll_read(cx, &mut read_buf);
    let n = read_buf.filled().len();
    buf.truncate(start + n);
    ready!(result)?;
    Poll::Ready(Ok(n))
}

/// Writes `buf[*pos..]` to `inner`, advancing `pos`, until all of it is accepted.
pub(crate) fn poll_write_all<S: AsyncWrite + Unpin>(
    inner: &mut S,
    cx: &mut Context<'_>,
    buf: &[u8],
    pos: &mut usize,
) -> Poll<io::Result<()>> {
    while *pos < buf.len() {
        let n = ready!(Pin::new(&mut *inner).poll_write(cx, &buf[*pos..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *pos += n;
    }
    Poll::Ready(Ok(()))
}
