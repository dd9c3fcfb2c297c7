//! Handing deliveries to user handlers: actix actors, closures, or blocking handlers.
//!
//! Where each kind runs, and what must not block where:
//!
//! * **Closures** (`handler_fn`) and **actors on the consumer's arbiter** run on the thread
//!   that also drives the consumer's connections (reads, heartbeats, RDY, FIN). They must not
//!   block: an `async` closure that awaits is fine, `std::thread::sleep` or blocking I/O is
//!   not (nsqd drops a client that misses two heartbeats).
//! * **Actors on another arbiter** (`handler_actors_on`) run on that arbiter's thread.
//! * **Blocking handlers** (`handler_blocking`) run on threads of their own: the home for
//!   blocking work.
//!
//! Actor handlers are reached with `Recipient::send`, which waits while the handler's mailbox
//! is full instead of queueing without bound as `do_send` would. Several actors share the work:
//! each delivery goes to the next live one. Actors started from a factory are supervised
//! (`actors`): restarted after a panic or a stop, within a restart budget. A panic in a closure
//! or a blocking handler is caught and becomes a failure (requeue with backoff), so one poison
//! message cannot take the consumer down. A message no handler saw is never counted as a
//! failed attempt.

mod actors;
mod batch;
mod blocking;
mod give_up;

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{ready, Context, Poll},
};

use actix::{dev::RecipientRequest, Actor, ArbiterHandle, MailboxError, Message, Recipient};
use futures_util::{future::CatchUnwind, FutureExt};
use tokio::sync::oneshot;

pub(crate) use self::actors::ActorDispatch;
use self::actors::{ActorPool, SlotSpec, StartActor};
pub use self::batch::{BatchResult, DeliveryBatch};
pub(crate) use self::batch::{BatchSpec, Batcher};
pub use self::blocking::BlockingHandler;
use self::blocking::{BlockingPool, MakeBlocking};
pub use self::give_up::GiveUpHandler;
use crate::delivery::{action_for, Action, Delivery, HandlerResult, Watch};

/// A boxed handler future.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;

type HandlerFn = Arc<dyn Fn(Delivery) -> HandlerFuture + Send + Sync>;

/// Where deliveries go.
#[derive(Clone)]
pub(crate) enum HandlerSink {
    Actors(Arc<ActorPool>),
    Closure(HandlerFn),
    Blocking(Arc<BlockingPool>),
}

/// What became of a dispatched delivery.
#[derive(Debug)]
pub(crate) enum Handled {
    /// The handler returned this.
    Returned(HandlerResult),
    /// The handler panicked (closure handlers), with the panic message.
    Panicked(String),
    /// No handler saw it: the consumer is stopping while it waited for a live handler actor,
    /// or a blocking handler pool is gone. It goes back without counting a failure.
    Gone,
}

impl Handled {
    /// The answer this outcome implies: the handler's result; a requeue with the default
    /// delay, counted for backoff, after a panic; an immediate requeue without backoff when no
    /// handler saw the message.
    pub(crate) fn action(&self) -> Action {
        match self {
            Handled::Returned(result) => action_for(result),
            Handled::Panicked(_) => Action::Requeue {
                delay: None,
                backoff: true,
            },
            Handled::Gone => Action::Requeue {
                delay: Some(std::time::Duration::ZERO),
                backoff: false,
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
            tracing::warn!(source, id, "no handler saw the message; releasing it");
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
    /// A closure sink on its own (`MockDelivery`; builders go through [`Handlers`]).
    #[cfg(any(feature = "testing", test))]
    pub(crate) fn closure<F, Fut>(f: F) -> Self
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        HandlerSink::Closure(Arc::new(move |delivery| Box::pin(f(delivery))))
    }

    /// Handler actors the caller started, for one-off dispatches (`MockDelivery`): nothing
    /// waits for a live actor; a delivery no actor took comes back as [`Handled::Gone`].
    pub(crate) fn actors(recipients: Vec<Recipient<Delivery>>) -> Self {
        let specs: Vec<_> = recipients.into_iter().map(SlotSpec::Given).collect();
        let pool = ActorPool::start(&specs, RestartBudget::default());
        pool.close();
        HandlerSink::Actors(pool)
    }

    /// Hands `delivery` to a handler; the returned future resolves with what the handler made
    /// of it. Nothing is boxed here beyond what the handler itself needs.
    pub(crate) fn dispatch(&self, delivery: Delivery) -> Dispatch {
        match self {
            HandlerSink::Closure(f) => Dispatch::closure(f, delivery),
            HandlerSink::Actors(pool) => Dispatch::Actor(pool.dispatch(delivery)),
            HandlerSink::Blocking(pool) => Dispatch::Blocking(pool.dispatch(delivery)),
        }
    }

    /// Where handler restarts and availability changes go.
    pub(crate) fn report_to(&self, events: Recipient<HandlerEvent>) {
        match self {
            HandlerSink::Actors(pool) => pool.report_to(events),
            HandlerSink::Blocking(pool) => pool.report_to(events),
            HandlerSink::Closure(_) => {}
        }
    }

    /// The consumer is stopping: deliveries waiting for a live handler are released.
    pub(crate) fn close(&self) {
        if let HandlerSink::Actors(pool) = self {
            pool.close();
        }
    }
}

/// Something that happened to a consumer's handlers.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum HandlerEvent {
    /// The handler of `slot` stopped or panicked and a fresh one was started from the factory
    /// (actor slots count from 0 in the order they were configured; blocking handlers by
    /// thread). `restarts` counts restarts of that slot within the budget's window (for
    /// blocking handlers: since the start).
    Restarted {
        /// Which handler.
        slot: usize,
        /// Restarts so far, as described above.
        restarts: u32,
    },
    /// A handler actor the consumer did not start (no factory) stopped; it stays stopped.
    Stopped {
        /// Which handler.
        slot: usize,
    },
    /// The slot used up its restart budget; it is restarted again after `retry_in`.
    RestartBudgetExhausted {
        /// Which handler.
        slot: usize,
        /// When the budget allows the next restart.
        retry_in: std::time::Duration,
    },
    /// No handler actor is alive: the consumer takes no new messages (RDY 0) and holds those
    /// it has, touching them, until one is back. Nothing is counted as an attempt.
    Unavailable,
    /// A handler actor is alive again: the consumer takes messages again.
    Available,
}

/// How often a supervised handler may be restarted: at most `max_restarts` within `within`,
/// per slot. Past that the slot waits until the oldest restart leaves the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestartBudget {
    pub(crate) max_restarts: u32,
    pub(crate) within: std::time::Duration,
}

impl Default for RestartBudget {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            within: std::time::Duration::from_secs(60),
        }
    }
}

/// How to start the blocking handlers.
#[derive(Clone)]
struct BlockingSpec {
    threads: usize,
    make: MakeBlocking,
}

/// The handlers a consumer builder collects: handler actors (given, or started from factories),
/// or a closure, or blocking handlers. The sink is built once, when the consumer starts.
#[derive(Default)]
pub(crate) struct Handlers {
    slots: Vec<SlotSpec>,
    closure: Option<HandlerFn>,
    blocking: Option<BlockingSpec>,
    /// Set when the closure is a batch handler's entry (checked against `max_in_flight`).
    batch: Option<Arc<Batcher>>,
    pub(crate) budget: RestartBudget,
    started: OnceLock<HandlerSink>,
}

impl Clone for Handlers {
    /// A clone configures the same handlers but starts its own (a consumer's handler actors
    /// are its own).
    fn clone(&self) -> Self {
        let mut clone = Self {
            slots: self.slots.clone(),
            closure: self.closure.clone(),
            blocking: self.blocking.clone(),
            batch: None,
            budget: self.budget,
            started: OnceLock::new(),
        };
        // Batches of two consumers must not mix: the clone gets a collector of its own.
        if let Some(batcher) = &self.batch {
            clone.set_batch(batcher.fresh());
        }
        clone
    }
}

impl Handlers {
    pub(crate) fn add_actor(&mut self, recipient: Recipient<Delivery>) {
        self.slots.push(SlotSpec::Given(recipient));
    }

    /// `count` supervised actors made by `factory`, started on `arbiter` (None: the arbiter
    /// the consumer starts on).
    pub(crate) fn add_factory<A, F>(
        &mut self,
        arbiter: Option<ArbiterHandle>,
        count: usize,
        factory: F,
    ) where
        A: Actor<Context = actix::Context<A>> + actix::Handler<Delivery>,
        F: Fn() -> A + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        // Resolved at the first start, which `ConsumerBuilder::start` makes inside the System.
        let home = OnceLock::new();
        if let Some(arbiter) = arbiter {
            let _ = home.set(arbiter);
        }
        let start: StartActor = Arc::new(move || {
            let factory = factory.clone();
            let arbiter = home.get_or_init(actix::Arbiter::current);
            A::start_in_arbiter(arbiter, move |_| factory()).recipient()
        });
        self.slots
            .extend(std::iter::repeat_n(SlotSpec::Factory(start), count));
    }

    pub(crate) fn set_closure<F, Fut>(&mut self, f: F)
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.closure = Some(Arc::new(move |delivery| Box::pin(f(delivery))));
        self.batch = None;
    }

    /// A batch handler: deliveries go to `batcher`, which answers them.
    pub(crate) fn set_batch(&mut self, batcher: Arc<Batcher>) {
        self.set_closure(batch::entry(batcher.clone()));
        self.batch = Some(batcher);
    }

    /// The batch handler's settings, when the handler is one.
    pub(crate) fn batch_spec(&self) -> Option<BatchSpec> {
        self.batch.as_ref().map(|batcher| batcher.spec())
    }

    pub(crate) fn set_blocking<H, F>(&mut self, threads: usize, factory: F)
    where
        H: BlockingHandler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let make: MakeBlocking = Arc::new(move || Box::new(factory()));
        self.blocking = Some(BlockingSpec { threads, make });
    }

    /// The configuration problem, if any: no handler, or several kinds at once.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        let kinds = usize::from(!self.slots.is_empty())
            + usize::from(self.closure.is_some())
            + usize::from(self.blocking.is_some());
        match kinds {
            0 => Some("set a handler: actors, a closure or a blocking handler"),
            1 => match &self.blocking {
                Some(spec) if spec.threads == 0 => {
                    Some("blocking handlers need at least one thread")
                }
                _ => None,
            },
            _ => Some("set one kind of handler: actors, a closure or a blocking handler"),
        }
    }

    pub(crate) fn actor_count(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn has_closure(&self) -> bool {
        self.closure.is_some()
    }

    /// Where deliveries go; the first call starts the factory actors or blocking threads, later
    /// calls return the same sink.
    pub(crate) fn sink(&self) -> std::io::Result<HandlerSink> {
        if let Some(sink) = self.started.get() {
            return Ok(sink.clone());
        }
        let sink = if let Some(closure) = &self.closure {
            HandlerSink::Closure(closure.clone())
        } else if let Some(spec) = &self.blocking {
            HandlerSink::Blocking(BlockingPool::start(spec.threads, spec.make.clone())?)
        } else {
            HandlerSink::Actors(ActorPool::start(&self.slots, self.budget))
        };
        Ok(self.started.get_or_init(|| sink).clone())
    }

    /// The sink [`sink`](Self::sink) started (an empty actor pool, which holds every delivery,
    /// if it was never called: a bug, not an input).
    pub(crate) fn started(&self) -> HandlerSink {
        self.started
            .get_or_init(|| HandlerSink::actors(Vec::new()))
            .clone()
    }
}

/// A body transform run before the handler (pynsq `preprocess_method`).
pub(crate) type Preprocess = Arc<dyn Fn(bytes::Bytes) -> bytes::Bytes + Send + Sync>;
/// A check run before the handler (pynsq `validate_method`): `Err(reason)` rejects.
pub(crate) type Validate = Arc<dyn Fn(&Delivery) -> Result<(), String> + Send + Sync>;

/// Per-message hooks run at dispatch, before any kind of handler (actors, closure, blocking):
/// they see every message the handler would see, and nothing else (not the messages past
/// `max_attempts`, which go to the give-up hook as nsqd sent them).
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) preprocess: Option<Preprocess>,
    pub(crate) validate: Option<Validate>,
    /// A rejected message goes to the give-up hook instead of being finished.
    pub(crate) give_up_rejected: bool,
}

impl Hooks {
    /// Transforms `body`, makes the delivery with `make`, and validates it. The third value is
    /// the rejection reason, if any. A hook that panics rejects the message (the panic is
    /// caught: one poison message must not take the connection down).
    pub(crate) fn prepare(
        &self,
        body: bytes::Bytes,
        make: impl FnOnce(bytes::Bytes) -> (Delivery, Watch),
    ) -> (Delivery, Watch, Option<String>) {
        let (body, mut rejected) = match &self.preprocess {
            None => (body, None),
            Some(f) => {
                let raw = body.clone();
                match std::panic::catch_unwind(AssertUnwindSafe(|| f(body))) {
                    Ok(body) => (body, None),
                    Err(panic) => (
                        raw,
                        Some(format!("preprocess panicked: {}", panic_message(&*panic))),
                    ),
                }
            }
        };
        let (delivery, watch) = make(body);
        if rejected.is_none() {
            if let Some(validate) = &self.validate {
                rejected = match std::panic::catch_unwind(AssertUnwindSafe(|| validate(&delivery)))
                {
                    Ok(Ok(())) => None,
                    Ok(Err(reason)) => Some(reason),
                    Err(panic) => Some(format!("validate panicked: {}", panic_message(&*panic))),
                };
            }
        }
        (delivery, watch, rejected)
    }
}

/// A delivery on its way through a handler.
pub(crate) enum Dispatch {
    Closure(CatchUnwind<AssertUnwindSafe<HandlerFuture>>),
    Actor(ActorDispatch),
    Blocking(oneshot::Receiver<Handled>),
    // actix's request is !Unpin; boxing it keeps `Dispatch` Unpin (that path allocates an
    // envelope and a oneshot inside actix anyway).
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
            Dispatch::Actor(dispatch) => ready!(Pin::new(dispatch).poll(cx)),
            Dispatch::Blocking(answer) => {
                ready!(Pin::new(answer).poll(cx)).unwrap_or(Handled::Gone)
            }
            Dispatch::GiveUp(request) => mailbox(ready!(request.as_mut().poll(cx))),
            Dispatch::Done(handled) => handled.take().unwrap_or(Handled::Gone),
        })
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
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

    fn make(body: bytes::Bytes) -> (Delivery, Watch) {
        let meta = Meta {
            id: DeliveryId::Text("id".into()),
            body,
            attempts: 1,
            timestamp_nanos: 0,
            source: "test".into(),
        };
        Delivery::new(meta, Arc::new(Recorder::default()))
    }

    #[test]
    fn hooks_transform_then_validate_and_a_panic_rejects() {
        let hooks = Hooks {
            preprocess: Some(Arc::new(|b: bytes::Bytes| {
                assert!(&b[..] != b"explode", "preprocess blew up");
                bytes::Bytes::from(b.to_ascii_uppercase())
            })),
            validate: Some(Arc::new(|d: &Delivery| match &d.body()[..] {
                b"BAD" => Err("bad".to_owned()),
                b"PANIC" => panic!("validate blew up"),
                _ => Ok(()),
            })),
            give_up_rejected: false,
        };
        let prepare = |body: &'static [u8]| {
            let (delivery, _watch, rejected) = hooks.prepare(bytes::Bytes::from_static(body), make);
            (delivery.body().clone(), rejected)
        };
        assert_eq!(prepare(b"ok"), (bytes::Bytes::from_static(b"OK"), None));
        assert_eq!(prepare(b"bad").1.as_deref(), Some("bad"));
        let (body, rejected) = prepare(b"explode");
        assert_eq!(
            &body[..],
            b"explode",
            "a failed transform leaves the body as it came"
        );
        assert_eq!(
            rejected.as_deref(),
            Some("preprocess panicked: preprocess blew up")
        );
        assert_eq!(
            prepare(b"panic").1.as_deref(),
            Some("validate panicked: validate blew up")
        );
        let none = Hooks::default();
        let (delivery, _watch, rejected) = none.prepare(bytes::Bytes::from_static(b"x"), make);
        assert_eq!((&delivery.body()[..], rejected), (&b"x"[..], None));
    }

    #[actix_rt::test]
    async fn no_live_actor_means_gone() {
        let sink = HandlerSink::actors(Vec::new());
        assert!(matches!(sink.dispatch(delivery()).await, Handled::Gone));
    }
}
