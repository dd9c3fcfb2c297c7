//! Graceful close: CLS, CLOSE_WAIT, drain in-flight messages and pending publishes, flush,
//! then stop for good, all within a deadline.

use std::{sync::atomic::Ordering::Relaxed, time::Duration};

use actix::{ActorContext, AsyncContext, Context};
use tokio::sync::oneshot;

use super::{Closing, ConnectionEvent, NsqdConnection, Phase, Waiter};
use crate::{error::Error, protocol::Command};

impl NsqdConnection {
    /// Starts a graceful close; `done` resolves with the number of abandoned messages.
    pub(super) fn begin_close(
        &mut self,
        deadline: Duration,
        done: oneshot::Sender<u32>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(closing) = &mut self.closing {
            closing.done.push(done);
            return;
        }
        self.closing = Some(Closing {
            done: vec![done],
            deadline: None,
            abandoned: 0,
        });
        match self.phase {
            Phase::Connected => {
                self.phase = Phase::Closing;
                if self.subscription.is_some() {
                    // CLS: nsqd stops delivering and answers CLOSE_WAIT, but still takes
                    // FIN/REQ/TOUCH for the messages in flight (protocol_v2.go CLS).
                    self.waiters.push_back(Waiter::CloseWait);
                    let _ = self.write(&Command::Cls, ctx);
                } else if let Some(link) = &mut self.link {
                    link.close_wait_seen = true;
                }
                let handle = ctx.run_later(deadline, |act, ctx| {
                    let abandoned = act.link.as_ref().map_or(0, |l| l.in_flight);
                    act.finish_close(abandoned, ctx);
                });
                if let Some(closing) = &mut self.closing {
                    closing.deadline = Some(handle);
                }
                self.maybe_finish_close(ctx);
            }
            Phase::Connecting | Phase::Closing | Phase::Closed | Phase::GaveUp => {
                self.finish_close(0, ctx)
            }
        }
    }

    /// Finishes the close once CLOSE_WAIT has arrived, nothing is in flight and no publish is
    /// waiting for its answer.
    pub(super) fn maybe_finish_close(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Closing {
            return;
        }
        let Some(link) = &self.link else { return };
        let publishes_pending = self.waiters.iter().any(|w| matches!(w, Waiter::Publish(_)));
        if link.close_wait_seen && link.in_flight == 0 && !publishes_pending {
            self.finish_close(0, ctx);
        }
    }

    pub(super) fn finish_close(&mut self, abandoned: u32, ctx: &mut Context<Self>) {
        self.phase = Phase::Closed;
        self.counters.connected.store(false, Relaxed);
        self.fail_waiters(&Error::Stopped);
        if let Some(closing) = &mut self.closing {
            if let Some(handle) = closing.deadline.take() {
                ctx.cancel_future(handle);
            }
            closing.abandoned = abandoned;
        }
        tracing::info!(nsqd = %self.addr, conn = self.id, abandoned, "closed");
        self.emit(ConnectionEvent::Closed {
            id: self.id,
            addr: self.addr.clone(),
            abandoned,
        });
        if let Some(mut link) = self.link.take() {
            self.leave_flow(&mut link, ctx);
            self.link = Some(link);
        }
        match &mut self.link {
            // Flush what is buffered (the last FINs) and shut the write side down before the
            // close resolves (see the driver's `Written::Closed`); a peer that stops reading
            // gets 1 s.
            Some(link) => {
                link.writer.close();
                ctx.run_later(Duration::from_secs(1), |act, ctx| act.closed(ctx));
            }
            None => self.closed(ctx),
        }
    }

    /// The close is complete: tell whoever waits for it, and stop (for good: `started()`
    /// does nothing in the `Closed` phase, so the restarted actor ends with its last address).
    pub(super) fn closed(&mut self, ctx: &mut Context<Self>) {
        if let Some(closing) = self.closing.take() {
            for done in closing.done {
                let _ = done.send(closing.abandoned);
            }
        }
        ctx.stop();
    }
}
