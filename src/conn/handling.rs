//! The handler futures of one connection.
//!
//! They belong to the actor, not to a link: a lost link must not cancel a handler midway (its
//! answer then fails with `ConnectionLost`, and nsqd redelivers after `msg_timeout`). The
//! actor's background driver polls them. Compared with a task per message, this saves a task
//! allocation and a trip through the executor's queue.

use std::{
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{ready, Context, Poll, Waker},
};

use actix::Recipient;
use futures_util::{stream::FuturesUnordered, StreamExt};

use super::{ConnId, ConnectionEvent};
use crate::{
    delivery::{DeliveryId, Watch},
    events::{MessageEvent, Tap},
    handler::{settle, Dispatch, Handled},
};

/// Reports handlers that failed: panics and deliveries no handler saw as
/// `ConnectionEvent::HandlerFailed` to the owner; panics and `Err` results as
/// [`MessageEvent::HandlerFailed`] to the listeners that want message events.
pub(crate) struct FailureReporter {
    pub(crate) id: ConnId,
    pub(crate) addr: Arc<str>,
    pub(crate) events: Option<Recipient<ConnectionEvent>>,
    pub(crate) tap: Option<Rc<dyn Tap>>,
}

impl FailureReporter {
    fn report(&self, watch: &Watch, handled: &Handled) {
        if let Some(tap) = self.tap.as_ref().filter(|t| t.wants_messages()) {
            if let (DeliveryId::Nsq(id), Some((error, panicked))) =
                (&watch.meta().id, failure(handled))
            {
                tap.message(MessageEvent::HandlerFailed {
                    conn: self.id,
                    addr: self.addr.clone(),
                    id: *id,
                    error,
                    panicked,
                });
            }
        }
        let reason = match handled {
            Handled::Panicked(panic) => format!("handler panicked: {panic}"),
            Handled::Gone => {
                "no live handler took the message; released it without counting a failure"
                    .to_owned()
            }
            Handled::Returned(_) => return,
        };
        if let Some(events) = &self.events {
            events.do_send(ConnectionEvent::HandlerFailed {
                id: self.id,
                addr: self.addr.clone(),
                message_id: watch.meta().id.as_str().to_owned(),
                reason,
            });
        }
    }
}

/// The error text and whether it was a panic, for a handler that failed.
fn failure(handled: &Handled) -> Option<(String, bool)> {
    match handled {
        Handled::Panicked(panic) => Some((panic.clone(), true)),
        Handled::Returned(Err(error)) => Some((error.to_string(), false)),
        Handled::Returned(Ok(())) | Handled::Gone => None,
    }
}

/// A delivery being handled; settles its answer when the handler is done.
pub(crate) struct Settling {
    pub(crate) dispatch: Dispatch,
    pub(crate) watch: Option<Watch>,
    pub(crate) give_up: bool,
    /// Shared by the connection's deliveries (a reference count, no allocation per message).
    pub(crate) failures: Option<Rc<FailureReporter>>,
    #[cfg(feature = "metrics")]
    pub(crate) timer: Option<crate::metrics::HandlerTimer>,
}

impl Future for Settling {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let handled = ready!(Pin::new(&mut self.dispatch).poll(cx));
        #[cfg(feature = "metrics")]
        crate::metrics::HandlerTimer::done(self.timer.take(), self.give_up);
        if let Some(watch) = self.watch.take() {
            if let Some(failures) = &self.failures {
                failures.report(&watch, &handled);
            }
            settle(&watch, &handled, self.give_up);
        }
        Poll::Ready(())
    }
}

#[derive(Default)]
pub(crate) struct Handling {
    futures: FuturesUnordered<Settling>,
    waker: Option<Waker>,
}

impl Handling {
    /// Polls a new handler future once at once, with the connection's own waker, and keeps it
    /// only if it is not done: a handler that answers synchronously then costs no queue node
    /// and no extra wake-up of the connection.
    pub(crate) fn run(&mut self, mut settling: Settling) {
        if let Some(waker) = &self.waker {
            let mut cx = Context::from_waker(waker);
            if Pin::new(&mut settling).poll(&mut cx).is_ready() {
                return;
            }
        }
        self.push(settling);
    }

    /// Drives the handler futures; remembers `cx`'s waker for [`run`](Self::run).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        // Ready(None) only means "empty for now": a push wakes the driver again.
        while let Poll::Ready(Some(())) = self.futures.poll_next_unpin(cx) {}
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.futures.is_empty()
    }

    fn push(&mut self, settling: Settling) {
        self.futures.push(settling);
        // FuturesUnordered does not wake its poller on push.
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }
}
