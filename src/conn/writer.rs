//! The connection's write path.
//!
//! Commands are encoded into one buffer as the actor handles events; the link's driver (see
//! `driver`) writes the whole buffer and flushes right after it has read frames and drained
//! answers, which is after the actor's current turn. So every command queued in the same turn leaves in one write, and
//! nothing waits for a timer: go-nsq flushes after every command (a syscall per FIN), tokio-nsq
//! flushes on a 250 ms timer (4 round trips a second when a caller awaits each one).
//!
//! actix's own `FramedWrite` is not used because its `close()` does not wake the writer and its
//! `Drop` does not write, so the last FIN before a graceful close could be lost.

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio_util::codec::Encoder;

use crate::{
    error::Error,
    protocol::{Command, NsqCodec},
};

struct Shared {
    buf: BytesMut,
    waker: Option<Waker>,
    closing: bool,
}

/// Encodes commands into a buffer that the link's [`WriteHalf`] drains.
pub(crate) struct Writer {
    shared: Rc<RefCell<Shared>>,
    codec: NsqCodec,
}

impl Writer {
    /// A writer for `io`; the caller polls the returned [`WriteHalf`] from the link's driver.
    pub(crate) fn new<W: AsyncWrite + Unpin>(io: W, codec: NsqCodec) -> (Self, WriteHalf<W>) {
        let shared = Rc::new(RefCell::new(Shared {
            buf: BytesMut::with_capacity(8 * 1024),
            waker: None,
            closing: false,
        }));
        let half = WriteHalf {
            shared: shared.clone(),
            io,
            shut_down: false,
        };
        (Self { shared, codec }, half)
    }

    /// Queues a command. Fails, writing nothing, for a publish over the server's limits.
    pub(crate) fn write(&mut self, command: &Command) -> Result<(), Error> {
        let mut shared = self.shared.borrow_mut();
        if shared.closing {
            return Err(Error::Stopped);
        }
        self.codec.encode(command, &mut shared.buf)?;
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Writes what is buffered, then shuts the write side down; the [`WriteHalf`] then
    /// reports [`Written::Closed`].
    pub(crate) fn close(&mut self) {
        let mut shared = self.shared.borrow_mut();
        shared.closing = true;
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
    }
}

/// What a [`WriteHalf`] has done when it stops.
#[derive(Debug)]
pub(crate) enum Written {
    /// Everything was written and the write side shut down after [`Writer::close`].
    Closed,
    /// The socket failed: the link must be dropped.
    Failed(io::Error),
}

/// The socket side of a [`Writer`].
pub(crate) struct WriteHalf<W> {
    shared: Rc<RefCell<Shared>>,
    io: W,
    shut_down: bool,
}

impl<W: AsyncWrite + Unpin> WriteHalf<W> {
    /// Writes and flushes whatever is buffered; `Ready` once closed or failed.
    pub(crate) fn poll_write(&mut self, task: &mut Context<'_>) -> Poll<Written> {
        let mut shared = self.shared.borrow_mut();
        let result = loop {
            while !shared.buf.is_empty() {
                match Pin::new(&mut self.io).poll_write(task, &shared.buf) {
                    Poll::Ready(Ok(0)) => break,
                    Poll::Ready(Ok(n)) => shared.buf.advance(n),
                    Poll::Ready(Err(e)) => return Poll::Ready(Written::Failed(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if !shared.buf.is_empty() {
                break Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket accepted no bytes",
                ));
            }
            // Everything queued is written: flush now (TLS and compression layers buffer).
            match Pin::new(&mut self.io).poll_flush(task) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Pending => return Poll::Pending,
            }
            if shared.closing && !self.shut_down {
                match Pin::new(&mut self.io).poll_shutdown(task) {
                    Poll::Ready(_) => self.shut_down = true,
                    Poll::Pending => return Poll::Pending,
                }
                break Ok(true);
            }
            if shared.buf.is_empty() {
                break Ok(false);
            }
        };
        match result {
            Ok(true) => Poll::Ready(Written::Closed),
            Ok(false) => {
                shared.waker = Some(task.waker().clone());
                // Reclaim the buffer's space once it has been drained.
                shared.buf.clear();
                Poll::Pending
            }
            Err(e) => Poll::Ready(Written::Failed(e)),
        }
    }
}
