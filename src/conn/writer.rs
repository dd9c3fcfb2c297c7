//! The connection's write path.
//!
//! Commands are encoded into one buffer as the actor handles events; a future spawned in the
//! actor's context writes the whole buffer and flushes as soon as it is woken, which is after
//! the actor's current turn. So every command queued in the same turn leaves in one write, and
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

use actix::{Actor, ActorFuture, AsyncContext};
use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio_util::codec::Encoder;

use crate::{
    error::Error,
    protocol::{Command, NsqCodec},
};

/// Callbacks from the writer into the actor that owns it.
pub(crate) trait WriterOwner: Actor {
    /// The socket failed: the link must be dropped.
    fn write_failed(&mut self, error: io::Error, ctx: &mut Self::Context);
    /// Everything was written and the write side shut down after `close()`.
    fn write_closed(&mut self, ctx: &mut Self::Context);
}

struct Shared {
    buf: BytesMut,
    waker: Option<Waker>,
    closing: bool,
}

/// Encodes commands into a buffer that a spawned future drains.
pub(crate) struct Writer {
    shared: Rc<RefCell<Shared>>,
    codec: NsqCodec,
}

impl Writer {
    /// Starts the write future for `io` in `ctx`.
    pub(crate) fn start<A, W>(io: W, codec: NsqCodec, ctx: &mut A::Context) -> Self
    where
        A: WriterOwner,
        A::Context: AsyncContext<A>,
        W: AsyncWrite + Unpin + 'static,
    {
        let shared = Rc::new(RefCell::new(Shared {
            buf: BytesMut::with_capacity(8 * 1024),
            waker: None,
            closing: false,
        }));
        ctx.spawn(WriteFuture {
            shared: shared.clone(),
            io,
            shut_down: false,
        });
        Self { shared, codec }
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

    /// Writes what is buffered, then shuts the write side down and calls
    /// [`WriterOwner::write_closed`].
    pub(crate) fn close(&mut self) {
        let mut shared = self.shared.borrow_mut();
        shared.closing = true;
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
    }
}

struct WriteFuture<W> {
    shared: Rc<RefCell<Shared>>,
    io: W,
    shut_down: bool,
}

impl<A, W> ActorFuture<A> for WriteFuture<W>
where
    A: WriterOwner,
    A::Context: AsyncContext<A>,
    W: AsyncWrite + Unpin + 'static,
{
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut A::Context,
        task: &mut Context<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let mut shared = this.shared.borrow_mut();
        let result = loop {
            while !shared.buf.is_empty() {
                match Pin::new(&mut this.io).poll_write(task, &shared.buf) {
                    Poll::Ready(Ok(0)) => {
                        break;
                    }
                    Poll::Ready(Ok(n)) => {
                        shared.buf.advance(n);
                    }
                    Poll::Ready(Err(e)) => {
                        drop(shared);
                        act.write_failed(e, ctx);
                        return Poll::Ready(());
                    }
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
            match Pin::new(&mut this.io).poll_flush(task) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Pending => return Poll::Pending,
            }
            if shared.closing && !this.shut_down {
                match Pin::new(&mut this.io).poll_shutdown(task) {
                    Poll::Ready(_) => this.shut_down = true,
                    Poll::Pending => return Poll::Pending,
                }
                break Ok(true);
            }
            if shared.buf.is_empty() {
                break Ok(false);
            }
        };
        match result {
            Ok(true) => {
                drop(shared);
                act.write_closed(ctx);
                Poll::Ready(())
            }
            Ok(false) => {
                shared.waker = Some(task.waker().clone());
                // Reclaim the buffer's space once it has been drained.
                shared.buf.clear();
                Poll::Pending
            }
            Err(e) => {
                drop(shared);
                act.write_failed(e, ctx);
                Poll::Ready(())
            }
        }
    }
}
