//! The handler futures of one connection.
//!
//! They live in the actor itself, not in its context: the supervisor drops a context's
//! futures when it restarts the actor after a lost link, and a lost link must not cancel a
//! handler midway (its answer then fails with `ConnectionLost`, and nsqd redelivers after
//! `msg_timeout`). A small future spawned on every (re)start drives them. Compared with a
//! task per message, this saves a task allocation and a trip through the executor's queue.

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{ready, Context, Poll, Waker},
};

use actix::{Actor, ActorFuture, Recipient};
use futures_util::{stream::FuturesUnordered, StreamExt};

use super::{ConnId, ConnectionEvent};
use crate::{
    delivery::Watch,
    handler::{settle, Dispatch, Handled},
};

/// Reports handlers that panicked or were gone, as `ConnectionEvent::HandlerFailed`.
pub(crate) struct FailureReporter {
    pub(crate) id: ConnId,
    pub(crate) addr: Arc<str>,
    pub(crate) events: Recipient<ConnectionEvent>,
}

impl FailureReporter {
    fn report(&self, watch: &Watch, handled: &Handled) {
        let reason = match handled {
            Handled::Panicked(panic) => format!("handler panicked: {panic}"),
            Handled::Gone => "no live handler actor took the message".to_owned(),
            Handled::Returned(_) => return,
        };
        self.events.do_send(ConnectionEvent::HandlerFailed {
            id: self.id,
            addr: self.addr.clone(),
            message_id: watch.meta().id.as_str().to_owned(),
            reason,
        });
    }
}

/// A delivery being handled; settles its answer when the handler is done.
pub(crate) struct Settling {
    pub(crate) dispatch: Dispatch,
    pub(crate) watch: Option<Watch>,
    pub(crate) give_up: bool,
    /// Shared by the connection's deliveries (a reference count, no allocation per message).
    pub(crate) failures: Option<Rc<FailureReporter>>,
}

impl Future for Settling {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let handled = ready!(Pin::new(&mut self.dispatch).poll(cx));
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

    fn push(&mut self, settling: Settling) {
        self.futures.push(settling);
        // FuturesUnordered does not wake its poller on push.
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }
}

/// Drives a connection's handler futures from its context.
pub(crate) struct DriveHandlers(pub(crate) Rc<RefCell<Handling>>);

impl<A: Actor> ActorFuture<A> for DriveHandlers {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut A, _: &mut A::Context, cx: &mut Context<'_>) -> Poll<()> {
        let mut handling = self.0.borrow_mut();
        if !handling
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            handling.waker = Some(cx.waker().clone());
        }
        // Ready(None) only means "empty for now": stay pending until a push wakes us.
        while let Poll::Ready(Some(())) = handling.futures.poll_next_unpin(cx) {}
        Poll::Pending
    }
}
