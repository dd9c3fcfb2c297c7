//! Handing deliveries to user handlers: actix actors or closures.
//!
//! Actor handlers are reached with `Recipient::send`, which waits while the handler's mailbox
//! is full instead of queueing without bound as `do_send` would. Several actors may share the
//! work: each delivery goes to the next live one. Closure handlers run as futures; a panic in
//! one is caught and becomes a failure (requeue with backoff), so one poison message cannot
//! take the consumer down.

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
};

use actix::{dev::RecipientRequest, MailboxError, Message, Recipient};
use futures_util::{future::CatchUnwind, FutureExt};

use crate::delivery::{action_for, Action, Delivery, HandlerResult, Watch};

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;

type HandlerFn = Arc<dyn Fn(Delivery) -> HandlerFuture + Send + Sync>;

/// Where deliveries go.
#[derive(Clone)]
pub(crate) enum HandlerSink {
    Actors(Arc<ActorPool>),
    Closure(HandlerFn),
}

pub(crate) struct ActorPool {
    recipients: Vec<Recipient<Delivery>>,
    next: AtomicUsize,
}

/// What became of a dispatched delivery.
#[derive(Debug)]
pub(crate) enum Handled {
    /// The handler returned this.
    Returned(HandlerResult),
    /// The handler panicked (closure handlers), with the panic message.
    Panicked(String),
    /// No live handler took it (every handler actor has stopped).
    Gone,
}

impl Handled {
    /// The answer this outcome implies: the handler's result, or a requeue with the default
    /// delay (counted for backoff) after a panic or when no handler took the delivery.
    pub(crate) fn action(&self) -> Action {
        match self {
            Handled::Returned(result) => action_for(result),
            Handled::Panicked(_) | Handled::Gone => Action::Requeue {
                delay: None,
                backoff: true,
            },
        }
    }
}

/// Applies what a handler made of a delivery, for every transport: logs a failure, then
/// answers through `watch` unless the delivery was answered already or is still held (its
/// holder answers).
pub(crate) fn settle(watch: &Watch, handled: &Handled, give_up: bool) {
    let meta = watch.meta();
    let (id, source) = (meta.id.as_str(), &*meta.source);
    match handled {
        Handled::Panicked(panic) => {
            tracing::error!(source, id, panic = %panic, give_up, "handler panicked; requeueing");
        }
        Handled::Gone => {
            tracing::error!(
                source,
                id,
                give_up,
                "no handler took the message (handler actors stopped); requeueing"
            );
        }
        Handled::Returned(Err(error)) => {
            tracing::debug!(source, id, %error, "handler failed; requeueing");
        }
        Handled::Returned(Ok(())) => {}
    }
    if let Err(error) = watch.apply(handled.action()) {
        tracing::debug!(source, id, %error, "could not answer message");
    }
}

impl HandlerSink {
    pub(crate) fn actors(recipients: Vec<Recipient<Delivery>>) -> Self {
        HandlerSink::Actors(Arc::new(ActorPool {
            recipients,
            next: AtomicUsize::new(0),
        }))
    }

    pub(crate) fn closure<F, Fut>(f: F) -> Self
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        HandlerSink::Closure(Arc::new(move |delivery| Box::pin(f(delivery))))
    }

    /// Hands `delivery` to a handler; the returned future resolves with what the handler made
    /// of it. Nothing is boxed here beyond what the handler itself needs.
    pub(crate) fn dispatch(&self, delivery: Delivery) -> Dispatch {
        match self {
            HandlerSink::Closure(f) => Dispatch::closure(f, delivery),
            HandlerSink::Actors(pool) => match pool.pick() {
                Some(recipient) => Dispatch::Actor(Box::pin(recipient.send(delivery))),
                None => Dispatch::Done(Some(Handled::Gone)),
            },
        }
    }
}

/// The handlers a consumer builder collects: actors sharing the work round robin, or a
/// closure (used only when no actor is set).
#[derive(Clone, Default)]
pub(crate) struct Handlers {
    actors: Vec<Recipient<Delivery>>,
    closure: Option<HandlerSink>,
}

impl Handlers {
    pub(crate) fn add_actor(&mut self, recipient: Recipient<Delivery>) {
        self.actors.push(recipient);
    }

    pub(crate) fn set_closure<F, Fut>(&mut self, f: F)
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.closure = Some(HandlerSink::closure(f));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.actors.is_empty() && self.closure.is_none()
    }

    pub(crate) fn actor_count(&self) -> usize {
        self.actors.len()
    }

    pub(crate) fn has_closure(&self) -> bool {
        self.closure.is_some()
    }

    /// Where deliveries go: the actors if any were added, else the closure.
    pub(crate) fn sink(&self) -> HandlerSink {
        match (&self.closure, self.actors.is_empty()) {
            (Some(closure), true) => closure.clone(),
            _ => HandlerSink::actors(self.actors.clone()),
        }
    }
}

/// A delivery on its way through a handler.
pub(crate) enum Dispatch {
    Closure(CatchUnwind<AssertUnwindSafe<HandlerFuture>>),
    // actix's request is !Unpin; boxing it keeps `Dispatch` Unpin (that path allocates an
    // envelope and a oneshot inside actix anyway).
    Actor(Pin<Box<RecipientRequest<Delivery>>>),
    GiveUp(Pin<Box<RecipientRequest<GiveUp>>>),
    Done(Option<Handled>),
}

impl Dispatch {
    fn closure(f: &HandlerFn, delivery: Delivery) -> Self {
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(delivery))) {
            Ok(future) => Dispatch::Closure(AssertUnwindSafe(future).catch_unwind()),
            Err(panic) => Dispatch::Done(Some(Handled::Panicked(panic_message(&*panic)))),
        }
    }
}

impl Future for Dispatch {
    type Output = Handled;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Handled> {
        let mailbox = |result: Result<HandlerResult, MailboxError>| match result {
            Ok(result) => Handled::Returned(result),
            Err(MailboxError::Closed | MailboxError::Timeout) => Handled::Gone,
        };
        Poll::Ready(match &mut *self {
            Dispatch::Closure(future) => match ready!(Pin::new(future).poll(cx)) {
                Ok(result) => Handled::Returned(result),
                Err(panic) => Handled::Panicked(panic_message(&*panic)),
            },
            Dispatch::Actor(request) => mailbox(ready!(request.as_mut().poll(cx))),
            Dispatch::GiveUp(request) => mailbox(ready!(request.as_mut().poll(cx))),
            Dispatch::Done(handled) => handled.take().unwrap_or(Handled::Gone),
        })
    }
}

impl ActorPool {
    /// The next live recipient, round robin.
    fn pick(&self) -> Option<&Recipient<Delivery>> {
        let n = self.recipients.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.recipients[(start + i) % n])
            .find(|r| r.connected())
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "handler panicked".to_owned()
    }
}

/// Sent to the give-up hook for a message delivered more than `max_attempts` times. Answer
/// `Ok` to finish it (after logging it, moving it to a dead-letter topic, ...), `Err` to requeue
/// it (it will come back to the hook).
#[derive(Debug)]
pub struct GiveUp(pub Delivery);

impl Message for GiveUp {
    type Result = HandlerResult;
}

/// What happens to messages past `max_attempts`.
#[derive(Clone, Default)]
pub(crate) enum GiveUpHook {
    /// Log at `warn` with the id, attempts and source, then finish (go-nsq's default).
    #[default]
    Log,
    Recipient(Recipient<GiveUp>),
    Closure(HandlerFn),
}

impl GiveUpHook {
    pub(crate) fn closure<F, Fut>(f: F) -> Self
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        GiveUpHook::Closure(Arc::new(move |delivery| Box::pin(f(delivery))))
    }

    pub(crate) fn dispatch(&self, delivery: Delivery) -> Dispatch {
        match self {
            GiveUpHook::Log => {
                tracing::warn!(
                    id = delivery.id(),
                    attempts = delivery.attempts(),
                    source = delivery.source(),
                    body_len = delivery.body().len(),
                    "giving up on message after too many attempts; finishing it"
                );
                drop(delivery);
                Dispatch::Done(Some(Handled::Returned(Ok(()))))
            }
            GiveUpHook::Recipient(recipient) => {
                Dispatch::GiveUp(Box::pin(recipient.send(GiveUp(delivery))))
            }
            GiveUpHook::Closure(f) => Dispatch::closure(f, delivery),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::delivery::{Action, DeliveryId, Meta, Respond};
    use crate::error::Error;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Action>>);
    impl Respond for Recorder {
        fn respond(&self, _: &Meta, action: Action) -> Result<(), Error> {
            self.0.lock().unwrap().push(action);
            Ok(())
        }
    }

    fn delivery() -> Delivery {
        let meta = Meta {
            id: DeliveryId::Text("id".into()),
            body: bytes::Bytes::from_static(b"x"),
            attempts: 1,
            timestamp_nanos: 0,
            source: "test".into(),
        };
        Delivery::new(meta, Arc::new(Recorder::default())).0
    }

    #[actix_rt::test]
    async fn closure_panics_are_caught() {
        let sink = HandlerSink::closure(|_d: Delivery| async { panic!("poison") });
        match sink.dispatch(delivery()).await {
            Handled::Panicked(message) => assert_eq!(message, "poison"),
            other => panic!("{other:?}"),
        }
        let sync_panic = HandlerSink::Closure(Arc::new(|_d| panic!("before the future")));
        assert!(matches!(
            sync_panic.dispatch(delivery()).await,
            Handled::Panicked(_)
        ));
    }

    #[actix_rt::test]
    async fn closure_results_come_back() {
        let sink = HandlerSink::closure(|_d: Delivery| async { Err("nope".into()) });
        assert!(matches!(
            sink.dispatch(delivery()).await,
            Handled::Returned(Err(_))
        ));
    }

    #[actix_rt::test]
    async fn no_live_actor_means_gone() {
        let sink = HandlerSink::actors(Vec::new());
        assert!(matches!(sink.dispatch(delivery()).await, Handled::Gone));
    }
}
