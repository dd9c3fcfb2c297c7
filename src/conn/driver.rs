//! The two futures a connection runs in its context.
//!
//! [`LinkDriver`] belongs to one link: each pass it reads frames, then drains the answers
//! the handlers have sent, then writes, in that order, so a message read, handled
//! synchronously and finished leaves as a FIN (with any RDY change first, nsq#404) in the
//! same write as everything else of that pass. It ends when its link is no longer the current
//! one, and is cancelled with it.
//!
//! [`Background`] lives as long as the actor: it polls the handler futures (a reconnect never
//! cancels a handler) and, while no link is up, drains answers so that a lost link's slots are
//! released as its handlers finish.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use actix::ActorFuture;
use futures_util::StreamExt;
use tokio::io::{ReadHalf, WriteHalf};
use tokio_util::codec::FramedRead;

use super::{
    writer::{self, Written},
    NsqdConnection, Phase,
};
use crate::{protocol::NsqCodec, rdy::LinkId, transport::BoxedStream};

/// Frames handled per pass before the driver yields to the actor's other futures (actix
/// yields a stream after 16 items for the same reason).
const FRAMES_PER_PASS: usize = 16;

/// Reads, drains answers and writes for one link.
pub(super) struct LinkDriver {
    link: LinkId,
    frames: FramedRead<ReadHalf<BoxedStream>, NsqCodec>,
    write: writer::WriteHalf<WriteHalf<BoxedStream>>,
}

impl LinkDriver {
    pub(super) fn new(
        link: LinkId,
        frames: FramedRead<ReadHalf<BoxedStream>, NsqCodec>,
        write: writer::WriteHalf<WriteHalf<BoxedStream>>,
    ) -> Self {
        Self {
            link,
            frames,
            write,
        }
    }
}

impl ActorFuture<NsqdConnection> for LinkDriver {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut NsqdConnection,
        ctx: &mut actix::Context<NsqdConnection>,
        task: &mut Context<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let mut more = false;
        for read in 0..FRAMES_PER_PASS {
            match this.frames.poll_next_unpin(task) {
                Poll::Ready(Some(frame)) => act.on_frame(frame, ctx),
                Poll::Ready(None) => {
                    act.on_eof(ctx);
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
            if !act.is_current(this.link) {
                return Poll::Ready(()); // the frame cost the link
            }
            more = read + 1 == FRAMES_PER_PASS;
        }
        act.drain_answers(task, ctx);
        if !act.is_current(this.link) {
            return Poll::Ready(());
        }
        match this.write.poll_write(task) {
            Poll::Ready(Written::Closed) => {
                act.closed(ctx);
                return Poll::Ready(());
            }
            Poll::Ready(Written::Failed(error)) => {
                act.drop_link(error.into(), ctx);
                return Poll::Ready(());
            }
            Poll::Pending => {}
        }
        if more {
            // Frames may be waiting: come back after the actor's other futures had their turn.
            task.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// Polls the handler futures for the actor's whole life, and drains answers while no link is
/// up. Ends once the actor is down for good with nothing left to wait for.
pub(super) struct Background;

impl ActorFuture<NsqdConnection> for Background {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut NsqdConnection,
        ctx: &mut actix::Context<NsqdConnection>,
        task: &mut Context<'_>,
    ) -> Poll<()> {
        act.handling.poll(task);
        if act.link.is_none() {
            act.drain_answers(task, ctx);
        }
        let down = matches!(act.phase, Phase::GaveUp | Phase::Closed);
        if down && act.link.is_none() && act.handling.is_empty() && act.lost_links.is_empty() {
            act.background = false;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl NsqdConnection {
    /// Handles every answer sent so far.
    pub(super) fn drain_answers(
        &mut self,
        task: &mut Context<'_>,
        ctx: &mut actix::Context<NsqdConnection>,
    ) {
        while let Poll::Ready(Some(answer)) = self.answers.poll_recv(task) {
            self.on_answer(answer, ctx);
        }
    }
}
